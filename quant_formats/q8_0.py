"""Q8_0: 32 int8 weights and one f16 scale per block (ggml-common.h block_q8_0).

Also the activation format of Q4_0, Q5_0, Q8_0 and IQ4_NL. Activations are held
as three arrays rather than ggml's interleaved bytes, with the same values:
    qs    int8 [n_tokens, n_in]          the quants
    d     f32  [n_tokens, n_in // 32]    scales, rounded to f16 as ggml stores them
    sums  f32  [n_tokens, 0]             (Q8_1 and Q8_K fill this; Q8_0 has none)

Weights are quantized by quantize_blocks as ggml's quantize_row_q8_0_ref (roundf,
scale 1/d; the imatrix is ignored), which differs from the activation rounding.
"""
import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit, prange

from . import group_dot, interleave, launch
from .common import (ROWS_PER_TASK, as_int8, f16_at, f16_round, f16_to_f32, f32_from_bits,
                     round_even, spread_activations, stack_empty)
from .interleave import ROWS, TOKENS
from .quantize_common import c_int, round_away, store_f16

QTYPE = T.Q8_0
BLOCK_SIZE = 32
BLOCK_DTYPE = np.dtype([("d", "<f2"), ("qs", "i1", (32,))])
VEC_DOT_TYPE = T.Q8_0
_TYPE_SIZE = BLOCK_DTYPE.itemsize


def dequantize_reference(blocks):
    return blocks["d"].astype(np.float32)[:, None] * blocks["qs"].astype(np.float32)


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    for r in range(w.shape[0]):
        row = w[r]
        for b in range(w.shape[1] // _TYPE_SIZE):
            o = b * _TYPE_SIZE
            d = f16_at(row, o)
            for j in range(32):
                out[r, b * 32 + j] = d * np.float32(as_int8(row[o + 2 + j]))


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    """int32-truncated sums of int8 products (see kquant_common's notes)."""
    wi = w.view(np.int8)
    acc = np.float32(0.0)
    for b in range(d.shape[0]):
        o = b * _TYPE_SIZE
        s = np.int32(0)
        for j in range(32):
            s = np.int32(s + wi[o + 2 + j] * qs[b * 32 + j])
        acc += f16_at(w, o) * d[b] * np.float32(s)
    return acc


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    """vec_dot's sums, row-flat (see common.ROWS_PER_TASK)."""
    row_bytes = w.shape[1]
    x_all = spread_activations(qs, row_bytes, _TYPE_SIZE, 2, 0, 32)
    for task in prange((w.shape[0] + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        prod = np.empty(row_bytes, np.int16)
        for r in range(task * ROWS_PER_TASK, min((task + 1) * ROWS_PER_TASK, w.shape[0])):
            row = w[r]
            wi = row.view(np.int8)
            for t in range(qs.shape[0]):
                x = x_all[t]
                for j in range(row_bytes):
                    prod[j] = np.int16(wi[j]) * np.int16(x[j])
                acc = np.float32(0.0)
                for b in range(row_bytes // _TYPE_SIZE):
                    o = b * _TYPE_SIZE
                    s = np.int32(0)
                    for k in range(32):
                        s = np.int32(s + prod[o + 2 + k])
                    acc += f16_at(row, o) * d[t, b] * np.float32(s)
                out[t, r] = acc


# --- decode layout (interleave.py) ------------------------------------------

def pack(w):
    """(scales as f16 bits uint16 [groups, blocks, ROWS], quants as interleave.pack_quads
    uint8 [groups, blocks, 8, 4 * ROWS]): 2 bytes less per block than float32 scales
    (gemma3's 262144-row output matrix 189 -> 178 MB), converted in the kernel at no
    measured cost."""
    return (interleave.pack_f16_bits(w, _TYPE_SIZE, 0),
            interleave.pack_byte_quads(w, _TYPE_SIZE, 2, 32, 0x80))


# Batches run packed_matmul too where quads_dot has VNNI (quant_formats.matmul_packed):
# 512 x 576 x 3072 in 6-7 ms against 11-12 for dequantized tiles through sgemm.
INT8_PREFILL = True


@njit(cache=True, nogil=True)
def packed_offsets(d_w, q_w, qs):
    """packed_group's x_offsets: q8_0_quads_dot's sums hold 128 * sum(x) (offset binary
    weights) but with AVX2's sign trick; one pass over the activations per call."""
    return interleave.scaled_block_sums(qs, 32, interleave.q8_0_offset())


q8_0_group_dot = group_dot.group_dot_intrinsic("q8_0_group_dot", """q8_0_group_dot(acc, q_w,
    d_w, g, qs, d, x_offsets, t): packed_group's float sums of token t for row group g,
    in registers (group_dot.py).""")


@njit(cache=True, nogil=True)
def packed_group(d_w, q_w, qs, d, sums, x_offsets, out, g):
    """Row group g of packed_matmul, every token (up to TOKENS per pass)."""
    n_rows, n_blocks, n_tokens = d_w.shape[2], q_w.shape[1], qs.shape[0]
    acc = stack_empty((TOKENS, ROWS), np.float32)
    if n_tokens == 1 and group_dot.FUSED:  # decode
        q8_0_group_dot(acc[0], q_w, d_w, g, qs, d, x_offsets, 0)
        interleave.store_group(out, acc, 0, 1, g)
        return
    isum = stack_empty((TOKENS, ROWS), np.int32)
    scale_w = stack_empty(ROWS, np.float32)
    for t0 in range(0, n_tokens, TOKENS):
        n_t = min(TOKENS, n_tokens - t0)
        acc[:] = 0
        for b in range(n_blocks):
            interleave.q8_0_quads_dot(isum, q_w[g, b], 0, qs, t0, n_t, b * 32)
            for r in range(n_rows):
                scale_w[r] = f16_to_f32(d_w[g, b, r])
            interleave.add_offset_sums(acc, isum, scale_w, d, x_offsets, t0, n_t, b)
        interleave.store_group(out, acc, t0, n_t, g)


def packed_matmul(d_w, q_w, qs, d, sums, out):
    """matmul_kernel on the interleaved layout: each block's int32 sums for a group of
    rows and up to interleave.TOKENS tokens at once (the weights loaded once for all),
    then the same float steps in the same order, so results equal matmul_kernel's."""
    x_offsets = packed_offsets(d_w, q_w, qs)
    launch.run_items(packed_group, (d_w, q_w, qs, d, sums, x_offsets, out), q_w.shape[0])


@njit(cache=True, nogil=True, parallel=True)
def packed_dequantize(d_w, q_w, g0, out_t):
    """Groups g0.. of the interleaved layout -> f32 out_t [n, k * ROWS], the rows as
    columns (interleave.py: the transposed tile keeps the row loop innermost)."""
    n_rows = d_w.shape[2]
    for i in prange(out_t.shape[1] // n_rows):
        g = g0 + i
        scale = np.empty(n_rows, np.float32)
        for b in range(q_w.shape[1]):
            for r in range(n_rows):
                scale[r] = f16_to_f32(d_w[g, b, r])
            for j in range(32):
                quad, e = q_w[g, b, j // 4], j % 4
                dst = out_t[b * 32 + j, i * n_rows:(i + 1) * n_rows]
                for r in range(n_rows):
                    dst[r] = scale[r] * np.float32(np.int32(np.int32(quad[4 * r + e]) - 128))


# --- activation side -------------------------------------------------------

@njit(cache=True, nogil=True, inline="always")
def block_amax(row, b):
    """max |row[32 b .. 32 b + 31]|, as the integer maximum of the values' bits without
    their sign (the same order for every non-NaN float): a reduction LLVM vectorizes,
    where a float max's NaN rules kept it scalar."""
    bits = row.view(np.int32)
    top = np.int32(0)
    for j in range(b * 32, b * 32 + 32):
        top = max(top, np.int32(bits[j] & np.int32(0x7FFFFFFF)))
    return f32_from_bits(np.int32(top))


@njit(cache=True, nogil=True, inline="always")
def _block_scale(row, b):
    """Block b of the row's scale amax/127 rounded to f16, and the factor 127/amax its
    values are multiplied by (0 for an all-zero block)."""
    amax = block_amax(row, b)
    inv = np.float32(127.0) / amax if amax != 0 else np.float32(0.0)
    return f16_round(amax / np.float32(127.0)), inv


@njit(cache=True, nogil=True)
def quantize_rows(x, qs, d):
    """As ggml-cpu's AVX2 quantize_row_q8_0 (arch/x86/quants.c): id = 127/amax,
    round half to even; the stored scale amax/127 is rounded to f16. Decode runs it
    between matmuls while the other thread waits: 576 values took 1.1 us with to_f16's
    frexp and a scalar max, 0.46 with f16_round and block_amax (measured)."""
    for t in range(x.shape[0]):
        row, q_row = x[t], qs[t]
        for b in range(x.shape[1] // 32):
            d[t, b], inv = _block_scale(row, b)
            for j in range(b * 32, b * 32 + 32):
                q_row[j] = np.int8(round_even(row[j] * inv))


def empty(n_tokens, n_in):
    """Arrays for quantize's result (a caller's buffer reused per token)."""
    return (np.empty((n_tokens, n_in), np.int8), np.empty((n_tokens, n_in // 32), np.float32),
            np.zeros((n_tokens, 0), np.float32))


def quantize(x, out=None):
    qs, d, sums = out if out is not None else empty(*x.shape)
    quantize_rows(x, qs, d)
    return qs, d, sums


def dequantize(qs, d, sums):
    n_tokens, n_in = qs.shape
    return (qs.reshape(n_tokens, -1, 32) * d[:, :, None]).reshape(n_tokens, n_in).astype(np.float32)


@njit(cache=True, nogil=True, parallel=True)
def _rounded_rows(x, out):
    """dequantize(quantize(x)) in one pass, tokens across threads: quantize_rows' q
    and f16 scale, their product in f32 (the prefill path needs no int8 copy)."""
    for t in prange(x.shape[0]):
        row = x[t]
        for b in range(x.shape[1] // 32):
            d, inv = _block_scale(row, b)
            for j in range(32):
                out[t, b * 32 + j] = np.float32(np.int8(np.rint(x[t, b * 32 + j] * inv))) * d


def rounded(x):
    """x f32 [n_tokens, n_in] as this format holds it: dequantize(*quantize(x))."""
    out = np.empty(x.shape, np.float32)
    _rounded_rows(x, out)
    return out


# --- weight quantizer ------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _quantize_rows_ref(x, out):
    """ggml-quants.c quantize_row_q8_0_ref: d = amax/127, q = roundf(x/d) (no imatrix:
    quantize_q8_0 ignores it). Unlike the activation path above, rounding is half
    away from zero and the scale is 1/d, not 127/amax."""
    for r in prange(x.shape[0]):
        row, dst = x[r], out[r]
        for b in range(x.shape[1] // 32):
            amax = np.float32(0.0)
            for j in range(32):  # C's MAX(a, b): a > b ? a : b, which NaN steers
                v = abs(row[b * 32 + j])
                amax = amax if amax > v else v
            d = amax / np.float32(127.0)
            inv = np.float32(1.0) / d if d != 0 else np.float32(0.0)
            o = b * _TYPE_SIZE
            store_f16(dst, o, d)
            for j in range(32):
                dst[o + 2 + j] = np.uint8(c_int(round_away(row[b * 32 + j] * inv)) & 0xFF)


def quantize_blocks(x, imatrix):
    out = np.empty((x.shape[0], x.shape[1] // 32 * _TYPE_SIZE), np.uint8)
    _quantize_rows_ref(x, out)
    return out
