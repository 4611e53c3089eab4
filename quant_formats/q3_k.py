"""Q3_K: 256 weights in 16 sub-blocks of 16, w = d * (sc - 32) * q, q in -4..3
(ggml-common.h block_q3_K).

Block bytes: hmask[32] @0, qs[64] @32, 12 bytes of packed 6-bit scales @96
(kquant_common.q3_k_scale), d f16 @108. Each half n of the block (128 weights)
uses qs[32n:32n+32]: weight 128n + 32j + l has low bits 2j..2j+1 of
qs[32n + l] and high bit 4n + j of hmask[l]; q = low - 4 when that bit is
clear, low when set. Sub-block of that weight: 8n + 2j + (l >= 16).
"""
import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit, prange

from .common import f16_at
from .kquant_common import q3_k_scale

QTYPE = T.Q3_K
BLOCK_SIZE = 256
BLOCK_DTYPE = np.dtype([("hmask", "u1", (32,)), ("qs", "u1", (64,)), ("scales", "u1", (12,)),
                        ("d", "<f2")])
VEC_DOT_TYPE = T.Q8_K
_TYPE_SIZE = BLOCK_DTYPE.itemsize  # 110


def scales_reference(packed):
    """numpy: uint8 [n, 12] -> int8 [n, 16] signed scales, same rule as q3_k_scale."""
    j = np.arange(16)
    low = (packed[:, j % 8] >> (4 * (j // 8)).astype(np.uint8)) & 15
    high = (packed[:, 8 + j % 4] >> (2 * (j // 4)).astype(np.uint8)) & 3
    return (low | (high << 4)).astype(np.int8) - np.int8(32)


def dequantize_reference(blocks):
    """Float order as gguf-py Q3_K and ggml dequantize_row_q3_K: (d*sc)*q."""
    n = len(blocks)
    dl = blocks["d"].astype(np.float32)[:, None] * scales_reference(blocks["scales"]).astype(np.float32)
    low = (blocks["qs"].reshape(n, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8)[None, None, :, None]) & 3
    high = (blocks["hmask"][:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1
    q = low.reshape(n, 8, 32).astype(np.int8) - np.int8(4) * (1 - high).astype(np.int8)
    return (dl[:, :, None] * q.reshape(n, 16, 16).astype(np.float32)).reshape(n, 256)


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    for r in range(w.shape[0]):
        row = w[r]
        out_row = out[r]
        for b in range(w.shape[1] // _TYPE_SIZE):
            o = b * _TYPE_SIZE
            d = f16_at(row, o + 108)
            for n in range(2):
                src = o + 32 + 32 * n
                dst = b * 256 + 128 * n
                for k in range(2):  # sub-blocks 8n + 2j + k share bytes 16k..16k+15
                    sub = 8 * n + k
                    # d * scale first, as ggml; one byte feeds four sub-blocks
                    dl0 = d * np.float32(q3_k_scale(row, o + 96, sub))
                    dl1 = d * np.float32(q3_k_scale(row, o + 96, sub + 2))
                    dl2 = d * np.float32(q3_k_scale(row, o + 96, sub + 4))
                    dl3 = d * np.float32(q3_k_scale(row, o + 96, sub + 6))
                    for l in range(16 * k, 16 * k + 16):
                        q = np.int32(row[src + l])
                        h = np.int32(row[o + l]) >> (4 * n)  # hmask bits 4n..4n+3
                        out_row[dst + l] = dl0 * np.float32((q & 3) + ((h & 1) << 2) - 4)
                        out_row[dst + 32 + l] = dl1 * np.float32(((q >> 2) & 3) + ((h & 2) << 1) - 4)
                        out_row[dst + 64 + l] = dl2 * np.float32(((q >> 4) & 3) + (h & 4) - 4)
                        out_row[dst + 96 + l] = dl3 * np.float32((q >> 6) + ((h & 8) >> 1) - 4)


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    """As ggml-cpu/quants.c ggml_vec_dot_q3_K_q8_K_generic: per sub-block integer
    sums times the signed 6-bit scale, one f32 multiply per block.

    Loop shape chosen by measurement (the K-quant kernels are sensitive to it):
    bytes widened to int32 before shifting, sums truncated to int32 each step,
    both 16-weight sub-blocks of a 32-run in one loop. Taking the -4 from bsums
    instead, or masks in place of shifts as in q4_k, measured slower here."""
    acc = np.float32(0.0)
    for b in range(d.shape[0]):
        o = b * _TYPE_SIZE
        isum = np.int32(0)
        for n in range(2):
            src = o + 32 + 32 * n
            dst = b * 256 + 128 * n
            for j in range(4):
                shift = 2 * j
                hbit = 4 * n + j
                s_a = np.int32(0)
                s_b = np.int32(0)
                for l in range(16):
                    q_a = (((np.int32(w[src + l]) >> shift) & 3)
                           + (((np.int32(w[o + l]) >> hbit) & 1) << 2) - 4)
                    q_b = (((np.int32(w[src + 16 + l]) >> shift) & 3)
                           + (((np.int32(w[o + 16 + l]) >> hbit) & 1) << 2) - 4)
                    s_a = np.int32(s_a + np.int32(q_a) * qs[dst + 32 * j + l])
                    s_b = np.int32(s_b + np.int32(q_b) * qs[dst + 32 * j + 16 + l])
                sub = 8 * n + 2 * j
                isum = np.int32(isum + q3_k_scale(w, o + 96, sub) * s_a
                                + q3_k_scale(w, o + 96, sub + 1) * s_b)
        acc += d[b] * f16_at(w, o + 108) * np.float32(isum)
    return acc


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    for r in prange(w.shape[0]):
        for t in range(qs.shape[0]):
            out[t, r] = vec_dot(w[r], qs[t], d[t], sums[t])
