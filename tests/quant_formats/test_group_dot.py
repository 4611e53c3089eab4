"""quant_formats/group_dot.py: one token's float sums of a row group, bit for bit those
of numpy making the same float steps in the same order from the blocks' bytes as the
file holds them (decoded here, not by quant_formats), on each code path of simd.py."""
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from numba import njit

import quant_formats as qf
from quant_formats import interleave, interleave_nibbles as nibbles, q8_0, simd
from quant_formats.iq_common import KVALUES_IQ4NL
from quant_formats.random import random_blocks
from simd_paths import PATHS, ROWS

N_OUT, N_IN = 150, 96  # three row groups, the last one padded; three blocks a row
INTRINSICS = {T.Q8_0: q8_0.q8_0_group_dot, T.Q4_0: nibbles.nibble_group_dot,
              T.Q4_1: nibbles.nibble_group_dot, T.Q5_0: nibbles.five_bit_group_dot,
              T.IQ4_NL: nibbles.kvalue_group_dot}


def _f16(raw, at):
    return raw[:, :, at:at + 2].copy().view("<f2")[:, :, 0].astype(np.float32)


def _decode(raw, qtype):
    """(d, m or None, q int64 [rows, blocks, 32]) of raw blocks: value = d * q (+ m)."""
    size = {T.Q8_0: 34, T.Q4_0: 18, T.Q4_1: 20, T.Q5_0: 22, T.IQ4_NL: 18}[qtype]
    blocks = raw.reshape(raw.shape[0], -1, size)
    if qtype == T.Q8_0:
        return _f16(blocks, 0), None, blocks[:, :, 2:].view(np.int8).astype(np.int64)
    first = {T.Q4_1: 4, T.Q5_0: 6}.get(qtype, 2)
    nib = blocks[:, :, first:first + 16].astype(np.int64)
    q = np.concatenate([nib & 15, nib >> 4], axis=2)
    if qtype == T.Q4_0:
        return _f16(blocks, 0), None, q - 8
    if qtype == T.Q4_1:
        return _f16(blocks, 0), _f16(blocks, 2), q
    if qtype == T.IQ4_NL:
        return _f16(blocks, 0), None, KVALUES_IQ4NL.astype(np.int64)[q]
    qh = blocks[:, :, 2:6].copy().view("<u4")[:, :, 0].astype(np.int64)
    return _f16(blocks, 0), None, q + (((qh[:, :, None] >> np.arange(32)) & 1) << 4) - 16


def _expected(raw, qtype, qs, d_x, s_x, t):
    """Row r: acc = acc + (d * d_x) * isum, or with Q4_1's minimum acc = acc + ((d * d_x)
    * isum + m * s_x), block after block, in float32 (nibble_group's order)."""
    d, m, q = _decode(raw, qtype)
    isum = np.einsum("rbj,bj->rb", q, qs[t].astype(np.int64).reshape(-1, 32))
    acc = np.zeros(raw.shape[0], np.float32)
    for b in range(isum.shape[1]):
        term = (d[:, b] * d_x[t, b]) * isum[:, b].astype(np.float32)
        acc = acc + (term if m is None else term + m[:, b] * s_x[t, b])
    return acc


def _runner(intrinsic):
    @njit
    def run(q_w, d_w, m_w, g, x, d_x, s_x, x_offsets, t):
        acc = np.full(ROWS, np.nan, np.float32)
        intrinsic(acc, q_w, d_w, m_w, g, x, d_x, s_x, x_offsets, t)
        return acc
    return run


def _q8_0_offset():
    """interleave.q8_0_offset compiled now (simd.DISABLED as the test sets it)."""
    return njit(lambda: interleave.q8_0_offset())()


def _x_offsets(qtype, qs):
    """What the kernel's integer sums hold beyond sum(q * x): offset * sum(x) a block."""
    offset = {T.Q4_0: 8, T.Q5_0: 16, T.Q4_1: 0}.get(qtype, None)
    offset = _q8_0_offset() if offset is None else offset
    return (offset * qs.astype(np.int64).reshape(qs.shape[0], -1, 32).sum(axis=2)).astype(np.int32)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("qtype", INTRINSICS, ids=lambda t: t.name)
def test_group_dot_is_the_float_steps_in_order(qtype, path, monkeypatch):
    """Every group (the padded last one's real rows) and a token other than the first
    (x, d_x, s_x addressed by row); extreme blocks: all-max weights against -127."""
    monkeypatch.setattr(simd, "DISABLED", PATHS[path])
    raw = random_blocks(qtype, N_OUT, N_IN, seed=int(qtype))
    x = np.random.default_rng(3).standard_normal((3, N_IN)).astype(np.float32)
    x[2, :32] = -np.abs(x[2, :32]).max()
    act = qf.get(qf.get(qtype).VEC_DOT_TYPE)
    qs, d_x, s_x = act.quantize(x)
    packed = qf.pack(raw, qtype)
    d_w, q_w = packed[0], packed[-2] if qtype != T.Q8_0 else packed[1]
    m_w = packed[1] if qtype != T.Q8_0 else d_w
    run = _runner(INTRINSICS[qtype])
    x_offsets = _x_offsets(qtype, qs)
    for t in (1, 2):
        expected = _expected(raw, qtype, qs, d_x, s_x, t)
        for g in range(q_w.shape[0]):
            acc = run(q_w, d_w, m_w, g, qs, d_x, s_x, x_offsets, t)
            rows = expected[g * ROWS:(g + 1) * ROWS]
            assert np.array_equal(acc[:len(rows)].view(np.uint32), rows.view(np.uint32))
