"""Q6_K: 256 weights in 16 sub-blocks of 16, w = d * sc * (q - 32), q in 0..63
(ggml-common.h block_q6_K).

Block bytes: ql[128] low nibbles @0, qh[64] two high bits each @128, int8
scales[16] @192, d f16 @208. Each half h of the block (128 weights) uses
ql[64h:64h+64] and qh[32h:32h+32]; for l < 32 its weights l, l+32, l+64, l+96
are (low nibble of ql[l], of ql[l+32], high nibble of ql[l], of ql[l+32]) with
bits (0-1, 2-3, 4-5, 6-7) of qh[l] on top; weight i has scale i // 16.

Quantizing (quantize_blocks) is ggml's quantize_row_q6_K_ref / _impl: one signed
scale per sub-block from make_qx_quants (weights x^2, or the imatrix as is),
rounded to int8 against the largest; then every level again from the stored scales.
"""
import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit, prange

from . import interleave, interleave_k
from .common import as_int8, f16_at
from .kquant_quantize import (GROUP_MAX_EPS, make_qx_quants, nearest_int, requantize,
                              requantize_scratch, search_scratch, store_f16)
from .quantize_common import run_row_kernel

QTYPE = T.Q6_K
BLOCK_SIZE = 256
BLOCK_DTYPE = np.dtype([("ql", "u1", (128,)), ("qh", "u1", (64,)), ("scales", "i1", (16,)),
                        ("d", "<f2")])
VEC_DOT_TYPE = T.Q8_K
_TYPE_SIZE = BLOCK_DTYPE.itemsize  # 210


def signed_quants(blocks):
    """numpy: every block's 256 weights as the int8 q - 32, in weight order [n, 256]."""
    n = len(blocks)
    ql = blocks["ql"].reshape(n, 2, 1, 64)
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=2).reshape(n, 8, 32)
    qh = blocks["qh"].reshape(n, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8)[None, None, :, None]
    q = (low | ((qh.reshape(n, 8, 32) & 3) << 4)).astype(np.int8) - np.int8(32)
    return q.reshape(n, 256)


def dequantize_reference(blocks):
    """Float order as gguf-py Q6_K and ggml dequantize_row_q6_K: (d*sc)*(q-32)."""
    n = len(blocks)
    dl = blocks["d"].astype(np.float32)[:, None] * blocks["scales"].astype(np.float32)
    q = signed_quants(blocks).reshape(n, 16, 16)
    return (dl[:, :, None] * q.astype(np.float32)).reshape(n, 256)


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    for r in range(w.shape[0]):
        row = w[r]
        for b in range(w.shape[1] // _TYPE_SIZE):
            o = b * _TYPE_SIZE
            d = f16_at(row, o + 208)
            for h in range(2):
                ql = o + 64 * h
                qh = o + 128 + 32 * h
                dst = b * 256 + 128 * h
                for k in range(2):  # 16-weight sub-blocks 8h + k + {0, 2, 4, 6}
                    sc = o + 192 + 8 * h + k
                    d1 = d * np.float32(as_int8(row[sc]))  # d * scale first, as ggml
                    d2 = d * np.float32(as_int8(row[sc + 2]))
                    d3 = d * np.float32(as_int8(row[sc + 4]))
                    d4 = d * np.float32(as_int8(row[sc + 6]))
                    for l in range(16 * k, 16 * k + 16):
                        lo = np.int32(row[ql + l])
                        hi = np.int32(row[ql + 32 + l])
                        top = np.int32(row[qh + l])
                        out[r, dst + l] = d1 * np.float32(((lo & 15) | ((top & 3) << 4)) - 32)
                        out[r, dst + 32 + l] = d2 * np.float32(((hi & 15) | ((top & 12) << 2)) - 32)
                        out[r, dst + 64 + l] = d3 * np.float32(((lo >> 4) | (top & 48)) - 32)
                        out[r, dst + 96 + l] = d4 * np.float32(((hi >> 4) | ((top & 192) >> 2)) - 32)


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    """As ggml-cpu/quants.c ggml_vec_dot_q6_K_q8_K_generic.

    The -32 offset is taken out of the loop as ggml's AVX2 path does:
    sum((q - 32) * y) = sum(q * y) - 32 * bsum, bsum from the activation.
    Loop shape measured fastest (see q4_k.vec_dot): int32-truncated sums, bit
    fields taken by mask in place (no byte shifts), and nibble and top-bit
    products kept in separate sums, shifted into place once per sub-block."""
    acc = np.float32(0.0)
    for b in range(d.shape[0]):
        o = b * _TYPE_SIZE
        isum = np.int32(0)
        offset = np.int32(0)  # bsums are small integers held in f32: exact
        for h in range(2):
            src = o + 64 * h
            top = o + 128 + 32 * h
            dst = b * 256 + 128 * h
            for k in range(2):  # the two 16-weight sub-blocks of each 32-run
                n1 = n2 = n3 = n4 = t1 = t2 = t3 = t4 = np.int32(0)
                for l in range(16 * k, 16 * k + 16):
                    lo = w[src + l]
                    hi = w[src + 32 + l]
                    t = w[top + l]
                    n1 = np.int32(n1 + (lo & 0x0F) * qs[dst + l])
                    t1 = np.int32(t1 + (t & 0x03) * qs[dst + l])
                    n2 = np.int32(n2 + (hi & 0x0F) * qs[dst + 32 + l])
                    t2 = np.int32(t2 + (t & 0x0C) * qs[dst + 32 + l])
                    n3 = np.int32(n3 + (lo & 0xF0) * qs[dst + 64 + l])
                    t3 = np.int32(t3 + (t & 0x30) * qs[dst + 64 + l])
                    n4 = np.int32(n4 + (hi & 0xF0) * qs[dst + 96 + l])
                    t4 = np.int32(t4 + (t & 0xC0) * qs[dst + 96 + l])
                sc = o + 192 + 8 * h + k
                sc1, sc2 = as_int8(w[sc]), as_int8(w[sc + 2])
                sc3, sc4 = as_int8(w[sc + 4]), as_int8(w[sc + 6])
                # q = nibble | top << 4; each masked sum is off by its mask's shift
                isum = np.int32(isum + sc1 * (n1 + (t1 << 4)) + sc2 * (n2 + (t2 << 2))
                                + sc3 * ((n3 >> 4) + t3) + sc4 * ((n4 >> 4) + (t4 >> 2)))
                g = b * 16 + 8 * h + k
                offset = np.int32(offset + sc1 * np.int32(sums[g]) + sc2 * np.int32(sums[g + 2])
                                  + sc3 * np.int32(sums[g + 4]) + sc4 * np.int32(sums[g + 6]))
        acc += d[b] * f16_at(w, o + 208) * np.float32(isum - 32 * offset)
    return acc


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    for r in prange(w.shape[0]):
        for t in range(qs.shape[0]):
            out[t, r] = vec_dot(w[r], qs[t], d[t], sums[t])


# --- decode layout (interleave.py, interleave_k.py) ---------------------------

def pack(w):
    """(d f32, scales int8 [groups, blocks, 16, ROWS], weights as q - 32
    in interleave.pack_quads(..., 256)): 276 bytes per block for the file's 210."""
    values = signed_quants(w.reshape(-1).view(BLOCK_DTYPE))
    return (interleave.pack_f16(w, _TYPE_SIZE, 208),
            interleave.pack_bytes(w, _TYPE_SIZE, 192, 16).view(np.int8),
            interleave.pack_quads(values.reshape(w.shape[0], -1), 256))


packed_matmul = interleave_k.int8_subblocks_matmul
INT8_PREFILL = True  # batches too, where the CPU has VNNI (quant_formats.matmul_packed)
packed_dequantize = interleave_k.int8_subblocks_dequantize


def quantize_blocks(x, imatrix):
    """f32 [rows, n] -> uint8 [rows, n // 256 * 210], as ggml_quantize_chunk(Q6_K)."""
    # ggml's _ref path weights by x^2; an empty imatrix selects it
    return run_row_kernel(_quantize_rows, x, imatrix, BLOCK_SIZE, _TYPE_SIZE)


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _quantize_rows(x, imatrix, out):
    for r in prange(x.shape[0]):
        L = np.empty(256, np.uint8)
        weights = np.empty(16, np.float32)
        scales = np.empty(16, np.float32)
        trials = search_scratch()
        fin = requantize_scratch(16)
        for b in range(x.shape[1] // 256):
            qw = imatrix[256 * b:256 * b + 256] if imatrix.size else imatrix
            _quantize_block(x[r, 256 * b:256 * b + 256], qw, out[r], b * _TYPE_SIZE,
                            L, weights, scales, trials, fin)


@njit(cache=True, nogil=True, error_model="numpy")
def _quantize_block(x, qw, out, o, L, weights, scales, trials, fin):
    max_scale = np.float32(0.0)
    max_abs_scale = np.float32(0.0)
    for ib in range(16):
        xs = x[16 * ib:16 * ib + 16]
        for l in range(16):
            weights[l] = qw[16 * ib + l] if qw.size else xs[l] * xs[l]
        scales[ib] = make_qx_quants(xs, weights, 32, L[16 * ib:16 * ib + 16], trials)
        if abs(scales[ib]) > max_abs_scale:
            max_abs_scale = abs(scales[ib])
            max_scale = scales[ib]
    if max_abs_scale < GROUP_MAX_EPS:
        out[o:o + _TYPE_SIZE] = 0
        return
    iscale = np.float32(-128.0) / max_scale
    d = store_f16(out, o + 208, np.float32(1.0) / iscale)
    for ib in range(16):
        out[o + 192 + ib] = min(127, nearest_int(iscale * scales[ib])) & 0xFF  # int8 store
    dl, zeros, tmp = fin
    for ib in range(16):
        dl[ib] = d * np.float32(as_int8(out[o + 192 + ib]))
    requantize(x, dl, zeros, 16, -32, 31, 32, L, tmp)
    _pack_levels(L, out, o)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _pack_levels(L, out, o):
    for h in range(2):
        for l in range(32):
            j = 128 * h + l
            out[o + 64 * h + l] = (L[j] & 15) | ((L[j + 64] & 15) << 4)
            out[o + 64 * h + 32 + l] = (L[j + 32] & 15) | ((L[j + 96] & 15) << 4)
            out[o + 128 + 32 * h + l] = ((L[j] >> 4) | ((L[j + 32] >> 4) << 2)
                                         | ((L[j + 64] >> 4) << 4) | ((L[j + 96] >> 4) << 6))
