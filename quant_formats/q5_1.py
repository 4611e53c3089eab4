"""Q5_1: 32 weights as 5-bit quants q with an f16 scale d and offset m: d*q + m
(ggml-common.h block_q5_1); bits packed as in Q5_0.
quantize_blocks: ggml's quantize_row_q5_1_ref without an imatrix; with one,
quantize_row_q5_1_impl (make_qkx3_quants weighted by imatrix * sqrt(sigma2 + x^2))."""
import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit, prange

from .common import f16_at, u32_at
from .legacy_quantize import offset_row
from .q5_0 import five_bit_quants
from .quantize_common import run_row_kernel

QTYPE = T.Q5_1
BLOCK_SIZE = 32
BLOCK_DTYPE = np.dtype([("d", "<f2"), ("m", "<f2"), ("qh", "<u4"), ("qs", "u1", (16,))])
VEC_DOT_TYPE = T.Q8_1
_TYPE_SIZE = BLOCK_DTYPE.itemsize


def dequantize_reference(blocks):
    q = five_bit_quants(blocks).astype(np.float32)
    return blocks["d"].astype(np.float32)[:, None] * q + blocks["m"].astype(np.float32)[:, None]


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    for r in range(w.shape[0]):
        row = w[r]
        for b in range(w.shape[1] // _TYPE_SIZE):
            o = b * _TYPE_SIZE
            d, m, qh = f16_at(row, o), f16_at(row, o + 2), u32_at(row, o + 4)
            for j in range(16):
                q = np.int32(row[o + 8 + j])
                lo = (q & 15) | np.int32(((qh >> j) & 1) << 4)
                hi = (q >> 4) | np.int32(((qh >> (j + 16)) & 1) << 4)
                out[r, b * 32 + j] = d * np.float32(lo) + m
                out[r, b * 32 + j + 16] = d * np.float32(hi) + m


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    """ggml-cpu/quants.c ggml_vec_dot_q5_1_q8_1: d*d8*sum(q*q8) + m*s8."""
    acc = np.float32(0.0)
    for b in range(d.shape[0]):
        o = b * _TYPE_SIZE
        qh = u32_at(w, o + 4)
        s = np.int32(0)
        for j in range(16):
            q = np.int32(w[o + 8 + j])
            lo = (q & 15) | np.int32(((qh >> j) & 1) << 4)
            hi = (q >> 4) | np.int32(((qh >> (j + 16)) & 1) << 4)
            s = np.int32(s + lo * np.int32(qs[b * 32 + j]) + hi * np.int32(qs[b * 32 + j + 16]))
        acc += f16_at(w, o) * d[b] * np.float32(s) + f16_at(w, o + 2) * sums[b]
    return acc


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    for r in prange(w.shape[0]):
        for t in range(qs.shape[0]):
            out[t, r] = vec_dot(w[r], qs[t], d[t], sums[t])


def block_offsets(w):
    """The offset m of every block, f32 [rows, n_blocks] (for the prefill path)."""
    return w.view(BLOCK_DTYPE)["m"].astype(np.float32)


# --- weight quantizer ------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _quantize_rows(x, imatrix, out):
    # ggml-quants.c quantize_row_q5_1_ref / _impl: nmax 31, q unclamped
    # (clamp 255), qh @4, qs @8
    for r in prange(x.shape[0]):
        offset_row(x[r], imatrix, out[r], 31, 255, _TYPE_SIZE, 4, 8)


def quantize_blocks(x, imatrix):
    return run_row_kernel(_quantize_rows, x, imatrix, BLOCK_SIZE, _TYPE_SIZE)
