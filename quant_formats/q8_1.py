"""Q8_1: the activation format of Q4_1 and Q5_1 (ggml-common.h block_q8_1):
32 int8 quants, an f16 scale d, and s = d * sum(quants) for the offset term.

Quants and d as ggml-cpu's AVX2 quantize_row_q8_1 (arch/x86/quants.c): id =
127/amax, round half to even, d stored as f16. ggml stores s = f16(d_f32 * sum);
we keep s = d_f16 * sum in float32, which makes the integer kernel and the float
(prefill) path agree exactly; it differs from ggml's s by its f16 rounding
(relative 2^-11 of the offset term).
"""
import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit

from .q8_0 import quantize_rows as _quantize_q8_0_rows

QTYPE = T.Q8_1
BLOCK_SIZE = 32


@njit(cache=True, nogil=True)
def _block_sums(qs, d, s):
    for t in range(qs.shape[0]):
        for b in range(d.shape[1]):
            total = 0
            for j in range(32):
                total += np.int32(qs[t, b * 32 + j])
            s[t, b] = d[t, b] * np.float32(total)


def quantize(x):
    n_tokens, n_in = x.shape
    qs = np.empty((n_tokens, n_in), np.int8)
    d = np.empty((n_tokens, n_in // 32), np.float32)
    s = np.empty((n_tokens, n_in // 32), np.float32)
    _quantize_q8_0_rows(x, qs, d)
    _block_sums(qs, d, s)
    return qs, d, s


def dequantize(qs, d, sums):
    n_tokens, n_in = qs.shape
    return (qs.reshape(n_tokens, -1, 32) * d[:, :, None]).reshape(n_tokens, n_in).astype(np.float32)
