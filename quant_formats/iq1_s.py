"""IQ1_S: 256 weights as 32 lookups into a 2048 x 8 grid of -1/0/+1, shifted by
+-1/8 and scaled by a 3-bit scale per 32 weights (ggml-common.h block_iq1_s).

Block bytes: d f16 @0; 32 grid-index low bytes @2 (one per 8 weights); 8
little-endian uint16 qh @34, one per sub-block of 32: high index bits 3l..3l+2 for
group l, scale s in bits 12-14, delta sign in bit 15.
Weight = d * (2 s + 1) * (grid value +- 0.125).
"""
import numpy as np
from gguf import GGMLQuantizationType as T, quants as gguf_quants
from numba import njit, prange

from .common import f16_at
from .iq_common import grid_from_gguf
from .iq_quantize_tables import (FLT_MAX, f16_bits, iq1_accumulate, iq1_snap_group,
                                 iq1_split_codes, put_u16, search_tables, stable_order)
from .quantize_common import mean_square, run_row_kernel, scale_level

QTYPE = T.IQ1_S
BLOCK_SIZE = 256
BLOCK_DTYPE = np.dtype([("d", "<f2"), ("qs", "u1", (32,)), ("qh", "<u2", (8,))])
VEC_DOT_TYPE = T.Q8_K
_TYPE_SIZE = BLOCK_DTYPE.itemsize  # 50

GRID = grid_from_gguf(gguf_quants.IQ1_S)  # int8 [2048, 8]: iq1s_grid
DELTA = np.float32(gguf_quants.IQ1_S.delta)  # IQ1S_DELTA, 0.125


def dequantize_reference(blocks):
    """As gguf-py IQ1_S: dl = d * (2 s + 1), then dl * (grid + delta)."""
    n = len(blocks)
    qh = blocks["qh"]
    dl = blocks["d"].astype(np.float32)[:, None] * (2 * ((qh >> 12) & 7) + 1).astype(np.float32)
    delta = np.where(qh & 0x8000, -DELTA, DELTA)
    high = (qh[:, :, None] >> (3 * np.arange(4, dtype=np.uint16))) & 7
    index = blocks["qs"].astype(np.int32) | (high.reshape(n, 32).astype(np.int32) << 8)
    grid = GRID[index].astype(np.float32).reshape(n, 8, 32)
    return (dl[:, :, None] * (grid + delta[:, :, None])).reshape(n, 256)


@njit(cache=True, nogil=True, inline="always")
def _qh_at(w, o, ib):
    return np.int32(w[o + 34 + 2 * ib]) | (np.int32(w[o + 35 + 2 * ib]) << 8)


@njit(cache=True, nogil=True, inline="always")
def _grid_index(w, o, ib, l, qh):
    return np.int32(w[o + 2 + 4 * ib + l]) | (((qh >> (3 * l)) & 7) << 8)


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    for r in range(w.shape[0]):
        row = w[r]
        for b in range(w.shape[1] // _TYPE_SIZE):
            o = b * _TYPE_SIZE
            d = f16_at(row, o)
            for ib in range(8):
                qh = _qh_at(row, o, ib)
                dl = d * np.float32(2 * ((qh >> 12) & 7) + 1)
                delta = -DELTA if qh & 0x8000 else DELTA
                for l in range(4):
                    index = _grid_index(row, o, ib, l, qh)
                    for j in range(8):
                        out[r, b * 256 + 32 * ib + 8 * l + j] = dl * (np.float32(GRID[index, j])
                                                                     + delta)


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    """ggml-cpu/quants.c ggml_vec_dot_iq1_s_q8_K_generic: per sub-block (2 s + 1)
    times the integer grid . q8 sum, plus the delta term from the Q8_K bsums."""
    acc = np.float32(0.0)
    for b in range(d.shape[0]):
        o = b * _TYPE_SIZE
        sumi = np.int32(0)
        sumi1 = np.int32(0)
        for ib in range(8):
            qh = _qh_at(w, o, ib)
            ls = 2 * ((qh >> 12) & 7) + 1
            lsum = np.int32(0)
            for l in range(4):
                index = _grid_index(w, o, ib, l, qh)
                x = b * 256 + 32 * ib + 8 * l
                for j in range(8):
                    lsum = np.int32(lsum + np.int32(GRID[index, j]) * np.int32(qs[x + j]))
            bsum = np.int32(sums[b * 16 + 2 * ib] + sums[b * 16 + 2 * ib + 1])
            sumi = np.int32(sumi + ls * lsum)
            sumi1 = np.int32(sumi1 + ls * (-bsum if qh & 0x8000 else bsum))
        acc += f16_at(w, o) * d[b] * (np.float32(sumi) + DELTA * np.float32(sumi1))
    return acc


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    for r in prange(w.shape[0]):
        for t in range(qs.shape[0]):
            out[t, r] = vec_dot(w[r], qs[t], d[t], sums[t])


# --- quantizer ----------------------------------------------------------------
# ggml-quants.c quantize_row_iq1_s_impl (imatrix required, as ggml). Per 32
# weights: sort, then try every split of the sorted values into levels -1/0/+1
# with either delta sign (the optimal scale of each in closed form from prefix
# sums), snap groups of 8 to the grid (iq_quantize_tables), refit the scale.
_GROUP_MAX_EPS_IQ1_S = np.float32(1e-12)
# x_p and x_m: the three levels with the +delta and the -delta shift.
_LEVELS = np.array([[-1 + DELTA, DELTA, 1 + DELTA], [-1 - DELTA, -DELTA, 1 - DELTA]], np.float32)


def quantize_blocks(x, imatrix):
    return run_row_kernel(_quantize_rows, x, imatrix, BLOCK_SIZE, _TYPE_SIZE,
                          *search_tables(QTYPE), required_by=QTYPE.name)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _quantize_rows(x, imatrix, grid, key_map, neighbours, out):
    for r in prange(x.shape[0]):
        weight = np.empty(32, np.float32)
        prefix = np.empty((2, 33), np.float32)  # sums of w x and of w in sorted order
        scales = np.empty(8, np.float32)
        ints = np.empty((3, 32), np.int32)       # sort order, codes L, shifts
        for b in range(x.shape[1] // 256):
            _quantize_block(x[r, 256 * b:256 * b + 256], imatrix[256 * b:256 * b + 256],
                            grid, key_map, neighbours, weight, prefix, scales, ints,
                            out[r], b * _TYPE_SIZE)


@njit(cache=True, nogil=True, error_model="numpy")
def _quantize_block(xbl, qw, grid, key_map, neighbours, weight, prefix, scales, ints, out, o):
    order, L, shifts = ints[0], ints[1], ints[2]
    sigma2 = mean_square(xbl, 2)
    max_scale = np.float32(0.0)
    for ib in range(8):
        xb = xbl[32 * ib:32 * ib + 32]
        top = abs(xb[0])
        for i in range(32):
            weight[i] = qw[32 * ib + i] * np.sqrt(sigma2 + xb[i] * xb[i])
            top = max(top, abs(xb[i]))
        scales[ib], shifts[ib] = 0.0, 1
        if top < _GROUP_MAX_EPS_IQ1_S:
            continue
        stable_order(xb, order)
        prefix[0, 0], prefix[1, 0] = 0.0, 0.0
        for j in range(32):
            prefix[0, j + 1] = prefix[0, j] + weight[order[j]] * xb[order[j]]
            prefix[1, j + 1] = prefix[1, j] + weight[order[j]]
        scale, i1, i2, shift = _best_split(prefix, top)
        if i1 < 0:
            continue
        iq1_split_codes(order, i1, i2, L)
        if scale < 0:
            for j in range(32):
                L[j] = 2 - L[j]
            scale, shift = -scale, -shift
        scale = _snap_and_store(xb, weight, L, scale, _LEVELS[0 if shift == 1 else 1],
                                grid, key_map, neighbours, out, o, ib)
        scales[ib], shifts[ib] = scale, shift
        max_scale = max(max_scale, scale)
    if max_scale == 0.0:
        return
    d = max_scale / np.float32(15)
    put_u16(out, o, f16_bits(d * np.float32(1.125)))
    inv_d = np.float32(1.0) / d
    for ib in range(8):
        level = scale_level(inv_d, scales[ib], 7)
        out[o + 35 + 2 * ib] |= (level | (8 if shifts[ib] == -1 else 0)) << 4


@njit(cache=True, nogil=True, error_model="numpy")
def _best_split(prefix, top):
    """(scale, i1, i2, shift) maximizing sumqx^2 / sumq2 over the splits i1 <= i2
    of the sorted values and the delta signs (+1 first); i1 = -1 if none has sumq2 > 0."""
    sumx, sumw = prefix[0], prefix[1]
    best_score = -FLT_MAX
    scale = top
    best_i1, best_i2, best_shift = -1, -1, 0
    for i1 in range(33):
        for i2 in range(i1, 33):
            for side in range(2):
                xx = _LEVELS[side]
                sumqx = ((sumx[i1] - sumx[0]) * xx[0] + (sumx[i2] - sumx[i1]) * xx[1]
                         + (sumx[32] - sumx[i2]) * xx[2])
                sumq2 = ((sumw[i1] - sumw[0]) * xx[0] * xx[0] + (sumw[i2] - sumw[i1]) * xx[1] * xx[1]
                         + (sumw[32] - sumw[i2]) * xx[2] * xx[2])
                if sumq2 > 0 and sumqx * sumqx > best_score * sumq2:
                    scale = sumqx / sumq2
                    best_score = scale * sumqx
                    best_i1, best_i2, best_shift = i1, i2, 1 - 2 * side
    return scale, best_i1, best_i2, best_shift


@njit(cache=True, nogil=True, error_model="numpy")
def _snap_and_store(xb, weight, L, scale, levels, grid, key_map, neighbours, out, o, ib):
    """Grid indices of the 4 groups into qs / qh; the scale refit if any was off the grid."""
    all_on_grid = True
    qh = 0
    sumqx = np.float32(0.0)
    sumq2 = np.float32(0.0)
    for k in range(4):
        grid_index, on_grid = iq1_snap_group(L, xb, weight, 8 * k, scale, levels,
                                             grid, key_map, neighbours)
        all_on_grid = all_on_grid and on_grid
        out[o + 2 + 4 * ib + k] = grid_index & 255
        qh |= (grid_index >> 8) << (3 * k)
    if not all_on_grid:
        for k in range(4):
            grid_index = np.int32(out[o + 2 + 4 * ib + k]) | (((qh >> (3 * k)) & 7) << 8)
            sumqx, sumq2 = iq1_accumulate(grid, grid_index, xb, weight, 8 * k, levels,
                                          np.float32(1.0), sumqx, sumq2)
        if sumqx > 0 and sumq2 > 0:
            scale = sumqx / sumq2
    put_u16(out, o + 34 + 2 * ib, qh)
    return scale
