"""q8_0 key/value caches (gguf_runtime/kv_cache.py, kv_quant.py): the kernels
against numpy renditions of the ggml-cpu code they follow (and gguf-py's q8_0
decoder); the forward pass with each -ctk/-ctv pair on tiny random models: close
to the float64 reference, prefill equal to decode, rings, truncate, context shift.
Agreement with llama-perplexity is in test_perplexity.py."""
import math

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize as gguf_dequantize

from gguf_runtime import flash_attention, kv_quant, layers
from gguf_runtime.errors import ModelError
from gguf_runtime.reader import GGUFFile
from gguf_runtime.transformer import Transformer
from tiny_models import TINY, random_weights, reference_logits, write_gguf

PAIRS = [("q8_0", "q8_0"), ("q8_0", "f16"), ("f16", "q8_0")]
# tiny llama with 64-wide heads: llama.cpp rotates its quantized K and V (64 | 64);
# the tiny gemma3 (32-wide heads, sliding window 8) is quantized unrotated.
LLAMA64 = dict(n_embd=64, n_head=2, n_head_kv=1, head_dim=64, n_ff=96, n_layer=2)


def _sylvester(n):
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h / math.sqrt(n)


def _q8_0_avx2(x):
    """numpy rendition of ggml-cpu arch/x86/quants.c quantize_row_q8_0 into
    block bytes: d = f16(amax/127), q = round-half-even(x * (127/amax))."""
    blocks = x.astype(np.float32).reshape(x.shape[0], -1, 32)
    amax = np.abs(blocks).max(axis=2, keepdims=True)
    with np.errstate(divide="ignore"):
        inv = np.where(amax != 0, np.float32(127.0) / amax, np.float32(0.0)).astype(np.float32)
    q = np.rint(blocks * inv).astype(np.int8)
    d = (amax / np.float32(127.0)).astype(np.float16)
    out = np.empty(blocks.shape[:2], np.dtype([("d", "<f2"), ("qs", "i1", (32,))]))
    out["d"], out["qs"] = d[..., 0], q
    return out.view(np.uint8).reshape(x.shape[0], -1)


def test_hadamard_rows_is_the_orthonormal_sylvester_matrix():
    rng = np.random.default_rng(0)
    for n in (64, 256):
        x = rng.standard_normal((5, 2 * n)).astype(np.float32)
        y = x.copy()
        kv_quant.hadamard_rows(y, n)
        h = _sylvester(n)
        expected = np.concatenate([x[:, :n] @ h, x[:, n:] @ h], axis=1)
        np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5)
        kv_quant.hadamard_rows(y, n)
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-5)


def test_rotation_sizes_follow_llama_kv_cache():
    # build_input_k_rot: the largest power of two >= 64 dividing the head size
    assert [kv_quant.k_rotation("q8_0", d) for d in (32, 64, 128, 192, 256)] == [0, 64, 128, 64, 256]
    assert kv_quant.k_rotation("f16", 256) == 0
    assert [kv_quant.v_rotation("q8_0", d) for d in (32, 64, 256)] == [0, 64, 64]


def test_store_q8_0_matches_ggml_cpu_quantizer_and_gguf_decoder():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((6, 96)) * rng.uniform(0.01, 50, (6, 1))).astype(np.float32)
    x[0, :32] = np.arange(32) - 15.5        # amax 15.5: ties of x * 127/amax
    x[1, :32] = 0.0                         # all-zero block: d 0, quants 0
    x[2, :32] = np.float32(127.0) * np.float32(rng.integers(-3, 4, 32)) / 3 + 0.5
    cache = np.zeros((8, 96 // 32 * 34), np.uint8)
    kv_quant.store_q8_0(x, cache, 5, 8)     # positions 5..10 wrap to rows 5, 6, 7, 0, 1, 2
    rows = cache[np.arange(5, 11) % 8]
    np.testing.assert_array_equal(rows, _q8_0_avx2(x))
    decoded = np.empty_like(x)
    kv_quant.dequantize_q8_0(rows, decoded)
    np.testing.assert_array_equal(decoded, gguf_dequantize(rows, T.Q8_0).reshape(x.shape))
    assert np.abs(decoded - x).max() <= np.abs(x).max() / 127


def test_dot_q8_0_is_the_scaled_integer_dot():
    rng = np.random.default_rng(2)
    k = rng.standard_normal((1, 128)).astype(np.float32)
    q = rng.standard_normal((3, 128)).astype(np.float32)
    kb, qb = _q8_0_avx2(k), _q8_0_avx2(q)
    kq = gguf_dequantize(kb, T.Q8_0).astype(np.float64).reshape(1, 128)
    qq = gguf_dequantize(qb, T.Q8_0).astype(np.float64).reshape(3, 128)
    blocks = qb.reshape(3, 4, 34)
    q_d = blocks[:, :, :2].copy().view(np.float16)[..., 0].astype(np.float32)
    q_qs = blocks[:, :, 2:].reshape(3, 128).view(np.int8)
    for t in range(3):
        got = kv_quant.dot_q8_0(kb[0], 0, q_qs, q_d, t, 0, 4)
        assert abs(got - kq[0] @ qq[t]) <= 1e-6 * np.abs(kq[0] * qq[t]).sum()


def _attention_reference(q, keys, values, n_heads, n_kv, hd, window):
    """float64 attention of the queries, the last positions, over keys at 0..;
    causal, and within the window."""
    q_pos = np.arange(keys.shape[0] - q.shape[0], keys.shape[0])
    k_pos = np.arange(keys.shape[0])
    mask = (q_pos[:, None] >= k_pos[None, :]) & (q_pos[:, None] - k_pos[None, :] < window)
    out = np.zeros((q.shape[0], n_heads * hd))
    for h in range(n_heads):
        kh = h // (n_heads // n_kv)
        s = q[:, h * hd:(h + 1) * hd] @ keys[:, kh * hd:(kh + 1) * hd].T / math.sqrt(hd)
        s = np.where(mask, s, -np.inf)
        s = np.exp(s - s.max(axis=1, keepdims=True))
        out[:, h * hd:(h + 1) * hd] = (s / s.sum(1, keepdims=True)) @ values[:, kh * hd:(kh + 1) * hd]
    return out


def _cache_of(x, kind, n_cells):
    """x stored at positions 0.. in a ring of n_cells rows; x as the cache holds it."""
    if kind == "q8_0":
        cache = np.zeros((n_cells, x.shape[1] // 32 * 34), np.uint8)
        kv_quant.store_q8_0(x, cache, 0, n_cells)
        held = gguf_dequantize(_q8_0_avx2(x), T.Q8_0).reshape(x.shape)
        return cache, np.zeros((0, 1), np.float32), cache, held.astype(np.float64)
    cache = np.zeros((n_cells, x.shape[1]), np.float32)
    flash_attention.store_f16(x, cache, 0, n_cells)
    return cache, cache, np.zeros((0, 1), np.uint8), x.astype(np.float16).astype(np.float64)


@pytest.mark.parametrize("type_k,type_v", PAIRS)
@pytest.mark.parametrize("n", [5, 70])
def test_attention_quantized_matches_float64_on_the_stored_values(type_k, type_v, n):
    """Below and above FA_TILE_Q queries (quantized caches take one path for
    both), the last n of 20 + n positions, window 16 over a ring of 16 + n rows."""
    rng = np.random.default_rng(3)
    n_heads, n_kv, hd, window, total = 4, 2, 64, 16, 20 + n
    q = rng.standard_normal((n, n_heads * hd)).astype(np.float32)
    k = rng.standard_normal((total, n_kv * hd)).astype(np.float32)
    v = rng.standard_normal((total, n_kv * hd)).astype(np.float32)
    _, k_f16, k_q8, k_held = _cache_of(k, type_k, window + n)
    _, v_f16, v_q8, v_held = _cache_of(v, type_v, window + n)
    q_qs = np.zeros((n, n_heads * hd), np.int8)
    q_d = np.zeros((n, n_heads * hd // 32), np.float32)
    if type_k == "q8_0":
        qb = _q8_0_avx2(q).reshape(n, -1, 34)
        q_d[:] = qb[:, :, :2].copy().view(np.float16)[..., 0]
        q_qs[:] = qb[:, :, 2:].reshape(n, -1).view(np.int8)
        q_held = gguf_dequantize(qb.reshape(n, -1), T.Q8_0).reshape(n, -1).astype(np.float64)
    else:
        q_held = q.astype(np.float16).astype(np.float64)
    out = np.zeros((n, n_heads * hd), np.float32)
    kv_quant.attention_quantized(q.copy(), q_qs, q_d, k_f16, k_q8, v_f16, v_q8, 20, window + n,
                                 window, n_kv, hd, hd, np.float32(1 / math.sqrt(hd)), out)
    ref = _attention_reference(q_held, k_held, v_held, n_heads, n_kv, hd, window)
    tol = 2e-3 if type_v == "f16" else 2e-5   # an f16 V accumulator rounds every step
    np.testing.assert_allclose(out, ref, rtol=0, atol=tol * np.abs(ref).max())


@pytest.fixture(scope="module", params=["gemma3", "llama64"])
def tiny(request, tmp_path_factory):
    arch = "llama" if request.param == "llama64" else "gemma3"
    with pytest.MonkeyPatch.context() as mp:
        if request.param == "llama64":
            mp.setitem(TINY, "llama", LLAMA64)
        weights = random_weights(arch)
        path = write_gguf(arch, tmp_path_factory.mktemp(arch) / f"{arch}.gguf", weights)
        with GGUFFile(path) as f:
            yield arch, weights, f


def _ids(n, seed=0):
    return np.random.default_rng(seed).integers(0, 128, n).astype(np.int32)


def _close(got, ref, tol):
    err = np.abs(got - ref).max() / np.abs(ref).max()
    assert err <= tol, err


@pytest.mark.parametrize("type_k,type_v", PAIRS)
def test_batches_past_the_window_stay_close_to_float64_reference(tiny, type_k, type_v):
    """100 tokens in batches of 16 (gemma3's rings of 8 + 16 rows wrap) and in
    batches of 80 (>= FA_TILE_Q): within q8_0's rounding of the f16 reference."""
    arch, weights, f = tiny
    ids = _ids(100, seed=1)
    ref = reference_logits(arch, weights, ids)
    for n_batch in (16, 80):
        tr = Transformer(f, n_ctx=128, n_batch=n_batch, cache_type_k=type_k, cache_type_v=type_v)
        rows = [tr.forward(ids[i:i + n_batch], i, logits_for="all").copy()
                for i in range(0, 100, n_batch)]
        _close(np.concatenate(rows), ref, 1e-2)
        assert tr.k_rot == (64 if arch == "llama" and type_k == "q8_0" else 0)
        assert tr.v_rot == (64 if arch == "llama" and type_v == "q8_0" else 0)


@pytest.mark.parametrize("type_k,type_v", PAIRS)
def test_prefill_in_one_batch_equals_token_by_token(tiny, type_k, type_v):
    _, _, f = tiny
    ids = _ids(20, seed=2)
    tr = Transformer(f, n_ctx=64, n_batch=32, cache_type_k=type_k, cache_type_v=type_v)
    batch = tr.forward(ids, 0, logits_for="all").copy()
    tr.truncate(0)
    steps = np.concatenate([tr.forward(ids[i:i + 1], i).copy() for i in range(len(ids))])
    _close(steps, batch, 3e-4)
    assert tr.truncate(10) == 10
    _close(tr.forward(ids[10:], 10, logits_for="all"), batch[10:], 3e-4)


def _stored_keys(tr, cache, n):
    """The first n cached keys as f32, un-rotated."""
    if cache.type_k == "f16":
        return cache.keys[:n].copy()
    keys = np.empty((n, cache.k_width), np.float32)
    kv_quant.dequantize_q8_0(cache.keys[:n], keys)
    if tr.k_rot:
        kv_quant.hadamard_rows(keys, tr.k_rot)
    return keys


@pytest.mark.parametrize("type_k,type_v", PAIRS)
def test_context_shift_rerotates_quantized_keys(tiny, type_k, type_v):
    """Shifting out tokens 4..11: kept keys are RoPE'd by -8 through f32 (and the
    Hadamard rotation) and requantized; values move byte for byte."""
    _, _, f = tiny
    tr = Transformer(f, n_ctx=32, n_batch=32, cache_type_k=type_k, cache_type_v=type_v)
    ids = _ids(30, seed=4)
    tr.forward(ids, 0)
    before = [(_stored_keys(tr, c, 30), c.keys[:30].copy(), c.values[:30].copy())
              for c in tr.caches]
    tr.shift(4, 8)
    assert tr.n_past == 22
    cfg = tr.cfg
    for il, cache in enumerate(tr.caches):
        if cache.window:
            continue
        keys, raw_keys, values = before[il]
        base, scale = tr._rope_params(il)
        expected = keys[12:30].copy()
        layers.rope(expected, np.full(18, -8), cfg.head_dim, cfg.n_rot, base, scale, cfg.rope_neox)
        step = np.abs(expected).max() / 127 if type_k == "q8_0" else 2e-3
        np.testing.assert_allclose(_stored_keys(tr, cache, 22)[4:], expected, rtol=2e-3, atol=step)
        np.testing.assert_array_equal(cache.keys[:4], raw_keys[:4])
        np.testing.assert_array_equal(cache.values[:22], np.concatenate([values[:4], values[12:]]))
    assert np.isfinite(tr.forward(ids[:1], 22)).all()


def test_q8_0_cache_memory_is_34_bytes_per_32_values(tiny):
    _, _, f = tiny
    sizes = {pair: sum(c.nbytes for c in Transformer(f, n_ctx=64, cache_type_k=pair[0],
                                                     cache_type_v=pair[1]).caches)
             for pair in [("f16", "f16"), ("q8_0", "q8_0"), ("q8_0", "f16")]}
    n_values = sizes[("f16", "f16")] // 4
    assert sizes[("q8_0", "q8_0")] == n_values * 34 // 32
    assert sizes[("q8_0", "f16")] == n_values // 2 * 34 // 32 + n_values // 2 * 4


def test_unsupported_cache_types_are_refused(tmp_path):
    path = write_gguf("qwen3", tmp_path / "qwen3.gguf")   # 16-wide heads
    with GGUFFile(path) as f:
        with pytest.raises(ModelError, match="cache type 'q4_0' for V"):
            Transformer(f, n_ctx=16, cache_type_v="q4_0")
        with pytest.raises(ModelError, match="q8_0 K cache needs a head size divisible by 32"):
            Transformer(f, n_ctx=16, cache_type_k="q8_0")
