"""IQ2_XS: 256 weights as 32 lookups into a 512 x 8 grid, with signs, and a 4-bit
scale per 16 weights (ggml-common.h block_iq2_xs).

Block bytes: d f16 @0; 32 little-endian uint16 @2, one per 8 weights: grid index
in bits 0-8, sign index (through ksigns_iq2xs) in bits 9-15; 8 scale bytes @66,
low nibble for the first 16 weights of a sub-block of 32, high nibble for the rest.
Weight = d * (0.5 + s) * 0.25 * grid value * sign.
"""
import numpy as np
from gguf import GGMLQuantizationType as T, quants as gguf_quants
from numba import njit, prange

from .common import f16_at
from .iq_common import KSIGNS, SIGNS_OF_BYTE, grid_from_gguf, nibble_scaled_dot_256
from .iq_quantize_tables import (even_signs, f16_bits, iq2_search_16, key_of, put_u16,
                                 search_tables)
from .quantize_common import GROUP_MAX_EPS, mean_square, run_row_kernel, scale_level

QTYPE = T.IQ2_XS
BLOCK_SIZE = 256
BLOCK_DTYPE = np.dtype([("d", "<f2"), ("qs", "<u2", (32,)), ("scales", "u1", (8,))])
VEC_DOT_TYPE = T.Q8_K
_TYPE_SIZE = BLOCK_DTYPE.itemsize  # 74

GRID = grid_from_gguf(gguf_quants.IQ2_XS)  # int8 [512, 8]: iq2xs_grid
_KSIGNS = KSIGNS.astype(np.int32)
# Grid entry i with sign index k (0..127) applied, 8 int8 packed as one uint64 at 128 i + k.
_SIGNED_GRID = np.ascontiguousarray(
    (GRID[:, None, :] * SIGNS_OF_BYTE[KSIGNS][None, :, :]).astype(np.int8)).view(np.uint64).ravel()


def dequantize_reference(blocks):
    """As gguf-py IQ2_XS: db = d * (0.5 + s) * 0.25 per 16 weights, db * grid * sign."""
    n = len(blocks)
    scales = np.stack([blocks["scales"] & 15, blocks["scales"] >> 4], axis=2).reshape(n, 16)
    db = blocks["d"].astype(np.float32)[:, None] * (np.float32(0.5) + scales.astype(np.float32))
    db = db * np.float32(0.25)
    qs = blocks["qs"]
    signs = SIGNS_OF_BYTE[KSIGNS[qs >> 9]].astype(np.float32).reshape(n, 16, 16)
    grid = GRID[qs & 511].astype(np.float32).reshape(n, 16, 16)
    return (db[:, :, None] * grid * signs).reshape(n, 256)


@njit(cache=True, nogil=True, inline="always")
def _decode_block(w, o, decoded_groups):
    for g in range(32):
        q = np.int32(w[o + 2 + 2 * g]) | (np.int32(w[o + 3 + 2 * g]) << 8)
        decoded_groups[g] = _SIGNED_GRID[128 * (q & 511) + (q >> 9)]


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    decoded = np.empty(256, np.int8)
    for r in range(w.shape[0]):
        row = w[r]
        for b in range(w.shape[1] // _TYPE_SIZE):
            o = b * _TYPE_SIZE
            _decode_block(row, o, decoded.view(np.uint64))
            d = f16_at(row, o)
            for k in range(16):
                s = (np.int32(row[o + 66 + k // 2]) >> (4 * (k % 2))) & 15
                db = d * (np.float32(0.5) + np.float32(s)) * np.float32(0.25)
                for j in range(16 * k, 16 * k + 16):
                    out[r, b * 256 + j] = db * np.float32(decoded[j])


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    """ggml-cpu/quants.c ggml_vec_dot_iq2_xs_q8_K_generic: per 16 weights the integer
    sum of signed grid value * q8 times 2 s + 1; 0.125 d_w d_x at the end."""
    acc = np.float32(0.0)
    decoded = np.empty(256, np.int8)
    decoded_groups = decoded.view(np.uint64)
    for b in range(d.shape[0]):
        o = b * _TYPE_SIZE
        _decode_block(w, o, decoded_groups)
        total = nibble_scaled_dot_256(decoded, qs, b * 256, w, o + 66)
        acc += f16_at(w, o) * d[b] * np.float32(total)
    return np.float32(0.125) * acc


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    for r in prange(w.shape[0]):
        for t in range(qs.shape[0]):
            out[t, r] = vec_dot(w[r], qs[t], d[t], sums[t])


# --- quantizer ----------------------------------------------------------------
# ggml-quants.c quantize_row_iq2_xs_impl (imatrix required, as ggml). Per 16
# weights: signs made even per 8 as IQ2_XXS, 19 trial scales, each group of 8
# snapped to the grid or its nearest listed neighbour (iq_quantize_tables).

def quantize_blocks(x, imatrix):
    return run_row_kernel(_quantize_rows, x, imatrix, BLOCK_SIZE, _TYPE_SIZE,
                          *search_tables(QTYPE), required_by=QTYPE.name)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _quantize_rows(x, imatrix, grid, key_map, neighbours, out):
    for r in prange(x.shape[0]):
        scratch = np.empty((3, 16), np.float32)  # weight, waux, xval
        scales = np.empty(16, np.float32)
        codes = np.empty((2, 16), np.int32)      # L, Laux
        for b in range(x.shape[1] // 256):
            _quantize_block(x[r, 256 * b:256 * b + 256], imatrix[256 * b:256 * b + 256],
                            grid, key_map, neighbours, scratch, scales, codes,
                            out[r], b * _TYPE_SIZE)


@njit(cache=True, nogil=True, error_model="numpy")
def _quantize_block(xbl, qw, grid, key_map, neighbours, scratch, scales, codes, out, o):
    weight, waux, xval = scratch[0], scratch[1], scratch[2]
    sigma2 = mean_square(xbl, 1)
    max_scale = np.float32(0.0)
    for ib in range(16):
        xb = xbl[16 * ib:16 * ib + 16]
        for i in range(16):
            weight[i] = qw[16 * ib + i] * np.sqrt(sigma2 + xb[i] * xb[i])
            waux[i] = np.sqrt(weight[i])
        signs = even_signs(xb, weight, xval, 2)
        scale, skipped = iq2_search_16(xval, weight, waux, GROUP_MAX_EPS, grid, key_map,
                                       neighbours, codes[0], codes[1])
        scales[ib] = 0.0
        if skipped:  # ggml leaves the group's bytes zero and its scale 0
            continue
        if scale < 0:  # "should never happen" in ggml; flip the signs as it does
            scale = -scale
            signs = ~signs & 0x3FFF
        for k in range(2):
            entry = key_map[key_of(codes[0], 8 * k)] | (((signs >> (7 * k)) & 127) << 9)
            put_u16(out, o + 2 + 2 * (2 * ib + k), entry)
        scales[ib] = scale
        max_scale = max(max_scale, scale)
    if max_scale == 0.0:  # ggml zeroes qs (the scale bytes are zero already)
        out[o:o + _TYPE_SIZE] = 0
        return
    d = max_scale / np.float32(31)
    put_u16(out, o, f16_bits(d))
    inv_d = np.float32(1.0) / d
    for ib in range(16):
        level = scale_level(inv_d, scales[ib], 15)
        out[o + 66 + ib // 2] |= level << (4 * (ib % 2))
