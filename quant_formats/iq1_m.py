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
