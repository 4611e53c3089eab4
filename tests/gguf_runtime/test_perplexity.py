"""Perplexity against llama-perplexity on the same ≥ 50 KB English text
(tests/data/english_text.txt; references from tests/data/make_llama_refs.py).

llama-perplexity prints the running perplexity after every chunk, so scoring the
first few chunks here compares against its figure after the same chunks."""
import io
from pathlib import Path

import pytest

from gguf_runtime.model import Model
from gguf_runtime.perplexity import perplexity

TEXT = (Path(__file__).parents[1] / "data" / "english_text.txt").read_text(encoding="utf-8")

# (model, n_ctx, chunks scored here, tolerance): 1% for the real models, 0.5% for
# the derived qwen files, as the issue asks; gemma3 at 2048 runs past its window.
# The flatter qwen3 file (PPL ~160) needs 8 chunks before chunk-to-chunk noise
# (0.7% after one chunk) settles: on the whole text ours is 168.31 vs 168.33.
CASES = [("smollm2-135m", 512, 4, 0.01), ("gemma3-270m", 512, 3, 0.01),
         ("gemma3-270m", 2048, 1, 0.01), ("qwen2-derived", 512, 3, 0.005),
         ("qwen3-derived", 512, 8, 0.005)]


@pytest.mark.parametrize("name,n_ctx,chunks,tol", CASES,
                         ids=[f"{c[0]}-c{c[1]}" for c in CASES])
def test_perplexity_matches_llama_perplexity(model_paths, llama_refs, name, n_ctx, chunks, tol):
    ref = llama_refs["perplexity"][name][str(n_ctx)]["chunks"][chunks - 1]
    out = io.StringIO()
    with Model.load(model_paths[name], n_ctx=n_ctx) as model:
        result = perplexity(model, TEXT, n_ctx=n_ctx, n_chunks=chunks, out=out, progress=None)
    assert result.n_chunks == chunks
    assert result.n_scored == chunks * (n_ctx - n_ctx // 2 - 1)
    assert abs(result.ppl / ref - 1) < tol, (result.ppl, ref)
    assert out.getvalue().startswith("[1]") and out.getvalue().count(",") == chunks


# -ctk/-ctv q8_0, each alone and both, on the real models (llama.cpp rotates the
# quantized K/V by a Hadamard matrix; gemma3 at 2048 runs its SWA rings past the window)
KV_PAIRS = [("q8_0", "q8_0"), ("q8_0", "f16"), ("f16", "q8_0")]
KV_CASES = [case + (pair,) for case in CASES[:3] for pair in KV_PAIRS]


@pytest.mark.parametrize("name,n_ctx,chunks,tol,pair", KV_CASES,
                         ids=[f"{c[0]}-c{c[1]}-{c[4][0]}-{c[4][1]}" for c in KV_CASES])
def test_quantized_kv_cache_perplexity_matches_llama(model_paths, llama_refs, name, n_ctx,
                                                     chunks, tol, pair):
    ref = llama_refs["perplexity_kv"][name][str(n_ctx)]["/".join(pair)]["chunks"][chunks - 1]
    with Model.load(model_paths[name], n_ctx=n_ctx, cache_type_k=pair[0],
                    cache_type_v=pair[1]) as model:
        result = perplexity(model, TEXT, n_ctx=n_ctx, n_chunks=chunks, out=None, progress=None)
    assert abs(result.ppl / ref - 1) < tol, (result.ppl, ref)


def test_too_short_text_is_refused(model_paths):
    from gguf_runtime.errors import ModelError
    with Model.load(model_paths["smollm2-135m"], n_ctx=512) as model:
        with pytest.raises(ModelError, match="at least 1024 tokens"):
            perplexity(model, "too short", n_ctx=512, out=None, progress=None)
