"""gguf_runtime/flash_attention.py: one query over a view of 512+ cells takes ggml's
split-KV path, checked against a numpy transcription of ggml-cpu/ops.cpp
(ggml_compute_forward_flash_attn_ext_f16_one_chunk per chunk of cells,
ggml_flash_attn_ext_reduce_partials) and llama-kv-cache.cpp get_n_kv."""
import math

import numba
import numpy as np
import pytest

from gguf_runtime import flash_attention as fa
from quant_formats import simd

HEAD_DIM, N_KV, N_HEADS = 64, 2, 4


def _f16(x):
    return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


def _expf(x):
    return np.float32(math.exp(float(x))) if x != -np.inf else np.float32(0.0)


def _dot_f16(a, b, n_lanes):
    """ggml_vec_dot_f16 (ggml-cpu/vec.cpp): n_lanes lanes (64 as built with AVX-512,
    32 with AVX2) halved to 4, then (l0 + l2) + (l1 + l3) (_mm512_reduce_add_ps) or
    (l0 + l1) + (l2 + l3) (GGML_F32x8_REDUCE's hadds)."""
    products = (a * b).astype(np.float32)
    lanes = products[:n_lanes].copy()
    for i in range(n_lanes, len(a), n_lanes):
        lanes += products[i:i + n_lanes]
    width = n_lanes // 2
    while width >= 4:
        lanes[:width] += lanes[width:2 * width]
        width //= 2
    if n_lanes == 64:
        return np.float32((lanes[0] + lanes[2]) + (lanes[1] + lanes[3]))
    return np.float32((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))


# The orders dot_f16_lanes compiles to: AVX-512's where the CPU has it (on a CPU
# without, this case checks AVX2's again: by design, not a skip), and AVX2's
DOT_PATHS = {"avx512": set(), "avx2": {"avx512f"}}


def _host_lanes():
    """ggml_vec_dot_f16's lanes for this CPU, less simd.DISABLED's features."""
    return 64 if simd.host_has("avx512f") else 32


HOST_LANES = _host_lanes()


@pytest.mark.parametrize("path", DOT_PATHS)
@pytest.mark.parametrize("n", [16, 48, 64, 80, 128, 200, 256])
def test_dot_f16_lanes_sums_in_ggml_s_order(n, path, monkeypatch):
    """Scores bit for bit as the transcription above, in the order of the target
    compiled for: the lanes, the halving tree, the leftovers past the last whole
    lanes in double (none below the lanes but the leftovers)."""
    monkeypatch.setattr(simd, "DISABLED", DOT_PATHS[path])
    n_lanes = _host_lanes()

    @numba.njit  # a new function: compiled with DISABLED of now
    def dots(k, q, out):
        for r in range(k.shape[0]):
            out[r] = fa.dot_f16_lanes(k[r], q)
    rng = np.random.default_rng(n)
    k = _f16(rng.standard_normal((500, n)) * np.exp(rng.uniform(-4, 4, (500, 1))))
    q = _f16(rng.standard_normal(n) * 3)
    ours = np.empty(500, np.float32)
    dots(k, q, ours)
    products = (k * q).astype(np.float32)
    main = n - n % n_lanes
    for r in range(500):
        total = np.float64(_dot_f16(k[r, :main], q[:main], n_lanes)) if main else 0.0
        for p in products[r, main:]:
            total += np.float64(p)
        assert ours[r] == np.float32(total), r


def test_the_two_orders_differ():
    """The two transcriptions are not the same sum (so the test above tells them apart)."""
    rng = np.random.default_rng(0)
    k = _f16(rng.standard_normal((200, 128)) * 100)
    q = _f16(rng.standard_normal(128))
    assert any(_dot_f16(k[r], q, 64) != _dot_f16(k[r], q, 32) for r in range(200))


def _one_chunk(qh, k, v, kh, cells, scale):
    """(M, S, V accumulator) over the given (cell, row) pairs, as one_chunk."""
    m, s, acc = np.float32(-np.inf), np.float32(0.0), np.zeros(HEAD_DIM, np.float32)
    for row in cells:
        score = np.float32(_dot_f16(k[row, kh * HEAD_DIM:(kh + 1) * HEAD_DIM], qh,
                                     HOST_LANES) * scale)
        ms, vs = np.float32(1.0), np.float32(1.0)
        if score > m:
            ms, m = _expf(m - score), score
            acc = _f16(acc * ms)
        else:
            vs = _expf(score - m)
        acc = _f16(acc + v[row, kh * HEAD_DIM:(kh + 1) * HEAD_DIM] * vs)
        s = np.float32(s * ms + vs)
    return m, s, acc


def _reference(q, k, v, pos, n_cells, window, scale, n_chunks):
    size = -(-n_cells // 256) * 256  # llama.cpp's cache of the same capacity
    n_view = min(size, max(256, -(-min(pos + 1, size) // 256) * 256))
    chunk = -(-n_view // n_chunks)
    out = np.zeros((1, N_HEADS * HEAD_DIM), np.float32)
    for h in range(N_HEADS):
        kh = h // (N_HEADS // N_KV)
        qh = _f16(q[0, h * HEAD_DIM:(h + 1) * HEAD_DIM])
        m_f, s_f, acc_f = np.float32(-np.inf), np.float32(0.0), np.zeros(HEAD_DIM, np.float32)
        for start in range(0, n_view, chunk):
            rows = []
            for cell in range(start, min(start + chunk, n_view)):
                kp = pos - (pos - cell) % size
                if kp >= 0 and not (window and pos - kp >= window):
                    rows.append(kp % n_cells)
            m, s, acc = _one_chunk(qh, k, v, kh, rows, scale)
            if s == 0:
                continue
            m_new = max(m_f, m)
            old, new = _expf(m_f - m_new), _expf(m - m_new)
            acc_f = (acc_f * old + acc * new).astype(np.float32)
            s_f, m_f = np.float32(s_f * old + s * new), m_new
        out[0, h * HEAD_DIM:(h + 1) * HEAD_DIM] = acc_f * (np.float32(1.0) / s_f)
    return out


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n_cells, window, pos", [
    (600, 0, 300),     # view 512: two chunks of 256, the second partly in the future
    (600, 0, 599),     # view 768
    (1024, 512, 1500),  # gemma3's sliding ring (512 + 512), wrapped: cell order, window
    (400, 300, 900),   # our ring of 400 rows inside llama.cpp's 512 cells
])
def test_split_kv_decode_matches_ggml(threads, n_cells, window, pos):
    rng = np.random.default_rng(pos)
    k = _f16(rng.standard_normal((n_cells, N_KV * HEAD_DIM)))
    v = _f16(rng.standard_normal((n_cells, N_KV * HEAD_DIM)))
    q = rng.standard_normal((1, N_HEADS * HEAD_DIM)).astype(np.float32)
    scale = np.float32(0.125)
    out = np.zeros_like(q)
    saved = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        fa.attention(q, k, v, pos, n_cells, window, N_KV, HEAD_DIM, HEAD_DIM, scale, threads,
                     out)
    finally:
        numba.set_num_threads(saved)
    np.testing.assert_allclose(out, _reference(q, k, v, pos, n_cells, window, scale, threads),
                               rtol=1e-6, atol=1e-7)
    if threads == 2:  # one chunk differs by the f16 accumulators' rounding: the test sees it
        one = _reference(q, k, v, pos, n_cells, window, scale, 1)
        assert np.abs(out - one).max() > 1e-5


def test_view_below_512_cells_keeps_one_chunk():
    """Positions 0..255 of any cache, and caches of up to 256 cells (a short
    context), view fewer than 512 cells: llama.cpp's one-chunk path."""
    assert fa.kv_view(255, 4096) == 256 and fa.kv_view(256, 4096) == 512
    assert fa.kv_view(1000, 200) == 256 and fa.kv_view(300, 600) == 512
    assert fa.kv_view(5000, 1024) == 1024


@pytest.mark.parametrize("pos", [40, 700])  # one chunk per head; split-KV chunks
def test_a_scratch_full_of_nan_gives_a_fresh_one_s_result(pos):
    """The items' buffers are views of the caller's scratch (new_scratch, kept in the
    run state): each item sets what it reads first, whatever an earlier call left."""
    n_cells = 1024
    rng = np.random.default_rng(pos)
    k = _f16(rng.standard_normal((n_cells, N_KV * HEAD_DIM)))
    v = _f16(rng.standard_normal((n_cells, N_KV * HEAD_DIM)))
    q = rng.standard_normal((1, N_HEADS * HEAD_DIM)).astype(np.float32)
    args = (q, k, v, pos, n_cells, 0, N_KV, HEAD_DIM, HEAD_DIM, np.float32(0.125), 2)
    fresh, reused = np.zeros_like(q), np.zeros_like(q)
    fa.attention(*args, fresh)
    scratch = fa.new_scratch(n_cells, N_HEADS // N_KV, HEAD_DIM, HEAD_DIM)
    scratch[:] = np.nan
    fa.attention(*args, reused, scratch)
    assert np.isfinite(fresh).all() and np.array_equal(fresh, reused)
    with pytest.raises(ValueError, match="scratch"):
        fa.attention(*args, reused, fa.new_scratch(256, N_HEADS // N_KV, HEAD_DIM, HEAD_DIM))
