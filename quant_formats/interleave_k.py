"""Decode-layout kernels of the 256-weight formats: interleave.py's idea (the
innermost loop runs over ROWS rows of one block position) with their sub-block
scales. Integer sums and float steps as each format's vec_dot, so one token's
results equal the row-major kernel's.

Q4_K keeps its nibbles; its sums of 16 products stay in int16 lanes (twice the
lanes of int32; 16 * 15 * 127 < 2^15). Formats whose bit fields LLVM would
extract with scalar shifts (Q6_K's 2-bit tops, IQ4_XS's kvalue look-ups) are
unpacked to int8 values at load and share int8_subblocks_matmul over
interleave.quads_dot, VNNI where the CPU has it, fast enough for batches too.
"""
import numpy as np
from numba import njit, prange

from . import interleave, launch
from .common import stack_empty
from .interleave import (ROWS, TOKENS, add_nibble_products, int8_rows_dot, quads_dot,
                         quads_dot16, scaled_block_sums, store_group)
from .kquant_common import scale_min_k4_reference


def pack_scale_min(w, blocks):
    """The fields the Q4_K and Q5_K layouts share, from rows w (uint8) holding blocks
    (their structured view): d and dmin as f32 [groups, blocks, ROWS], the 6-bit scales
    and mins unpacked to uint8 [groups, blocks, 8, ROWS]."""
    sc, mn = scale_min_k4_reference(blocks["scales"])
    n_out, block_bytes = w.shape[0], blocks.dtype.itemsize
    return (interleave.pack_f16(w, block_bytes, 0), interleave.pack_f16(w, block_bytes, 2),
            interleave.pack_bytes(sc.reshape(n_out, -1), 8, 0, 8),
            interleave.pack_bytes(mn.reshape(n_out, -1), 8, 0, 8))


# Steps shared by the two scale-and-min layouts (Q4_K nibbles, Q5_K int8 levels)

@njit(cache=True, nogil=True, inline="always")
def _add_min_terms(msum, mn_block, sums_t, b):
    """msum[r] += sum over the 8 sub-blocks of m * bsums (the sub-block's two 16s)."""
    for sub in range(8):
        bsum = np.int32(sums_t[b * 16 + 2 * sub] + sums_t[b * 16 + 2 * sub + 1])
        m = mn_block[sub]
        for r in range(msum.shape[0]):
            msum[r] += np.int32(m[r]) * bsum


@njit(cache=True, nogil=True, inline="always")
def _add_block(acc, x_scale, d_b, dmin_b, isum, msum):
    """acc += d_x * (d * isum - dmin * msum), ggml's float step per block."""
    for r in range(acc.shape[0]):
        acc[r] += x_scale * (d_b[r] * np.float32(isum[r]) - dmin_b[r] * np.float32(msum[r]))


@njit(cache=True, nogil=True, inline="always")
def _sub_scale_min(d_w, dmin_w, sc_w, mn_w, g, b, sub, scale, minimum):
    """Sub-block sub's d * sc and dmin * m per row, dequantize_rows' products."""
    for r in range(scale.shape[0]):
        scale[r] = d_w[g, b, r] * np.float32(sc_w[g, b, sub, r])
        minimum[r] = dmin_w[g, b, r] * np.float32(mn_w[g, b, sub, r])


@njit(cache=True, nogil=True)
def scale_min_offsets(d_w, dmin_w, sc_w, mn_w, q_w, qs):
    """The Q4_K and Q5_K kernels' x_offsets: none (their minimums use Q8_K's block sums),
    empty, for the form the other kernels share."""
    return np.empty((qs.shape[0], 0), np.int32)


@njit(cache=True, nogil=True)
def q4_k_group(d_w, dmin_w, sc_w, mn_w, q_w, qs, d, sums, x_offsets, out, g):
    """Row group g of q4_k_matmul, every token."""
    n_rows, n_blocks = q_w.shape[3], q_w.shape[1]  # runtime counts: LLVM vectorizes
    acc = stack_empty(ROWS, np.float32)
    isum = stack_empty(ROWS, np.int32)
    msum = stack_empty(ROWS, np.int32)
    sum_lo = stack_empty(ROWS, np.int16)
    sum_hi = stack_empty(ROWS, np.int16)
    for t in range(qs.shape[0]):
        acc[:] = 0
        for b in range(n_blocks):
            isum[:] = 0
            msum[:] = 0
            for c in range(4):
                for half in range(2):
                    sum_lo[:] = 0
                    sum_hi[:] = 0
                    for j in range(16 * half, 16 * half + 16, 4):
                        add_nibble_products(sum_lo, sum_hi, q_w[g, b], 32 * c + j, qs[t],
                                            b * 256 + 64 * c + j, 32)
                    sc_lo, sc_hi = sc_w[g, b, 2 * c], sc_w[g, b, 2 * c + 1]
                    for r in range(n_rows):
                        isum[r] += (np.int32(sc_lo[r]) * np.int32(sum_lo[r])
                                    + np.int32(sc_hi[r]) * np.int32(sum_hi[r]))
            _add_min_terms(msum, mn_w[g, b], sums[t], b)
            _add_block(acc, d[t, b], d_w[g, b], dmin_w[g, b], isum, msum)
        for r in range(min(n_rows, out.shape[1] - g * n_rows)):
            out[t, g * n_rows + r] = acc[r]


def q4_k_matmul(d_w, dmin_w, sc_w, mn_w, q_w, qs, d, sums, out):
    """Q4_K: d_w, dmin_w f32 [groups, blocks, ROWS]; sc_w, mn_w uint8 [groups, blocks,
    8, ROWS] (the 6-bit scales and mins); q_w uint8 [groups, blocks, 128, ROWS], byte
    32c + l holding weights 64c + l (low nibble) and 64c + 32 + l (high).
    Per block d_x * (d * sum(sc * sum(q * q8)) - dmin * sum(m * bsums))."""
    x_offsets = scale_min_offsets(d_w, dmin_w, sc_w, mn_w, q_w, qs)
    launch.run_items(q4_k_group, (d_w, dmin_w, sc_w, mn_w, q_w, qs, d, sums, x_offsets, out),
                     q_w.shape[0])


@njit(cache=True, nogil=True, parallel=True)
def q4_k_dequantize(d_w, dmin_w, sc_w, mn_w, q_w, g0, out_t):
    """Groups g0.. of q4_k_matmul's layout -> f32 out_t [n, k * ROWS] (rows as
    columns), in dequantize_rows' float order: (d * sc) * q - dmin * m."""
    n_rows = q_w.shape[3]
    for i in prange(out_t.shape[1] // n_rows):
        g = g0 + i
        scale = np.empty(n_rows, np.float32)
        minimum = np.empty(n_rows, np.float32)
        for b in range(q_w.shape[1]):
            for sub in range(8):
                _sub_scale_min(d_w, dmin_w, sc_w, mn_w, g, b, sub, scale, minimum)
                shift = 4 * (sub % 2)
                for j in range(32):
                    q = q_w[g, b, 32 * (sub // 2) + j]
                    dst = out_t[b * 256 + 32 * sub + j, i * n_rows:(i + 1) * n_rows]
                    for r in range(n_rows):
                        dst[r] = scale[r] * np.float32(np.int32((q[r] >> shift) & 15)) - minimum[r]


@njit(cache=True, nogil=True)
def int8_scale_min_group(d_w, dmin_w, sc_w, mn_w, v_w, qs, d, sums, x_offsets, out, g):
    """Row group g of int8_scale_min_matmul, every token."""
    n_rows, n_blocks = v_w.shape[3], v_w.shape[1]
    acc = stack_empty(ROWS, np.float32)
    isum = stack_empty(ROWS, np.int32)
    msum = stack_empty(ROWS, np.int32)
    sub_sum = stack_empty(ROWS, np.int32)
    for t in range(qs.shape[0]):
        acc[:] = 0
        for b in range(n_blocks):
            isum[:] = 0
            msum[:] = 0
            for sub in range(8):
                int8_rows_dot(sub_sum, v_w[g, b], 32 * sub, 32, qs[t], b * 256 + 32 * sub)
                sc = sc_w[g, b, sub]
                for r in range(n_rows):
                    isum[r] += np.int32(sc[r]) * sub_sum[r]
            _add_min_terms(msum, mn_w[g, b], sums[t], b)
            _add_block(acc, d[t, b], d_w[g, b], dmin_w[g, b], isum, msum)
        for r in range(min(n_rows, out.shape[1] - g * n_rows)):
            out[t, g * n_rows + r] = acc[r]


def int8_scale_min_matmul(d_w, dmin_w, sc_w, mn_w, v_w, qs, d, sums, out):
    """Q5_K: q4_k_matmul's scales, mins and float steps over int8 values (the 5-bit
    levels 0..31, unpacked at load: v_w int8 [groups, blocks, 256, ROWS], weight order).
    Per block d_x * (d * sum(sc * sum(q * q8)) - dmin * sum(m * bsums)), the sums
    exact in int32 as ggml_vec_dot_q5_K_q8_K's."""
    x_offsets = scale_min_offsets(d_w, dmin_w, sc_w, mn_w, v_w, qs)
    launch.run_items(int8_scale_min_group,
                     (d_w, dmin_w, sc_w, mn_w, v_w, qs, d, sums, x_offsets, out), v_w.shape[0])


@njit(cache=True, nogil=True, parallel=True)
def int8_scale_min_dequantize(d_w, dmin_w, sc_w, mn_w, v_w, g0, out_t):
    """Groups g0.. of int8_scale_min_matmul's layout -> f32 out_t [n, k * ROWS] (rows
    as columns), in dequantize_rows' float order: (d * sc) * q - dmin * m."""
    n_rows = v_w.shape[3]
    for i in prange(out_t.shape[1] // n_rows):
        g = g0 + i
        scale = np.empty(n_rows, np.float32)
        minimum = np.empty(n_rows, np.float32)
        for b in range(v_w.shape[1]):
            for sub in range(8):
                _sub_scale_min(d_w, dmin_w, sc_w, mn_w, g, b, sub, scale, minimum)
                for j in range(32 * sub, 32 * sub + 32):
                    v, dst = v_w[g, b, j], out_t[b * 256 + j, i * n_rows:(i + 1) * n_rows]
                    for r in range(n_rows):
                        dst[r] = scale[r] * np.float32(v[r]) - minimum[r]


@njit(cache=True, nogil=True)
def int8_subblocks_offsets(d_w, sc_w, v_w, qs):
    """128 * the sum of each sub-block's activations (the weights are offset binary)."""
    return scaled_block_sums(qs, 4 * v_w.shape[2] // sc_w.shape[2], 128)


@njit(cache=True, nogil=True)
def int8_subblocks_group(d_w, sc_w, v_w, qs, d, sums, x_offsets, out, g):
    """Row group g of int8_subblocks_matmul, every token."""
    n_rows, n_blocks, n_tokens = d_w.shape[2], v_w.shape[1], qs.shape[0]
    n_sub, block = sc_w.shape[2], 4 * v_w.shape[2]
    sub_len = block // n_sub  # 16 or 32
    acc = stack_empty((TOKENS, ROWS), np.float32)
    isum = stack_empty((TOKENS, ROWS), np.int32)
    sub_sum = stack_empty((TOKENS, ROWS), np.int32)
    for t0 in range(0, n_tokens, TOKENS):
        n_t = min(TOKENS, n_tokens - t0)
        acc[:] = 0
        for b in range(n_blocks):
            isum[:] = 0
            for sub in range(n_sub):
                if sub_len == 32:
                    quads_dot(sub_sum, v_w[g, b], 8 * sub, qs, t0, n_t, b * block + 32 * sub)
                else:
                    quads_dot16(sub_sum, v_w[g, b], 4 * sub, qs, t0, n_t,
                                b * block + 16 * sub)
                sc = sc_w[g, b, sub]
                for t in range(n_t):
                    x_offset = x_offsets[t0 + t, b * n_sub + sub]
                    for r in range(n_rows):
                        isum[t, r] += np.int32(np.int32(sc[r]) * np.int32(sub_sum[t, r] - x_offset))
            d_b = d_w[g, b]
            for t in range(n_t):
                scale = d[t0 + t, b]
                for r in range(n_rows):
                    acc[t, r] += scale * d_b[r] * np.float32(isum[t, r])
        store_group(out, acc, t0, n_t, g)


def int8_subblocks_matmul(d_w, sc_w, v_w, qs, d, sums, out):
    """Blocks held as int8 values with one int8 scale per sub-block (Q6_K: q - 32 and
    a scale per 16; IQ4_XS: kvalues and ls - 32 per 32; IQ2_XXS): d_w f32 [groups,
    blocks, ROWS]; sc_w int8 [groups, blocks, n_sub, ROWS]; v_w uint8 [groups, blocks,
    block length / 4, 4 * ROWS] (interleave.pack_quads, offset binary).
    Per block d_x * d * sum(sc * sum(v * q8)), the sums in int32 (|v| <= 128); up to
    TOKENS tokens per pass over a group's weights, as q8_0.packed_matmul."""
    x_offsets = int8_subblocks_offsets(d_w, sc_w, v_w, qs)
    launch.run_items(int8_subblocks_group, (d_w, sc_w, v_w, qs, d, sums, x_offsets, out),
                     v_w.shape[0])


@njit(cache=True, nogil=True, parallel=True)
def int8_subblocks_dequantize(d_w, sc_w, v_w, g0, out_t):
    """Groups g0.. of int8_subblocks_matmul's layout -> f32 out_t [n, k * ROWS]
    (rows as columns): (d * sc) * v."""
    n_rows, block = d_w.shape[2], 4 * v_w.shape[2]
    sub_len = block // sc_w.shape[2]
    for i in prange(out_t.shape[1] // n_rows):
        g = g0 + i
        scale = np.empty(n_rows, np.float32)
        for b in range(v_w.shape[1]):
            for sub in range(sc_w.shape[2]):
                for r in range(n_rows):
                    scale[r] = d_w[g, b, r] * np.float32(sc_w[g, b, sub, r])
                for j in range(sub * sub_len, (sub + 1) * sub_len):
                    quad, e = v_w[g, b, j // 4], j % 4
                    dst = out_t[b * block + j, i * n_rows:(i + 1) * n_rows]
                    for r in range(n_rows):
                        dst[r] = scale[r] * np.float32(np.int32(np.int32(quad[4 * r + e]) - 128))
