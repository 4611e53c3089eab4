"""The forward pass shared by every architecture (llama2.c's run.c, in Numba calls).

Per layer: norm, Q/K/V projections (+ biases, + per-head norms), RoPE, KV cache,
attention over all heads, output projection (+ post-norm), residual; norm, gated
FFN (+ post-norm), residual. What differs between llama, qwen2, qwen3 and gemma3
is data in ModelConfig and which tensors the file has.
Weights stay in the memory map; matmuls run on their quantized bytes.
"""
import numba
import numpy as np

from quant_formats import q8_0

from . import decode, flash_attention, kv_quant, layers
from .config import ModelConfig
from .errors import ModelError
from .kv_cache import KVCache
from .weights import load_weights

# the empty stand-ins attention_quantized gets for the cache type a layer lacks
_NO_F16, _NO_Q8 = np.zeros((0, 1), np.float32), np.zeros((0, 1), np.uint8)


class RunState:
    """Activation buffers for one batch of up to n_batch tokens, allocated once."""

    def __init__(self, cfg: ModelConfig, n_batch: int, n_cells: int, q8_queries: bool = False):
        q_width, kv_width = cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim
        v_width, att_width = cfg.n_head_kv * cfg.head_dim_v, cfg.n_head * cfg.head_dim_v

        def buf(width):
            return np.zeros((n_batch, width), np.float32)
        self.x, self.xb, self.proj = buf(cfg.n_embd), buf(cfg.n_embd), buf(cfg.n_embd)
        self.q, self.k, self.v, self.att = buf(q_width), buf(kv_width), buf(v_width), buf(att_width)
        self.gate, self.up, self.hidden = buf(cfg.n_ff), buf(cfg.n_ff), buf(cfg.n_ff)
        # outputs of the fused matrices (weights.FusedMatrix), split into the above
        self.qkv, self.gate_up = buf(q_width + kv_width + v_width), buf(2 * cfg.n_ff)
        self.qk = buf(q_width + kv_width)  # weights.LayerWeights.wqk's output
        self.logits = np.zeros((1, cfg.n_vocab), np.float32)
        # Q as q8_0 (quants, f16-valued scales) for a q8_0 K cache's scores
        n_q8 = n_batch if q8_queries else 0
        self.q_qs = np.zeros((n_q8, q_width), np.int8)
        self.q_d = np.zeros((n_q8, q_width // kv_quant.Q8_BLOCK), np.float32)
        # the attention items' working memory, for the largest layer cache (n_cells)
        self.attn_scratch = flash_attention.new_scratch(
            n_cells, cfg.n_head // cfg.n_head_kv, cfg.head_dim, cfg.head_dim_v)


def _fused_matmul(fused, x, out, parts):
    """One call for the matrices of `fused` into out; returns its column blocks: views
    for one token (a single row is contiguous, as the kernels take it), else copies
    into the contiguous buffers `parts`."""
    fused.matmul(x, out)
    blocks = fused.columns(out)
    if out.shape[0] == 1:
        return blocks
    for part, block in zip(parts, blocks):
        part[:] = block
    return parts


def _check_cache_types(cfg: ModelConfig, type_k: str, type_v: str):
    """llama.cpp's -ctk/-ctv types we run; q8_0 needs rows of whole 32-blocks."""
    for kind, name, width in (("K", type_k, cfg.head_dim), ("V", type_v, cfg.head_dim_v)):
        if name not in kv_quant.CACHE_TYPES:
            raise ModelError(f"cache type {name!r} for {kind} is not supported "
                             f"({', '.join(kv_quant.CACHE_TYPES)} are)")
        if name == "q8_0" and width % kv_quant.Q8_BLOCK:
            raise ModelError(f"a q8_0 {kind} cache needs a head size divisible by "
                             f"{kv_quant.Q8_BLOCK}, this model's is {width}")


class Transformer:
    def __init__(self, gguf_file, n_ctx: int, n_batch: int = 512,
                 cache_type_k: str = "f16", cache_type_v: str = "f16"):
        self.cfg = cfg = ModelConfig.from_metadata(gguf_file.metadata)
        cfg.validate()
        _check_cache_types(cfg, cache_type_k, cache_type_v)
        if n_ctx <= 0 or n_batch <= 0:
            raise ModelError(f"n_ctx ({n_ctx}) and n_batch ({n_batch}) must be positive")
        self.n_ctx, self.n_batch = n_ctx, n_batch
        self.cache_type_k, self.cache_type_v = cache_type_k, cache_type_v
        self.k_rot = kv_quant.k_rotation(cache_type_k, cfg.head_dim)
        self.v_rot = kv_quant.v_rotation(cache_type_v, cfg.head_dim_v)
        self.weights = load_weights(gguf_file, cfg)
        self.caches = KVCache.for_model(cfg, n_ctx, n_batch, type_k=cache_type_k,
                                        type_v=cache_type_v, k_rot=self.k_rot)
        self.state = RunState(cfg, n_batch, max(cache.n_cells for cache in self.caches),
                              q8_queries=cache_type_k == "q8_0")
        self.n_past = 0
        # one token runs its layers in one Numba call where it can (decode.py)
        self.decode_plans = decode.layer_plans(self)
        self._runs_of = self._runs = None  # _layer_runs'
        self._batch_runs = [(il, il + 1, None) for il in range(cfg.n_layer)]

    # --- cache management -----------------------------------------------------

    def truncate(self, n: int) -> int:
        """Keep the first n positions (fewer if a sliding window lost them)."""
        n = min(n, self.n_past)
        kept = min(cache.truncate(n) for cache in self.caches)
        if kept != n:
            for cache in self.caches:
                cache.truncate(kept)
        self.n_past = kept
        return kept

    def shift(self, n_keep: int, n_discard: int):
        """Context shift: drop n_discard positions after the first n_keep."""
        if n_discard <= 0:
            return
        for il, cache in enumerate(self.caches):
            base, scale = self._rope_params(il)

            def rotate(keys, delta, base=base, scale=scale):
                positions = np.full(keys.shape[0], delta, np.int64)
                layers.rope(keys, positions, self.cfg.head_dim, self.cfg.n_rot, base, scale,
                            self.cfg.rope_neox)
            cache.shift(n_keep, n_discard, rotate)
        self.n_past -= n_discard

    def _rope_params(self, il):
        """llama-model.cpp get_rope_freq_base/scale: SWA layers use their own base."""
        cfg = self.cfg
        if cfg.swa_layers[il]:
            return cfg.rope_base_swa, 1.0
        return cfg.rope_base, cfg.rope_scale

    # --- forward --------------------------------------------------------------

    def forward(self, ids, n_past: int, logits_for: str = "last") -> np.ndarray:
        """Run ids (int32, at most n_batch) at positions n_past..; returns logits
        f32 [1, n_vocab] for the last token ('last'), [n, n_vocab] for all of them
        ('all'), or for tokens k.. (an int k). A single row is a buffer the next
        call overwrites."""
        ids = np.asarray(ids, np.int64)
        n = ids.shape[0]
        cfg, st = self.cfg, self.state
        if not 0 < n <= self.n_batch:
            raise ModelError(f"forward: {n} tokens, batch holds 1..{self.n_batch}")
        if n_past != self.n_past:
            self.truncate(n_past)
            if self.n_past != n_past:
                raise ModelError(f"forward at position {n_past}: the cache holds {self.n_past}")
        if n_past + n > self.n_ctx:
            raise ModelError(f"{n_past + n} positions do not fit the context of {self.n_ctx}")
        if ids.min() < 0 or ids.max() >= cfg.n_vocab:
            raise ModelError(f"token id out of range [0, {cfg.n_vocab})")
        x = st.x[:n]
        self.weights.embed(ids, x)
        if cfg.embd_scale != 1.0:
            x *= np.float32(cfg.embd_scale)
        positions = np.arange(n_past, n_past + n, dtype=np.int64)
        xb = st.xb[:n]  # each sub-layer's normed input, written by the one before
        layers.rms_norm(x, self.weights.layers[0].attn_norm, cfg.norm_eps, xb)
        n_threads = numba.get_num_threads()  # the caller's: attention's split follows it
        for first, end, run in self._layer_runs(n):
            if run is not None:
                run(n_past, n_threads)
                for cache in self.caches[first:end]:
                    cache.length = n_past + 1
                continue
            self._attention_block(first, x, positions, n_threads)
            following = (self.weights.layers[first + 1].attn_norm if end < cfg.n_layer
                         else self.weights.output_norm)
            self._ffn_block(first, x, following)
        self.n_past = n_past + n
        if logits_for == "last":
            return self._output(xb[n - 1:])
        return self._output(xb if logits_for == "all" else xb[int(logits_for):])

    def _layer_runs(self, n):
        """(first layer, end, run) in order: a decode.DecodeRun over layers first..end-1
        for one token where they have plans, else None for one layer (the batch path)."""
        if n > 1:
            return self._batch_runs
        if self._runs_of is not self.decode_plans:  # made again when the plans change
            self._runs_of, self._runs = self.decode_plans, decode.layer_runs(self.decode_plans)
        return self._runs

    def _attention_block(self, il, x, positions, n_threads):
        cfg, st, w = self.cfg, self.state, self.weights.layers[il]
        n = x.shape[0]
        xb, q, k, v, att = st.xb[:n], st.q[:n], st.k[:n], st.v[:n], st.att[:n]
        if w.wqkv is not None:
            q, k, v = _fused_matmul(w.wqkv, xb, st.qkv[:n], (q, k, v))
        elif w.wqk is not None:
            q, k = _fused_matmul(w.wqk, xb, st.qk[:n], (q, k))
            w.wv.matmul(xb, v)
        else:
            shared = w.wq.matmul_shared(xb, q, None)  # Q, K, V read the same input
            shared = w.wk.matmul_shared(xb, k, shared)
            w.wv.matmul_shared(xb, v, shared)
        if w.q_norm is not None:
            layers.rms_norm(q, w.q_norm, cfg.norm_eps, q)
            layers.rms_norm(k, w.k_norm, cfg.norm_eps, k)
        base, scale = self._rope_params(il)
        layers.rope(q, positions, cfg.head_dim, cfg.n_rot, base, scale, cfg.rope_neox)
        layers.rope(k, positions, cfg.head_dim, cfg.n_rot, base, scale, cfg.rope_neox)
        if cfg.q_prescale != 1.0:
            q *= np.float32(cfg.q_prescale)
        self._attend(il, q, k, v, int(positions[0]), n_threads, att)
        out = st.proj[:n]
        w.wo.matmul(att, out)
        post = w.attn_post_norm if w.attn_post_norm is not None else layers.NO_WEIGHT
        layers.residual_norm(x, out, post, cfg.norm_eps, w.ffn_norm, xb)

    def _attend(self, il, q, k, v, pos0, n_threads, att):
        """Store k, v in the layer's cache and attend q over it into att.
        Quantized caches: Hadamard rotations around them as llama-graph.cpp
        build_attn (Q and K before the store, V before it and the output after)."""
        cfg, cache = self.cfg, self.caches[il]
        if self.k_rot:
            kv_quant.hadamard_rows(q, self.k_rot)
            kv_quant.hadamard_rows(k, self.k_rot)
        if self.v_rot:
            kv_quant.hadamard_rows(v, self.v_rot)
        keys, values = cache.update_and_fetch(k, v, pos0)
        args = (pos0, cache.n_cells, cache.window, cfg.n_head_kv, cfg.head_dim, cfg.head_dim_v,
                np.float32(cfg.kq_scale))
        if self.cache_type_k == self.cache_type_v == "f16":
            if q.shape[0] < flash_attention.FA_TILE_Q:
                flash_attention.attention(q, keys, values, *args, n_threads, att,
                                          self.state.attn_scratch)
            else:
                layers.attention_blas(q, keys, values, *args, att)
        else:
            st, n = self.state, q.shape[0]
            if self.cache_type_k == "q8_0":
                q8_0.quantize_rows(q, st.q_qs[:n], st.q_d[:n])
            k_f16, k_q8 = (_NO_F16, keys) if keys.dtype == np.uint8 else (keys, _NO_Q8)
            v_f16, v_q8 = (_NO_F16, values) if values.dtype == np.uint8 else (values, _NO_Q8)
            kv_quant.attention_quantized(q, st.q_qs[:n], st.q_d[:n], k_f16, k_q8, v_f16, v_q8,
                                         *args, att)
        if self.v_rot:
            kv_quant.hadamard_rows(att, self.v_rot)

    def _ffn_block(self, il, x, following_norm):
        cfg, st, w = self.cfg, self.state, self.weights.layers[il]
        n = x.shape[0]
        xb, gate, up, hidden = st.xb[:n], st.gate[:n], st.up[:n], st.hidden[:n]
        if w.ffn_gate_up is not None:
            gate, up = _fused_matmul(w.ffn_gate_up, xb, st.gate_up[:n], (gate, up))
        else:
            shared = w.ffn_gate.matmul_shared(xb, gate, None)
            w.ffn_up.matmul_shared(xb, up, shared)
        layers.gated_activation(gate, up, cfg.activation == "gelu", hidden)
        out = st.proj[:n]
        w.ffn_down.matmul(hidden, out)
        post = w.ffn_post_norm if w.ffn_post_norm is not None else layers.NO_WEIGHT
        layers.residual_norm(x, out, post, cfg.norm_eps, following_norm, xb)

    def _output(self, xb):
        """Logits of the rows xb (the final hidden states, already output-normed)."""
        cfg, st = self.cfg, self.state
        logits = st.logits if xb.shape[0] == 1 else np.empty((xb.shape[0], cfg.n_vocab), np.float32)
        self.weights.output.matmul(xb, logits)
        if cfg.final_softcap:
            cap = np.float32(cfg.final_softcap)
            np.multiply(np.tanh(logits / cap), cap, out=logits)
        return logits

