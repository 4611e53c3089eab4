"""quant_formats/interleave.py: the integer cores of the decode kernels against numpy:
int8_rows_dot (Q5_K), and quads_dot / quads_dot16 / q8_0_quads_dot (the Q8_0 layout;
Q6_K, IQ4_XS, IQ2_XXS sub-blocks; with Q8_0 activations, beside interleave_nibbles'
kvalue_quads_dot) on each code path of quant_formats/simd.py, and the layouts they read."""
import numpy as np
import pytest
from gguf import quants as gguf_quants
from numba import njit

from quant_formats import interleave, interleave_nibbles, simd
from simd_paths import CASES, PATHS, runner

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




@pytest.mark.parametrize("path", PATHS)
def test_quads_dot_is_the_exact_integer_sum(path, monkeypatch):
    """The Q8_0 layout's block sums for up to TOKENS tokens, offset binary weights as
    stored, extremes included; rows of out past n_tokens untouched."""
    monkeypatch.setattr(simd, "DISABLED", PATHS[path])
    run = runner(interleave.quads_dot)
    for n_tokens, t0, o in CASES:
        _check_quads_dot(run, n_tokens, t0, o)


def _check_quads_dot(run, n_tokens, t0, o):
    rng = np.random.default_rng(n_tokens + t0 + o)
    values = rng.integers(-128, 128, (ROWS, 96)).astype(np.int8)
    values[0], values[1] = -128, 127  # the extremes, against x's below
    x = rng.integers(-128, 128, (8, 96)).astype(np.int8)
    x[t0, o:o + 32] = -128
    q = interleave.pack_quads(values)
    assert q.shape == (1, 3, 8, 4 * ROWS)
    out = run(q[0, o // 32], 0, x, t0, n_tokens, o)
    stored = values[:, o:o + 32].astype(np.int64) + 128
    expected = x[t0:t0 + n_tokens, o:o + 32].astype(np.int64) @ stored.T
    assert np.array_equal(out[:n_tokens], expected)
    assert (out[n_tokens:] == 777).all()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fn", ["q8_0_quads_dot", "kvalue_quads_dot"])
def test_q8_0_activation_dots_less_their_offset_are_the_signed_sum(fn, path, monkeypatch):
    """The dots that take Q8_0 activations (within +-127): their sums less q8_0_offset()
    * sum(x) are those of the signed weights, on each path (AVX2: the sign trick,
    offset 0), the weights' extremes -128 and 127 against x's -127 and 127 included."""
    monkeypatch.setattr(simd, "DISABLED", PATHS[path])
    run = runner(getattr(interleave_nibbles if fn == "kvalue_quads_dot" else interleave, fn))

    @njit
    def offset():
        return interleave.q8_0_offset()
    kvalues = np.asarray(gguf_quants.IQ4_NL.kvalues, np.int64)
    for n_tokens, t0, o in CASES:
        rng = np.random.default_rng(30 * n_tokens + t0 + o)
        x = rng.integers(-127, 128, (8, 96)).astype(np.int8)
        x[t0, o:o + 32:2], x[t0, o + 1:o + 32:2] = -127, 127
        if fn == "q8_0_quads_dot":
            weights = rng.integers(-128, 128, (ROWS, 96)).astype(np.int8)
            weights[0], weights[1, 1::2] = -128, 127
            q_block = interleave.pack_quads(weights)[0, o // 32]
        else:
            q_bytes = rng.integers(0, 256, (ROWS, 48)).astype(np.uint8)
            q_bytes[0] = 0  # kvalue -127 throughout
            q_block = interleave_nibbles.pack_nibbles(q_bytes, 16, None, 0, 8)[2][0, o // 32]
            block = q_bytes[:, o // 2:o // 2 + 16]
            weights = np.zeros((ROWS, 96), np.int64)
            weights[:, o:o + 32] = kvalues[np.concatenate([block & 15, block >> 4], axis=1)]
        out = run(q_block, 0, x, t0, n_tokens, o)
        xs = x[t0:t0 + n_tokens, o:o + 32].astype(np.int64)
        expected = xs @ weights[:, o:o + 32].astype(np.int64).T
        assert np.array_equal(out[:n_tokens] - offset() * xs.sum(axis=1, keepdims=True),
                              expected)
        assert (out[n_tokens:] == 777).all()
    sign_trick = (simd.host_has("avx2") and not simd.host_has("avx512bw")
                  and not simd.host_has("avx512vnni"))  # under this path's DISABLED
    assert offset() == (0 if sign_trick else 128)


def test_pack_quads_puts_a_row_s_four_values_side_by_side():
    rng = np.random.default_rng(7)
    values = rng.integers(-128, 128, (ROWS + 3, 64)).astype(np.int8)
    q = interleave.pack_quads(values)
    assert q.shape == (2, 2, 8, 4 * ROWS)
    for g, b, k, r, e in [(0, 0, 0, 0, 0), (0, 1, 7, 63, 3), (1, 1, 3, 2, 1), (1, 0, 5, 1, 2)]:
        assert int(q[g, b, k, 4 * r + e]) - 128 == values[g * ROWS + r, 32 * b + 4 * k + e]


@pytest.mark.parametrize("path", PATHS)
def test_sub_block_quads_are_the_exact_integer_sums(path, monkeypatch):
    """The 256-weight formats' layout (pack_quads(..., 256)): quads_dot over sub-block
    k of 32 (quads 8k..), quads_dot16 over one of 16 (quads 4k..)."""
    monkeypatch.setattr(simd, "DISABLED", PATHS[path])
    rng = np.random.default_rng(3)
    values = rng.integers(-128, 128, (ROWS, 512)).astype(np.int8)
    x = rng.integers(-128, 128, (6, 512)).astype(np.int8)
    q = interleave.pack_quads(values, 256)
    assert q.shape == (1, 2, 64, 4 * ROWS)
    for fn, length in ((interleave.quads_dot, 32), (interleave.quads_dot16, 16)):
        run = runner(fn)
        for b, sub, t0, n_tokens in ((0, 0, 0, 4), (1, 3, 2, 3), (1, 256 // length - 1, 5, 1)):
            out = run(q[0, b], sub * length // 4, x, t0, n_tokens, 256 * b + sub * length)
            first = 256 * b + sub * length
            stored = values[:, first:first + length].astype(np.int64) + 128
            expected = x[t0:t0 + n_tokens, first:first + length].astype(np.int64) @ stored.T
            assert np.array_equal(out[:n_tokens], expected), (fn, b, sub)
