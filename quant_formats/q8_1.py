"""Q8_1: the activation format of Q4_1 and Q5_1 (ggml-common.h block_q8_1):
32 int8 quants, an f16 scale d, and s = d * sum(quants) for the offset term.

As ggml-cpu's AVX2 quantize_row_q8_1 (arch/x86/quants.c): id = 127/amax, round
half to even, d stored as f16, and s = f16(amax/127 * sum), from the unrounded
scale. The float (prefill) path uses d * quants only, so its offset term differs
from the integer kernel's by s's f16 rounding (relative 2^-11).
"""
import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit

from .common import f16_round
from .q8_0 import block_amax, quantize_rows as _quantize_q8_0_rows

QTYPE = T.Q8_1
BLOCK_SIZE = 32


@njit(cache=True, nogil=True)
def block_sums(x, qs, s):
    for t in range(qs.shape[0]):
        row = x[t]
        for b in range(s.shape[1]):
            total = np.int32(0)
            for j in range(32):
                total += np.int32(qs[t, b * 32 + j])
            amax = block_amax(row, b)
            s[t, b] = f16_round(amax / np.float32(127.0) * np.float32(total))


def empty(n_tokens, n_in):
    """Arrays for quantize's result (a caller's buffer reused per token)."""
    return (np.empty((n_tokens, n_in), np.int8), np.empty((n_tokens, n_in // 32), np.float32),
            np.empty((n_tokens, n_in // 32), np.float32))


def quantize(x, out=None):
    qs, d, s = out if out is not None else empty(*x.shape)
    _quantize_q8_0_rows(x, qs, d)
    block_sums(x, qs, s)
    return qs, d, s


def offset_residual(qs, d, s):
    """s - d * sum(quants) per block: what the integer kernels' offset term adds
    beyond the float product of the dequantized activations."""
    n_tokens = qs.shape[0]
    block_sums = qs.reshape(n_tokens, -1, 32).sum(axis=2, dtype=np.int32)
    return (s - d * block_sums.astype(np.float32)).astype(np.float32)


def dequantize(qs, d, sums):
    n_tokens, n_in = qs.shape
    return (qs.reshape(n_tokens, -1, 32) * d[:, :, None]).reshape(n_tokens, n_in).astype(np.float32)
