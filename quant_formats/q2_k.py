"""Q2_K: 256 weights in 16 sub-blocks of 16, w = d*sc*q - dmin*m, q in 0..3
(ggml-common.h block_q2_K).

Block bytes: scales[16] @0 (low nibble: scale, high nibble: min, one byte per
sub-block), qs[64] @16, d f16 @80, dmin f16 @82. Each half n of the block (128
weights) uses qs[32n:32n+32]: weight 128n + 32j + l is bits 2j..2j+1 of
qs[32n + l], so sub-block 8n + 2j + (l >= 16).

Quantizing (quantize_blocks) is ggml's quantize_row_q2_K_ref without an importance
matrix (make_qkx2_quants per sub-block weighted by |x|, least absolute error;
4-bit scales and mins against their maxima) and quantize_row_q2_K_impl with one
(make_qkx3_quants weighted by imatrix * sqrt(sigma2 + x^2), make_qp_quants for
the 4-bit scales and mins).
"""
import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit, prange

from .common import f16_at
from .kquant_quantize import (make_qkx_quants, make_qp_quants, nearest_int, pack_2bit,
                              requantize, requantize_scratch, store_f16)
from .quantize_common import mean_square, run_row_kernel

QTYPE = T.Q2_K
BLOCK_SIZE = 256
BLOCK_DTYPE = np.dtype([("scales", "u1", (16,)), ("qs", "u1", (64,)), ("d", "<f2"),
                        ("dmin", "<f2")])
VEC_DOT_TYPE = T.Q8_K
_TYPE_SIZE = BLOCK_DTYPE.itemsize  # 84


def dequantize_reference(blocks):
    """Float order as gguf-py Q2_K and ggml dequantize_row_q2_K: (d*sc)*q - dmin*m."""
    n = len(blocks)
    dl = blocks["d"].astype(np.float32)[:, None] * (blocks["scales"] & 0x0F).astype(np.float32)
    ml = blocks["dmin"].astype(np.float32)[:, None] * (blocks["scales"] >> 4).astype(np.float32)
    shifts = np.array([0, 2, 4, 6], np.uint8)[None, None, :, None]
    q = (blocks["qs"].reshape(n, 2, 1, 32) >> shifts) & 3
    q = q.reshape(n, 16, 16).astype(np.float32)
    return (dl[:, :, None] * q - ml[:, :, None]).reshape(n, 256)


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    for r in range(w.shape[0]):
        row = w[r]
        out_row = out[r]
        for b in range(w.shape[1] // _TYPE_SIZE):
            o = b * _TYPE_SIZE
            d = f16_at(row, o + 80)
            dmin = f16_at(row, o + 82)
            for n in range(2):
                src = o + 16 + 32 * n
                dst = b * 256 + 128 * n
                for k in range(2):  # sub-blocks 8n + 2j + k share bytes 16k..16k+15
                    sc = o + 8 * n + k
                    # d * scale first, as ggml; one byte feeds four sub-blocks
                    dl0, ml0 = d * np.float32(row[sc] & 15), dmin * np.float32(row[sc] >> 4)
                    dl1, ml1 = d * np.float32(row[sc + 2] & 15), dmin * np.float32(row[sc + 2] >> 4)
                    dl2, ml2 = d * np.float32(row[sc + 4] & 15), dmin * np.float32(row[sc + 4] >> 4)
                    dl3, ml3 = d * np.float32(row[sc + 6] & 15), dmin * np.float32(row[sc + 6] >> 4)
                    for l in range(16 * k, 16 * k + 16):
                        q = np.int32(row[src + l])
                        out_row[dst + l] = dl0 * np.float32(q & 3) - ml0
                        out_row[dst + 32 + l] = dl1 * np.float32((q >> 2) & 3) - ml1
                        out_row[dst + 64 + l] = dl2 * np.float32((q >> 4) & 3) - ml2
                        out_row[dst + 96 + l] = dl3 * np.float32(q >> 6) - ml3


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    """As ggml-cpu/quants.c ggml_vec_dot_q2_K_q8_K_generic (min term from bsums).

    Loop shape as q4_k.vec_dot: int32-truncated sums, and the 2-bit fields
    taken in place by mask (sum((q & 3 << 2j) * y) is 4^j times the wanted
    sum, shifted down once per sub-block) since byte shifts vectorize badly.
    One loop per half covers both 16-byte runs (8 sums): with one run per loop
    LLVM unrolled it to scalar code, 3x slower."""
    acc = np.float32(0.0)
    for b in range(d.shape[0]):
        o = b * _TYPE_SIZE
        isum = np.int32(0)
        for n in range(2):
            src = o + 16 + 32 * n
            dst = b * 256 + 128 * n
            a0 = a1 = a2 = a3 = c0 = c1 = c2 = c3 = np.int32(0)
            for l in range(16):
                q = w[src + l]  # sub-blocks 8n + 2j
                p = w[src + 16 + l]  # sub-blocks 8n + 2j + 1
                a0 = np.int32(a0 + (q & 0x03) * qs[dst + l])
                a1 = np.int32(a1 + (q & 0x0C) * qs[dst + 32 + l])
                a2 = np.int32(a2 + (q & 0x30) * qs[dst + 64 + l])
                a3 = np.int32(a3 + (q & 0xC0) * qs[dst + 96 + l])
                c0 = np.int32(c0 + (p & 0x03) * qs[dst + 16 + l])
                c1 = np.int32(c1 + (p & 0x0C) * qs[dst + 48 + l])
                c2 = np.int32(c2 + (p & 0x30) * qs[dst + 80 + l])
                c3 = np.int32(c3 + (p & 0xC0) * qs[dst + 112 + l])
            sc = o + 8 * n
            isum = np.int32(isum + (w[sc] & 15) * a0 + (w[sc + 2] & 15) * (a1 >> 2)
                            + (w[sc + 4] & 15) * (a2 >> 4) + (w[sc + 6] & 15) * (a3 >> 6)
                            + (w[sc + 1] & 15) * c0 + (w[sc + 3] & 15) * (c1 >> 2)
                            + (w[sc + 5] & 15) * (c2 >> 4) + (w[sc + 7] & 15) * (c3 >> 6))
        # bsums are small integers held in f32: the min term is exact in int32
        msum = np.int32(0)
        for sub in range(16):
            msum = np.int32(msum + (w[o + sub] >> 4) * np.int32(sums[b * 16 + sub]))
        acc += d[b] * (f16_at(w, o + 80) * np.float32(isum) - f16_at(w, o + 82) * np.float32(msum))
    return acc


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    for r in prange(w.shape[0]):
        for t in range(qs.shape[0]):
            out[t, r] = vec_dot(w[r], qs[t], d[t], sums[t])


def quantize_blocks(x, imatrix):
    """f32 [rows, n] -> uint8 [rows, n // 256 * 84], as ggml_quantize_chunk(Q2_K)."""
    return run_row_kernel(_quantize_rows, x, imatrix, BLOCK_SIZE, _TYPE_SIZE)


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _quantize_rows(x, imatrix, out):
    """Per super-block the _ref scales without an imatrix (empty), else the _impl ones."""
    for r in prange(x.shape[0]):
        L = np.empty(256, np.uint8)
        sub = np.empty((4, 16), np.float32)  # weights, scales, mins, sums of weights
        levels = np.empty((2, 16), np.uint8)  # _impl: of the scales and of the mins
        fin = requantize_scratch(16)
        for b in range(x.shape[1] // 256):
            xb = x[r, 256 * b:256 * b + 256]
            o = b * _TYPE_SIZE
            if imatrix.shape[0] == 0:
                d, dmin = _scales_ref(xb, out[r], o, L, sub)
            else:
                d, dmin = _scales_impl(xb, imatrix[256 * b:256 * b + 256], out[r], o, L, sub,
                                       levels)
            _finish_block(xb, out[r], o, d, dmin, L, fin)


@njit(cache=True, nogil=True, error_model="numpy")
def _scales_ref(xb, out, o, L, sub):
    """quantize_row_q2_K_ref up to the final quants: scales/mins bytes @0, d and dmin
    (returned as stored). A zero maximum leaves its nibbles and f16 zero (out starts
    zeroed)."""
    weights, scales, mins = sub[0], sub[1], sub[2]
    max_scale = np.float32(0.0)
    max_min = np.float32(0.0)
    for j in range(16):
        xs = xb[16 * j:16 * j + 16]
        for l in range(16):
            weights[l] = abs(xs[l])
        scales[j], mins[j] = make_qkx_quants(xs, weights, 3, L[16 * j:16 * j + 16],
                                             -0.5, 0.1, 15, True)
        if scales[j] > max_scale:
            max_scale = scales[j]
        if mins[j] > max_min:
            max_min = mins[j]
    d, dmin = np.float32(0.0), np.float32(0.0)
    if max_scale > 0:
        iscale = np.float32(15.0) / max_scale
        for j in range(16):
            out[o + j] = nearest_int(iscale * scales[j]) & 0xFF
        d = store_f16(out, o + 80, max_scale / np.float32(15.0))
    if max_min > 0:
        iscale = np.float32(15.0) / max_min
        for j in range(16):
            out[o + j] |= (nearest_int(iscale * mins[j]) << 4) & 0xFF
        dmin = store_f16(out, o + 82, max_min / np.float32(15.0))
    return d, dmin


@njit(cache=True, nogil=True, error_model="numpy")
def _scales_impl(xb, qw, out, o, L, sub, levels):
    """quantize_row_q2_K_impl up to the final quants, as _scales_ref."""
    weights, scales, mins, sw = sub[0], sub[1], sub[2], sub[3]
    Ls, Lm = levels[0], levels[1]
    sigma2 = mean_square(xb, 1)
    for j in range(16):
        xs = xb[16 * j:16 * j + 16]
        for l in range(16):
            weights[l] = qw[16 * j + l] * np.sqrt(sigma2 + xs[l] * xs[l])
        sumw = np.float32(0.0)
        for l in range(16):
            sumw += weights[l]
        sw[j] = sumw
        scales[j], mins[j] = make_qkx_quants(xs, weights, 3, L[16 * j:16 * j + 16],
                                             -0.9, 0.05, 36, False)
    dm = make_qp_quants(scales, sw, 15, Ls)
    mm = make_qp_quants(mins, sw, 15, Lm)
    d = store_f16(out, o + 80, dm)
    dmin = store_f16(out, o + 82, mm)
    for j in range(16):
        out[o + j] = (Ls[j] | (Lm[j] << 4)) & 0xFF
    return d, dmin


@njit(cache=True, nogil=True, error_model="numpy")
def _finish_block(xb, out, o, d_all, dmin_all, L, fin):
    """Quantize again with the stored scales (sub-blocks with scale 0 keep the
    search's levels) and pack qs at @16."""
    d, dm, tmp = fin
    for j in range(16):
        d[j] = d_all * np.float32(out[o + j] & 0xF)
        dm[j] = dmin_all * np.float32(out[o + j] >> 4)
    requantize(xb, d, dm, 16, 0, 3, 0, L, tmp)
    pack_2bit(L, out, o + 16)
