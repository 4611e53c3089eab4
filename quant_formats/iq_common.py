"""Tables shared by the i-quant formats, built from gguf-py's own tables at import.

The lookup grids, the sign table and the IQ4_NL values are taken from
gguf/quants.py (not retyped), so they are the ones gguf.quants.dequantize uses;
they equal llama.cpp's ggml-common.h tables (iq*_grid, ksigns_iq2xs,
kvalues_iq4nl). Numba kernels read them as global arrays (frozen as constants).
"""
import numpy as np
from gguf import quants as gguf_quants
from numba import njit


def grid_from_gguf(quant_class) -> np.ndarray:
    """A gguf-py IQ class's lookup grid as int8 [n_entries, n_values].

    gguf-py stores each grid packed (grid_hex / grid_map) and unpacks it into
    float32 on init_grid(). Every IQ grid value is a small integer (IQ1 -1..1,
    IQ2 <= 0x2b, IQ3 <= 0x3e), so int8 holds them exactly; checked here."""
    quant_class.init_grid()
    values = quant_class.grid.reshape(quant_class.grid_shape)
    grid = values.astype(np.int8)
    assert np.array_equal(grid.astype(np.float32), values), quant_class.__name__
    return grid


# ksigns_iq2xs (ggml-common.h): 7 stored sign bits -> a sign byte whose 8th
# bit makes the count of negatives even. gguf-py keeps it on IQ2_XXS.
KSIGNS = np.frombuffer(gguf_quants.IQ2_XXS.ksigns, dtype=np.uint8).copy()
assert KSIGNS.shape == (128,)

# Sign byte -> the eight signs it encodes, bit j set = value j negative
# (kmask_iq2xs[j] == 1 << j in ggml-common.h), as +1/-1.
SIGNS_OF_BYTE = np.where((np.arange(256)[:, None] >> np.arange(8)) & 1, -1, 1).astype(np.int8)

# kvalues_iq4nl: IQ4_NL and IQ4_XS map each 4-bit index to one of these.
KVALUES_IQ4NL = np.array(gguf_quants.IQ4_NL.kvalues, dtype=np.int8)


def kvalues_of_nibbles(qs):
    """numpy: runs of 16 bytes [..., 16] -> the int8 kvalues [..., 32] they stand for,
    low nibbles first (IQ4_NL blocks, IQ4_XS sub-blocks)."""
    return KVALUES_IQ4NL[np.concatenate([qs & 0x0F, qs >> 4], axis=-1)]
assert KVALUES_IQ4NL.shape == (16,)


@njit(cache=True, nogil=True, inline="always")
def scaled_dot_256(decoded, qs, x, scales):
    """sum over ib < 8 of scales[ib] * (decoded[32 ib : 32 ib + 32] . qs[x + 32 ib : ...]),
    in int32 (exact for |scale| < 2^10: 8 * 1024 * 32 * 127 * 127 < 2^31).

    decoded: 256 signed int8 weights of one block (each format's kernel fills
    it from its grid); qs: the Q8_K quants. Four sub-block sums in one loop of
    32: measured 3.6 ms against 18 ms for one sum per loop (IQ3_XXS decode,
    16384 x 4096), which LLVM otherwise leaves scalar."""
    total = np.int32(0)
    for half in range(2):
        y = 128 * half
        xh = x + 128 * half
        s0 = np.int32(0)
        s1 = np.int32(0)
        s2 = np.int32(0)
        s3 = np.int32(0)
        for j in range(32):
            s0 = np.int32(s0 + decoded[y + j] * qs[xh + j])
            s1 = np.int32(s1 + decoded[y + 32 + j] * qs[xh + 32 + j])
            s2 = np.int32(s2 + decoded[y + 64 + j] * qs[xh + 64 + j])
            s3 = np.int32(s3 + decoded[y + 96 + j] * qs[xh + 96 + j])
        ib = 4 * half
        total = np.int32(total + scales[ib] * s0 + scales[ib + 1] * s1
                         + scales[ib + 2] * s2 + scales[ib + 3] * s3)
    return total


@njit(cache=True, nogil=True, inline="always")
def nibble_scaled_dot_256(decoded, qs, x, w, scales_at):
    """For IQ2_XS/IQ2_S: sum over 16-weight groups k of (2 s_k + 1) * (decoded . q8),
    where s_k is nibble k of the 8 scale bytes at w[scales_at] (low nibble first),
    as ggml_vec_dot_iq2_xs/iq2_s_q8_K_generic; int32 is exact (31 * 16 * 127 * 127 * 16)."""
    total = np.int32(0)
    for k in range(0, 16, 2):
        sc = np.int32(w[scales_at + k // 2])
        s0 = np.int32(0)
        s1 = np.int32(0)
        for j in range(16):
            s0 = np.int32(s0 + decoded[16 * k + j] * qs[x + 16 * k + j])
            s1 = np.int32(s1 + decoded[16 * k + 16 + j] * qs[x + 16 * k + 16 + j])
        total = np.int32(total + (2 * (sc & 15) + 1) * s0 + (2 * (sc >> 4) + 1) * s1)
    return total
