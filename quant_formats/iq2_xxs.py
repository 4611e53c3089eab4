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

from .common import f16_at, u32_at
from .iq_common import KSIGNS, SIGNS_OF_BYTE, grid_from_gguf, scaled_dot_256

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


def dequantize_reference(blocks):
    """As gguf-py IQ2_XXS: db = d * (0.5 + s) * 0.25 in f32, then db * grid * sign."""
    n = len(blocks)
    pairs = blocks["qs"].reshape(n, 8, 2)
    indices, aux = pairs[:, :, 0], pairs[:, :, 1]
    db = (blocks["d"].astype(np.float32)[:, None]
          * (np.float32(0.5) + (aux >> 28).astype(np.float32)) * np.float32(0.25))
    sign_bytes = KSIGNS[(aux[:, :, None] >> (7 * np.arange(4, dtype=np.uint32))) & 127]
    signs = SIGNS_OF_BYTE[sign_bytes].astype(np.float32).reshape(n, 8, 32)
    grid_ids = indices.copy().view(np.uint8).reshape(n, 8, 4)
    grid = GRID[grid_ids].astype(np.float32).reshape(n, 8, 32)
    return (db[:, :, None] * grid * signs).reshape(n, 256)


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


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    for r in prange(w.shape[0]):
        for t in range(qs.shape[0]):
            out[t, r] = vec_dot(w[r], qs[t], d[t], sums[t])
