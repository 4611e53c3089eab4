"""The two float primitives every K-quant byte depends on, against independent
references: nearest_int against ggml's bit trick redone in numpy (float32 add of
1.5 * 2^23, then the mantissa bits: ggml-quants.c nearest_int), store_f16 against
numpy's float16 conversion (round to nearest even) and, for NaN, ggml-impl.h
ggml_compute_fp32_to_fp16 (sign | 0x7E00). The searches themselves are checked
byte for byte against ggml in test_quantizers.py."""
import numpy as np
from numba import njit

from quant_formats.kquant_quantize import nearest_int, store_f16


@njit(cache=True)
def _nearest_all(values, out):
    for i in range(values.shape[0]):
        out[i] = nearest_int(values[i])


@njit(cache=True)
def _store_all(values, out, read_back):
    for i in range(values.shape[0]):
        read_back[i] = store_f16(out, 2 * i, values[i])


def _awkward_floats(rng):
    halves = np.arange(-40, 40, dtype=np.float32) + np.float32(0.5)  # ties: to even
    scaled = np.concatenate([rng.standard_normal(2000) * s for s in (1e-6, 1, 50, 4e6, 1e12)])
    edges = [0.0, -0.0, 4194303.0, 4194304.5, -4194304.0, -12582912.0, 3e38, -3e38,
             np.inf, -np.inf, 65504.0, 65519.99, 65520.0, -65520.0, 6.1e-5, 5.96e-8,
             2.98e-8, 2.99e-8, 1e-40]
    return np.concatenate([halves, scaled, edges]).astype(np.float32)


def test_nearest_int_is_ggml_bit_trick():
    values = _awkward_floats(np.random.default_rng(1))
    with np.errstate(over="ignore", invalid="ignore"):
        shifted = values + np.float32(12582912.0)  # float32 add, as C
    expected = (shifted.view(np.int32) & 0x007FFFFF) - 0x00400000
    ours = np.empty(values.size, np.int32)
    _nearest_all(values, ours)
    np.testing.assert_array_equal(ours, expected)
    in_range = np.abs(values) <= 4194303
    np.testing.assert_array_equal(ours[in_range], np.rint(values[in_range]))


def test_store_f16_rounds_as_numpy_float16():
    values = _awkward_floats(np.random.default_rng(2))
    out = np.zeros(2 * values.size, np.uint8)
    read_back = np.empty(values.size, np.float32)
    _store_all(values, out, read_back)
    with np.errstate(over="ignore"):
        expected = values.astype(np.float16)
    np.testing.assert_array_equal(out.view(np.uint16), expected.view(np.uint16))
    np.testing.assert_array_equal(read_back, expected.astype(np.float32))


def test_store_f16_nan_is_ggml_quiet_nan_with_sign():
    nans = np.array([np.nan, -np.nan], np.float32)
    nans[1] = -np.abs(nans[1])
    out = np.zeros(4, np.uint8)
    _store_all(nans, out, np.empty(2, np.float32))
    assert out.view(np.uint16).tolist() == [0x7E00, 0xFE00]
