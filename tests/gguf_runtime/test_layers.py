"""Layer kernels against numpy formulations of ggml's rules."""
from pathlib import Path

import numpy as np
import pytest

from gguf_runtime import flash_attention, layers


def _ggml_geglu(x, g):
    """ggml-cpu/vec.h ggml_vec_geglu_f32 with GGML_GELU_FP16: table of
    f16(gelu_f32(h)) indexed by f16(x); 0 below -10, identity above 10."""
    h = x.astype(np.float16).astype(np.float32)
    gelu = (np.float32(0.5) * h * (np.float32(1) + np.tanh(np.float32(0.7978845608028654) * h * (
        np.float32(1) + np.float32(0.044715) * h * h)))).astype(np.float16).astype(np.float32)
    return np.where(x <= -10, np.float32(0), np.where(x >= 10, x, gelu)) * g


def test_gelu_is_ggml_table_lookup_exactly():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(100_000) * np.exp(rng.uniform(-20, 3, 100_000))).astype(np.float32)
    x = np.concatenate([x, np.float32([0, -0.0, 9.999, -9.999, 10, -10, 11, -11, 6.1e-5, -6e-5])])
    g = rng.standard_normal(x.size).astype(np.float32)
    out = np.empty((1, x.size), np.float32)
    layers.gated_activation(x[None].copy(), g[None].copy(), True, out)
    np.testing.assert_array_equal(out[0], _ggml_geglu(x, g))


def test_silu():
    x = np.linspace(-30, 30, 1001, dtype=np.float32)[None]
    out = np.empty_like(x)
    layers.gated_activation(x, np.ones_like(x), False, out)
    np.testing.assert_allclose(out, x / (1 + np.exp(-x.astype(np.float64))), rtol=1e-6, atol=1e-30)


GGML_VEC_REFS = Path(__file__).parents[1] / "data" / "ggml_vec_refs.npz"


def test_silu_is_ggml_swiglu_bit_for_bit():
    """Against ggml_vec_swiglu_f32 itself (tests/data/make_ggml_vec_refs.py): ggml_v_silu
    over whole 16s, libm's expf for the tail, overflow and infinite inputs included;
    one token (serial) and a batch (parallel rows) alike."""
    ref = np.load(GGML_VEC_REFS)
    x, g, y = ref["swiglu_x"], ref["swiglu_g"], ref["swiglu_y"]
    for n_rows in (1, 3):
        out = np.empty((n_rows, x.size), np.float32)
        layers.gated_activation(np.tile(x, (n_rows, 1)), np.tile(g, (n_rows, 1)), False, out)
        for row in out:
            nan = np.isnan(y)
            assert np.array_equal(np.isnan(row), nan)
            assert np.array_equal(row[~nan].view(np.uint32), y[~nan].view(np.uint32))


def test_f16_round_matches_numpy():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(50_000) * np.exp(rng.uniform(-20, 10, 50_000))).astype(np.float32)
    x = x[np.abs(x) < 65504]
    cache = np.zeros((x.size, 1), np.float32)
    flash_attention.store_f16(x[:, None], cache, 0, x.size)
    np.testing.assert_array_equal(cache[:, 0], x.astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("n, window, pos0", [(64, 12, 70), (150, 0, 0), (150, 40, 30)])
def test_blas_attention_equals_kernel_in_f32(n, window, pos0):
    """The two attention paths agree (the kernel's f16 rounding aside): on a ring
    that wrapped, with a window; over several FA_TILE_Q chunks, the last partial."""
    rng = np.random.default_rng(2)
    n_cells = 40 if window else pos0 + n
    k = rng.standard_normal((n_cells, 2 * 16)).astype(np.float32)
    v = rng.standard_normal((n_cells, 2 * 16)).astype(np.float32)
    q = rng.standard_normal((n, 4 * 16)).astype(np.float32)
    a = np.zeros((n, 64), np.float32)
    b = np.zeros((n, 64), np.float32)
    if window:
        n_cells = window + n  # the ring of a windowed cache holds window + batch cells
        k, v = (np.resize(t, (n_cells, 32)) for t in (k, v))
    flash_attention.attention(q, k, v, pos0, n_cells, window, 2, 16, 16, np.float32(0.25), 2, a)
    layers.attention_blas(q, k, v, pos0, n_cells, window, 2, 16, 16, np.float32(0.25), b)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_softmax_exponentials_are_ggml_s_bit_for_bit():
    """The batch attention's exp(x - max) against ggml_vec_soft_max_f32 itself
    (tests/data/make_ggml_vec_refs.py): ggml_v_expf over whole 16s, libm's expf for
    the tail, -inf scores (masked keys) to 0."""
    ref = np.load(GGML_VEC_REFS)
    row = ref["softmax_x"].copy()
    layers._exp_minus(row, ref["softmax_max"])
    assert np.array_equal(row.view(np.uint32), ref["softmax_y"].view(np.uint32))


def test_softmax_is_exact_softmax():
    """Within ggml_v_expf's own error (2.1e-6 relative at exp(-45), where it matches
    ggml bit for bit above)."""
    x = np.concatenate([np.linspace(-60, 30, 1001, dtype=np.float32), np.float32([-np.inf])])
    row = x.copy()
    layers._softmax(row, np.float32(0.5))
    scaled = x.astype(np.float64) * 0.5
    exact = np.exp(scaled - scaled.max())
    np.testing.assert_allclose(row, exact / exact.sum(), rtol=3e-6, atol=1e-45)
