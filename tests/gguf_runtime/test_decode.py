"""gguf_runtime/decode.py: one token through the layers in one Numba call gives the batch
path's logits bit for bit, for every architecture and decode layout."""
import re

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from gguf_runtime import decode
from gguf_runtime.quantize import quantize_model
from gguf_runtime.quantize_mix import Options
from gguf_runtime.reader import GGUFFile
from gguf_runtime.transformer import Transformer
import heap_allocations
from tiny_models import TINY, random_weights, write_gguf

# 256-wide rows, so the K-quant and IQ4_XS blocks fit (the tiny models are 64 wide)
WIDE = dict(n_embd=256, head_dim=64, n_ff=256)
# file types whose tensors cover the four decode kernels and three activation formats
FILE_TYPES = ["Q4_0", "Q4_1", "Q8_0", "Q5_0", "IQ4_NL", "Q4_K_M", "Q5_K_M", "Q6_K", "IQ4_XS",
              "Q4_0+Q5_1",   # layer 1's ffn_down in Q5_1, a format without a decode layout
              "IQ4_NL+Q4_0"]  # V in Q4_0: Q and K fuse without it (weights.wqk)


def _options(file_type):
    if file_type == "Q4_0+Q5_1":
        return Options("Q4_0", tensor_types=[(re.compile(r"blk\.1\.ffn_down"), T.Q5_1)])
    if file_type == "IQ4_NL+Q4_0":
        return Options("IQ4_NL", tensor_types=[(re.compile(r"attn_v"), T.Q4_0)])
    return Options(file_type)


@pytest.fixture(scope="module")
def wide_f32(tmp_path_factory):
    """arch -> a 256-wide variant of its tiny model, as F32 GGUF."""
    paths = {}
    for arch in sorted(TINY):
        saved = TINY[arch]
        TINY[arch] = dict(saved, **WIDE)
        try:
            path = tmp_path_factory.mktemp(arch) / f"{arch}-f32.gguf"
            paths[arch] = write_gguf(arch, path, random_weights(arch))
        finally:
            TINY[arch] = saved
    return paths


def _run(tr, ids, n_prefill):
    """Logits of a prefill of n_prefill tokens, then of each later token alone."""
    tr.truncate(0)
    out = [tr.forward(ids[:n_prefill], 0).copy()]
    out += [tr.forward(ids[p:p + 1], p).copy() for p in range(n_prefill, len(ids))]
    return np.concatenate(out)


@pytest.mark.parametrize("file_type", FILE_TYPES)
@pytest.mark.parametrize("arch", sorted(TINY))
def test_decode_layers_equal_batch_path(wide_f32, tmp_path, arch, file_type):
    """30 tokens, batches of 4: gemma3's sliding layers keep a ring of 8 + 4 rows,
    so decode wraps it twice. A layer with a matrix lacking a decode layout runs
    the batch path between planned ones."""
    path = tmp_path / f"{arch}-{file_type}.gguf"
    quantize_model(wide_f32[arch], path, file_type.split("+")[0], _options(file_type),
                   quiet=True)
    ids = np.random.default_rng(3).integers(0, 128, 30).astype(np.int32)
    with GGUFFile(path) as f:
        tr = Transformer(f, n_ctx=64, n_batch=4)
        plans = tr.decode_plans
        packed = [all(m.packed is not None for m in (w.wq, w.wk, w.wv, w.wo, w.ffn_gate,
                                                     w.ffn_up, w.ffn_down))
                  for w in tr.weights.layers]
        assert [plan is not None for plan in plans] == packed
        assert any(packed) and (file_type != "Q4_0+Q5_1") == all(packed)
        fast = _run(tr, ids, 4)
        tr.decode_plans = [None] * len(plans)
        batch = _run(tr, ids, 4)
        if file_type == "IQ4_NL+Q4_0":  # Q and K as one matrix equal them apart
            assert all(w.wqk is not None and w.wqkv is None for w in tr.weights.layers)
            for w in tr.weights.layers:
                w.wqk = None
            assert np.array_equal(_run(tr, ids, 4), batch)
    assert np.isfinite(fast).all()
    assert np.array_equal(fast, batch)


def test_f32_matrices_and_q8_0_caches_take_the_batch_path(wide_f32, tmp_path):
    """Only layers whose matrices all have a decode layout, with f16 caches, get a plan."""
    with GGUFFile(wide_f32["llama"]) as f:
        assert Transformer(f, n_ctx=16).decode_plans == [None, None]
    path = tmp_path / "q4_0.gguf"
    quantize_model(wide_f32["llama"], path, "Q4_0", Options("Q4_0"), quiet=True)
    with GGUFFile(path) as f:
        assert None not in Transformer(f, n_ctx=16).decode_plans
        assert Transformer(f, n_ctx=16, cache_type_v="q8_0").decode_plans == [None, None]


def test_observers_see_one_token_forwards(wide_f32, tmp_path):
    """gguf-imatrix's observers sit in Matrix.matmul, which decode_layers bypasses:
    observing() turns the plans off while it lasts and back on after."""
    from gguf_runtime.imatrix_collect import observing
    path = tmp_path / "q4_0.gguf"
    quantize_model(wide_f32["llama"], path, "Q4_0", Options("Q4_0"), quiet=True)
    seen = []
    with GGUFFile(path) as f:
        tr = Transformer(f, n_ctx=16)
        plans = tr.decode_plans
        with observing(tr, lambda matrix, x: seen.append((matrix.name, x.shape[0]))):
            tr.forward(np.array([5], np.int32), 0)
        assert tr.decode_plans is plans and None not in plans
    assert len(seen) == 2 * 7 and ("blk.1.ffn_down.weight", 1) in seen


def test_decode_past_256_positions_takes_the_split_kv_path_as_the_batch_path(wide_f32,
                                                                             tmp_path):
    """At position 300 of a 512 cache one token's attention is split into chunks
    (flash_attention.split_kv_view): the region's chunks and reduction give the batch
    path's logits."""
    from gguf_runtime.flash_attention import split_kv_view
    assert split_kv_view(300, 1, 512) and not split_kv_view(200, 1, 512)
    path = tmp_path / "q4_0.gguf"
    quantize_model(wide_f32["llama"], path, "Q4_0", Options("Q4_0"), quiet=True)
    ids = np.random.default_rng(5).integers(0, 128, 304).astype(np.int32)
    with GGUFFile(path) as f:
        tr = Transformer(f, n_ctx=512, n_batch=512)
        fast = _run(tr, ids, 300)
        tr.decode_plans = [None] * len(tr.decode_plans)
        batch = _run(tr, ids, 300)
    assert np.isfinite(fast).all()
    assert np.array_equal(fast, batch)


def test_layer_runs_group_consecutive_plans():
    """One region for each stretch of layers with plans; the others one by one."""
    plan = (np.zeros(2, np.float32), np.zeros(decode.N_ADDRESSES, np.int64))
    runs = decode.layer_runs([plan, None, plan, plan, None, None])
    assert [(first, end, run is not None) for first, end, run in runs] == [
        (0, 1, True), (1, 2, False), (2, 4, True), (4, 5, False), (5, 6, False)]
    assert [len(run.plan_addresses) for _, _, run in runs if run] == [1, 2]
    assert decode.layer_runs([None, plan])[1][:2] == (1, 2)



def _allocations_per_token(path):
    """Heap allocations in Numba code (NRT's counter) per token decoded by one thread
    (with two, the count varies with whether the second takes any of a matrix's row
    groups: each thread that does computes the matrix's activation offsets)."""
    import numba
    n_threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with GGUFFile(path) as f:
            tr = Transformer(f, n_ctx=64)
            assert None not in tr.decode_plans
            tr.forward(np.arange(8, dtype=np.int32), 0)
            tr.forward(np.array([3], np.int32), 8)  # loads what decoding calls
            with heap_allocations.counting() as allocated:
                for pos in range(9, 13):
                    tr.forward(np.array([pos], np.int32), pos)
                return allocated() / 4
    finally:
        numba.set_num_threads(n_threads)


@pytest.mark.parametrize("file_type", ["Q4_1", "Q8_0", "Q4_K_M", "Q5_K_M", "IQ4_XS"])
def test_a_decoded_token_allocates_nothing_per_row_group(wide_f32, tmp_path, file_type):
    """The row group functions' sums live on their stack (common.stack_empty), not on
    the heap: a model with twice the feed-forward rows (4 more row groups in each of
    gate, up and down a layer) allocates as many arrays a decoded token, where each
    row group took 3-5 (SmolLM2: ~10,900 a token)."""
    saved = TINY["llama"]
    TINY["llama"] = dict(saved, **dict(WIDE, n_ff=512))
    try:
        wider = write_gguf("llama", tmp_path / "wider-f32.gguf", random_weights("llama"))
    finally:
        TINY["llama"] = saved
    counts = []
    for name, source in (("wide", wide_f32["llama"]), ("wider", wider)):
        path = tmp_path / f"{name}-{file_type}.gguf"
        quantize_model(source, path, file_type, _options(file_type), quiet=True)
        counts.append(_allocations_per_token(path))
    assert counts[0] == counts[1], counts
