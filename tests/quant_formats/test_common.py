"""quant_formats/common.py: the f16 conversion the Q8_0 decode layout's kernels use."""
import numpy as np
import pytest
from numba import njit

from quant_formats import common

ALL_BITS = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)


def _convert_all():
    @njit  # a new function per call: compiled with the module's _NATIVE_F16 of now
    def convert(bits, out):
        for i in range(bits.shape[0]):
            out[i] = common.f16_to_f32(bits[i])
    out = np.empty(ALL_BITS.shape, np.float32)
    convert(ALL_BITS, out)
    return out


@pytest.mark.parametrize("native", [True, False], ids=["fpext", "bit-arithmetic"])
def test_f16_to_f32_is_numpy_s_conversion_for_every_pattern(native, monkeypatch):
    if native and not common._native_f16():
        native = False  # this CPU has no F16C: both runs check the fallback
    monkeypatch.setattr(common, "_NATIVE_F16", native)
    ours, numpy_s = _convert_all(), ALL_BITS.view(np.float16).astype(np.float32)
    nan = np.isnan(numpy_s)
    assert np.array_equal(ours.view(np.uint32)[~nan], numpy_s.view(np.uint32)[~nan])
    assert np.isnan(ours[nan]).all()  # subnormals, +-0, +-inf included above
