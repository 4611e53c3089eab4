"""IQ4_XS: 256 weights in 8 sub-blocks of 32, w = d * (ls - 32) * kvalues_iq4nl[index]
(ggml-common.h block_iq4_xs).

Block bytes: d f16 @0, scales_h u16 @2, scales_l[4] @4, qs[128] @8. Sub-block
ib's 6-bit scale ls has its low nibble in scales_l[ib / 2] (low nibble for
even ib) and its top two bits at bit 2*ib of scales_h. Its 16 quant bytes
qs[16 ib : 16 ib + 16] are laid out as IQ4_NL's: byte j holds weight j in the
low nibble, weight j + 16 in the high nibble.
"""
import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit, prange

from . import interleave, interleave_k
from .common import f16_at
from .iq4_nl import SCALE_SEARCH_SCRATCH, best_block_scale, store_indices
from .iq_common import KVALUES_IQ4NL, kvalues_of_nibbles
from .quantize_common import block_weights, nearest_int, run_row_kernel_f16_d

QTYPE = T.IQ4_XS
BLOCK_SIZE = 256
BLOCK_DTYPE = np.dtype([("d", "<f2"), ("scales_h", "<u2"), ("scales_l", "u1", (4,)),
                        ("qs", "u1", (128,))])
VEC_DOT_TYPE = T.Q8_K
_TYPE_SIZE = BLOCK_DTYPE.itemsize  # 136

# byte -> kvalue of its low / high nibble, as int32: one load per weight and no
# mask or shift in the dot loop (measured fastest for IQ4_NL, see iq4_nl.py).
_LOW_VALUE = KVALUES_IQ4NL[np.arange(256) & 15].astype(np.int32)
_HIGH_VALUE = KVALUES_IQ4NL[np.arange(256) >> 4].astype(np.int32)


def sub_block_scales(blocks):
    """numpy: every block's eight ls - 32, int32 [n, 8]."""
    ib = np.arange(8)
    low = (blocks["scales_l"][:, ib // 2] >> (4 * (ib % 2))) & 15
    high = (blocks["scales_h"][:, None] >> (2 * ib)) & 3
    return (low | high << 4).astype(np.int32) - 32


def dequantize_reference(blocks):
    """As gguf-py IQ4_XS and ggml-quants.c dequantize_row_iq4_xs: (d * (ls - 32)) * kvalue."""
    n = len(blocks)
    dl = blocks["d"].astype(np.float32)[:, None] * sub_block_scales(blocks).astype(np.float32)
    values = kvalues_of_nibbles(blocks["qs"].reshape(n, 8, 16))
    return (dl[:, :, None] * values.astype(np.float32)).reshape(n, 256)


@njit(cache=True, nogil=True, inline="always")
def _sub_block_scale(w, o, ib):
    """Sub-block ib's ls - 32 (ggml-quants.c dequantize_row_iq4_xs)."""
    low = (np.int32(w[o + 4 + (ib >> 1)]) >> (4 * (ib & 1))) & 15
    high = (np.int32(w[o + 2 + (ib >> 2)]) >> (2 * (ib & 3))) & 3  # scales_h, little-endian
    return (low | (high << 4)) - 32


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    for r in range(w.shape[0]):
        row = w[r]
        for b in range(w.shape[1] // _TYPE_SIZE):
            o = b * _TYPE_SIZE
            d = f16_at(row, o)
            for ib in range(8):
                dl = d * np.float32(_sub_block_scale(row, o, ib))
                src = o + 8 + 16 * ib
                dst = b * 256 + 32 * ib
                for j in range(16):
                    q = row[src + j]
                    out[r, dst + j] = dl * np.float32(_LOW_VALUE[q])
                    out[r, dst + 16 + j] = dl * np.float32(_HIGH_VALUE[q])


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    """As ggml-cpu/quants.c ggml_vec_dot_iq4_xs_q8_K_generic, but each sub-block's
    integer sum is scaled by ls - 32 in int32 (exact: |sum| < 2^31) instead of
    in float, so one float multiply per block.

    The two sub-blocks sharing a scales_l byte are summed in one 16-step loop:
    measured 3.4 GB/s against 2.2 for one sub-block per loop."""
    acc = np.float32(0.0)
    for b in range(d.shape[0]):
        o = b * _TYPE_SIZE
        isum = np.int32(0)
        for pair in range(4):
            src = o + 8 + 32 * pair
            x = b * 256 + 64 * pair
            s_even = np.int32(0)
            s_odd = np.int32(0)
            for j in range(16):
                q = w[src + j]
                p = w[src + 16 + j]
                s_even = np.int32(s_even + _LOW_VALUE[q] * qs[x + j] + _HIGH_VALUE[q] * qs[x + 16 + j])
                s_odd = np.int32(s_odd + _LOW_VALUE[p] * qs[x + 32 + j] + _HIGH_VALUE[p] * qs[x + 48 + j])
            isum = np.int32(isum + _sub_block_scale(w, o, 2 * pair) * s_even
                            + _sub_block_scale(w, o, 2 * pair + 1) * s_odd)
        acc += f16_at(w, o) * d[b] * np.float32(isum)
    return acc


# --- decode layout (interleave.py, interleave_k.py) ---------------------------

def pack(w):
    """(d f32, ls - 32 as int8 [groups, blocks, 8, ROWS], weights as their
    kvalues in interleave.pack_quads(..., 256)): 268 bytes per block for the file's 136."""
    blocks = w.reshape(-1).view(BLOCK_DTYPE)
    ls = sub_block_scales(blocks).astype(np.int8)
    values = kvalues_of_nibbles(blocks["qs"].reshape(len(blocks), 8, 16)).reshape(w.shape[0], -1)
    return (interleave.pack_f16(w, _TYPE_SIZE, 0),
            interleave.pack_bytes(ls.view(np.uint8).reshape(w.shape[0], -1), 8, 0, 8).view(np.int8),
            interleave.pack_quads(values, 256))


packed_matmul = interleave_k.int8_subblocks_matmul
INT8_PREFILL = True  # batches too, where the CPU has VNNI (quant_formats.matmul_packed)
packed_dequantize = interleave_k.int8_subblocks_dequantize


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    for r in prange(w.shape[0]):
        for t in range(qs.shape[0]):
            out[t, r] = vec_dot(w[r], qs[t], d[t], sums[t])


# --- Quantizer: ggml-quants.c quantize_iq4_xs -> quantize_row_iq4_nl_impl(256, 32, ..., ntry 7) ---
# With or without an imatrix (without: errors weighted by x^2). Each sub-block's
# scale is searched as IQ4_NL's block scale; then d = -max_scale / 32 and each
# sub-block gets the 6-bit ls - 32 = nearest_int(scale / d), its weights the
# kvalues nearest x / (d (ls - 32)).


@njit(cache=True, nogil=True, error_model="numpy")
def _quantize_super_block(row, o, quant_weights, weight, sums, scales, out, ob):
    """One block of 256 at row[o] into out[ob:ob+136] except d; returns d (f32)."""
    sigma2 = np.float32(0.0)
    for j in range(256):
        sigma2 += row[o + j] * row[o + j]
    sigma2 *= np.float32(2.0 / 256)
    max_scale = np.float32(0.0)
    amax_scale = np.float32(0.0)
    for ib in range(8):
        block_weights(row, o + 32 * ib, quant_weights, sigma2, weight)
        scales[ib] = best_block_scale(row, o + 32 * ib, weight, sums)
        if abs(scales[ib]) > amax_scale:
            amax_scale = abs(scales[ib])
            max_scale = scales[ib]
    d = -max_scale / np.float32(32.0)
    inv_d = np.float32(1.0) / d if d != 0 else np.float32(0.0)
    scales_h = 0
    for ib in range(8):
        ls = max(-32, min(31, nearest_int(inv_d * scales[ib])))
        dl = d * np.float32(ls)
        store_indices(row, o + 32 * ib, np.float32(1.0) / dl if dl != 0 else np.float32(0.0),
                      out, ob + 8 + 16 * ib)
        ls += 32
        if ib % 2 == 0:
            out[ob + 4 + ib // 2] = ls & 15
        else:
            out[ob + 4 + ib // 2] |= (ls & 15) << 4
        scales_h |= (ls >> 4) << (2 * ib)
    out[ob + 2] = scales_h & 255
    out[ob + 3] = scales_h >> 8
    return d


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _quantize_rows(x, quant_weights, d_out, out):
    for r in prange(x.shape[0]):
        weight = np.empty(32, np.float32)
        sums = np.empty(SCALE_SEARCH_SCRATCH, np.float32)
        scales = np.empty(8, np.float32)
        for b in range(x.shape[1] // 256):
            d_out[r, b] = _quantize_super_block(x[r], 256 * b, quant_weights, weight, sums, scales,
                                                out[r], b * _TYPE_SIZE)


def quantize_blocks(x, imatrix):
    """f32 [rows, n] -> IQ4_XS bytes, as ggml_quantize_chunk (see quant_formats.quantize)."""
    return run_row_kernel_f16_d(_quantize_rows, x, imatrix, BLOCK_DTYPE, BLOCK_SIZE)
