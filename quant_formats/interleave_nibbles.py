"""The nibble layout: Q4_0, Q4_1, Q5_0 and IQ4_NL blocks in interleave.py's row groups,
their 16 bytes of nibbles as four quads of a row side by side (interleave.pack_byte_quads),
the scales as f16 bits, Q5_0's fifth bits in a fifth quad row (pack_five_bits). One
kernel (nibble_matmul) and one dequantize for the four, told apart by the layout's
offset: 8 (Q4_0), 0 (Q4_1, with its minimums), FIVE_BIT_OFFSET (Q5_0), KVALUE_OFFSET
(IQ4_NL's nibbles index kvalues_iq4nl). Each reads the file's bytes per block, where
the Q8_0 layout of int8 values read 34 (measured in the commits that made each).
"""
import numpy as np
from numba import njit, prange

from . import launch
from .common import F16_TO_F32, f16_to_f32, stack_empty
from .interleave import (ROWS, TOKENS, add_offset_sums, n_groups, pack_byte_quads, pack_f16_bits,
                         q8_0_offset, quads_dot_intrinsic, scaled_block_sums, store_group)
from .iq_common import KVALUES_IQ4NL

# nibble_matmul's offset for IQ4_NL: its nibbles index kvalues_iq4nl, looked up as
# kvalue + 128 (offset binary, as the Q8_0 layout's bytes), 128 * sum(x) taken back;
# for Q5_0: 5-bit quants minus 16, the fifth bits in a fifth quad row (pack_five_bits)
KVALUE_OFFSET = 128
FIVE_BIT_OFFSET = 16
_KVALUES = KVALUES_IQ4NL.astype(np.int32)

nibble_quads_dot = quads_dot_intrinsic("nibble_quads_dot", 4, True, """nibble_quads_dot(out,
    q_block, k0, x, t0, n_tokens, o): quads_dot for Q4_0 and Q4_1's 16 bytes per block
    in pack_nibbles' layout (q_block uint8 [4, 4 * ROWS], k0 0; byte j of a row holding
    weights j (low nibble) and j + 16 (high)): out[t, r] = the sum over the block's 32
    weights q of q * x[t0 + t, o + its index].""")
five_bit_quads_dot = quads_dot_intrinsic("five_bit_quads_dot", 4, True, """five_bit_quads_dot(
    out, q_block, k0, x, t0, n_tokens, o): nibble_quads_dot for Q5_0's unsigned 5-bit quants:
    q_block uint8 [5, 4 * ROWS] (pack_five_bits), each nibble's fifth bit from its row 4.""",
                                          high_bits=True)
kvalue_quads_dot = quads_dot_intrinsic("kvalue_quads_dot", 4, True, """kvalue_quads_dot(out,
    q_block, k0, x, t0, n_tokens, o): nibble_quads_dot for IQ4_NL, each nibble v taken as
    kvalues_iq4nl[v] + KVALUE_OFFSET (a vpshufb look-up on x86): the block read as 16
    bytes, as the file holds it, where the Q8_0 layout's int8 kvalues took 32. x within
    +-127 (Q8_0's): the sums are simd.signed_quad_dot's (q8_0_offset says which).""",
                                        table=_KVALUES + KVALUE_OFFSET, q8_0_x=True)


@njit(cache=True, nogil=True)
def nibble_offsets(d_w, m_w, q_w, offset, qs):
    """Q4_0's (IQ4_NL's, Q5_0's) offset * sum(q8) per block (none for Q4_1: empty), once
    per call rather than per row group."""
    if m_w.shape[0] > 0:
        return np.empty((qs.shape[0], 0), np.int32)
    return scaled_block_sums(qs, 32, q8_0_offset() if offset == KVALUE_OFFSET else offset)


@njit(cache=True, nogil=True)
def nibble_group(d_w, m_w, q_w, offset, qs, d, sums, x_offsets, out, g):
    """Row group g of nibble_matmul, every token (up to TOKENS per pass)."""
    n_rows, n_blocks, n_tokens = d_w.shape[2], q_w.shape[1], qs.shape[0]
    has_min = m_w.shape[0] > 0
    acc = stack_empty((TOKENS, ROWS), np.float32)
    isum = stack_empty((TOKENS, ROWS), np.int32)
    d_b, m_b = stack_empty(ROWS, np.float32), stack_empty(ROWS, np.float32)
    for t0 in range(0, n_tokens, TOKENS):
        n_t = min(TOKENS, n_tokens - t0)
        acc[:] = 0
        for b in range(n_blocks):
            for r in range(n_rows):
                d_b[r] = f16_to_f32(d_w[g, b, r])
            if has_min:
                for r in range(n_rows):
                    m_b[r] = f16_to_f32(m_w[g, b, r])
            if offset == KVALUE_OFFSET:
                kvalue_quads_dot(isum, q_w[g, b], 0, qs, t0, n_t, b * 32)
            elif offset == FIVE_BIT_OFFSET:
                five_bit_quads_dot(isum, q_w[g, b], 0, qs, t0, n_t, b * 32)
            else:
                nibble_quads_dot(isum, q_w[g, b], 0, qs, t0, n_t, b * 32)
            if not has_min:
                add_offset_sums(acc, isum, d_b, d, x_offsets, t0, n_t, b)
                continue
            for t in range(n_t):
                scale, s = d[t0 + t, b], sums[t0 + t, b]
                for r in range(n_rows):
                    acc[t, r] += d_b[r] * scale * np.float32(isum[t, r]) + m_b[r] * s
        store_group(out, acc, t0, n_t, g)


def nibble_matmul(d_w, m_w, q_w, offset, qs, d, sums, out):
    """matmul of Q4_0, Q4_1 and IQ4_NL on the interleaved layout, the same integer sums
    and float steps as their matmul_kernel: per block d_w * d_x * (sum(q * q8) - offset
    * sum(q8)), plus m * s for Q4_1. Fields: d_w, m_w uint16 [groups, blocks, ROWS],
    f16 bits (m_w empty for Q4_0, Q5_0 and IQ4_NL); q_w uint8 [groups, blocks, 4, 4 * ROWS]
    (nibble_quads_dot; kvalue_quads_dot where offset is KVALUE_OFFSET, IQ4_NL's;
    five_bit_quads_dot on [..., 5, 4 * ROWS] where it is FIVE_BIT_OFFSET, Q5_0's).
    Up to TOKENS tokens per pass over a group's weights, as q8_0.packed_matmul."""
    x_offsets = nibble_offsets(d_w, m_w, q_w, offset, qs)
    launch.run_items(nibble_group, (d_w, m_w, q_w, offset, qs, d, sums, x_offsets, out),
                     q_w.shape[0])


@njit(cache=True, nogil=True, parallel=True)
def nibble_dequantize(d_w, m_w, q_w, offset, g0, out_t):
    """Groups g0.. of the nibble_matmul layout -> f32 out_t [n, k * ROWS] (rows as
    columns), in dequantize_rows' float order: d * (q - offset) (+ m), IQ4_NL's
    d * kvalue; Q5_0's q has its fifth bit from q_w's row 4."""
    n_rows = d_w.shape[2]
    for i in prange(out_t.shape[1] // n_rows):
        g = g0 + i
        scale, m = np.empty(n_rows, np.float32), np.empty(n_rows, np.float32)
        for b in range(q_w.shape[1]):
            for r in range(n_rows):
                scale[r] = f16_to_f32(d_w[g, b, r])
            if m_w.shape[0]:
                for r in range(n_rows):
                    m[r] = f16_to_f32(m_w[g, b, r])
            for j in range(32):
                quad = q_w[g, b, (j & 15) >> 2]
                e, shift = j & 3, 4 if j >= 16 else 0
                dst = out_t[b * 32 + j, i * n_rows:(i + 1) * n_rows]
                if offset == KVALUE_OFFSET:
                    for r in range(n_rows):
                        dst[r] = scale[r] * np.float32(_KVALUES[(quad[4 * r + e] >> shift) & 15])
                    continue
                if offset == FIVE_BIT_OFFSET:
                    k = (j & 15) >> 2
                    fifth = q_w[g, b, 4, k * n_rows:(k + 1) * n_rows]
                    bit = e + shift
                    for r in range(n_rows):
                        q = np.int32(((quad[4 * r + e] >> shift) & 15)
                                     | (((fifth[r] >> bit) & 1) << 4))
                        dst[r] = scale[r] * np.float32(np.int32(q - offset))
                    continue
                for r in range(n_rows):
                    dst[r] = scale[r] * np.float32(np.int32(((quad[4 * r + e] >> shift) & 15)
                                                            - offset))
                if m_w.shape[0]:
                    for r in range(n_rows):
                        dst[r] += m[r]


_NO_SCALES = np.zeros((0, 0, 0), np.uint16)  # Q4_0's missing m (one signature for both)


def pack_nibbles(w, block_bytes, m_at, qs_at, offset):
    """nibble_matmul's arguments for Q4_0/Q4_1 blocks (scale d at byte 0, minimum m
    (None: absent) and nibbles qs at the given bytes). The scales stay f16 bits, as
    the Q8_0 layout's: 18 bytes a Q4_0 block as in the file (float32 scales made it
    20, converting 64 of them a block costs a few vcvtph2ps)."""
    return (pack_f16_bits(w, block_bytes, 0),
            _NO_SCALES if m_at is None else pack_f16_bits(w, block_bytes, m_at),
            pack_byte_quads(w, block_bytes, qs_at, 16, 0), offset)


def pack_five_bits(w, block_bytes, qh_at, qs_at):
    """nibble_matmul's arguments for Q5_0 blocks (d at byte 0, the uint32 of fifth bits
    at qh_at, nibbles at qs_at): q_w [groups, blocks, 5, 4 * ROWS], rows 0-3 the nibble
    quads, row 4 a byte per quad k and row r at k * ROWS + r whose bit e is the fifth
    bit of the weight in byte e of the quad's low nibbles, bit 4 + e of its high."""
    n_out, n_blocks = w.shape[0], w.shape[1] // block_bytes
    qh = np.ascontiguousarray(w.reshape(n_out, n_blocks, block_bytes)[:, :, qh_at:qh_at + 4])
    qh = qh.view("<u4")[:, :, 0]  # [rows, blocks]
    k = np.arange(4, dtype=np.uint32)
    fifth = (((qh[:, :, None] >> (4 * k)) & 15) | (((qh[:, :, None] >> (16 + 4 * k)) & 15) << 4))
    plane = np.zeros((n_groups(n_out) * ROWS, n_blocks, 4), np.uint8)
    plane[:n_out] = fifth
    plane = plane.reshape(-1, ROWS, n_blocks, 4).transpose(0, 2, 3, 1)  # [g, b, k, r]
    quads = pack_byte_quads(w, block_bytes, qs_at, 16, 0)
    q_w = np.concatenate([quads, plane.reshape(quads.shape[0], n_blocks, 1, 4 * ROWS)], axis=2)
    return pack_f16_bits(w, block_bytes, 0), _NO_SCALES, q_w, FIVE_BIT_OFFSET


def nibble_block_offsets(d_w, m_w, q_w, offset):
    """Q4_1's minimum m of every block, f32 [groups * ROWS, blocks] (the prefill
    path's Q8_1 residual term)."""
    return F16_TO_F32[m_w].transpose(0, 2, 1).reshape(-1, m_w.shape[1])
