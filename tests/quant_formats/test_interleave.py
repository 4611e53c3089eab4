"""quant_formats/interleave.py: int8_rows_dot, the integer core of the int8 decode
kernels (the Q8_0 layout, Q6_K / IQ4_XS / IQ2_XXS sub-blocks, Q5_K), against numpy."""
import numpy as np
import pytest
from numba import njit

from quant_formats import interleave

ROWS = interleave.ROWS


@njit
def _rows_dot(out, q_block, k0, n_k, x, o):
    interleave.int8_rows_dot(out, q_block, k0, n_k, x, o)


@pytest.mark.parametrize("k0, n_k, o", [(0, 32, 0), (0, 32, 64), (16, 16, 48), (32, 2, 5),
                                        (0, 256, 0)])
def test_int8_rows_dot_is_the_exact_integer_sum(k0, n_k, o):
    rng = np.random.default_rng(k0 + n_k + o)
    q_block = rng.integers(-128, 128, (max(256, k0 + n_k), ROWS)).astype(np.int8)
    x = rng.integers(-127, 128, o + n_k + 3).astype(np.int8)
    out = np.full(ROWS, 12345, np.int32)  # overwritten, not added to
    _rows_dot(out, q_block, k0, n_k, x, o)
    expected = (x[o:o + n_k].astype(np.int64) @ q_block[k0:k0 + n_k].astype(np.int64))
    assert np.array_equal(out, expected)


def test_int8_rows_dot_extremes_do_not_overflow():
    """Each pair of products is summed in int16 before widening: -128 * -127 twice is
    32512, the largest pair sum, and must come out exact (and negative alike)."""
    q_block = np.full((32, ROWS), -128, np.int8)
    q_block[:, 1::2] = 127
    out = np.empty(ROWS, np.int32)
    for xv in (-127, 127):
        x = np.full(32, xv, np.int8)
        _rows_dot(out, q_block, 0, 32, x, 0)
        assert np.array_equal(out, q_block.astype(np.int64).sum(axis=0) * xv)
