"""IQ4_NL: 32 weights as 4-bit indices into kvalues_iq4nl, one f16 scale
(ggml-common.h block_iq4_nl).

Same nibble order as Q4_0: byte j of qs holds weight j in its low nibble and
weight j + 16 in its high nibble; the weight is d * kvalues_iq4nl[nibble].
"""
import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit, prange

from . import interleave_nibbles
from .common import f16_at
from .iq_common import KVALUES_IQ4NL, kvalues_of_nibbles
from .quantize_common import GROUP_MAX_EPS, block_weights, run_row_kernel_f16_d

QTYPE = T.IQ4_NL
BLOCK_SIZE = 32
BLOCK_DTYPE = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
VEC_DOT_TYPE = T.Q8_0
_TYPE_SIZE = BLOCK_DTYPE.itemsize  # 18

# byte -> kvalue of its low / high nibble, as int32: one load per weight, no
# mask or shift in the dot loop.
_LOW_VALUE = KVALUES_IQ4NL[np.arange(256) & 15].astype(np.int32)
_HIGH_VALUE = KVALUES_IQ4NL[np.arange(256) >> 4].astype(np.int32)


def dequantize_reference(blocks):
    """As gguf-py IQ4_NL and ggml-quants.c dequantize_row_iq4_nl: d * kvalue in f32."""
    return blocks["d"].astype(np.float32)[:, None] * kvalues_of_nibbles(blocks["qs"]).astype(np.float32)


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    for r in range(w.shape[0]):
        row = w[r]
        for b in range(w.shape[1] // _TYPE_SIZE):
            o = b * _TYPE_SIZE
            d = f16_at(row, o)
            for j in range(16):
                q = row[o + 2 + j]
                out[r, b * 32 + j] = d * np.float32(_LOW_VALUE[q])
                out[r, b * 32 + j + 16] = d * np.float32(_HIGH_VALUE[q])


@njit(cache=True, nogil=True, inline="always")
def _block_sum(w, qs, o, x):
    """Integer sum of kvalue * q8 over the block at w[o] and activations qs[x:x+32]."""
    s = np.int32(0)
    for j in range(16):
        q = w[o + 2 + j]
        s = np.int32(s + _LOW_VALUE[q] * qs[x + j] + _HIGH_VALUE[q] * qs[x + 16 + j])
    return s


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    """As ggml-cpu/quants.c ggml_vec_dot_iq4_nl_q8_0_generic: per block the
    integer sum of kvalue * q8, times d_w * d_x.

    Four blocks per 16-step loop, four independent sums: measured 3.6 GB/s
    against 2.6 for one block per loop (LLVM vectorizes the wider body)."""
    acc = np.float32(0.0)
    n_blocks = d.shape[0]
    b = 0
    while b + 4 <= n_blocks:
        o = b * _TYPE_SIZE + 2
        x = b * 32
        s0 = np.int32(0)
        s1 = np.int32(0)
        s2 = np.int32(0)
        s3 = np.int32(0)
        for j in range(16):
            q0 = w[o + j]
            q1 = w[o + _TYPE_SIZE + j]
            q2 = w[o + 2 * _TYPE_SIZE + j]
            q3 = w[o + 3 * _TYPE_SIZE + j]
            s0 = np.int32(s0 + _LOW_VALUE[q0] * qs[x + j] + _HIGH_VALUE[q0] * qs[x + 16 + j])
            s1 = np.int32(s1 + _LOW_VALUE[q1] * qs[x + 32 + j] + _HIGH_VALUE[q1] * qs[x + 48 + j])
            s2 = np.int32(s2 + _LOW_VALUE[q2] * qs[x + 64 + j] + _HIGH_VALUE[q2] * qs[x + 80 + j])
            s3 = np.int32(s3 + _LOW_VALUE[q3] * qs[x + 96 + j] + _HIGH_VALUE[q3] * qs[x + 112 + j])
        o -= 2
        acc += (f16_at(w, o) * d[b] * np.float32(s0)
                + f16_at(w, o + _TYPE_SIZE) * d[b + 1] * np.float32(s1)
                + f16_at(w, o + 2 * _TYPE_SIZE) * d[b + 2] * np.float32(s2)
                + f16_at(w, o + 3 * _TYPE_SIZE) * d[b + 3] * np.float32(s3))
        b += 4
    for b in range(b, n_blocks):  # rows of 32, 64 or 96 (mod 128) weights
        o = b * _TYPE_SIZE
        acc += f16_at(w, o) * d[b] * np.float32(_block_sum(w, qs, o, b * 32))
    return acc


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    for r in prange(w.shape[0]):
        for t in range(qs.shape[0]):
            out[t, r] = vec_dot(w[r], qs[t], d[t], sums[t])


# --- decode layout (interleave_nibbles.py) ----------------------------------

def pack(w):
    """Q4_0's decode layout, the nibbles as the file holds them, looked up in the kernel
    (interleave_nibbles.kvalue_quads_dot). Held as Q8_0's layout of int8 kvalues (34 bytes a
    block, not 18), decode read nearly twice the bytes: SmolLM2 IQ4_XS, whose layers
    are mostly IQ4_NL, decoded at 0.63-0.69x llama.cpp's rate on an AVX2 Zen 3."""
    return interleave_nibbles.pack_nibbles(w, _TYPE_SIZE, m_at=None, qs_at=2,
                                   offset=interleave_nibbles.KVALUE_OFFSET)


packed_matmul = interleave_nibbles.nibble_matmul
INT8_PREFILL = True  # batches too, where the CPU has VNNI (quant_formats.matmul_packed)
packed_dequantize = interleave_nibbles.nibble_dequantize


# --- Quantizer: ggml-quants.c quantize_iq4_nl -> quantize_row_iq4_nl_impl(32, 32, ..., ntry 7) ---
# ggml_quantize_chunk takes this path with or without an imatrix (without one the
# errors are weighted by x^2); the ntry = -1 _ref path is not what it calls.
# IQ4_XS runs the same per-32 search (best_block_scale) on its sub-blocks.
_KVALUES_F32 = KVALUES_IQ4NL.astype(np.float32)
_N_TRY = 7  # inverse scales (itry + kvalues[0]) / max, |itry| <= 7
SCALE_SEARCH_SCRATCH = (3, 2 * _N_TRY + 2)  # best_block_scale's sums: 16 trial scales


# best_index_int8's bisection ends at hi = the first index whose kvalue is > x. The
# kvalues are integers, so for x in [n, n + 1) that is the first kvalue > n: one
# table load by floor(x), no branches (the search loop vectorizes over scales).
_FIRST_ABOVE = np.searchsorted(KVALUES_IQ4NL.astype(np.int32),
                               np.arange(int(KVALUES_IQ4NL[0]), int(KVALUES_IQ4NL[15])),
                               side="right").astype(np.int32)
_LOWEST_FLOOR = np.float32(KVALUES_IQ4NL[0])       # x below: index 0 (hi = 1, then hi - 1)
_HIGHEST_FLOOR = np.float32(KVALUES_IQ4NL[15] - 1)  # x above or NaN: index 15


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def best_index_int8(x):
    """ggml-quants.c best_index_int8 over kvalues_iq4nl: the index of the nearest
    kvalue, the lower one unless strictly farther in f32; as C for every float
    (0 below the first kvalue, 15 above the last and for NaN)."""
    f = np.floor(x)
    f = f if f <= _HIGHEST_FLOOR else _HIGHEST_FLOOR
    f = f if f >= _LOWEST_FLOOR else _LOWEST_FLOOR
    hi = _FIRST_ABOVE[np.int32(f) - np.int32(_LOWEST_FLOOR)]
    return hi - 1 if x - _KVALUES_F32[hi - 1] < _KVALUES_F32[hi] - x else hi


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _fit_sums(row, o, weight, inv_scales, sumqx, sumq2):
    """For each inverse scale t: sum w q x and sum w q^2, q the kvalue nearest
    inv_scales[t] * x. The loop over t is innermost, so it vectorizes; each
    sum still adds its terms in C's order (j ascending)."""
    sumqx[:] = 0.0
    sumq2[:] = 0.0
    for j in range(32):
        x = row[o + j]
        w = weight[j]
        for t in range(inv_scales.shape[0]):
            q = _KVALUES_F32[best_index_int8(inv_scales[t] * x)]
            sumqx[t] += w * q * x
            sumq2[t] += w * q * q


@njit(cache=True, nogil=True, error_model="numpy")
def best_block_scale(row, o, weight, sums):
    """The scale of the 32 weights at row[o] (quantize_row_iq4_nl_impl's per-block
    search): least-squares fits at the inverse scales kvalues[0] / -max and
    (itry + kvalues[0]) / max, the best weighted fit kept; 0 for an all-zero block.
    sums: f32 SCALE_SEARCH_SCRATCH (inverse scales, sum w q x, sum w q^2 per trial)."""
    amax = np.float32(0.0)
    xmax = np.float32(0.0)
    for j in range(32):
        ax = abs(row[o + j])
        if ax > amax:
            amax = ax
            xmax = row[o + j]
    if amax < GROUP_MAX_EPS:
        return np.float32(0.0)
    inv_scales, sumqx, sumq2 = sums[0], sums[1], sums[2]
    inv_scales[0] = np.float32(1.0) / (-xmax / _KVALUES_F32[0])  # first trial: id = 1/d
    for itry in range(-_N_TRY, _N_TRY + 1):
        inv_scales[itry + _N_TRY + 1] = np.float32(itry + np.int32(KVALUES_IQ4NL[0])) / xmax
    _fit_sums(row, o, weight, inv_scales, sumqx, sumq2)
    d = sumqx[0] / sumq2[0] if sumq2[0] > 0 else np.float32(0.0)
    best = d * sumqx[0]
    for t in range(1, 2 * _N_TRY + 2):
        if sumq2[t] > 0 and sumqx[t] * sumqx[t] > best * sumq2[t]:
            d = sumqx[t] / sumq2[t]
            best = d * sumqx[t]
    return d


@njit(cache=True, nogil=True, error_model="numpy")
def store_indices(row, o, inv_scale, out, at):
    """The 32 weights at row[o] as nibbles of the kvalue nearest inv_scale * x,
    16 bytes at out[at]: weight j low, weight j + 16 high."""
    for j in range(16):
        low = best_index_int8(inv_scale * row[o + j])
        high = best_index_int8(inv_scale * row[o + 16 + j])
        out[at + j] = low | (high << 4)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _quantize_rows(x, quant_weights, d_out, out):
    for r in prange(x.shape[0]):
        row = x[r]
        weight = np.empty(32, np.float32)
        sums = np.empty(SCALE_SEARCH_SCRATCH, np.float32)
        for b in range(x.shape[1] // 32):
            o = 32 * b
            sigma2 = np.float32(0.0)
            for j in range(32):
                sigma2 += row[o + j] * row[o + j]
            sigma2 *= np.float32(2.0 / 32)
            block_weights(row, o, quant_weights, sigma2, weight)
            d = best_block_scale(row, o, weight, sums)
            d_out[r, b] = d
            store_indices(row, o, np.float32(1.0) / d if d != 0 else np.float32(0.0),
                          out[r], b * _TYPE_SIZE + 2)


def quantize_blocks(x, imatrix):
    """f32 [rows, n] -> IQ4_NL bytes, as ggml_quantize_chunk (see quant_formats.quantize)."""
    return run_row_kernel_f16_d(_quantize_rows, x, imatrix, BLOCK_DTYPE, BLOCK_SIZE)
