"""IQ1_M: 256 weights as 32 lookups into the IQ1_S grid (-1/0/+1), a +-1/8 shift
per 8 weights and a 3-bit scale per 16 (ggml-common.h block_iq1_m).

Block bytes: 32 grid-index low bytes @0; 16 qh bytes @32, one nibble per group of
8 (low nibble first): high index bits 0-2, delta sign bit 3; 4 little-endian
uint16 scales @48: 3-bit scales at bits 0,3,6,9 (two per sub-block of 32), and
the block's f16 scale d spread over their top nibbles (iq1m_scale_t).
Weight = d * (2 s + 1) * (grid value +- 0.125).
"""
import numpy as np
from gguf import GGMLQuantizationType as T, quants as gguf_quants
from numba import njit, prange

from .common import F16_TO_F32
from .iq_common import grid_from_gguf
from .iq_quantize_tables import (FLT_MAX, f16_bits, iq1_accumulate, iq1_snap_group,
                                 iq1_split_codes, search_tables, stable_order)
from .quantize_common import mean_square, run_row_kernel, scale_level

QTYPE = T.IQ1_M
BLOCK_SIZE = 256
BLOCK_DTYPE = np.dtype([("qs", "u1", (32,)), ("qh", "u1", (16,)), ("scales", "<u2", (4,))])
VEC_DOT_TYPE = T.Q8_K
_TYPE_SIZE = BLOCK_DTYPE.itemsize  # 56

GRID = grid_from_gguf(gguf_quants.IQ1_M)  # the iq1s_grid, int8 [2048, 8]
DELTA = np.float32(gguf_quants.IQ1_M.delta)  # IQ1M_DELTA, 0.125


def block_scale_bits(scales):
    """The f16 bits of d from the 4 scale words' top nibbles (iq1m_scale_t)."""
    sc = scales.astype(np.uint16)
    return ((sc[..., 0] >> 12) | ((sc[..., 1] >> 8) & 0x00F0) | ((sc[..., 2] >> 4) & 0x0F00)
            | (sc[..., 3] & 0xF000))


def dequantize_reference(blocks):
    """dl = d * (2 s + 1) per 16 weights, then dl * (grid + delta), as gguf-py."""
    n = len(blocks)
    d = block_scale_bits(blocks["scales"]).view(np.float16).astype(np.float32)
    s = (blocks["scales"][:, :, None] >> (3 * np.arange(4, dtype=np.uint16))) & 7
    dl = d[:, None] * (2 * s.reshape(n, 16) + 1).astype(np.float32)
    nibbles = np.stack([blocks["qh"] & 15, blocks["qh"] >> 4], axis=2).reshape(n, 32)
    index = blocks["qs"].astype(np.int32) | ((nibbles & 7).astype(np.int32) << 8)
    delta = np.where(nibbles & 8, -DELTA, DELTA)
    grid = GRID[index].astype(np.float32).reshape(n, 16, 2, 8)
    values = dl[:, :, None, None] * (grid + delta.reshape(n, 16, 2, 1))
    return values.reshape(n, 256)


@njit(cache=True, nogil=True, inline="always")
def _scale_word(w, o, k):
    return np.int32(w[o + 48 + 2 * k]) | (np.int32(w[o + 49 + 2 * k]) << 8)


@njit(cache=True, nogil=True, inline="always")
def _block_d(w, o):
    bits = ((_scale_word(w, o, 0) >> 12) | ((_scale_word(w, o, 1) >> 8) & 0x00F0)
            | ((_scale_word(w, o, 2) >> 4) & 0x0F00) | (_scale_word(w, o, 3) & 0xF000))
    return F16_TO_F32[bits]


@njit(cache=True, nogil=True, inline="always")
def _group(w, o, g):
    """Grid index and delta sign (+1/-1) of group g (8 weights)."""
    nibble = (np.int32(w[o + 32 + g // 2]) >> (4 * (g % 2))) & 15
    return np.int32(w[o + g]) | ((nibble & 7) << 8), -1 if nibble & 8 else 1


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    for r in range(w.shape[0]):
        row = w[r]
        for b in range(w.shape[1] // _TYPE_SIZE):
            o = b * _TYPE_SIZE
            d = _block_d(row, o)
            for half in range(16):
                s = (_scale_word(row, o, half // 4) >> (3 * (half % 4))) & 7
                dl = d * np.float32(2 * s + 1)
                for g in range(2 * half, 2 * half + 2):
                    index, sign = _group(row, o, g)
                    delta = DELTA * np.float32(sign)
                    for j in range(8):
                        out[r, b * 256 + 8 * g + j] = dl * (np.float32(GRID[index, j]) + delta)


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    """ggml-cpu/quants.c ggml_vec_dot_iq1_m_q8_K_generic: per 16 weights (2 s + 1)
    times (grid . q8) and times the delta-signed q8 sums; d * (sumi1 + 0.125 sumi2)."""
    acc = np.float32(0.0)
    for b in range(d.shape[0]):
        o = b * _TYPE_SIZE
        sumi1 = np.int32(0)
        sumi2 = np.int32(0)
        for half in range(16):
            ls = 2 * ((_scale_word(w, o, half // 4) >> (3 * (half % 4))) & 7) + 1
            grid_sum = np.int32(0)
            delta_sum = np.int32(0)
            for g in range(2 * half, 2 * half + 2):
                index, sign = _group(w, o, g)
                x = b * 256 + 8 * g
                q_sum = np.int32(0)
                for j in range(8):
                    grid_sum = np.int32(grid_sum + np.int32(GRID[index, j]) * np.int32(qs[x + j]))
                    q_sum = np.int32(q_sum + np.int32(qs[x + j]))
                delta_sum = np.int32(delta_sum + sign * q_sum)
            sumi1 = np.int32(sumi1 + ls * grid_sum)
            sumi2 = np.int32(sumi2 + ls * delta_sum)
        acc += _block_d(w, o) * d[b] * (np.float32(sumi1) + DELTA * np.float32(sumi2))
    return acc


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    for r in prange(w.shape[0]):
        for t in range(qs.shape[0]):
            out[t, r] = vec_dot(w[r], qs[t], d[t], sums[t])


def set_finite_scale(blocks, rng):
    """For random test blocks: put a modest f16 d into the scale words' top nibbles
    (random bytes there would often spell inf/NaN)."""
    bits = (rng.standard_normal(len(blocks)) * 0.01).astype(np.float16).view(np.uint16)
    for k in range(4):
        nibble = ((bits >> (4 * k)) & 15).astype(np.uint16) << 12
        blocks["scales"][:, k] = (blocks["scales"][:, k] & 0x0FFF) | nibble


# --- quantizer ----------------------------------------------------------------
# ggml-quants.c quantize_row_iq1_m_impl: as IQ1_S per 16 weights, but each half
# (8 weights) picks its own delta sign, so the split search keeps prefix sums per
# half and tries the 4 sign pairs; weights default to x^2 without an imatrix; d
# is refit over the whole block after the 3-bit scales are chosen.
_GROUP_MAX_EPS_IQ1_M = np.float32(1e-7)
# x_p and x_m: the three levels with the +delta and the -delta shift.
_LEVELS = np.array([[-1 + DELTA, DELTA, 1 + DELTA], [-1 - DELTA, -DELTA, 1 - DELTA]], np.float32)


def quantize_blocks(x, imatrix):
    return run_row_kernel(_quantize_rows, x, imatrix, BLOCK_SIZE, _TYPE_SIZE,
                          *search_tables(QTYPE))


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _quantize_rows(x, imatrix, grid, key_map, neighbours, out):
    """imatrix: f32 [n], or empty for ggml's quant_weights == NULL."""
    for r in prange(x.shape[0]):
        weight = np.empty(16, np.float32)
        prefix = np.empty((4, 17), np.float32)  # per half: sums of w x, then of w
        scales = np.empty(16, np.float32)
        ints = np.empty((3, 16), np.int32)       # sort order, codes L, shifts
        for b in range(x.shape[1] // 256):
            qw = imatrix[256 * b:256 * b + 256]
            _quantize_block(x[r, 256 * b:256 * b + 256], qw, grid, key_map, neighbours,
                            weight, prefix, scales, ints, out[r], b * _TYPE_SIZE)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _weights(xb, qw, lo, sigma2, weight):
    for i in range(16):
        if qw.shape[0]:
            weight[i] = qw[lo + i] * np.sqrt(sigma2 + xb[i] * xb[i])
        else:
            weight[i] = xb[i] * xb[i]


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _group_levels(shift, k):
    """x_p or x_m for group k of a sub-block: bit 1 of the shift code is the first
    group's sign, bit 0 the second's (0: +,+  1: +,-  2: -,+  3: -,-)."""
    return _LEVELS[(shift >> 1) & 1] if k == 0 else _LEVELS[shift & 1]


@njit(cache=True, nogil=True, error_model="numpy")
def _quantize_block(xbl, qw, grid, key_map, neighbours, weight, prefix, scales, ints, out, o):
    order, L, shifts = ints[0], ints[1], ints[2]
    sigma2 = mean_square(xbl, 2)
    max_scale = np.float32(0.0)
    for ib in range(16):
        xb = xbl[16 * ib:16 * ib + 16]
        _weights(xb, qw, 16 * ib, sigma2, weight)
        top = abs(xb[0])
        for i in range(16):
            top = max(top, abs(xb[i]))
        scales[ib], shifts[ib] = 0.0, 0
        if top < _GROUP_MAX_EPS_IQ1_M:
            continue
        stable_order(xb, order)
        _half_prefix_sums(xb, weight, order, prefix)
        scale, i1, i2, shift = _best_split(prefix, top)
        if i1 < 0:
            continue
        iq1_split_codes(order, i1, i2, L)
        if scale < 0:
            for j in range(16):
                L[j] = 2 - L[j]
            scale, shift = -scale, 3 - shift
        scale = _snap_and_store(xb, weight, L, scale, shift, grid, key_map, neighbours,
                                out, o, ib)
        scales[ib], shifts[ib] = scale, shift
        max_scale = max(max_scale, scale)
    if max_scale == 0.0:
        return
    _store_scales(xbl, qw, sigma2, grid, weight, scales, shifts, max_scale, out, o)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _half_prefix_sums(xb, weight, order, prefix):
    """prefix[h] (sums of w x) and prefix[2 + h] (sums of w) over the sorted values,
    counting only those in half h of the 16."""
    for row in range(4):
        prefix[row, 0] = 0.0
    for j in range(16):
        i = order[j]
        h = 0 if i < 8 else 1
        prefix[h, j + 1] = prefix[h, j] + weight[i] * xb[i]
        prefix[1 - h, j + 1] = prefix[1 - h, j]
        prefix[2 + h, j + 1] = prefix[2 + h, j] + weight[i]
        prefix[3 - h, j + 1] = prefix[3 - h, j]


@njit(cache=True, nogil=True, error_model="numpy")
def _best_split(prefix, top):
    """(scale, i1, i2, shift code) maximizing sumqx^2 / sumq2 over the splits and the
    4 sign pairs, in ggml's closed form (T v2 - px[i1] - px[i2]); i1 = -1 if none."""
    p2, m2 = _LEVELS[0, 2], _LEVELS[1, 2]
    cp1 = _LEVELS[0, 0] * _LEVELS[0, 0] - _LEVELS[0, 1] * _LEVELS[0, 1]
    cp2 = _LEVELS[0, 1] * _LEVELS[0, 1] - _LEVELS[0, 2] * _LEVELS[0, 2]
    cm1 = _LEVELS[1, 0] * _LEVELS[1, 0] - _LEVELS[1, 1] * _LEVELS[1, 1]
    cm2 = _LEVELS[1, 1] * _LEVELS[1, 1] - _LEVELS[1, 2] * _LEVELS[1, 2]
    best_score = -FLT_MAX
    scale = top
    best_i1, best_i2, best_k = -1, -1, -1
    for i1 in range(17):
        for i2 in range(i1, 17):
            qx_p0, qx_m0, q2_p0, q2_m0 = _half_sums(prefix[0], prefix[2], i1, i2, p2, m2,
                                                    cp1, cp2, cm1, cm2)
            qx_p1, qx_m1, q2_p1, q2_m1 = _half_sums(prefix[1], prefix[3], i1, i2, p2, m2,
                                                    cp1, cp2, cm1, cm2)
            for k in range(4):  # k = 2 * (first half uses x_m) + (second half uses x_m)
                sumqx = (qx_m0 if k & 2 else qx_p0) + (qx_m1 if k & 1 else qx_p1)
                sumq2 = (q2_m0 if k & 2 else q2_p0) + (q2_m1 if k & 1 else q2_p1)
                if sumq2 > 0 and sumqx * sumqx > best_score * sumq2:
                    scale = sumqx / sumq2
                    best_score = scale * sumqx
                    best_i1, best_i2, best_k = i1, i2, k
    return scale, best_i1, best_i2, best_k


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _half_sums(px, pw, i1, i2, p2, m2, cp1, cp2, cm1, cm2):
    """One half's sumqx and sumq2 with x_p and with x_m for the split (i1, i2)."""
    sx = px[i1] + px[i2]
    return (px[16] * p2 - sx, px[16] * m2 - sx,
            pw[16] * p2 * p2 + pw[i1] * cp1 + pw[i2] * cp2,
            pw[16] * m2 * m2 + pw[i1] * cm1 + pw[i2] * cm2)


@njit(cache=True, nogil=True, error_model="numpy")
def _snap_and_store(xb, weight, L, scale, shift, grid, key_map, neighbours, out, o, ib):
    """Both groups' grid indices into qs / qh; the scale refit if one was off the grid."""
    index0, on_grid0 = iq1_snap_group(L, xb, weight, 0, scale, _group_levels(shift, 0),
                                      grid, key_map, neighbours)
    index1, on_grid1 = iq1_snap_group(L, xb, weight, 8, scale, _group_levels(shift, 1),
                                      grid, key_map, neighbours)
    if not (on_grid0 and on_grid1):
        sumqx, sumq2 = iq1_accumulate(grid, index0, xb, weight, 0, _group_levels(shift, 0),
                                      np.float32(1.0), np.float32(0.0), np.float32(0.0))
        sumqx, sumq2 = iq1_accumulate(grid, index1, xb, weight, 8, _group_levels(shift, 1),
                                      np.float32(1.0), sumqx, sumq2)
        if sumqx > 0 and sumq2 > 0:
            scale = sumqx / sumq2
    out[o + 2 * ib] = index0 & 255
    out[o + 2 * ib + 1] = index1 & 255
    out[o + 32 + ib] = (index0 >> 8) | ((index1 >> 8) << 4)
    return scale


@njit(cache=True, nogil=True, error_model="numpy")
def _store_scales(xbl, qw, sigma2, grid, weight, scales, shifts, max_scale, out, o):
    """3-bit scales, delta-sign bits, then d refit to the chosen levels (ggml's tail
    of quantize_row_iq1_m_impl) and spread over the scale words' top nibbles."""
    d = max_scale / np.float32(15)
    inv_d = np.float32(1.0) / d
    sumqx = np.float32(0.0)
    sumq2 = np.float32(0.0)
    words = np.zeros(4, np.int32)
    for ib in range(16):
        level = scale_level(inv_d, scales[ib], 7)
        words[ib // 4] |= level << (3 * (ib % 4))
        out[o + 32 + ib] |= (0x08 if shifts[ib] & 2 else 0) | (0x80 if shifts[ib] & 1 else 0)
        xb = xbl[16 * ib:16 * ib + 16]
        _weights(xb, qw, 16 * ib, sigma2, weight)
        qh = np.int32(out[o + 32 + ib])
        for k in range(2):
            grid_index = np.int32(out[o + 2 * ib + k]) | ((qh << (8 - 4 * k)) & 0x700)
            sumqx, sumq2 = iq1_accumulate(grid, grid_index, xb, weight, 8 * k,
                                          _group_levels(shifts[ib], k),
                                          np.float32(2 * level + 1), sumqx, sumq2)
    if sumq2 > 0:
        d = sumqx / sumq2
    bits = f16_bits(d * np.float32(1.1125))
    for k in range(4):
        words[k] |= ((bits >> (4 * k)) & 15) << 12
        out[o + 48 + 2 * k] = words[k] & 255
        out[o + 49 + 2 * k] = (words[k] >> 8) & 255
