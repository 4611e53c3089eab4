"""IQ2_XXS: 256 weights as 32 lookups into a 256 x 8 grid, with signs and a 4-bit
scale per 32 weights (ggml-common.h block_iq2_xxs).

Block bytes: d f16 @0, then per sub-block ib of 32 weights 8 bytes @2 + 8 ib:
four grid indices (one byte each, for weights 8l..8l+7), then a little-endian
uint32 holding four 7-bit sign indices (bits 7l..7l+6, through ksigns_iq2xs) and
the scale s in bits 28-31. Weight = d * (0.5 + s) * 0.25 * grid value * sign.
"""
import numpy as np
from gguf import GGMLQuantizationType as T, quants as gguf_quants
from numba import njit, prange

from . import interleave, interleave_k
from .common import f16_at, u32_at
from .iq_common import KSIGNS, SIGNS_OF_BYTE, grid_from_gguf, scaled_dot_256
from .iq_quantize_tables import (even_signs, f16_bits, key_of, nearest_int, put_u16,
                                 search_tables, snap_to_grid, weighted_sums)
from .quantize_common import GROUP_MAX_EPS, mean_square, run_row_kernel, scale_level

QTYPE = T.IQ2_XXS
BLOCK_SIZE = 256
BLOCK_DTYPE = np.dtype([("d", "<f2"), ("qs", "<u4", (16,))])
VEC_DOT_TYPE = T.Q8_K
_TYPE_SIZE = BLOCK_DTYPE.itemsize  # 66

GRID = grid_from_gguf(gguf_quants.IQ2_XXS)  # int8 [256, 8]: iq2xxs_grid
_KSIGNS = KSIGNS.astype(np.int32)
# Grid entry i with sign byte s applied, 8 int8 packed in one uint64 at 256 i + s.
_SIGNED_GRID = np.ascontiguousarray(
    (GRID[:, None, :] * SIGNS_OF_BYTE[None, :, :]).astype(np.int8)).view(np.uint64).ravel()


def signed_grid_values(blocks):
    """numpy: (every weight's grid value times its sign, int8 [n, 8, 32]; every
    sub-block's 4-bit scale s, uint32 [n, 8])."""
    n = len(blocks)
    pairs = blocks["qs"].reshape(n, 8, 2)
    indices, aux = pairs[:, :, 0], pairs[:, :, 1]
    sign_bytes = KSIGNS[(aux[:, :, None] >> (7 * np.arange(4, dtype=np.uint32))) & 127]
    signs = SIGNS_OF_BYTE[sign_bytes].reshape(n, 8, 32)
    grid = GRID[indices.copy().view(np.uint8).reshape(n, 8, 4)].reshape(n, 8, 32)
    return (grid * signs).astype(np.int8), aux >> 28


def dequantize_reference(blocks):
    """As gguf-py IQ2_XXS: db = d * (0.5 + s) * 0.25 in f32, then db * grid * sign
    (the sign is +-1: (db * grid) * sign == db * (grid * sign) exactly)."""
    values, s = signed_grid_values(blocks)
    db = (blocks["d"].astype(np.float32)[:, None]
          * (np.float32(0.5) + s.astype(np.float32)) * np.float32(0.25))
    return (db[:, :, None] * values.astype(np.float32)).reshape(len(blocks), 256)


@njit(cache=True, nogil=True, inline="always")
def _decode_block(w, o, decoded_groups, scales):
    """256 signed grid values (8 at a time through a uint64 view) and 8 scales."""
    for ib in range(8):
        aux = u32_at(w, o + 2 + 8 * ib + 4)
        scales[ib] = aux >> 28
        for l in range(4):
            sign_byte = _KSIGNS[(aux >> (7 * l)) & 127]
            decoded_groups[4 * ib + l] = _SIGNED_GRID[256 * np.int32(w[o + 2 + 8 * ib + l])
                                                      + sign_byte]


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    """ggml-quants.c dequantize_row_iq2_xxs, float order as gguf-py's (db * grid *
    sign equals db * signed grid value bit for bit: negation is exact)."""
    decoded = np.empty(256, np.int8)
    scales = np.empty(8, np.int32)
    for r in range(w.shape[0]):
        row = w[r]
        for b in range(w.shape[1] // _TYPE_SIZE):
            o = b * _TYPE_SIZE
            _decode_block(row, o, decoded.view(np.uint64), scales)
            d = f16_at(row, o)
            for ib in range(8):
                db = d * (np.float32(0.5) + np.float32(scales[ib])) * np.float32(0.25)
                for j in range(32 * ib, 32 * ib + 32):
                    out[r, b * 256 + j] = db * np.float32(decoded[j])


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    """ggml-cpu/quants.c ggml_vec_dot_iq2_xxs_q8_K_generic: per sub-block the integer
    sum of signed grid value * q8 times 2 s + 1; 0.125 d_w d_x at the end."""
    acc = np.float32(0.0)
    decoded = np.empty(256, np.int8)
    decoded_groups = decoded.view(np.uint64)
    scales = np.empty(8, np.int32)
    for b in range(d.shape[0]):
        o = b * _TYPE_SIZE
        _decode_block(w, o, decoded_groups, scales)
        for ib in range(8):
            scales[ib] = 2 * scales[ib] + 1
        acc += f16_at(w, o) * d[b] * np.float32(scaled_dot_256(decoded, qs, b * 256, scales))
    return np.float32(0.125) * acc


# --- decode layout (interleave.py, interleave_k.py) ---------------------------

def pack(w):
    """int8_subblocks_matmul's layout: d / 8, ls = 2s + 1 per 32 weights, weights
    as their signed grid values (264 bytes per block for the file's 66). ggml's
    d * (0.5 + s) * 0.25 equals (d / 8) * ls exactly (powers of two), and so does
    its 0.125 applied to the whole sum (ggml_vec_dot_iq2_xxs_q8_K)."""
    values, s = signed_grid_values(w.reshape(-1).view(BLOCK_DTYPE))
    values = values.reshape(w.shape[0], -1)
    ls = (2 * s + 1).astype(np.uint8).reshape(w.shape[0], -1)
    return (interleave.pack_f16(w, _TYPE_SIZE, 0) * np.float32(0.125),
            interleave.pack_bytes(ls, 8, 0, 8).view(np.int8),
            interleave.pack_quads(values, 256))


packed_matmul = interleave_k.int8_subblocks_matmul
INT8_PREFILL = True  # batches too, where the CPU has VNNI (quant_formats.matmul_packed)
packed_dequantize = interleave_k.int8_subblocks_dequantize


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    for r in prange(w.shape[0]):
        for t in range(qs.shape[0]):
            out[t, r] = vec_dot(w[r], qs[t], d[t], sums[t])


# --- quantizer ----------------------------------------------------------------
# ggml-quants.c quantize_row_iq2_xxs_impl (imatrix required, as ggml). Per 32
# weights: signs made even per 8 by flipping the least important value, a first
# scale from make_qp_quants, 13 trial scales around it, each value group snapped
# to its key's grid point or nearest listed neighbour (iq_quantize_tables).

def quantize_blocks(x, imatrix):
    return run_row_kernel(_quantize_rows, x, imatrix, BLOCK_SIZE, _TYPE_SIZE,
                          *search_tables(QTYPE), required_by=QTYPE.name)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _quantize_rows(x, imatrix, grid, key_map, neighbours, out):
    for r in prange(x.shape[0]):
        scratch = np.empty((4, 32), np.float32)  # weight, waux, xval, scales
        codes = np.empty((3, 32), np.int32)      # L, Laux, make_qp_quants' L
        q2 = np.empty(16, np.int64)
        for b in range(x.shape[1] // 256):
            _quantize_block(x[r, 256 * b:256 * b + 256], imatrix[256 * b:256 * b + 256],
                            grid, key_map, neighbours, scratch, codes, q2, out[r], b * _TYPE_SIZE)


@njit(cache=True, nogil=True, error_model="numpy")
def _quantize_block(xbl, qw, grid, key_map, neighbours, scratch, codes, q2, out, o):
    weight, waux, xval, scales = scratch[0], scratch[1], scratch[2], scratch[3]
    q2[:] = 0
    sigma2 = mean_square(xbl, 1)
    max_scale = np.float32(0.0)
    for ib in range(8):
        xb = xbl[32 * ib:32 * ib + 32]
        for i in range(32):
            weight[i] = qw[32 * ib + i] * np.sqrt(sigma2 + xb[i] * xb[i])
            waux[i] = np.sqrt(weight[i])
        signs = even_signs(xb, weight, xval, 4)
        scale, skipped = _sub_block_scale(xval, weight, waux, grid, key_map, neighbours, codes)
        if skipped:  # ggml leaves the group's bytes zero and its scale 0
            scales[ib] = 0.0
            continue
        if scale < 0:  # "should never happen" in ggml; flip all signs as it does
            scale = -scale
            signs = ~signs & 0x0FFFFFFF
        for k in range(4):
            q2[2 * ib] |= np.int64(key_map[key_of(codes[0], 8 * k)]) << (8 * k)
        q2[2 * ib + 1] = signs
        scales[ib] = scale
        max_scale = max(max_scale, scale)
    if max_scale == 0.0:
        return
    d = max_scale / np.float32(31)
    put_u16(out, o, f16_bits(d))
    inv_d = np.float32(1.0) / d
    for ib in range(8):
        level = scale_level(inv_d, scales[ib], 15)
        q2[2 * ib + 1] |= np.int64(level) << 28
    for j in range(16):
        for byte in range(4):
            out[o + 2 + 4 * j + byte] = (q2[j] >> (8 * byte)) & 255


@njit(cache=True, nogil=True, error_model="numpy")
def _sub_block_scale(xval, weight, waux, grid, key_map, neighbours, codes):
    """(scale, skipped) for 32 values; their grid codes in codes[0]."""
    L, trial = codes[0], codes[1]
    top = xval[0]
    for i in range(1, 32):
        top = max(top, xval[i])
    if top < GROUP_MAX_EPS:
        return np.float32(0.0), True
    scale = make_qp_quants(32, 4, xval, codes[2], weight)
    for i in range(32):  # ggml passes its int8 L as uint8: keep the byte's int8 value
        L[i] = ((codes[2][i] & 255) ^ 128) - 128
    eff_max = scale * np.float32(3)
    if eff_max <= 0:
        return np.float32(0.0), True
    best = np.float32(0.0)
    for step in range(-6, 7):
        inv = (np.float32(5) + np.float32(step) * np.float32(0.1)) / eff_max
        for k in range(4):
            snap_to_grid(xval, waux, 8 * k, inv, np.float32(1.0) / inv,
                         grid, key_map, neighbours, trial)
        sumqx, sumq2 = weighted_sums(xval, weight, trial)
        if sumq2 > 0 and sumqx * sumqx > best * sumq2:
            scale = sumqx / sumq2
            best = scale * sumqx
            L[:] = trial
    if scale > 0:
        for k in range(4):
            snap_to_grid(xval, waux, 8 * k, np.float32(1.0) / scale, scale,
                         grid, key_map, neighbours, L)
        sumqx, sumq2 = weighted_sums(xval, weight, L)
        if sumq2 > 0:
            scale = sumqx / sumq2
    return scale, False


@njit(cache=True, nogil=True, error_model="numpy")
def make_qp_quants(n, nmax, x, L, quant_weights):
    """ggml-quants.c make_qp_quants: the scale of non-negative levels 0..nmax for
    x[:n] under quant_weights (ggml stores L as uint8: L holds the same bytes' values
    as int, so a negative level reads back as 256 + level where ggml reads it)."""
    top = np.float32(0.0)
    for i in range(n):
        top = max(top, x[i])
    if top < GROUP_MAX_EPS:
        L[:n] = 0
        return np.float32(0.0)
    nmax_f = np.float32(nmax)
    iscale = nmax_f / top
    for i in range(n):
        L[i] = nearest_int(iscale * x[i]) & 255
    scale = np.float32(1.0) / iscale
    best_mse = np.float32(0.0)
    for i in range(n):
        diff = x[i] - scale * np.float32(L[i])
        best_mse += quant_weights[i] * diff * diff
    for step in range(-4, 5):
        if step == 0:
            continue
        iscale_step = (np.float32(0.1) * np.float32(step) + nmax_f) / top
        scale_step = np.float32(1.0) / iscale_step
        mse = np.float32(0.0)
        for i in range(n):
            level = min(nmax, nearest_int(iscale_step * x[i]))
            diff = x[i] - scale_step * np.float32(level)
            mse += quant_weights[i] * diff * diff
        if mse < best_mse:
            best_mse = mse
            iscale = iscale_step
    sumlx = np.float32(0.0)
    suml2 = np.float32(0.0)
    for i in range(n):
        level = min(nmax, nearest_int(iscale * x[i]))
        L[i] = level & 255
        w = quant_weights[i]
        sumlx += w * x[i] * np.float32(level)
        suml2 += w * np.float32(level) * np.float32(level)
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            w = quant_weights[i]
            slx = sumlx - w * x[i] * np.float32(L[i])
            sl2 = suml2 - w * np.float32(L[i]) * np.float32(L[i])
            if slx > 0 and sl2 > 0:
                new_level = min(nmax, nearest_int(x[i] * sl2 / slx))
                if new_level != L[i]:
                    slx += w * x[i] * np.float32(new_level)
                    sl2 += w * np.float32(new_level) * np.float32(new_level)
                    if slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new_level & 255
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if not n_changed:
            break
    return sumlx / suml2 if suml2 > 0.0 else np.float32(0.0)
