"""Q5_0: 32 weights as 5-bit quants minus 16, one f16 scale (ggml-common.h block_q5_0).

The low 4 bits are packed as in Q4_0 (byte j: weight j low nibble, j + 16 high);
bit j of the little-endian uint32 qh is the fifth bit of weight j.
quantize_blocks: ggml's quantize_row_q5_0_ref without an imatrix; with one,
quantize_row_q5_0_impl (make_qx_quants weighted by imatrix * sqrt(sigma2 + x^2))."""
import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit, prange

from . import interleave_nibbles
from .common import f16_at, u32_at
from .legacy_quantize import symmetric_row
from .quantize_common import run_row_kernel

QTYPE = T.Q5_0
BLOCK_SIZE = 32
BLOCK_DTYPE = np.dtype([("d", "<f2"), ("qh", "<u4"), ("qs", "u1", (16,))])
VEC_DOT_TYPE = T.Q8_0
_TYPE_SIZE = BLOCK_DTYPE.itemsize


def five_bit_quants(blocks):
    """Plain numpy: the 32 unsigned 5-bit quants of each block (Q5_0 and Q5_1)."""
    qs = blocks["qs"]
    low = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.uint32)
    high = (blocks["qh"][:, None] >> np.arange(32, dtype=np.uint32)) & 1
    return low | (high << 4)


def dequantize_reference(blocks):
    q = five_bit_quants(blocks).astype(np.int32) - 16
    return blocks["d"].astype(np.float32)[:, None] * q.astype(np.float32)


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    for r in range(w.shape[0]):
        row = w[r]
        for b in range(w.shape[1] // _TYPE_SIZE):
            o = b * _TYPE_SIZE
            d, qh = f16_at(row, o), u32_at(row, o + 2)
            for j in range(16):
                q = np.int32(row[o + 6 + j])
                lo = (q & 15) | np.int32(((qh >> j) & 1) << 4)
                hi = (q >> 4) | np.int32(((qh >> (j + 16)) & 1) << 4)
                out[r, b * 32 + j] = d * np.float32(lo - 16)
                out[r, b * 32 + j + 16] = d * np.float32(hi - 16)


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    acc = np.float32(0.0)
    for b in range(d.shape[0]):
        o = b * _TYPE_SIZE
        qh = u32_at(w, o + 2)
        s = np.int32(0)
        for j in range(16):
            q = np.int32(w[o + 6 + j])
            lo = (q & 15) | np.int32(((qh >> j) & 1) << 4)
            hi = (q >> 4) | np.int32(((qh >> (j + 16)) & 1) << 4)
            s = np.int32(s + (lo - 16) * np.int32(qs[b * 32 + j])
                         + (hi - 16) * np.int32(qs[b * 32 + j + 16]))
        acc += f16_at(w, o) * d[b] * np.float32(s)
    return acc


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    for r in prange(w.shape[0]):
        for t in range(qs.shape[0]):
            out[t, r] = vec_dot(w[r], qs[t], d[t], sums[t])


# --- decode layout (interleave_nibbles.py) ----------------------------------

def pack(w):
    """Q4_0's decode layout with a fifth quad row of the high bits (interleave_nibbles.
    pack_five_bits): 22 bytes a block, as the file. The Q8_0 layout of int8 q - 16 it
    replaces read 34: SmolLM2 Q4_K_M's layers are mostly Q5_0."""
    return interleave_nibbles.pack_five_bits(w, _TYPE_SIZE, qh_at=2, qs_at=6)


packed_matmul = interleave_nibbles.nibble_matmul
INT8_PREFILL = True  # batches too, where the CPU has VNNI (quant_formats.matmul_packed)
packed_dequantize = interleave_nibbles.nibble_dequantize


# --- weight quantizer ------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _quantize_rows(x, imatrix, out):
    # ggml-quants.c quantize_row_q5_0_ref / _impl: nmax 16, qh @2, qs @6
    for r in prange(x.shape[0]):
        symmetric_row(x[r], imatrix, out[r], 16, _TYPE_SIZE, 2, 6)


def quantize_blocks(x, imatrix):
    return run_row_kernel(_quantize_rows, x, imatrix, BLOCK_SIZE, _TYPE_SIZE)
