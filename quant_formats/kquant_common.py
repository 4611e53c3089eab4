"""Numba helpers shared by the K-quant formats (256-weight super-blocks).

Notes on the vec_dot loop shapes, measured on AVX2 (Zen 3), 2 threads, decode
of a 16384 x 4096 matrix; LLVM's vectorizer is sensitive to them:
  * Numba types int32 op int32 as int64; sums written s = np.int32(s + a * b)
    let LLVM narrow back to 32 bits and emit pmaddwd (Q4_K: 6.1 -> 9.5 GB/s).
  * uint8 >> k on bytes vectorizes badly; q & 0xF0 with the sum shifted after
    is exact and fast (Q4_K, Q5_K, Q6_K, Q2_K). Q3_K is the exception: there
    bytes widened to int32 first and shifted per element measured fastest.
  * min/offset terms from the activation's bsums in int32 (exact) beat f32.
  * A 16-iteration loop with few sums may be fully unrolled to scalar code
    (Q2_K: 1.3 GB/s); giving it more independent sums kept it vectorized.
"""
import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def scale_min_k4(w, o, j):
    """Sub-block j's 6-bit (scale, min) from the 12 packed bytes at w[o:o+12].

    Q4_K and Q5_K (ggml-quants.c get_scale_min_k4): for j < 4 the low six bits
    of bytes j and j+4; for j >= 4 a nibble of byte j+4 plus the top two bits
    of bytes j-4 (scale) and j (min)."""
    if j < 4:
        return np.int32(w[o + j] & 63), np.int32(w[o + j + 4] & 63)
    hi = np.int32(w[o + j + 4])
    return (np.int32(hi & 15) | (np.int32(w[o + j - 4] >> 6) << 4),
            np.int32(hi >> 4) | (np.int32(w[o + j] >> 6) << 4))


@njit(cache=True, nogil=True, inline="always")
def q3_k_scale(w, o, j):
    """Sub-block j's signed scale (6-bit, minus 32) from Q3_K's 12 bytes at w[o:o+12].

    As the kmask1/kmask2 shuffle in ggml-quants.c dequantize_row_q3_K: the low
    nibble is byte j % 8 (high nibble for j >= 8), the top two bits come from
    byte 8 + j % 4 at bit 2 * (j // 4)."""
    low = (np.int32(w[o + (j & 7)]) >> (4 * (j >> 3))) & 15
    high = (np.int32(w[o + 8 + (j & 3)]) >> (2 * (j >> 2))) & 3
    return (low | (high << 4)) - 32


def scale_min_k4_reference(scales):
    """numpy: uint8 [n, 12] -> (scales, mins) uint8 [n, 8], same rule as scale_min_k4."""
    lo, mid, hi = scales[:, 0:4], scales[:, 4:8], scales[:, 8:12]
    sc = np.concatenate([lo & 63, (hi & 15) | ((lo >> 6) << 4)], axis=1)
    mn = np.concatenate([mid & 63, (hi >> 4) | ((mid >> 6) << 4)], axis=1)
    return sc, mn
