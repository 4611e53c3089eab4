"""Q4_1: 32 weights as 4-bit quants q with an f16 scale d and offset m: d*q + m
(ggml-common.h block_q4_1). Byte j of qs holds weight j (low nibble) and j + 16.
quantize_blocks: ggml's quantize_row_q4_1_ref without an imatrix; with one,
quantize_row_q4_1_impl (make_qkx3_quants weighted by imatrix * sqrt(sigma2 + x^2))."""
import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit, prange

from . import interleave_nibbles
from .common import (ROWS_PER_TASK, f16_at, nibble_products,
                     spread_activations)
from .legacy_quantize import offset_row
from .quantize_common import run_row_kernel

QTYPE = T.Q4_1
BLOCK_SIZE = 32
BLOCK_DTYPE = np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", (16,))])
VEC_DOT_TYPE = T.Q8_1
_TYPE_SIZE = BLOCK_DTYPE.itemsize


def dequantize_reference(blocks):
    qs = blocks["qs"]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)
    return blocks["d"].astype(np.float32)[:, None] * q + blocks["m"].astype(np.float32)[:, None]


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    for r in range(w.shape[0]):
        row = w[r]
        for b in range(w.shape[1] // _TYPE_SIZE):
            o = b * _TYPE_SIZE
            d, m = f16_at(row, o), f16_at(row, o + 2)
            for j in range(16):
                q = row[o + 4 + j]
                out[r, b * 32 + j] = d * np.float32(q & 15) + m
                out[r, b * 32 + j + 16] = d * np.float32(q >> 4) + m


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    """ggml-cpu/quants.c ggml_vec_dot_q4_1_q8_1: d*d8*sum(q*q8) + m*s8. Loop shaped
    as q4_k.vec_dot: int32-truncated sums, high nibble by mask, shifted once."""
    acc = np.float32(0.0)
    for b in range(d.shape[0]):
        o = b * _TYPE_SIZE
        s_lo = np.int32(0)
        s_hi16 = np.int32(0)
        for j in range(16):
            q = w[o + 4 + j]
            s_lo = np.int32(s_lo + (q & 0x0F) * qs[b * 32 + j])
            s_hi16 = np.int32(s_hi16 + (q & 0xF0) * qs[b * 32 + j + 16])
        s = s_lo + (s_hi16 >> 4)
        acc += f16_at(w, o) * d[b] * np.float32(s) + f16_at(w, o + 2) * sums[b]
    return acc


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    """vec_dot's sums, row-flat (see common.ROWS_PER_TASK): int16 products of both
    nibbles (the high one masked, shifted after: exact) in one pass per row."""
    row_bytes = w.shape[1]
    x_lo = spread_activations(qs, row_bytes, _TYPE_SIZE, 4, 0, 16)
    x_hi = spread_activations(qs, row_bytes, _TYPE_SIZE, 4, 16, 16)
    for task in prange((w.shape[0] + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        prod = np.empty(row_bytes, np.int16)
        for r in range(task * ROWS_PER_TASK, min((task + 1) * ROWS_PER_TASK, w.shape[0])):
            row = w[r]
            for t in range(qs.shape[0]):
                nibble_products(row, x_lo[t], x_hi[t], prod)
                acc = np.float32(0.0)
                for b in range(row_bytes // _TYPE_SIZE):
                    o = b * _TYPE_SIZE
                    s = np.int32(0)
                    for k in range(16):
                        s = np.int32(s + prod[o + 4 + k])
                    acc += f16_at(row, o) * d[t, b] * np.float32(s) + f16_at(row, o + 2) * sums[t, b]
                out[t, r] = acc


def block_offsets(w):
    """The offset m of every block, f32 [rows, n_blocks] (for the prefill path)."""
    return w.view(BLOCK_DTYPE)["m"].astype(np.float32)


# --- decode layout (interleave_nibbles.py) ----------------------------------

def pack(w):
    return interleave_nibbles.pack_nibbles(w, _TYPE_SIZE, m_at=2, qs_at=4, offset=0)


packed_matmul = interleave_nibbles.nibble_matmul
INT8_PREFILL = True  # batches too, where the CPU has VNNI (quant_formats.matmul_packed)
packed_dequantize = interleave_nibbles.nibble_dequantize
packed_block_offsets = interleave_nibbles.nibble_block_offsets


# --- weight quantizer ------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _quantize_rows(x, imatrix, out):
    # ggml-quants.c quantize_row_q4_1_ref / _impl: nmax 15, clamp 15, no qh, qs @4
    for r in prange(x.shape[0]):
        offset_row(x[r], imatrix, out[r], 15, 15, _TYPE_SIZE, -1, 4)


def quantize_blocks(x, imatrix):
    return run_row_kernel(_quantize_rows, x, imatrix, BLOCK_SIZE, _TYPE_SIZE)
