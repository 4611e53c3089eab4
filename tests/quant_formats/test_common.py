"""quant_formats/common.py: the f16 conversions of the Q8_0 decode layout's kernels
and of decode attention (f16_round), and the row group functions' stack arrays."""
import numpy as np
import pytest
from numba import njit

from heap_allocations import counting
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


def _f16_round_values():
    """Every finite f16 value, the midpoints between neighbours (ties: to even), points
    just either side of those, values past the largest f16 (65504; from 65520 up they
    round to inf), and random float32 over f16's range and below it."""
    values = ALL_BITS.view(np.float16).astype(np.float32)
    finite = np.unique(values[np.isfinite(values)])
    mid = ((finite[:-1].astype(np.float64) + finite[1:]) / 2).astype(np.float32)
    near = np.concatenate([np.nextafter(mid, np.float32(np.inf)),
                           np.nextafter(mid, np.float32(-np.inf))])
    rng = np.random.default_rng(3)
    random = (rng.standard_normal(200_000) * np.exp(rng.uniform(-30, 12, 200_000)))
    edges = np.array([65504, 65519.996, 65520, 1e6, 1e-30, 0.0], np.float32)
    out = np.concatenate([finite, mid, near, random.astype(np.float32), edges, -edges])
    return out.astype(np.float32)


@pytest.mark.parametrize("native", [True, False], ids=["fptrunc", "arithmetic"])
def test_f16_round_is_numpy_s_float16_rounding(native, monkeypatch):
    if native and not common._native_f16():
        native = False  # this CPU has no F16C: both runs check the fallback
    monkeypatch.setattr(common, "_NATIVE_F16", native)

    @njit
    def round_all(x, out):
        for i in range(x.shape[0]):
            out[i] = common.f16_round(x[i])
    x = _f16_round_values()
    ours = np.empty_like(x)
    round_all(x, ours)
    with np.errstate(over="ignore"):
        numpy_s = x.astype(np.float16).astype(np.float32)
    assert np.array_equal(ours.view(np.uint32), numpy_s.view(np.uint32))
    nan = np.array([np.nan], np.float32)
    round_all(nan, nan)
    assert np.isnan(nan[0])


SHAPE = (4, 64)  # module constants: stack_empty's shape must be literal


@njit
def _stack_sums(n):
    """stack_empty's arrays of each form, filled and summed; np.empty's for comparison."""
    grid = common.stack_empty(SHAPE, np.float32)
    row = common.stack_empty(SHAPE[1], np.int16)
    total = 0.0
    for t in range(SHAPE[0]):
        for r in range(SHAPE[1]):
            grid[t, r] = t * 100 + r
    for r in range(SHAPE[1]):
        row[r] = -r
    for t in range(SHAPE[0]):  # rows must not overlap: each holds what was written
        for r in range(SHAPE[1]):
            total += grid[t, r] * (t + 1)
    heap = np.empty(n, np.float32)
    heap[:] = 1
    return total + row.sum() + grid[1:, 2].sum() + heap.sum(), grid.strides, row.itemsize


def test_stack_empty_is_a_c_array_of_its_shape_without_a_heap_allocation():
    total, strides, itemsize = _stack_sums(5)  # compiled before counting
    expect = sum((t * 100 + r) * (t + 1) for t in range(4) for r in range(64))
    expect += -sum(range(64)) + sum(t * 100 + 2 for t in range(1, 4)) + 5
    assert total == expect and strides == (256, 4) and itemsize == 2
    with counting() as allocated:
        _stack_sums(5)
        assert allocated() == 1  # np.empty's only
