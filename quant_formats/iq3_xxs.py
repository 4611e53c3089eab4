"""IQ3_XXS: 256 weights as 64 lookups into a 256 x 4 grid, with signs and a 4-bit
scale per 32 weights (ggml-common.h block_iq3_xxs).

Block bytes: d f16 @0, 64 grid indices @2 (8 per sub-block of 32), then one
little-endian uint32 per sub-block @66: four 7-bit sign indices (bits 7l..7l+6,
for weights 8l..8l+7, through ksigns_iq2xs) and the scale s in bits 28-31.
Weight = d * (0.5 + s) * 0.5 * grid value, negated where its sign bit is set.
"""
import numpy as np
from gguf import GGMLQuantizationType as T, quants as gguf_quants
from numba import njit, prange

from .common import f16_at, u32_at
from .iq3_quantize_tables import (search_sub_block, search_tables, sub_block_scale_code,
                                  sub_block_weights, super_block_sigma2)
from .iq_common import KSIGNS, SIGNS_OF_BYTE, grid_from_gguf, scaled_dot_256
from .quantize_common import run_row_kernel_f16_d

QTYPE = T.IQ3_XXS
BLOCK_SIZE = 256
BLOCK_DTYPE = np.dtype([("d", "<f2"), ("qs", "u1", (64,)), ("scales_signs", "<u4", (8,))])
VEC_DOT_TYPE = T.Q8_K
_TYPE_SIZE = BLOCK_DTYPE.itemsize  # 98

GRID = grid_from_gguf(gguf_quants.IQ3_XXS)  # int8 [256, 4]: iq3xxs_grid
_KSIGNS = KSIGNS.astype(np.int32)
# Grid entry i with sign nibble s applied, as the four int8 packed in one
# uint32 at index 16 i + s: a group of 4 signed weights is one load and store.
_SIGNED_GRID = np.ascontiguousarray(
    (GRID[:, None, :] * SIGNS_OF_BYTE[None, :16, :4]).astype(np.int8)).view(np.uint32).ravel()


def dequantize_reference(blocks):
    """As gguf-py IQ3_XXS: db = d * (0.5 + s) * 0.5 in f32, then db * grid * sign."""
    n = len(blocks)
    aux = blocks["scales_signs"]  # [n, 8]
    db = blocks["d"].astype(np.float32)[:, None] * (np.float32(0.5) + (aux >> 28).astype(np.float32))
    db = db * np.float32(0.5)
    sign_bytes = KSIGNS[(aux[:, :, None] >> (7 * np.arange(4))) & 127]  # [n, 8, 4]
    signs = SIGNS_OF_BYTE[sign_bytes].astype(np.float32).reshape(n, 8, 32)
    grid = GRID[blocks["qs"]].astype(np.float32).reshape(n, 8, 32)
    return (db[:, :, None] * grid * signs).reshape(n, 256)


@njit(cache=True, nogil=True, inline="always")
def _decode_block(w, o, decoded_groups, scales):
    """The block at w[o] as 256 signed grid values (int8, written four at a time
    through decoded_groups, a uint32 view) and its 8 four-bit scales s."""
    for ib in range(8):
        aux = u32_at(w, o + 66 + 4 * ib)
        scales[ib] = aux >> 28
        for l in range(4):
            sign_byte = _KSIGNS[(aux >> (7 * l)) & 127]
            g = o + 2 + 8 * ib + 2 * l
            decoded_groups[8 * ib + 2 * l] = _SIGNED_GRID[16 * np.int32(w[g]) + (sign_byte & 15)]
            decoded_groups[8 * ib + 2 * l + 1] = _SIGNED_GRID[16 * np.int32(w[g + 1])
                                                              + (sign_byte >> 4)]


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    """As ggml-quants.c dequantize_row_iq3_xxs, float order as gguf-py's:
    db = d * (0.5 + s) * 0.5, then db * grid * sign, which equals db * (signed
    grid value) bit for bit (negation is exact and rounding symmetric)."""
    decoded = np.empty(256, np.int8)
    scales = np.empty(8, np.int32)
    for r in range(w.shape[0]):
        row = w[r]
        for b in range(w.shape[1] // _TYPE_SIZE):
            o = b * _TYPE_SIZE
            _decode_block(row, o, decoded.view(np.uint32), scales)
            d = f16_at(row, o)
            for ib in range(8):
                db = d * (np.float32(0.5) + np.float32(scales[ib])) * np.float32(0.5)
                for j in range(32 * ib, 32 * ib + 32):
                    out[r, b * 256 + j] = db * np.float32(decoded[j])


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    """As ggml-cpu/quants.c ggml_vec_dot_iq3_xxs_q8_K_generic: per sub-block the
    integer sum of signed grid value * q8, times 2 s + 1; 0.25 d_w d_x at the end.

    Each block is first decoded to 256 signed int8 (one packed-table load per
    4 weights), then dotted by iq_common.scaled_dot_256, whose loop LLVM
    vectorizes: 2.5 GB/s against 1.1 for lookups inside the dot loop."""
    acc = np.float32(0.0)
    decoded = np.empty(256, np.int8)
    decoded_groups = decoded.view(np.uint32)
    scales = np.empty(8, np.int32)
    for b in range(d.shape[0]):
        o = b * _TYPE_SIZE
        _decode_block(w, o, decoded_groups, scales)
        for ib in range(8):
            scales[ib] = 2 * scales[ib] + 1
        isum = scaled_dot_256(decoded, qs, b * 256, scales)
        acc += f16_at(w, o) * d[b] * np.float32(isum)
    return np.float32(0.25) * acc


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    for r in prange(w.shape[0]):
        for t in range(qs.shape[0]):
            out[t, r] = vec_dot(w[r], qs[t], d[t], sums[t])


# --- Quantizer: ggml-quants.c quantize_iq3_xxs -> quantize_row_iq3_xxs_impl(256, ...) ---
# Without an imatrix ggml weights errors by x^2 (the same function, not a _ref path).
_GROUP_MAX_EPS = np.float32(1e-8)  # GROUP_MAX_EPS_IQ3_XXS
_SEARCH_STEPS = 15                 # inverse scales (15 + 0.2 is) / max, |is| <= 15
_D_FUDGE = np.float32(1.0125)      # "small improvement via this fudge factor"


@njit(cache=True, nogil=True, error_model="numpy")
def _fold_signs(row, o, weight, xval):
    """xval = |x| of the sub-block at row[o], and its four 7-bit sign fields packed
    as in the block (bits 7l..7l+6). Each group of 8 stores an even number of
    negatives: if odd, the weight with least w x^2 keeps its sign (xval = x)."""
    packed = np.int64(0)
    for k in range(4):
        n_flips = 0
        signs = 0
        for i in range(8):
            v = row[o + 8 * k + i]
            if v >= 0:
                xval[8 * k + i] = v
            else:
                xval[8 * k + i] = -v
                n_flips += 1
                signs |= 1 << i
        if n_flips % 2:
            i_min = 0
            least = weight[8 * k] * row[o + 8 * k] * row[o + 8 * k]
            for i in range(1, 8):
                err = weight[8 * k + i] * row[o + 8 * k + i] * row[o + 8 * k + i]
                if err < least:
                    least = err
                    i_min = i
            xval[8 * k + i_min] = -xval[8 * k + i_min]
            signs ^= 1 << i_min
        packed |= np.int64(signs & 127) << (7 * k)
    return packed


@njit(cache=True, nogil=True, error_model="numpy")
def _quantize_super_block(row, o, quant_weights, tables, out, ob, scratch, levels, on_grid):
    """One block of 256 at row[o] into out[ob:ob+98] except d; returns d (f32)."""
    weight, waux, xval, scales = scratch[0], scratch[1], scratch[2], scratch[3]
    L, Laux, words = levels[0], levels[1], levels[2]  # words: sub-block sign fields
    kmap = tables[1]
    sigma2 = super_block_sigma2(row, o)
    words[:8] = 0
    out[ob:ob + _TYPE_SIZE] = 0
    max_scale = np.float32(0.0)
    for ib in range(8):
        xo = o + 32 * ib
        sub_block_weights(row, xo, quant_weights, sigma2, weight, waux)
        signs = _fold_signs(row, xo, weight, xval)
        xmax = xval[0]
        for i in range(1, 32):
            xmax = xmax if xmax > xval[i] else xval[i]
        scales[ib] = 0.0
        if xmax < _GROUP_MAX_EPS:
            continue
        on_grid[0][:] = True
        scale = search_sub_block(xval, xmax, weight, waux, L, Laux, on_grid[0], on_grid[1],
                                 _SEARCH_STEPS, tables, False)
        if scale < 0:  # "should never happen": flip the scale and the signs
            scale = -scale
            signs = ~signs & 0x0FFFFFFF
        for k in range(8):
            u = L[4 * k] | (L[4 * k + 1] << 3) | (L[4 * k + 2] << 6) | (L[4 * k + 3] << 9)
            out[ob + 2 + 8 * ib + k] = kmap[u]
        words[ib] = signs
        scales[ib] = scale
        max_scale = max_scale if max_scale > scale else scale
    if max_scale == 0:
        out[ob:ob + _TYPE_SIZE] = 0
        return np.float32(0.0)
    d = max_scale / np.float32(31.0)
    inv_d = np.float32(1.0) / d
    for ib in range(8):
        word = words[ib] | (np.int64(sub_block_scale_code(inv_d, scales[ib])) << 28)
        for byte in range(4):
            out[ob + 66 + 4 * ib + byte] = (word >> (8 * byte)) & 0xFF
    return d * _D_FUDGE


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _quantize_rows(x, quant_weights, tables, d_out, out):
    n_blocks = x.shape[1] // 256
    for r in prange(x.shape[0]):
        scratch = np.empty((4, 32), np.float32)  # weight, waux, xval, scales
        levels = np.empty((3, 32), np.int64)     # best and trial levels, sign words
        on_grid = np.empty((2, 8), np.bool_)
        for b in range(n_blocks):
            d_out[r, b] = _quantize_super_block(x[r], 256 * b, quant_weights, tables, out[r],
                                                b * _TYPE_SIZE, scratch, levels, on_grid)


def quantize_blocks(x, imatrix):
    """f32 [rows, n] -> IQ3_XXS bytes, as ggml_quantize_chunk (see quant_formats.quantize)."""
    return run_row_kernel_f16_d(_quantize_rows, x, imatrix, BLOCK_DTYPE, BLOCK_SIZE,
                                search_tables(GRID))
