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
