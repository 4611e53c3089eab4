"""quant_formats/interleave_nibbles.py: nibble_quads_dot (Q4_0, Q4_1) and
five_bit_quads_dot (Q5_0) against numpy on each code path of quant_formats/simd.py, and
the layouts they read (kvalue_quads_dot, IQ4_NL's, is checked with the other dots
of Q8_0 activations in test_interleave.py)."""
import numpy as np
import pytest

from quant_formats import interleave_nibbles, simd
from simd_paths import CASES, PATHS, ROWS, runner


@pytest.mark.parametrize("path", PATHS)
def test_nibble_quads_dot_is_the_exact_integer_sum(path, monkeypatch):
    """Q4_0 / Q4_1's 16 bytes per block (byte j: weights j and j + 16), laid out by
    pack_nibbles; all-15 nibbles against -128 (the largest pair sums) included."""
    monkeypatch.setattr(simd, "DISABLED", PATHS[path])
    run = runner(interleave_nibbles.nibble_quads_dot)
    for n_tokens, t0, o in CASES:
        _check_nibble_quads_dot(run, n_tokens, t0, o)


@pytest.mark.parametrize("path", PATHS)
def test_five_bit_quads_dot_is_the_exact_integer_sum(path, monkeypatch):
    """Q5_0's blocks as pack_five_bits lays them out: each nibble with its fifth bit from
    qh (bit j for weight j), against gguf-py-independent numpy unpacking; all-ones
    quants (31) against -128 included."""
    monkeypatch.setattr(simd, "DISABLED", PATHS[path])
    run = runner(interleave_nibbles.five_bit_quads_dot)
    for n_tokens, t0, o in CASES:
        rng = np.random.default_rng(20 * n_tokens + t0 + o)
        blocks = rng.integers(0, 256, (ROWS, 3, 22)).astype(np.uint8)  # d, qh, qs per block
        blocks[0, :, 2:] = 0xFF
        x = rng.integers(-128, 128, (8, 96)).astype(np.int8)
        x[t0, o:o + 32] = -128
        q = interleave_nibbles.pack_five_bits(blocks.reshape(ROWS, -1), 22, 2, 6)[2]
        assert q.shape == (1, 3, 5, 4 * ROWS)
        out = run(q[0, o // 32], 0, x, t0, n_tokens, o)
        block = blocks[:, o // 32]
        qh = block[:, 2:6].copy().view("<u4")[:, 0].astype(np.int64)
        nibbles = np.concatenate([block[:, 6:] & 15, block[:, 6:] >> 4], axis=1).astype(np.int64)
        quants = nibbles | (((qh[:, None] >> np.arange(32)) & 1) << 4)
        expected = x[t0:t0 + n_tokens, o:o + 32].astype(np.int64) @ quants.T
        assert np.array_equal(out[:n_tokens], expected)
        assert (out[n_tokens:] == 777).all()


def _check_nibble_quads_dot(run, n_tokens, t0, o):
    rng = np.random.default_rng(10 * n_tokens + t0 + o)
    q_bytes = rng.integers(0, 256, (ROWS, 48)).astype(np.uint8)  # 3 blocks of 16 bytes
    q_bytes[0] = 0xFF
    x = rng.integers(-128, 128, (8, 96)).astype(np.int8)
    x[t0, o:o + 32] = -128
    q = interleave_nibbles.pack_nibbles(q_bytes, 16, None, 0, 8)[2]
    assert q.shape == (1, 3, 4, 4 * ROWS)
    out = run(q[0, o // 32], 0, x, t0, n_tokens, o)
    block = q_bytes[:, o // 2:o // 2 + 16].astype(np.int64)
    weights = np.concatenate([block & 15, block >> 4], axis=1)  # weights 0..31 of each row
    expected = x[t0:t0 + n_tokens, o:o + 32].astype(np.int64) @ weights.T
    assert np.array_equal(out[:n_tokens], expected)
    assert (out[n_tokens:] == 777).all()
