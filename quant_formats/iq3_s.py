"""IQ3_S: 256 weights as 64 lookups into a 512 x 4 grid, explicit sign bits and a
4-bit scale per 32 weights (ggml-common.h block_iq3_s).

Block bytes: d f16 @0, qs[64] @2 (low 8 bits of the grid indices), qh[8] @66
(bit k % 8 of qh[k / 8] is bit 8 of grid index k), signs[32] @74 (bit j of
signs[m] negates weight 8 m + j), scales[4] @106 (sub-block ib's scale s is
the low nibble of scales[ib / 2] for even ib, the high one for odd).
Weight = d * (1 + 2 s) * grid value, negated where its sign bit is set.
"""
import numpy as np
from gguf import GGMLQuantizationType as T, quants as gguf_quants
from numba import njit, prange

from .common import f16_at
from .iq_common import SIGNS_OF_BYTE, grid_from_gguf, scaled_dot_256

QTYPE = T.IQ3_S
BLOCK_SIZE = 256
BLOCK_DTYPE = np.dtype([("d", "<f2"), ("qs", "u1", (64,)), ("qh", "u1", (8,)),
                        ("signs", "u1", (32,)), ("scales", "u1", (4,))])
VEC_DOT_TYPE = T.Q8_K
_TYPE_SIZE = BLOCK_DTYPE.itemsize  # 110
_QH, _SIGNS, _SCALES = 66, 74, 106  # byte offsets in a block

GRID = grid_from_gguf(gguf_quants.IQ3_S)  # int8 [512, 4]: iq3s_grid
# Grid entry i with sign nibble s applied, as four int8 packed in one uint32 at
# index 16 i + s (32 KB): a group of 4 signed weights is one load and store.
_SIGNED_GRID = np.ascontiguousarray(
    (GRID[:, None, :] * SIGNS_OF_BYTE[None, :16, :4]).astype(np.int8)).view(np.uint32).ravel()


def dequantize_reference(blocks):
    """As gguf-py IQ3_S: db = d * (1 + 2 s) in f32, then db * grid * sign."""
    n = len(blocks)
    s = (blocks["scales"][:, :, None] >> np.array([0, 4], np.uint8)) & 15
    db = blocks["d"].astype(np.float32)[:, None] * (1 + 2 * s.reshape(n, 8)).astype(np.float32)
    high = (blocks["qh"][:, :, None] >> np.arange(8, dtype=np.uint8)) & 1
    idx = blocks["qs"].astype(np.int32) | high.reshape(n, 64).astype(np.int32) << 8
    grid = GRID[idx].astype(np.float32).reshape(n, 8, 32)
    signs = SIGNS_OF_BYTE[blocks["signs"]].astype(np.float32).reshape(n, 8, 32)
    return (db[:, :, None] * grid * signs).reshape(n, 256)


@njit(cache=True, nogil=True, inline="always")
def _decode_block(w, o, decoded_groups, scales):
    """The block at w[o] as 256 signed grid values (int8, written four at a time
    through decoded_groups, a uint32 view) and its 8 four-bit scales s.

    qh byte ib holds bit 8 of sub-block ib's 8 grid indices, so it is loaded
    once per sub-block (vec_dot 3.1 GB/s against 2.4 reading it per index)."""
    for ib in range(8):
        scales[ib] = (np.int32(w[o + _SCALES + (ib >> 1)]) >> (4 * (ib & 1))) & 15
        qh = np.int32(w[o + _QH + ib]) << 8  # bit 8 + k: grid index 8 ib + k, bit 8
        for pair in range(4):
            sign_byte = np.int32(w[o + _SIGNS + 4 * ib + pair])
            k = 8 * ib + 2 * pair
            low_idx = np.int32(w[o + 2 + k]) | ((qh >> (2 * pair)) & 256)
            high_idx = np.int32(w[o + 3 + k]) | ((qh >> (2 * pair + 1)) & 256)
            decoded_groups[k] = _SIGNED_GRID[16 * low_idx + (sign_byte & 15)]
            decoded_groups[k + 1] = _SIGNED_GRID[16 * high_idx + (sign_byte >> 4)]


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    """As ggml-quants.c dequantize_row_iq3_s, float order as gguf-py's:
    db = d * (1 + 2 s), then db * grid * sign, which equals db * (signed grid
    value) bit for bit (negation is exact and rounding symmetric)."""
    decoded = np.empty(256, np.int8)
    scales = np.empty(8, np.int32)
    for r in range(w.shape[0]):
        row = w[r]
        for b in range(w.shape[1] // _TYPE_SIZE):
            o = b * _TYPE_SIZE
            _decode_block(row, o, decoded.view(np.uint32), scales)
            d = f16_at(row, o)
            for ib in range(8):
                db = d * np.float32(1 + 2 * scales[ib])
                for j in range(32 * ib, 32 * ib + 32):
                    out[r, b * 256 + j] = db * np.float32(decoded[j])


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    """As ggml-cpu/quants.c ggml_vec_dot_iq3_s_q8_K_generic: per sub-block the
    integer sum of signed grid value * q8, times 1 + 2 s; d_w d_x per block.

    As iq3_xxs.vec_dot: decode to 256 signed int8 (one packed-table load per 4
    weights), then iq_common.scaled_dot_256."""
    acc = np.float32(0.0)
    decoded = np.empty(256, np.int8)
    decoded_groups = decoded.view(np.uint32)
    scales = np.empty(8, np.int32)
    for b in range(d.shape[0]):
        o = b * _TYPE_SIZE
        _decode_block(w, o, decoded_groups, scales)
        for ib in range(8):
            scales[ib] = 1 + 2 * scales[ib]
        isum = scaled_dot_256(decoded, qs, b * 256, scales)
        acc += f16_at(w, o) * d[b] * np.float32(isum)
    return acc


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    for r in prange(w.shape[0]):
        for t in range(qs.shape[0]):
            out[t, r] = vec_dot(w[r], qs[t], d[t], sums[t])
