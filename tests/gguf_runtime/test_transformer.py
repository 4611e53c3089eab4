"""The forward pass on a tiny random model per architecture, against the numpy
reference in tests/tiny_models.py; prefill equals decode; sliding-window rings;
context shift."""
import numpy as np
import pytest

from gguf_runtime import layers
from gguf_runtime.errors import ModelError
from gguf_runtime.reader import GGUFFile
from gguf_runtime.transformer import Transformer
from tiny_models import TINY, random_weights, reference_logits, write_gguf

ARCHS = sorted(TINY)


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request, tmp_path_factory):
    arch = request.param
    weights = random_weights(arch)
    path = write_gguf(arch, tmp_path_factory.mktemp(arch) / f"{arch}.gguf", weights)
    with GGUFFile(path) as f:
        yield arch, weights, f


def _ids(n, seed=0):
    return np.random.default_rng(seed).integers(0, 128, n).astype(np.int32)


def _close(got, ref, tol=2e-3):
    scale = np.abs(ref).max()
    assert np.abs(got - ref).max() <= tol * scale, np.abs(got - ref).max() / scale


def test_prefill_matches_numpy_reference(tiny):
    arch, weights, f = tiny
    ids = _ids(24)
    tr = Transformer(f, n_ctx=64, n_batch=32)
    _close(tr.forward(ids, 0, logits_for="all"), reference_logits(arch, weights, ids))


def test_long_batches_past_the_window_match_reference(tiny):
    """100 tokens in batches of 16: gemma3's sliding layers wrap their ring
    (window 8 + batch 16 = 24 rows) several times; the 64-token tiled path too."""
    arch, weights, f = tiny
    ids = _ids(100, seed=1)
    tr = Transformer(f, n_ctx=128, n_batch=16)
    rows = [tr.forward(ids[i:i + 16], i, logits_for="all").copy() for i in range(0, 100, 16)]
    _close(np.concatenate(rows), reference_logits(arch, weights, ids))
    if arch == "gemma3":
        assert [c.n_cells for c in tr.caches] == [24] * 5 + [128] + [24]


def test_large_batches_take_the_blas_path_and_match_reference(tiny):
    """Batches of 80 (>= FA_TILE_Q: BLAS attention, f32 Q) over 160 tokens; gemma3's
    rings hold 8 + 80 rows, so the second batch reads wrapped rows."""
    arch, weights, f = tiny
    ids = _ids(160, seed=6)
    tr = Transformer(f, n_ctx=256, n_batch=80)
    rows = [tr.forward(ids[i:i + 80], i, logits_for="all").copy() for i in (0, 80)]
    _close(np.concatenate(rows), reference_logits(arch, weights, ids))


def test_prefill_in_one_batch_equals_token_by_token(tiny):
    _, _, f = tiny
    ids = _ids(20, seed=2)
    tr = Transformer(f, n_ctx=64, n_batch=32)
    batch = tr.forward(ids, 0, logits_for="all").copy()
    tr.truncate(0)
    steps = np.concatenate([tr.forward(ids[i:i + 1], i).copy() for i in range(len(ids))])
    _close(steps, batch, tol=3e-4)  # float sums in another order; f16 GELU table steps


def test_truncate_then_recompute_equals_fresh(tiny):
    _, _, f = tiny
    ids = _ids(30, seed=3)
    tr = Transformer(f, n_ctx=64, n_batch=32)
    fresh = tr.forward(ids, 0, logits_for="all").copy()
    assert tr.truncate(10) == 10
    _close(tr.forward(ids[10:], 10, logits_for="all"), fresh[10:], tol=3e-4)


def test_context_shift_keeps_positions_consistent(tiny):
    """After shifting out tokens 4..11, the cache holds what running the kept
    tokens' keys at their new positions gives: RoPE by p then by -8 == by p - 8."""
    _, _, f = tiny
    tr = Transformer(f, n_ctx=32, n_batch=32)
    ids = _ids(30, seed=4)
    tr.forward(ids, 0)
    before = [c.keys[:30].copy() for c in tr.caches]
    tr.shift(4, 8)
    assert tr.n_past == 22
    cfg = tr.cfg
    for il, cache in enumerate(tr.caches):
        if cache.window:
            continue
        base, scale = tr._rope_params(il)
        expected = before[il][12:30].copy()
        layers.rope(expected, np.full(18, -8), cfg.head_dim, cfg.n_rot, base, scale, cfg.rope_neox)
        np.testing.assert_allclose(cache.keys[4:22], expected, rtol=2e-3, atol=2e-3)
        np.testing.assert_array_equal(cache.keys[:4], before[il][:4])
    out = tr.forward(ids[:1], 22)
    assert np.isfinite(out).all()


def test_rope_rotations_compose():
    x = np.random.default_rng(5).standard_normal((6, 64)).astype(np.float32)
    for neox in (False, True):
        a = x.copy()
        layers.rope(a, np.arange(10, 16), 16, 16, 10000.0, 1.0, neox)
        layers.rope(a, np.full(6, -7), 16, 16, 10000.0, 1.0, neox)
        b = x.copy()
        layers.rope(b, np.arange(3, 9), 16, 16, 10000.0, 1.0, neox)
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_bad_calls_are_refused(tiny):
    _, _, f = tiny
    tr = Transformer(f, n_ctx=16, n_batch=8)
    with pytest.raises(ModelError, match="token id"):
        tr.forward(np.array([128], np.int32), 0)
    with pytest.raises(ModelError, match="batch"):
        tr.forward(_ids(9), 0)
    tr.forward(_ids(8), 0)
    tr.forward(_ids(8), 8)
    with pytest.raises(ModelError, match="context"):
        tr.forward(_ids(1), 16)
    with pytest.raises(ModelError, match="cache type"):
        Transformer(f, n_ctx=16, cache_type_k="q4_0")
