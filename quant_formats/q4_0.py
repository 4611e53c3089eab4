"""Q4_0: 32 weights as 4-bit quants minus 8, one f16 scale (ggml-common.h block_q4_0).

Byte j of qs holds weight j in its low nibble and weight j + 16 in its high nibble.
quantize_blocks: ggml's quantize_row_q4_0_ref without an imatrix; with one,
quantize_row_q4_0_impl (make_qx_quants weighted by imatrix * sqrt(sigma2 + x^2)).
"""
import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit, prange

from . import interleave_nibbles
from .common import (ROWS_PER_TASK, f16_at, nibble_products,
                     spread_activations)
from .legacy_quantize import symmetric_row
from .quantize_common import run_row_kernel

QTYPE = T.Q4_0
BLOCK_SIZE = 32
BLOCK_DTYPE = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
VEC_DOT_TYPE = T.Q8_0
_TYPE_SIZE = BLOCK_DTYPE.itemsize


def dequantize_reference(blocks):
    qs = blocks["qs"]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - np.int8(8)
    return blocks["d"].astype(np.float32)[:, None] * q.astype(np.float32)


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    for r in range(w.shape[0]):
        row = w[r]
        for b in range(w.shape[1] // _TYPE_SIZE):
            o = b * _TYPE_SIZE
            d = f16_at(row, o)
            for j in range(16):
                q = row[o + 2 + j]
                out[r, b * 32 + j] = d * np.float32(np.int32(q & 15) - 8)
                out[r, b * 32 + j + 16] = d * np.float32(np.int32(q >> 4) - 8)


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    """sum((q - 8) * y) as sum(q * y) - 8 * sum(y), loop shaped as q4_k.vec_dot
    (int32-truncated sums, high nibble by mask, shifted once per block)."""
    acc = np.float32(0.0)
    for b in range(d.shape[0]):
        o = b * _TYPE_SIZE
        s_lo = np.int32(0)
        s_hi16 = np.int32(0)
        s_y = np.int32(0)
        for j in range(16):
            q = w[o + 2 + j]
            y_lo = qs[b * 32 + j]
            y_hi = qs[b * 32 + j + 16]
            s_lo = np.int32(s_lo + (q & 0x0F) * y_lo)
            s_hi16 = np.int32(s_hi16 + (q & 0xF0) * y_hi)
            s_y = np.int32(s_y + y_lo + y_hi)
        s = s_lo + (s_hi16 >> 4) - 8 * s_y
        acc += f16_at(w, o) * d[b] * np.float32(s)
    return acc


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    """vec_dot's sums, row-flat (see common.ROWS_PER_TASK); the -8 offset as
    8 * sum(y) per block."""
    row_bytes = w.shape[1]
    x_lo = spread_activations(qs, row_bytes, _TYPE_SIZE, 2, 0, 16)
    x_hi = spread_activations(qs, row_bytes, _TYPE_SIZE, 2, 16, 16)
    n_blocks = row_bytes // _TYPE_SIZE
    y_sums = qs.reshape(qs.shape[0], n_blocks, 32).astype(np.int32).sum(axis=2)
    for task in prange((w.shape[0] + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        prod = np.empty(row_bytes, np.int16)
        for r in range(task * ROWS_PER_TASK, min((task + 1) * ROWS_PER_TASK, w.shape[0])):
            row = w[r]
            for t in range(qs.shape[0]):
                nibble_products(row, x_lo[t], x_hi[t], prod)
                acc = np.float32(0.0)
                for b in range(n_blocks):
                    o = b * _TYPE_SIZE
                    s = np.int32(0)
                    for k in range(16):
                        s = np.int32(s + prod[o + 2 + k])
                    acc += f16_at(row, o) * d[t, b] * np.float32(s - 8 * y_sums[t, b])
                out[t, r] = acc



# --- decode layout (interleave_nibbles.py) ----------------------------------

def pack(w):
    return interleave_nibbles.pack_nibbles(w, _TYPE_SIZE, m_at=None, qs_at=2, offset=8)


packed_matmul = interleave_nibbles.nibble_matmul
INT8_PREFILL = True  # batches too, where the CPU has VNNI (quant_formats.matmul_packed)
packed_dequantize = interleave_nibbles.nibble_dequantize


# --- weight quantizer ------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _quantize_rows(x, imatrix, out):
    # ggml-quants.c quantize_row_q4_0_ref / _impl: nmax 8, no qh, qs @2
    for r in prange(x.shape[0]):
        symmetric_row(x[r], imatrix, out[r], 8, _TYPE_SIZE, -1, 2)


def quantize_blocks(x, imatrix):
    return run_row_kernel(_quantize_rows, x, imatrix, BLOCK_SIZE, _TYPE_SIZE)
