"""One token through the layers in one Numba call (the decode fast path).

Transformer.forward runs a batch as a few calls per layer from Python; for one
token that glue cost more than the work: ~15 calls per layer (activation
quantization, packed matmuls, RoPE, cache store, attention, norms), each with
Python dispatch and its own argument unboxing, ~55 us per layer on a model
whose kernels take nothing (tiny 64-wide layers). decode_layers makes the same
kernel calls, in the same order on the same buffers, from inside Numba: the
results are bit-identical to the batch path (tests/gguf_runtime/test_decode.py).

The layers run as one parallel region (region.py): both threads walk each layer's
steps, claiming row groups and heads, where a region per kernel cost a launch each
and left short ones to one thread (SmolLM2 Q4_0, Q8_0, Q4_K_M: layers 7-10% faster,
tokens 6-9%, measured in one process alternating per token), and a region per layer
a call from Python each (layers another 8-16% faster).

It runs layers whose matrices all have a decode layout, with f16 caches (q8_0
caches take the batch path: their Hadamard rotations and quantized attention).
The matmul kernels are chosen at run time, from each spec's layout kind (LAYOUTS),
and called through their addresses: a model whose layers mix formats compiles one
_layer_steps (and a group function per format, shared with the batch path).
"""
import numba
import numpy as np
from numba import njit, prange, types

from quant_formats import launch

from . import decode_matmul as matmul, flash_attention, layers, region

# A layer's steps (region.py's counters): 0 the input; 1-3 Q, K, V row groups;
# 4 their outputs (norms, RoPE, the cache); 5 attention; 6 its output; 7 O's row
# groups; 8 residual and norm; 9-10 gate, up; 11 activation; 12 down; 13 the output
N_STEPS = 14  # passed as np.int64(step): a literal int compiles each helper once per value

# The plan's `addresses` (load_steps): _layer_steps', then each matrix's group function
# (mats' order, 0 for an absent one), then attention's two item functions. Called
# through their addresses, not linked: Numba optimizes a linked callee's code again in
# each caller (quant_formats/launch.py); these are compiled once, shared with the batch
# path's loops.
STEPS, MATS, ATTEND_HEAD, ATTEND_CHUNK = 0, 1, 8, 9
N_ADDRESSES = 10


@njit(cache=True, nogil=True, parallel=True)
def decode_layers(steps, plan_addresses, sync, partials, pos, n_threads):
    """Transformer._attention_block and _ffn_block for one token at position pos through
    consecutive layers, in one parallel region (region.py), the same kernels in the same
    order on the same buffers as the batch path. steps: the address of _layer_steps for
    the layers' plans (layer_plans; one type, stored at plan_addresses by
    launch.to_bytes; load_steps). sync: zeroed here, region.py's counters per layer
    [layers, N_STEPS, ...]; partials: the split-KV attention's chunk results, reused
    layer after layer. n_threads: the caller's Numba thread count (also the split-KV
    attention's chunks, as flash_attention.attention). No plan type in the signature:
    compiled once for every model.
    One region for all layers, not one per layer: SmolLM2 Q4_0 layers 9.4 -> 7.9 ms a
    token, Q4_K_M 13.2 -> 11.8 (in one process alternating per token): a call per
    layer from Python, its plan's ~45 arrays unboxed and a region launched and joined."""
    if steps == 0:
        raise ValueError("decode_layers: load_steps(plan) first")
    flat = sync.reshape(-1)
    for j in range(flat.shape[0]):
        flat[j] = 0
    for part in prange(n_threads):
        for il in range(plan_addresses.shape[0]):  # each returns once its step 13 is done
            launch.call_at(steps, (plan_addresses[il], launch.no_value(), pos, n_threads,
                                   sync[il], partials, np.int64(part)))


def layer_runs(plans):
    """(first layer, end, run) for every layer in order: a DecodeRun over each stretch of
    consecutive plans of one type (layers first..end-1), (il, il + 1, None) for a layer
    without a plan."""
    kinds = [None if plan is None else numba.typeof(plan) for plan in plans]
    runs, il = [], 0
    while il < len(plans):
        end = il
        while end < len(plans) and kinds[end] is not None and kinds[end] == kinds[il]:
            end += 1
        runs.append((il, end, DecodeRun(plans[il:end])) if end > il else (il, il + 1, None))
        il = max(end, il + 1)
    return runs


class DecodeRun:
    """Consecutive layers with plans of one type, decoded in one region (decode_layers):
    their plans' bytes and addresses, and the region's counters and partials per thread
    count."""

    def __init__(self, plans):
        self.plans = plans
        self._bytes = [launch.to_bytes(plan) for plan in plans]
        self.plan_addresses = np.array([b.ctypes.data for b in self._bytes], np.int64)
        self._buffers = {}

    def __call__(self, pos, n_threads):
        first = self.plans[0]
        if not first[-1][STEPS]:
            for plan in self.plans:
                load_steps(plan)
        buffers = self._buffers.get(n_threads)
        if buffers is None:
            n_cells, window, n_head_kv, head_dim, head_dim_v, kq_scale = first[5]
            sync = region.new_sync(len(self.plans) * N_STEPS, n_threads)
            buffers = self._buffers[n_threads] = (
                sync.reshape(len(self.plans), N_STEPS, -1),
                flash_attention.new_partials(first[0][2].shape[1] // head_dim, n_threads,
                                             head_dim_v))
        decode_layers(first[-1][STEPS], self.plan_addresses, *buffers, pos, n_threads)


def load_steps(plan):
    """Fill plan's `addresses` (0 until then) with the functions its region calls,
    compiled for the plan's types (or loaded from Numba's cache): on the first token
    decoded, so a run that only prefills never loads them. Each function's arguments
    here are those _layer_steps passes it, so the types are the ones it calls with."""
    bufs, mats, norms, keys, values, attn, rope_args, eps, gelu, q_prescale, _, addresses = plan
    for slot, spec in enumerate(mats, MATS):
        addresses[slot] = matmul.group_address(spec)
    q, att, scratch = bufs[2], bufs[5], bufs[11]
    n_cells, window, n_head_kv, head_dim, head_dim_v, kq_scale = attn
    k_heads = keys.reshape(keys.shape[0], n_head_kv, head_dim)
    v_heads = values.reshape(values.shape[0], n_head_kv, head_dim_v)
    partials = flash_attention.new_partials(1, 1, head_dim_v)
    group = q.shape[1] // head_dim // n_head_kv
    addresses[ATTEND_HEAD] = launch.address_for(flash_attention.attend_query_head, (
        q, k_heads, v_heads, 0, n_cells, window, group, kq_scale, True, scratch, att))
    addresses[ATTEND_CHUNK] = launch.address_for(flash_attention.attend_kv_chunk, (
        q, k_heads, v_heads, 0, n_cells, window, kq_scale, 0, 0, scratch, partials))
    addresses[STEPS] = launch.address_of(_layer_steps, (
        types.int64, launch.TypeArg(numba.typeof(plan)), types.int64, types.int64,
        types.Array(types.int64, 2, "C"), numba.typeof(partials), types.int64))


@njit(cache=True, nogil=True)
def _serial(sync, step, part):
    """Whether this thread does serial step `step` (the first to claim it)."""
    return region.claim(sync, step, 1, part) == 0


@njit(cache=True, nogil=True)
def _layer_steps(plan_address, plan_type, pos, n_threads, sync, partials, part):
    """One thread's walk through the steps of the layer whose plan is at plan_address
    (decode_layers' region; plan_type: a launch.TypeArg), until its step 13 (the next
    layer's input) is done. Called through its address (load_steps), not linked into
    decode_layers: see launch.call_at."""
    plan = launch.deref(plan_address, plan_type)
    (bufs, mats, norms, keys, values, attn, rope_args, eps, gelu, q_prescale, next_qkv,
     addresses) = plan
    x, xb, q, k, v, att, proj, gate, up, hidden, positions, scratch = bufs
    span = matmul.share_span(mats[0], sync, part)  # what this thread reads next
    if _serial(sync, np.int64(0), part):
        positions[0] = pos
        matmul.quantize_input(mats[0], xb)
        matmul.quantize_input(mats[1], xb)
        matmul.quantize_input(mats[2], xb)
        region.finish(sync, 0)
    region.wait_prefetching(sync, 0, 1, span, 0)
    matmul.row_groups(mats[0], addresses[MATS + 0], sync, np.int64(1), part)
    matmul.row_groups(mats[1], addresses[MATS + 1], sync, np.int64(2), part)
    matmul.row_groups(mats[2], addresses[MATS + 2], sync, np.int64(3), part)
    span = matmul.share_span(mats[3], sync, part)
    at = matmul.wait_groups(mats[0], sync, np.int64(1), span, 0)
    at = matmul.wait_groups(mats[1], sync, np.int64(2), span, at)
    at = matmul.wait_groups(mats[2], sync, np.int64(3), span, at)
    if _serial(sync, np.int64(4), part):
        matmul.add_bias(mats[0])
        matmul.add_bias(mats[1])
        matmul.add_bias(mats[2])
        _rope_and_store(q, k, v, norms, keys, values, attn, rope_args, eps, q_prescale,
                        positions)
        region.finish(sync, 4)
    at = region.wait_prefetching(sync, 4, 1, span, at)
    split, at = _attention_items(q, keys, values, pos, attn, n_threads, att, partials, scratch,
                                 addresses, sync, np.int64(5), part, span, at)
    if _serial(sync, np.int64(6), part):
        if split:
            flash_attention.reduce_partials(partials, att)
        matmul.quantize_input(mats[3], att)
        region.finish(sync, 6)
    region.wait_prefetching(sync, 6, 1, span, at)
    matmul.row_groups(mats[3], addresses[MATS + 3], sync, np.int64(7), part)
    span = matmul.share_span(mats[4], sync, part)
    at = matmul.wait_groups(mats[3], sync, np.int64(7), span, 0)
    if _serial(sync, np.int64(8), part):
        matmul.add_bias(mats[3])
        layers.residual_norm_row(x[0], proj[0], norms[2], eps, norms[3], xb[0])
        matmul.quantize_input(mats[4], xb)
        matmul.quantize_input(mats[5], xb)
        region.finish(sync, 8)
    region.wait_prefetching(sync, 8, 1, span, at)
    span = matmul.share_span(next_qkv, sync, part)  # the next layer's first reads
    at = _ffn_steps(mats, addresses, gate, up, hidden, gelu, sync, part, span)
    if _serial(sync, np.int64(13), part):  # the next layer's input
        matmul.add_bias(mats[6])
        layers.residual_norm_row(x[0], proj[0], norms[4], eps, norms[5], xb[0])
        region.finish(sync, 13)
    region.wait_prefetching(sync, 13, 1, span, at)


@njit(cache=True, nogil=True, inline="always")
def _ffn_steps(mats, addresses, gate, up, hidden, gelu, sync, part, next_span):
    """Steps 9-12: gate and up, the activation, down; prefetching next_span from the
    end of down's wait; the cursor."""
    matmul.row_groups(mats[4], addresses[MATS + 4], sync, np.int64(9), part)
    matmul.row_groups(mats[5], addresses[MATS + 5], sync, np.int64(10), part)
    span = matmul.share_span(mats[6], sync, part)
    at = matmul.wait_groups(mats[4], sync, np.int64(9), span, 0)
    at = matmul.wait_groups(mats[5], sync, np.int64(10), span, at)
    if _serial(sync, np.int64(11), part):
        matmul.add_bias(mats[4])
        matmul.add_bias(mats[5])
        layers.gated_row(gate[0], up[0], gelu, hidden[0])
        matmul.quantize_input(mats[6], hidden)
        region.finish(sync, 11)
    region.wait_prefetching(sync, 11, 1, span, at)
    matmul.row_groups(mats[6], addresses[MATS + 6], sync, np.int64(12), part)
    return matmul.wait_groups(mats[6], sync, np.int64(12), next_span, 0)


@njit(cache=True, nogil=True)
def _rope_and_store(q, k, v, norms, keys, values, attn, rope_args, eps, q_prescale, positions):
    """Per-head norms (qwen3, gemma3), RoPE and Q's prescale, then K and V into the cache."""
    if norms[0].shape[0]:
        layers.rms_norm_row(q[0], norms[0], eps, q[0])
        layers.rms_norm_row(k[0], norms[1], eps, k[0])
    head_dim, n_rot, base, scale, neox = rope_args
    layers.rope_token(q[0], positions[0], head_dim, n_rot, base, scale, neox)
    layers.rope_token(k[0], positions[0], head_dim, n_rot, base, scale, neox)
    if q_prescale != 1.0:
        for j in range(q.shape[1]):
            q[0, j] *= q_prescale
    flash_attention.store_f16(k, keys, positions[0], attn[0])
    flash_attention.store_f16(v, values, positions[0], attn[0])


@njit(cache=True, nogil=True)
def _attention_items(q, keys, values, pos, attn, n_threads, att, partials, scratch, addresses,
                     sync, step, part, span, cursor):
    """flash_attention.attention's work items for one token, claimed (step's counters),
    waited for (prefetching span from cursor meanwhile); whether they were the split-KV
    path's chunks (reduced afterwards), and the new cursor. The item functions are
    called through their addresses (load_steps gives them these arguments' types)."""
    n_cells, window, n_head_kv, head_dim, head_dim_v, kq_scale = attn
    n_heads = q.shape[1] // head_dim
    k_heads = keys.reshape(keys.shape[0], n_head_kv, head_dim)
    v_heads = values.reshape(values.shape[0], n_head_kv, head_dim_v)
    n_view = flash_attention.split_kv_view(pos, 1, n_cells)
    split = n_view > 0
    n_items = n_head_kv * n_threads if split else n_heads
    i = region.claim(sync, step, n_items, part)
    while i < n_items:
        if split:
            launch.call_at(addresses[ATTEND_CHUNK], (q, k_heads, v_heads, pos, n_cells, window,
                                                     kq_scale, n_view, n_threads, scratch,
                                                     partials, i))
        else:
            launch.call_at(addresses[ATTEND_HEAD], (q, k_heads, v_heads, pos, n_cells, window,
                                                    n_heads // n_head_kv, kq_scale, True,
                                                    scratch, att, i))
        region.finish(sync, step)
        i = region.claim(sync, step, n_items, part)
    return split, region.wait_prefetching(sync, step, n_items, span, cursor)


def layer_plans(tr):
    """Each layer's plan for decode_layers, None for a layer the batch path must run (a
    matrix without a decode layout), all None with a q8_0 cache. A plan: (bufs, mats,
    norms, keys, values, attn, rope_args, eps, gelu, q_prescale, next_qkv, addresses).
    bufs: x, xb, q, k, v, att, proj, gate, up, hidden (rows [1, width]; q, k, v are views
    of one fused output where Q, K, V are fused, likewise gate, up), positions (int64
    [1]) and the attention items' scratch (flash_attention.new_scratch).
    mats: specs of Q, K, V, O, gate, up, down. norms: q_norm, k_norm, attn_post,
    ffn_norm, ffn_post, next_norm (empty where the model has none). attn: n_cells,
    window, n_head_kv, head_dim, head_dim_v, kq_scale. rope_args: head_dim, n_rot,
    base, scale, neox. next_qkv: the next layer's first spec (its weights prefetched
    while a thread waits at this layer's end). addresses: int64 [N_ADDRESSES], the
    functions the region calls (load_steps)."""
    if (tr.cache_type_k, tr.cache_type_v) != ("f16", "f16"):
        return [None] * tr.cfg.n_layer
    positions = np.zeros(1, np.int64)
    plans = [_layer_plan(tr, il, positions) for il in range(tr.cfg.n_layer)]
    # next_qkv: an absent spec for the last layer and before a batch layer
    nexts = [plan[1][0] if plan is not None else matmul.absent_spec() for plan in plans[1:]]
    return [None if plan is None else plan[:-1] + (next_qkv, plan[-1])
            for plan, next_qkv in zip(plans, nexts + [matmul.absent_spec()])]


def _layer_plan(tr, il, positions):
    cfg, st, w = tr.cfg, tr.state, tr.weights.layers[il]
    matrices = (w.wq, w.wk, w.wv, w.wo, w.ffn_gate, w.ffn_up, w.ffn_down)
    if any(m.packed is None for m in matrices):
        return None
    q, k, v, att, proj = (st.q[:1], st.k[:1], st.v[:1], st.att[:1], st.proj[:1])
    gate, up, hidden = st.gate[:1], st.up[:1], st.hidden[:1]
    if w.wqkv is not None:
        q, k, v = w.wqkv.columns(st.qkv[:1])
        qkv_specs = (matmul.spec(w.wqkv, st.qkv[:1]), matmul.absent_spec(), matmul.absent_spec())
    elif w.wqk is not None:
        q, k = w.wqk.columns(st.qk[:1])
        qkv_specs = (matmul.spec(w.wqk, st.qk[:1]), matmul.absent_spec(), matmul.spec(w.wv, v))
    else:
        qkv_specs = (matmul.spec(w.wq, q), matmul.spec(w.wk, k), matmul.spec(w.wv, v))
    if w.ffn_gate_up is not None:
        gate, up = w.ffn_gate_up.columns(st.gate_up[:1])
        ffn_specs = (matmul.spec(w.ffn_gate_up, st.gate_up[:1]), matmul.absent_spec())
    else:
        ffn_specs = (matmul.spec(w.ffn_gate, gate), matmul.spec(w.ffn_up, up))
    mats = qkv_specs + (matmul.spec(w.wo, proj),) + ffn_specs + (matmul.spec(w.ffn_down, proj),)
    if any(spec is None for spec in mats):
        return None
    bufs = (st.x[:1], st.xb[:1], q, k, v, att, proj, gate, up, hidden, positions,
            st.attn_scratch)
    next_norm = (tr.weights.layers[il + 1].attn_norm if il + 1 < cfg.n_layer
                 else tr.weights.output_norm)
    norms = tuple(layers.NO_WEIGHT if n is None else n for n in
                  (w.q_norm, w.k_norm, w.attn_post_norm, w.ffn_norm, w.ffn_post_norm, next_norm))
    cache = tr.caches[il]
    attn = (cache.n_cells, cache.window, cfg.n_head_kv, cfg.head_dim, cfg.head_dim_v,
            np.float32(cfg.kq_scale))
    base, scale = tr._rope_params(il)
    rope_args = (cfg.head_dim, cfg.n_rot, base, scale, cfg.rope_neox)
    return (bufs, mats, norms, cache.keys, cache.values, attn, rope_args, cfg.norm_eps,
            cfg.activation == "gelu", np.float32(cfg.q_prescale), np.zeros(N_ADDRESSES, np.int64))
