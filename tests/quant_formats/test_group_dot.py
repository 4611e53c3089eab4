"""quant_formats/group_dot.py (as q8_0.packed_group uses it): one token's float sums of
a row group, bit for bit those of numpy making the same float steps in the same order
from the blocks' bytes as the file holds them (decoded here, not by quant_formats),
on each code path of simd.py."""
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from numba import njit

import quant_formats as qf
from quant_formats import interleave, q8_0, simd
from quant_formats.random import random_blocks
from simd_paths import PATHS, ROWS

N_OUT, N_IN = 150, 96  # three row groups, the last one padded; three blocks a row


def _expected(raw, qs, d_x, t):
    """Row r: acc = acc + (d * d_x) * isum, block after block, in float32 (the order
    of q8_0.packed_group's general path), from Q8_0 blocks as the file holds them."""
    blocks = raw.reshape(raw.shape[0], -1, 34)
    d = blocks[:, :, :2].copy().view("<f2")[:, :, 0].astype(np.float32)
    q = blocks[:, :, 2:].view(np.int8).astype(np.int64)
    isum = np.einsum("rbj,bj->rb", q, qs[t].astype(np.int64).reshape(-1, 32))
    acc = np.zeros(raw.shape[0], np.float32)
    for b in range(isum.shape[1]):
        acc = acc + (d[:, b] * d_x[t, b]) * isum[:, b].astype(np.float32)
    return acc


@njit
def _run(q_w, d_w, g, x, d_x, x_offsets, t):
    acc = np.full(ROWS, np.nan, np.float32)
    q8_0.q8_0_group_dot(acc, q_w, d_w, g, x, d_x, x_offsets, t)
    return acc


@pytest.mark.parametrize("path", PATHS)
def test_q8_0_group_dot_is_the_float_steps_in_order(path, monkeypatch):
    """Every group (the padded last one's real rows) and a token other than the first
    (x, d_x addressed by row); an extreme block: every activation -127. x_offsets:
    what the integer sums hold beyond sum(q * x) on this path (q8_0_offset * sum(x))."""
    monkeypatch.setattr(simd, "DISABLED", PATHS[path])
    run = njit(_run.py_func)  # compiled now, for this path
    offset = njit(lambda: interleave.q8_0_offset())()
    raw = random_blocks(T.Q8_0, N_OUT, N_IN, seed=4)
    x = np.random.default_rng(3).standard_normal((3, N_IN)).astype(np.float32)
    x[2, :32] = -np.abs(x[2, :32]).max()
    qs, d_x, _ = q8_0.quantize(x)
    d_w, q_w = qf.pack(raw, T.Q8_0)
    x_offsets = (offset * qs.astype(np.int64).reshape(3, -1, 32).sum(axis=2)).astype(np.int32)
    for t in (1, 2):
        expected = _expected(raw, qs, d_x, t)
        for g in range(q_w.shape[0]):
            acc = run(q_w, d_w, g, qs, d_x, x_offsets, t)
            rows = expected[g * ROWS:(g + 1) * ROWS]
            assert np.array_equal(acc[:len(rows)].view(np.uint32), rows.view(np.uint32))
