"""Q4_K: 256 weights in 8 sub-blocks of 32, w = d*sc*q - dmin*m (ggml-common.h block_q4_K).

Block bytes: d f16 @0, dmin f16 @2, 12 bytes of packed 6-bit scales/mins @4
(kquant_common.scale_min_k4), 128 bytes of quants @16. Quant byte 32*c + l
holds weight 64*c + l in its low nibble and weight 64*c + 32 + l in its high
nibble, so sub-blocks 2c and 2c+1 share the same 32 bytes.

Quantizing (quantize_blocks) follows ggml's two paths: without an importance
matrix quantize_row_q4_K_ref (per sub-block make_qkx2_quants weighted by
av_x + |x|, scales and mins rounded to 6 bits against their maxima); with one
quantize_row_q4_K_impl (make_qkx3_quants weighted by imatrix * sqrt(sigma2 + x^2),
then make_qp_quants for the 6-bit scales and mins). Searches: kquant_quantize.
"""
import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit, prange

from . import interleave, interleave_k
from .common import f16_at
from .kquant_common import scale_min_k4, scale_min_k4_reference
from .kquant_scale_min import scale_min_block, scale_min_scratch
from .quantize_common import run_row_kernel

QTYPE = T.Q4_K
BLOCK_SIZE = 256
BLOCK_DTYPE = np.dtype([("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", (12,)),
                        ("qs", "u1", (128,))])
VEC_DOT_TYPE = T.Q8_K
_TYPE_SIZE = BLOCK_DTYPE.itemsize  # 144


def dequantize_reference(blocks):
    """Float order as gguf-py Q4_K and ggml dequantize_row_q4_K: (d*sc)*q - dmin*m."""
    n = len(blocks)
    sc, mn = scale_min_k4_reference(blocks["scales"])
    d = blocks["d"].astype(np.float32)[:, None] * sc.astype(np.float32)
    dm = blocks["dmin"].astype(np.float32)[:, None] * mn.astype(np.float32)
    qs = blocks["qs"].reshape(n, 4, 1, 32)
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(n, 8, 32).astype(np.float32)
    return (d[:, :, None] * q - dm[:, :, None]).reshape(n, 256)


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    for r in range(w.shape[0]):
        row = w[r]
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
                src = o + 16 + 32 * c
                for l in range(32):
                    q = row[src + l]
                    out[r, dst + l] = d_lo * np.float32(q & 15) - min_lo
                    out[r, dst + 32 + l] = d_hi * np.float32(q >> 4) - min_hi


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    """As ggml-cpu/quants.c ggml_vec_dot_q4_K_q8_K_generic: integer products per
    sub-block times its 6-bit scale; the min term from the activation's bsums.

    Written for LLVM's vectorizer: each sum is truncated to int32 at every step
    (Numba would widen to int64 and lose pmaddwd), and the high nibble is taken
    as q & 0xF0 with the sum shifted down after (exact: every term is a multiple
    of 16), because byte shifts do not vectorize well on x86."""
    acc = np.float32(0.0)
    for b in range(d.shape[0]):
        o = b * _TYPE_SIZE
        isum = np.int32(0)
        msum = np.int32(0)  # bsums are small integers held in f32: exact
        for c in range(4):
            src = o + 16 + 32 * c
            dst = b * 256 + 64 * c
            s_lo = np.int32(0)
            s_hi16 = np.int32(0)
            for l in range(32):
                q = w[src + l]
                s_lo = np.int32(s_lo + (q & 0x0F) * qs[dst + l])
                s_hi16 = np.int32(s_hi16 + (q & 0xF0) * qs[dst + 32 + l])
            # scales unpacked after the quant loop: measured ~15% faster than before it
            sc_lo, m_lo = scale_min_k4(w, o + 4, 2 * c)
            sc_hi, m_hi = scale_min_k4(w, o + 4, 2 * c + 1)
            isum = np.int32(isum + sc_lo * s_lo + sc_hi * (s_hi16 >> 4))
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
    """(d, dmin f32, scales and mins unpacked to uint8 [groups, blocks, 8, ROWS],
    quant bytes [groups, blocks, 128, ROWS])."""
    return (interleave_k.pack_scale_min(w, w.reshape(-1).view(BLOCK_DTYPE))
            + (interleave.pack_bytes(w, _TYPE_SIZE, 16, 128),))


packed_matmul = interleave_k.q4_k_matmul
packed_dequantize = interleave_k.q4_k_dequantize


def quantize_blocks(x, imatrix):
    """f32 [rows, n] -> uint8 [rows, n // 256 * 144], as ggml_quantize_chunk(Q4_K)."""
    return run_row_kernel(_quantize_rows, x, imatrix, BLOCK_SIZE, _TYPE_SIZE)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _pack_nibbles(L, out, o):
    """Quant byte 32c + l: level 64c + l low, 64c + 32 + l high (quantize_row_q4_K_ref)."""
    for c in range(4):
        for l in range(32):
            out[o + 16 + 32 * c + l] = L[64 * c + l] | (L[64 * c + 32 + l] << 4)


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _quantize_rows(x, imatrix, out):
    """quantize_row_q4_K_ref (make_qkx2_quants nmax 15, -1, 0.1, 20 steps) /
    quantize_row_q4_K_impl (6-bit levels unclamped)."""
    for r in prange(x.shape[0]):
        work = scale_min_scratch()
        for b in range(x.shape[1] // 256):
            scale_min_block(x[r], imatrix, b, out[r], b * _TYPE_SIZE, 15, -1.0, 0.1, 20, False, work)
            _pack_nibbles(work[0], out[r], b * _TYPE_SIZE)
