"""quant_formats/interleave.py: the integer cores of the decode kernels against numpy:
int8_rows_dot (the Q8_0 layout, Q6_K / IQ4_XS / IQ2_XXS sub-blocks, Q5_K) and
nibble_pairs_dot (Q4_0, Q4_1) on both its code paths, and pack_byte_pairs."""
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


def _nibble_pairs_dot(q_block, x, o, hi):
    @njit  # a new function per call: compiled with the module's _PAIR_MADD_NATIVE of now
    def run(sum_lo, sum_hi, q_block, x, o, hi):
        interleave.nibble_pairs_dot(sum_lo, sum_hi, q_block, x, o, hi)
    sum_lo, sum_hi = np.full(ROWS, 12345, np.int32), np.full(ROWS, -1, np.int32)
    run(sum_lo, sum_hi, q_block, x, o, hi)
    return sum_lo, sum_hi


def _nibble_sums(q_bytes, x, o, hi):
    """numpy: q_bytes uint8 [16, ROWS] (byte j of each row's block)."""
    lo = (q_bytes & 15).astype(np.int64).T @ x[o:o + 16].astype(np.int64)
    high = (q_bytes >> 4).astype(np.int64).T @ x[o + hi:o + hi + 16].astype(np.int64)
    return lo, high


@pytest.mark.parametrize("native", [True, False], ids=["pmaddubsw", "portable-ir"])
@pytest.mark.parametrize("o, hi", [(0, 16), (32, 16), (64, 32), (5, 7)])
def test_nibble_pairs_dot_is_the_exact_integer_sum(native, o, hi, monkeypatch):
    """On a CPU without AVX2 both runs check the portable IR (by design, not a skip)."""
    monkeypatch.setattr(interleave, "_PAIR_MADD_NATIVE", native)
    rng = np.random.default_rng(o + hi)
    q_bytes = rng.integers(0, 256, (16, ROWS)).astype(np.uint8)
    x = rng.integers(-128, 128, o + hi + 16).astype(np.int8)
    q_block = interleave.pack_byte_pairs(q_bytes.T.copy(), 16, 0, 16)[0, 0]
    assert q_block.shape == (8, 2 * ROWS)
    sum_lo, sum_hi = _nibble_pairs_dot(q_block, x, o, hi)
    expected_lo, expected_hi = _nibble_sums(q_bytes, x, o, hi)
    assert np.array_equal(sum_lo, expected_lo) and np.array_equal(sum_hi, expected_hi)


@pytest.mark.parametrize("native", [True, False], ids=["pmaddubsw", "portable-ir"])
def test_nibble_pairs_dot_extremes_do_not_overflow(native, monkeypatch):
    """Sixteen products of 15 and -128 (-30720) or 127 stay exact in the int16 sums."""
    monkeypatch.setattr(interleave, "_PAIR_MADD_NATIVE", native)
    q_bytes = np.full((16, ROWS), 0xFF, np.uint8)
    q_bytes[:, 1::2] = 0x0F  # high nibble 0 in odd rows
    q_block = interleave.pack_byte_pairs(q_bytes.T.copy(), 16, 0, 16)[0, 0]
    for xv in (-128, 127):
        x = np.full(32, xv, np.int8)
        sum_lo, sum_hi = _nibble_pairs_dot(q_block, x, 0, 16)
        expected_lo, expected_hi = _nibble_sums(q_bytes, x, 0, 16)
        assert sum_lo[0] == 16 * 15 * xv and sum_hi[1] == 0
        assert np.array_equal(sum_lo, expected_lo) and np.array_equal(sum_hi, expected_hi)


def test_pack_byte_pairs_puts_a_row_s_two_bytes_side_by_side():
    rng = np.random.default_rng(7)
    w = rng.integers(0, 256, (ROWS + 3, 2 * 18)).astype(np.uint8)  # 2 blocks of 18 bytes
    pairs = interleave.pack_byte_pairs(w, 18, 2, 16)
    assert pairs.shape == (2, 2, 8, 2 * ROWS)
    for g, b, p, r, e in [(0, 0, 0, 0, 0), (0, 1, 7, 63, 1), (1, 1, 3, 2, 0), (1, 0, 5, 1, 1)]:
        assert pairs[g, b, p, 2 * r + e] == w[g * ROWS + r, b * 18 + 2 + 2 * p + e]
    assert not pairs[1, :, :, 6:].any()  # rows past n_out: zero
