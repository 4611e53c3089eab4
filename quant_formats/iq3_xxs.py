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
from .iq_common import KSIGNS, SIGNS_OF_BYTE, grid_from_gguf, scaled_dot_256

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
