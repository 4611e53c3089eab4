"""Q8_K: the activation format of every K-quant and i-quant (ggml-common.h block_q8_K).

ggml's block is 256 int8 quants, an f32 scale and int16 sums of each 16 quants.
Activations are held as three arrays rather than interleaved bytes, same values:
    qs    int8 [n_tokens, n_in]          the quants
    d     f32  [n_tokens, n_in // 256]   scales (f32, never rounded to f16)
    sums  f32  [n_tokens, n_in // 16]    ggml's bsums: the sum of each 16 quants,
                                         exact in f32 (|sum| <= 16 * 127)
The weight kernels use sums for their min/offset terms, as ggml does.
"""
import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit, prange

from .common import round_even

QTYPE = T.Q8_K
BLOCK_SIZE = 256
BLOCK_DTYPE = np.dtype([("d", "<f4"), ("qs", "i1", (256,)), ("bsums", "<i2", (16,))])
VEC_DOT_TYPE = T.Q8_K


@njit(cache=True, nogil=True, inline="always")
def _signed_absmax(x, t, start):
    """The element of largest |x| in x[t, start:start+256], first one on ties.

    ggml keeps the sign: its scale is -127/max, so the largest-|x| element
    maps to -127 whichever sign it has (quantize_row_q8_K_ref)."""
    amax = np.float32(0.0)
    vmax = np.float32(0.0)
    for j in range(start, start + 256):
        ax = abs(x[t, j])
        if ax > amax:
            amax = ax
            vmax = x[t, j]
    return vmax


@njit(cache=True, nogil=True)
def quantize_rows(x, qs, d, sums):
    """As ggml-quants.c quantize_row_q8_K_ref, which x86's quantize_row_q8_K calls
    (ggml-cpu/arch/x86/quants.c), so this is what llama.cpp computes on x86.

    iscale = -127/max in f32; q = nearest_int(iscale * x), whose magic-number
    add rounds half to even, i.e. rint; clamped to 127 above only (q >= -127
    since |x| <= |max|); d = 1/iscale in f32; an all-zero block gets d = 0."""
    for t in range(x.shape[0]):
        for b in range(x.shape[1] // 256):
            start = b * 256
            vmax = _signed_absmax(x, t, start)
            if vmax == 0:
                d[t, b] = 0.0
                qs[t, start:start + 256] = 0
                sums[t, b * 16:b * 16 + 16] = 0.0
                continue
            iscale = np.float32(-127.0) / vmax
            for g in range(16):
                group_sum = np.int32(0)
                for j in range(start + g * 16, start + g * 16 + 16):
                    q = min(np.int32(127), np.int32(round_even(iscale * x[t, j])))
                    qs[t, j] = q
                    group_sum += q
                sums[t, b * 16 + g] = np.float32(group_sum)
            d[t, b] = np.float32(1.0) / iscale


def empty(n_tokens, n_in):
    """Arrays for quantize's result (a caller's buffer reused per token)."""
    if n_in % 256:
        raise ValueError(f"Q8_K: row length {n_in} is not a multiple of 256")
    return (np.empty((n_tokens, n_in), np.int8), np.empty((n_tokens, n_in // 256), np.float32),
            np.empty((n_tokens, n_in // 16), np.float32))


def quantize(x, out=None):
    qs, d, sums = out if out is not None else empty(*x.shape)
    quantize_rows(np.ascontiguousarray(x, np.float32), qs, d, sums)
    return qs, d, sums


def dequantize(qs, d, sums):
    """As ggml-quants.c dequantize_row_q8_K: d * q in f32."""
    n_tokens, n_in = qs.shape
    return (qs.reshape(n_tokens, -1, 256).astype(np.float32) * d[:, :, None]).reshape(n_tokens, n_in)


@njit(cache=True, nogil=True, parallel=True)
def _rounded_rows(x, out):
    """dequantize(quantize(x)) in one pass, tokens across threads: quantize_rows' q
    and d = 1/iscale, their product in f32."""
    for t in prange(x.shape[0]):
        for b in range(x.shape[1] // 256):
            start = b * 256
            vmax = _signed_absmax(x, t, start)
            iscale = np.float32(-127.0) / vmax if vmax != 0 else np.float32(0.0)
            d = np.float32(1.0) / iscale if vmax != 0 else np.float32(0.0)
            for j in range(start, start + 256):
                q = min(np.int32(127), np.int32(round_even(iscale * x[t, j])))
                out[t, j] = np.float32(q) * d


def rounded(x):
    """x f32 [n_tokens, n_in] as this format holds it: dequantize(*quantize(x))."""
    if x.shape[1] % 256:
        raise ValueError(f"Q8_K: row length {x.shape[1]} is not a multiple of 256")
    out = np.empty(x.shape, np.float32)
    _rounded_rows(x, out)
    return out


def to_blocks(qs, d, sums):
    """One token's (qs, d, sums) as ggml's interleaved block_q8_K records."""
    blocks = np.empty(d.shape[0], BLOCK_DTYPE)
    blocks["d"] = d
    blocks["qs"] = qs.reshape(-1, 256)
    blocks["bsums"] = sums.reshape(-1, 16).astype(np.int16)
    return blocks
