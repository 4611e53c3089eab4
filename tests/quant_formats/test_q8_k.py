"""Q8_K activation quantization: the rules of quantize_row_q8_K_ref."""
import numpy as np
from gguf import GGMLQuantizationType as T

from kquant_reference import ggml_quantize, needs_ggml
from quant_formats import q8_k


def test_layout_is_ggml_block_q8_k():
    assert q8_k.BLOCK_DTYPE.itemsize == 4 + 256 + 16 * 2
    assert [q8_k.BLOCK_DTYPE.fields[name][1] for name in ("d", "qs", "bsums")] == [0, 4, 260]


def test_bsums_are_sums_of_each_16_quants():
    x = np.random.default_rng(0).standard_normal((3, 768)).astype(np.float32) * 5
    qs, d, sums = q8_k.quantize(x)
    assert sums.dtype == np.float32 and sums.shape == (3, 48)
    assert np.array_equal(sums, qs.reshape(3, 48, 16).astype(np.int64).sum(axis=2))


def test_largest_magnitude_maps_to_minus_127_whatever_its_sign():
    """scale = -127/max keeps max's sign: a negative max gives d > 0, a positive
    one d < 0, and the max element itself is always -127."""
    x = np.linspace(-1, 1, 512, dtype=np.float32).reshape(1, 512) * 0.5
    x[0, 10] = -3.0   # block 0: largest |x| is negative
    x[0, 300] = 3.0   # block 1: largest |x| is positive
    x[0, 301] = -3.0  # ... and ties go to the first one
    qs, d, _ = q8_k.quantize(x)
    assert qs[0, 10] == -127 and d[0, 0] > 0
    assert qs[0, 300] == -127 and qs[0, 301] == 127 and d[0, 1] < 0
    assert d[0, 0] == np.float32(1) / (np.float32(-127) / np.float32(-3.0))
    assert np.all(np.abs(qs) <= 127)


def test_ties_round_half_to_even():
    """max = -127 makes iscale exactly 1, so x = k + 0.5 lands on a tie; ggml's
    magic-number nearest_int rounds those to even."""
    x = np.zeros((1, 256), np.float32)
    x[0, 0] = -127
    x[0, 1:9] = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5]
    qs, d, sums = q8_k.quantize(x)
    assert d[0, 0] == 1.0
    assert list(qs[0, :9]) == [-127, 0, 2, 2, 0, -2, -2, 126, -126]
    assert sums[0, 0] == -127 + 0 + 2 + 2 + 0 - 2 - 2 + 126 - 126


def test_all_zero_block_has_zero_scale():
    x = np.zeros((2, 512), np.float32)
    x[1, 256:] = 1.0
    qs, d, sums = q8_k.quantize(x)
    assert d[0, 0] == 0 and d[0, 1] == 0 and d[1, 0] == 0 and d[1, 1] != 0
    assert not qs[0].any() and not sums[0].any() and not qs[1, :256].any()
    assert np.all(qs[1, 256:] == -127)


def test_dequantize_is_d_times_q():
    x = np.random.default_rng(1).standard_normal((2, 512)).astype(np.float32)
    qs, d, sums = q8_k.quantize(x)
    expected = np.repeat(d, 256, axis=1) * qs.astype(np.float32)
    assert np.array_equal(q8_k.dequantize(qs, d, sums), expected)


@needs_ggml
def test_blocks_bit_identical_to_ggml_quantize_row_q8_k_ref():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((4, 1024)) * np.logspace(-4, 4, 1024)).astype(np.float32)
    x[1, :256] = 0  # an all-zero block
    x[2, 5] = -1e5  # a negative maximum
    for row in x:
        qs, d, sums = q8_k.quantize(row[None, :])
        ours = q8_k.to_blocks(qs[0], d[0], sums[0]).view(np.uint8)
        assert np.array_equal(ours, ggml_quantize(T.Q8_K, row))
