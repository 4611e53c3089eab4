"""Q3_K: 256 weights in 16 sub-blocks of 16, w = d * (sc - 32) * q, q in -4..3
(ggml-common.h block_q3_K).

Block bytes: hmask[32] @0, qs[64] @32, 12 bytes of packed 6-bit scales @96
(kquant_common.q3_k_scale), d f16 @108. Each half n of the block (128 weights)
uses qs[32n:32n+32]: weight 128n + 32j + l has low bits 2j..2j+1 of
qs[32n + l] and high bit 4n + j of hmask[l]; q = low - 4 when that bit is
clear, low when set. Sub-block of that weight: 8n + 2j + (l >= 16).

Quantizing (quantize_blocks) is ggml's quantize_row_q3_K_ref without an importance
matrix (make_q3_quants per sub-block, scales rounded to 6 bits against the largest)
and quantize_row_q3_K_impl with one (make_qx_quants weighted by imatrix *
sqrt(sigma2 + x^2), then make_qx_quants again for the 6-bit scales).
"""
import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit, prange

from .common import f16_at
from .kquant_common import q3_k_scale
from .kquant_quantize import (make_q3_quants, make_qx_quants, nearest_int, pack_2bit,
                              requantize, requantize_scratch, search_scratch, store_f16)
from .quantize_common import mean_square, run_row_kernel

QTYPE = T.Q3_K
BLOCK_SIZE = 256
BLOCK_DTYPE = np.dtype([("hmask", "u1", (32,)), ("qs", "u1", (64,)), ("scales", "u1", (12,)),
                        ("d", "<f2")])
VEC_DOT_TYPE = T.Q8_K
_TYPE_SIZE = BLOCK_DTYPE.itemsize  # 110


def scales_reference(packed):
    """numpy: uint8 [n, 12] -> int8 [n, 16] signed scales, same rule as q3_k_scale."""
    j = np.arange(16)
    low = (packed[:, j % 8] >> (4 * (j // 8)).astype(np.uint8)) & 15
    high = (packed[:, 8 + j % 4] >> (2 * (j // 4)).astype(np.uint8)) & 3
    return (low | (high << 4)).astype(np.int8) - np.int8(32)


def dequantize_reference(blocks):
    """Float order as gguf-py Q3_K and ggml dequantize_row_q3_K: (d*sc)*q."""
    n = len(blocks)
    dl = blocks["d"].astype(np.float32)[:, None] * scales_reference(blocks["scales"]).astype(np.float32)
    low = (blocks["qs"].reshape(n, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8)[None, None, :, None]) & 3
    high = (blocks["hmask"][:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1
    q = low.reshape(n, 8, 32).astype(np.int8) - np.int8(4) * (1 - high).astype(np.int8)
    return (dl[:, :, None] * q.reshape(n, 16, 16).astype(np.float32)).reshape(n, 256)


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    for r in range(w.shape[0]):
        row = w[r]
        out_row = out[r]
        for b in range(w.shape[1] // _TYPE_SIZE):
            o = b * _TYPE_SIZE
            d = f16_at(row, o + 108)
            for n in range(2):
                src = o + 32 + 32 * n
                dst = b * 256 + 128 * n
                for k in range(2):  # sub-blocks 8n + 2j + k share bytes 16k..16k+15
                    sub = 8 * n + k
                    # d * scale first, as ggml; one byte feeds four sub-blocks
                    dl0 = d * np.float32(q3_k_scale(row, o + 96, sub))
                    dl1 = d * np.float32(q3_k_scale(row, o + 96, sub + 2))
                    dl2 = d * np.float32(q3_k_scale(row, o + 96, sub + 4))
                    dl3 = d * np.float32(q3_k_scale(row, o + 96, sub + 6))
                    for l in range(16 * k, 16 * k + 16):
                        q = np.int32(row[src + l])
                        h = np.int32(row[o + l]) >> (4 * n)  # hmask bits 4n..4n+3
                        out_row[dst + l] = dl0 * np.float32((q & 3) + ((h & 1) << 2) - 4)
                        out_row[dst + 32 + l] = dl1 * np.float32(((q >> 2) & 3) + ((h & 2) << 1) - 4)
                        out_row[dst + 64 + l] = dl2 * np.float32(((q >> 4) & 3) + (h & 4) - 4)
                        out_row[dst + 96 + l] = dl3 * np.float32((q >> 6) + ((h & 8) >> 1) - 4)


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    """As ggml-cpu/quants.c ggml_vec_dot_q3_K_q8_K_generic: per sub-block integer
    sums times the signed 6-bit scale, one f32 multiply per block.

    Loop shape chosen by measurement (the K-quant kernels are sensitive to it):
    bytes widened to int32 before shifting, sums truncated to int32 each step,
    both 16-weight sub-blocks of a 32-run in one loop. Taking the -4 from bsums
    instead, or masks in place of shifts as in q4_k, measured slower here."""
    acc = np.float32(0.0)
    for b in range(d.shape[0]):
        o = b * _TYPE_SIZE
        isum = np.int32(0)
        for n in range(2):
            src = o + 32 + 32 * n
            dst = b * 256 + 128 * n
            for j in range(4):
                shift = 2 * j
                hbit = 4 * n + j
                s_a = np.int32(0)
                s_b = np.int32(0)
                for l in range(16):
                    q_a = (((np.int32(w[src + l]) >> shift) & 3)
                           + (((np.int32(w[o + l]) >> hbit) & 1) << 2) - 4)
                    q_b = (((np.int32(w[src + 16 + l]) >> shift) & 3)
                           + (((np.int32(w[o + 16 + l]) >> hbit) & 1) << 2) - 4)
                    s_a = np.int32(s_a + np.int32(q_a) * qs[dst + 32 * j + l])
                    s_b = np.int32(s_b + np.int32(q_b) * qs[dst + 32 * j + 16 + l])
                sub = 8 * n + 2 * j
                isum = np.int32(isum + q3_k_scale(w, o + 96, sub) * s_a
                                + q3_k_scale(w, o + 96, sub + 1) * s_b)
        acc += d[b] * f16_at(w, o + 108) * np.float32(isum)
    return acc


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    for r in prange(w.shape[0]):
        for t in range(qs.shape[0]):
            out[t, r] = vec_dot(w[r], qs[t], d[t], sums[t])


def quantize_blocks(x, imatrix):
    """f32 [rows, n] -> uint8 [rows, n // 256 * 110], as ggml_quantize_chunk(Q3_K)."""
    return run_row_kernel(_quantize_rows, x, imatrix, BLOCK_SIZE, _TYPE_SIZE)


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _quantize_rows(x, imatrix, out):
    """Per super-block the _ref scales without an imatrix (empty), else the _impl ones."""
    for r in prange(x.shape[0]):
        L = np.empty(256, np.int8)
        sub = np.empty((3, 16), np.float32)  # weights, scales, sums of weights
        Ls = np.empty(16, np.int8)
        levels = np.empty(16, np.int32)
        trials = search_scratch()
        fin = requantize_scratch(16)
        for b in range(x.shape[1] // 256):
            xb = x[r, 256 * b:256 * b + 256]
            o = b * _TYPE_SIZE
            if imatrix.shape[0] == 0:
                d = _scales_ref(xb, out[r], o, L, sub[1], levels)
            else:
                d = _scales_impl(xb, imatrix[256 * b:256 * b + 256], out[r], o, L, sub, Ls,
                                 levels, trials)
            _finish_block(xb, out[r], o, levels, d, L, fin)


@njit(cache=True, nogil=True, error_model="numpy")
def _scales_ref(xb, out, o, L, scales, levels):
    """quantize_row_q3_K_ref up to the final quants: the 6-bit scale levels (0..63)
    and d (returned as stored). The largest |scale| (signed) sets d = max / -32."""
    max_scale = np.float32(0.0)
    amax = np.float32(0.0)
    for j in range(16):
        scales[j] = make_q3_quants(xb[16 * j:16 * j + 16], 4, L[16 * j:16 * j + 16])
        if abs(scales[j]) > amax:
            amax = abs(scales[j])
            max_scale = scales[j]
    if max_scale == 0:
        levels[:] = 0  # scales bytes stay zero
        return store_f16(out, o + 108, np.float32(0.0))
    iscale = np.float32(-32.0) / max_scale
    for j in range(16):
        l8 = ((nearest_int(iscale * scales[j]) & 0xFF) ^ 0x80) - 0x80  # int8 store
        levels[j] = max(-32, min(31, l8)) + 32
    return store_f16(out, o + 108, np.float32(1.0) / iscale)


@njit(cache=True, nogil=True, error_model="numpy")
def _scales_impl(xb, qw, out, o, L, sub, Ls, levels, trials):
    """quantize_row_q3_K_impl up to the final quants, as _scales_ref."""
    weights, scales, sw = sub[0], sub[1], sub[2]
    sigma2 = mean_square(xb, 2)
    for j in range(16):
        xs = xb[16 * j:16 * j + 16]
        sumw = np.float32(0.0)
        for l in range(16):
            weights[l] = qw[16 * j + l] * np.sqrt(sigma2 + xs[l] * xs[l])
        for l in range(16):
            sumw += weights[l]
        sw[j] = sumw
        scales[j] = make_qx_quants(xs, weights, 4, L[16 * j:16 * j + 16], trials)
    d_block = make_qx_quants(scales, sw, 32, Ls, trials)
    for j in range(16):
        levels[j] = Ls[j]
    return store_f16(out, o + 108, d_block)


@njit(cache=True, nogil=True, error_model="numpy")
def _finish_block(xb, out, o, levels, d_all, L, fin):
    """Pack the 6-bit scale levels (0..63) at @96, quantize again with the stored
    scales (sub-blocks with scale 0 keep the search's levels), then hmask and qs."""
    out[o + 96:o + 108] = 0
    for j in range(16):
        l = levels[j]
        if j < 8:
            out[o + 96 + j] = l & 0xF
        else:
            out[o + 96 + j - 8] |= (l & 0xF) << 4
        out[o + 96 + 8 + (j & 3)] |= ((l >> 4) << (2 * (j >> 2))) & 0xFF
    d, zeros, tmp = fin
    for j in range(16):
        d[j] = d_all * np.float32(q3_k_scale(out, o + 96, j))
    requantize(xb, d, zeros, 16, -4, 3, 4, L, tmp)
    for m in range(32):  # level 32k + m's third bit goes to bit k of hmask[m]
        high = 0
        for k in range(8):
            high |= (np.int32(L[32 * k + m]) >> 2) << k
        out[o + m] = high
    pack_2bit(L, out, o + 32)  # the low two bits
