"""Q5_K: 256 weights in 8 sub-blocks of 32, w = d*sc*q - dmin*m, q in 0..31
(ggml-common.h block_q5_K).

Block bytes: d f16 @0, dmin f16 @2, 12 bytes of packed 6-bit scales/mins @4
(kquant_common.scale_min_k4), 32 bytes qh @16, 128 bytes of low nibbles @48.
As Q4_K, nibble byte 32*c + l holds weights 64*c + l (low) and 64*c + 32 + l
(high); weight 32*k + l takes bit k of qh[l] as its fifth bit.

Quantizing (quantize_blocks) is Q4_K's with 5-bit levels: ggml's
quantize_row_q5_K_ref without an importance matrix, quantize_row_q5_K_impl with
one (shared steps in kquant_quantize.scale_min_block_ref/_impl).
"""
import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit, prange

from . import interleave, interleave_k
from .common import f16_at
from .kquant_common import scale_min_k4, scale_min_k4_reference
from .kquant_scale_min import scale_min_block, scale_min_scratch
from .quantize_common import run_row_kernel

QTYPE = T.Q5_K
BLOCK_SIZE = 256
BLOCK_DTYPE = np.dtype([("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", (12,)),
                        ("qh", "u1", (32,)), ("qs", "u1", (128,))])
VEC_DOT_TYPE = T.Q8_K
_TYPE_SIZE = BLOCK_DTYPE.itemsize  # 176


def dequantize_reference(blocks):
    """Float order as gguf-py Q5_K and ggml dequantize_row_q5_K: (d*sc)*q - dmin*m."""
    n = len(blocks)
    sc, mn = scale_min_k4_reference(blocks["scales"])
    d = blocks["d"].astype(np.float32)[:, None] * sc.astype(np.float32)
    dm = blocks["dmin"].astype(np.float32)[:, None] * mn.astype(np.float32)
    q = levels(blocks).reshape(n, 8, 32).astype(np.float32)
    return (d[:, :, None] * q - dm[:, :, None]).reshape(n, 256)


def levels(blocks):
    """The 5-bit levels 0..31 of each block, uint8 [n, 256] in weight order."""
    n = len(blocks)
    qs = blocks["qs"].reshape(n, 4, 1, 32)
    low = np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(n, 8, 32)
    high = (blocks["qh"][:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1
    return (low | (high << 4)).reshape(n, 256)


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    for r in range(w.shape[0]):
        row = w[r]
        out_row = out[r]
        for b in range(w.shape[1] // _TYPE_SIZE):
            o = b * _TYPE_SIZE
            d = f16_at(row, o)
            dmin = f16_at(row, o + 2)
            for c in range(4):
                sc_lo, m_lo = scale_min_k4(row, o + 4, 2 * c)
                sc_hi, m_hi = scale_min_k4(row, o + 4, 2 * c + 1)
                d_lo, min_lo = d * np.float32(sc_lo), dmin * np.float32(m_lo)
                d_hi, min_hi = d * np.float32(sc_hi), dmin * np.float32(m_hi)
                dst = b * 256 + 64 * c
                src = o + 48 + 32 * c
                for l in range(32):
                    q = np.int32(row[src + l])
                    h = np.int32(row[o + 16 + l]) >> (2 * c)
                    out_row[dst + l] = d_lo * np.float32((q & 15) | ((h & 1) << 4)) - min_lo
                    out_row[dst + 32 + l] = d_hi * np.float32((q >> 4) | ((h & 2) << 3)) - min_hi


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    """As ggml-cpu/quants.c ggml_vec_dot_q5_K_q8_K_generic (min term from bsums).

    Loop shape as q4_k.vec_dot: int32-truncated sums, masks instead of byte
    shifts. The fifth bit enters as sum((qh & bit) * q8), a multiple of `bit`,
    scaled to 16 * sum(bit_set * q8) after the loop."""
    acc = np.float32(0.0)
    for b in range(d.shape[0]):
        o = b * _TYPE_SIZE
        isum = np.int32(0)
        msum = np.int32(0)  # bsums are small integers held in f32: exact
        for c in range(4):
            src = o + 48 + 32 * c
            dst = b * 256 + 64 * c
            bit_lo = np.int32(1) << (2 * c)
            bit_hi = bit_lo << 1
            s_lo = np.int32(0)
            s_hi16 = np.int32(0)
            h_lo = np.int32(0)
            h_hi = np.int32(0)
            for l in range(32):
                q = w[src + l]
                h = w[o + 16 + l]
                y_lo = qs[dst + l]
                y_hi = qs[dst + 32 + l]
                s_lo = np.int32(s_lo + (q & 0x0F) * y_lo)
                s_hi16 = np.int32(s_hi16 + (q & 0xF0) * y_hi)
                h_lo = np.int32(h_lo + (h & bit_lo) * y_lo)
                h_hi = np.int32(h_hi + (h & bit_hi) * y_hi)
            sc_lo, m_lo = scale_min_k4(w, o + 4, 2 * c)
            sc_hi, m_hi = scale_min_k4(w, o + 4, 2 * c + 1)
            # h_lo is bit_lo times the sum of q8 where the fifth bit is set; that bit adds 16 x it
            sub_lo = s_lo + ((h_lo >> (2 * c)) << 4)
            sub_hi = (s_hi16 >> 4) + ((h_hi >> (2 * c + 1)) << 4)
            isum = np.int32(isum + sc_lo * sub_lo + sc_hi * sub_hi)
            g = b * 16 + 4 * c
            msum = np.int32(msum + m_lo * np.int32(sums[g] + sums[g + 1])
                            + m_hi * np.int32(sums[g + 2] + sums[g + 3]))
        acc += d[b] * (f16_at(w, o) * np.float32(isum) - f16_at(w, o + 2) * np.float32(msum))
    return acc


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    for r in prange(w.shape[0]):
        for t in range(qs.shape[0]):
            out[t, r] = vec_dot(w[r], qs[t], d[t], sums[t])


# --- decode layout (interleave.py, interleave_k.py) ---------------------------

def pack(w):
    """(d, dmin f32, scales and mins unpacked to uint8 [groups, blocks, 8, ROWS], the
    levels as int8 [groups, blocks, 256, ROWS]): 280 bytes per block against 176, for
    a kernel of int8 products (unpacking the fifth bit per weight in the kernel would
    be scalar shifts, as Q6_K's tops)."""
    blocks = w.reshape(-1).view(BLOCK_DTYPE)
    values = levels(blocks).reshape(w.shape[0], -1)
    return (interleave_k.pack_scale_min(w, blocks)
            + (interleave.pack_bytes(values, 256, 0, 256).view(np.int8),))


packed_matmul = interleave_k.int8_scale_min_matmul
packed_dequantize = interleave_k.int8_scale_min_dequantize


def quantize_blocks(x, imatrix):
    """f32 [rows, n] -> uint8 [rows, n // 256 * 176], as ggml_quantize_chunk(Q5_K)."""
    return run_row_kernel(_quantize_rows, x, imatrix, BLOCK_SIZE, _TYPE_SIZE)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _pack_levels(L, out, o):
    """Low nibbles as Q4_K at @48; the fifth bit of level 32k + l into bit k of qh[l]
    (quantize_row_q5_K_ref)."""
    for l in range(32):
        high = 0
        for k in range(8):
            high |= (L[32 * k + l] >> 4) << k
        out[o + 16 + l] = high
    for c in range(4):
        for l in range(32):
            out[o + 48 + 32 * c + l] = (L[64 * c + l] & 15) | ((L[64 * c + 32 + l] & 15) << 4)


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _quantize_rows(x, imatrix, out):
    """quantize_row_q5_K_ref (make_qkx2_quants nmax 31, -0.5, 0.1, 15 steps) /
    quantize_row_q5_K_impl (6-bit levels clamped to 63)."""
    for r in prange(x.shape[0]):
        work = scale_min_scratch()
        for b in range(x.shape[1] // 256):
            scale_min_block(x[r], imatrix, b, out[r], b * _TYPE_SIZE, 31, -0.5, 0.1, 15, True, work)
            _pack_levels(work[0], out[r], b * _TYPE_SIZE)
