"""One token through a layer in one Numba call (the decode fast path).

Transformer.forward runs a batch as a few calls per layer from Python; for one
token that glue cost more than the work: ~15 calls per layer (activation
quantization, packed matmuls, RoPE, cache store, attention, norms), each with
Python dispatch and its own argument unboxing, ~55 us per layer on a model
whose kernels take nothing (tiny 64-wide layers). decode_layer makes the same
kernel calls, in the same order on the same buffers, from inside Numba: the
results are bit-identical to the batch path (tests/gguf_runtime/test_decode.py).

It runs layers whose matrices all have a decode layout, with f16 caches (q8_0
caches take the batch path: their Hadamard rotations and quantized attention).
The matmul kernel is chosen when decode_layer is compiled, from the layout's
tuple type (matvec's overload below: dtypes and ranks of its arrays); a model whose
layers mix formats compiles one specialization per combination, each cached.
"""
import numpy as np
from numba import njit, types
from numba.extending import overload

from quant_formats import interleave_k, interleave_nibbles, q8_0, q8_1, q8_k

from . import flash_attention, layers

# The activation formats, as the int decode_layer branches on (a runtime value:
# their arrays have the same types, and all three compile once).
ACT_KINDS = {"Q8_0": 0, "Q8_1": 1, "Q8_K": 2}

# Decode layout (quant_formats/__init__.py pack) -> its kernel, told apart by the
# dtype and rank of each array in the layout (layout_key); tests/gguf_runtime/
# test_decode.py checks every packable format's layout maps to its module's kernel.
F32_3, U16_3, I8_4, U8_4 = ("float32", 3), ("uint16", 3), ("int8", 4), ("uint8", 4)
KERNELS = {
    (U16_3, U8_4): q8_0.packed_matmul,                        # Q8_0, Q5_0
    (F32_3, I8_4, U8_4): interleave_k.int8_subblocks_matmul,  # Q6_K, IQ4_XS, IQ2_XXS
    (U16_3, U16_3, U8_4, "int"): interleave_nibbles.nibble_matmul,    # Q4_0, Q4_1, Q5_0, IQ4_NL
    (F32_3, F32_3, U8_4, U8_4, U8_4): interleave_k.q4_k_matmul,           # Q4_K
    (F32_3, F32_3, U8_4, U8_4, I8_4): interleave_k.int8_scale_min_matmul,  # Q5_K
}


def layout_key(packed):
    """KERNELS' key of a layout tuple (numpy arrays and ints)."""
    return tuple((a.dtype.name, a.ndim) if isinstance(a, np.ndarray) else "int" for a in packed)


def _numba_layout_key(tuple_type):
    """layout_key of a layout as Numba types it (when decode_layer compiles)."""
    return tuple((str(t.dtype), t.ndim) if isinstance(t, types.Array) else "int"
                 for t in tuple_type)


@njit(cache=True, nogil=True)
def quantize_activation(kind, x, qs, d, sums):
    """x [1, n] into the arrays of its activation format (ACT_KINDS)."""
    if kind == 2:
        q8_k.quantize_rows(x, qs, d, sums)
    else:
        q8_0.quantize_rows(x, qs, d)
        if kind == 1:
            q8_1.block_sums(x, qs, sums)


def matvec(spec, x):
    """out = x @ W.T (+ bias) for spec = (layout, act_kind, qs, d, sums, bias, out);
    nothing for spec None (a matrix fused into the one before it)."""


@overload(matvec)
def _matvec_impl(spec, x):
    if isinstance(spec, types.NoneType):
        return lambda spec, x: None
    kernel = KERNELS[_numba_layout_key(spec.types[0])]

    def impl(spec, x):
        packed, kind, qs, d, sums, bias, out = spec
        quantize_activation(kind, x, qs, d, sums)
        kernel(*packed, qs, d, sums, out)
        for j in range(bias.shape[0]):
            out[0, j] += bias[j]
    return impl


@njit(cache=True, nogil=True)
def decode_layer(bufs, mats, norms, keys, values, attn, rope_args, eps, gelu, q_prescale, pos,
                 n_threads):
    """Transformer._attention_block and _ffn_block for one token at position pos.
    bufs: x, xb, q, k, v, att, proj, gate, up, hidden (rows [1, width]; q, k, v are
    views of one fused output where Q, K, V are fused, likewise gate, up) and
    positions (int64 [1], set to pos here). mats: specs (matvec) of Q, K, V, O, gate,
    up, down. norms: q_norm, k_norm, attn_post, ffn_norm, ffn_post, next_norm
    (empty where the model has none). attn: n_cells, window, n_head_kv, head_dim,
    head_dim_v, kq_scale. rope_args: head_dim, n_rot, base, scale, neox. n_threads:
    the caller's Numba thread count (flash_attention.attention)."""
    x, xb, q, k, v, att, proj, gate, up, hidden, positions = bufs
    positions[0] = pos
    q_norm, k_norm, attn_post, ffn_norm, ffn_post, next_norm = norms
    matvec(mats[0], xb)
    matvec(mats[1], xb)
    matvec(mats[2], xb)
    if q_norm.shape[0]:
        layers.rms_norm(q, q_norm, eps, q)
        layers.rms_norm(k, k_norm, eps, k)
    head_dim, n_rot, base, scale, neox = rope_args
    layers.rope(q, positions, head_dim, n_rot, base, scale, neox)
    layers.rope(k, positions, head_dim, n_rot, base, scale, neox)
    if q_prescale != 1.0:
        for j in range(q.shape[1]):
            q[0, j] *= q_prescale
    n_cells = attn[0]
    flash_attention.store_f16(k, keys, pos, n_cells)
    flash_attention.store_f16(v, values, pos, n_cells)
    flash_attention.attention(q, keys, values, pos, *attn, n_threads, att)
    matvec(mats[3], att)
    layers.residual_norm(x, proj, attn_post, eps, ffn_norm, xb)
    matvec(mats[4], xb)
    matvec(mats[5], xb)
    layers.gated_activation(gate, up, gelu, hidden)
    matvec(mats[6], hidden)
    layers.residual_norm(x, proj, ffn_post, eps, next_norm, xb)


def layer_plans(tr):
    """decode_layer's arguments (all but pos and n_threads) for each layer of
    Transformer tr, None for a layer the batch path must run (a matrix without a
    decode layout), all None with a q8_0 cache."""
    if (tr.cache_type_k, tr.cache_type_v) != ("f16", "f16"):
        return [None] * tr.cfg.n_layer
    positions = np.zeros(1, np.int64)
    return [_layer_plan(tr, il, positions) for il in range(tr.cfg.n_layer)]


def _spec(matrix, out):
    """matvec's spec of a weights.Matrix or FusedMatrix writing into out."""
    first = matrix.parts[0] if hasattr(matrix, "parts") else matrix
    qs, d, sums = first._one_token
    bias = matrix.bias if matrix.bias is not None else layers.NO_WEIGHT
    return (tuple(matrix.packed), ACT_KINDS[first.act_type.name], qs, d, sums, bias, out)


def _layer_plan(tr, il, positions):
    cfg, st, w = tr.cfg, tr.state, tr.weights.layers[il]
    matrices = (w.wq, w.wk, w.wv, w.wo, w.ffn_gate, w.ffn_up, w.ffn_down)
    if any(m.packed is None for m in matrices):
        return None
    q, k, v, att, proj = (st.q[:1], st.k[:1], st.v[:1], st.att[:1], st.proj[:1])
    gate, up, hidden = st.gate[:1], st.up[:1], st.hidden[:1]
    if w.wqkv is not None:
        q, k, v = w.wqkv.columns(st.qkv[:1])
        qkv_specs = (_spec(w.wqkv, st.qkv[:1]), None, None)
    elif w.wqk is not None:
        q, k = w.wqk.columns(st.qk[:1])
        qkv_specs = (_spec(w.wqk, st.qk[:1]), None, _spec(w.wv, v))
    else:
        qkv_specs = (_spec(w.wq, q), _spec(w.wk, k), _spec(w.wv, v))
    if w.ffn_gate_up is not None:
        gate, up = w.ffn_gate_up.columns(st.gate_up[:1])
        ffn_specs = (_spec(w.ffn_gate_up, st.gate_up[:1]), None)
    else:
        ffn_specs = (_spec(w.ffn_gate, gate), _spec(w.ffn_up, up))
    mats = qkv_specs + (_spec(w.wo, proj),) + ffn_specs + (_spec(w.ffn_down, proj),)
    bufs = (st.x[:1], st.xb[:1], q, k, v, att, proj, gate, up, hidden, positions)
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
            cfg.activation == "gelu", np.float32(cfg.q_prescale))
