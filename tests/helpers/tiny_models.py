"""Tiny random-weight GGUF files, one per architecture, and a plain numpy forward
pass to check the Numba one against (float64, written from the model papers and
llama.cpp's graph code, sharing nothing with gguf_runtime but the file).
"""
import math

import numpy as np
from gguf import GGMLQuantizationType as T, GGUFWriter

TINY = {
    "llama": dict(n_embd=64, n_head=4, n_head_kv=2, head_dim=16, n_ff=96, n_layer=2),
    "qwen2": dict(n_embd=64, n_head=4, n_head_kv=2, head_dim=16, n_ff=96, n_layer=2, bias=True),
    "qwen3": dict(n_embd=64, n_head=4, n_head_kv=2, head_dim=16, n_ff=96, n_layer=2, qk_norm=True),
    # gemma3: head_dim 32 != n_embd / n_head; 7 layers: 0-4 and 6 sliding, 5 global
    "gemma3": dict(n_embd=64, n_head=4, n_head_kv=1, head_dim=32, n_ff=96, n_layer=7,
                   qk_norm=True, window=8),
}
N_VOCAB = 128
NEOX = {"llama": False, "qwen2": True, "qwen3": True, "gemma3": True}


def random_weights(arch, seed=0):
    c = TINY[arch]
    rng = np.random.default_rng(seed)
    d, hd = c["n_embd"], c["head_dim"]

    def mat(n_out, n_in):
        return (rng.standard_normal((n_out, n_in)) / math.sqrt(n_in)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)
    w = {"token_embd.weight": rng.standard_normal((N_VOCAB, d)).astype(np.float32),
         "output_norm.weight": norm(d)}
    for i in range(c["n_layer"]):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = norm(d)
        w[p + "attn_q.weight"] = mat(c["n_head"] * hd, d)
        w[p + "attn_k.weight"] = mat(c["n_head_kv"] * hd, d)
        w[p + "attn_v.weight"] = mat(c["n_head_kv"] * hd, d)
        w[p + "attn_output.weight"] = mat(d, c["n_head"] * hd)
        w[p + "ffn_norm.weight"] = norm(d)
        w[p + "ffn_gate.weight"] = mat(c["n_ff"], d)
        w[p + "ffn_up.weight"] = mat(c["n_ff"], d)
        w[p + "ffn_down.weight"] = mat(d, c["n_ff"])
        if c.get("bias"):
            for x, n in (("q", c["n_head"]), ("k", c["n_head_kv"]), ("v", c["n_head_kv"])):
                w[p + f"attn_{x}.bias"] = (0.1 * rng.standard_normal(n * hd)).astype(np.float32)
        if c.get("qk_norm"):
            w[p + "attn_q_norm.weight"] = norm(hd)
            w[p + "attn_k_norm.weight"] = norm(hd)
        if arch == "gemma3":
            w[p + "post_attention_norm.weight"] = norm(d)
            w[p + "post_ffw_norm.weight"] = norm(d)
    if arch == "qwen2":
        w["output.weight"] = mat(N_VOCAB, d)
    return w


def _add_vocab(writer):
    """A byte-level BPE vocabulary of N_VOCAB tokens (token 0 a control token)."""
    from gguf import GGUFValueType as V
    tokens = ["<|endoftext|>"] + [chr(0x21 + i) for i in range(N_VOCAB - 1)]
    writer.add_string("tokenizer.ggml.model", "gpt2")
    writer.add_string("tokenizer.ggml.pre", "smollm")
    writer.add_array("tokenizer.ggml.tokens", tokens)
    writer.add_key_value("tokenizer.ggml.token_type", [3] + [1] * (N_VOCAB - 1), V.ARRAY,
                         sub_type=V.INT32)
    writer.add_array("tokenizer.ggml.merges", [f"{tokens[1]} {tokens[2]}"])
    writer.add_uint32("tokenizer.ggml.bos_token_id", 0)
    writer.add_uint32("tokenizer.ggml.eos_token_id", 0)


def write_gguf(arch, path, weights=None, vocab=False, qtype=T.F32, extra=None):
    """The tiny model as a GGUF file; with vocab, loadable by Model.load; qtype
    for the 2-D weights (quantized with gguf-py)."""
    import gguf
    c = TINY[arch]
    weights = weights or random_weights(arch)
    writer = GGUFWriter(str(path), arch)
    if vocab:
        _add_vocab(writer)
    for key, value in (extra or {}).items():
        writer.add_string(key, value)
    writer.add_uint32(f"{arch}.block_count", c["n_layer"])
    writer.add_uint32(f"{arch}.context_length", 256)
    writer.add_uint32(f"{arch}.embedding_length", c["n_embd"])
    writer.add_uint32(f"{arch}.feed_forward_length", c["n_ff"])
    writer.add_uint32(f"{arch}.attention.head_count", c["n_head"])
    writer.add_uint32(f"{arch}.attention.head_count_kv", c["n_head_kv"])
    writer.add_uint32(f"{arch}.attention.key_length", c["head_dim"])
    writer.add_uint32(f"{arch}.attention.value_length", c["head_dim"])
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    writer.add_float32(f"{arch}.rope.freq_base", 10000.0 if arch != "gemma3" else 1e6)
    writer.add_uint32(f"{arch}.vocab_size", N_VOCAB)
    if "window" in c:
        writer.add_uint32(f"{arch}.attention.sliding_window", c["window"])
    for name, value in weights.items():
        if value.ndim == 2 and qtype != T.F32:
            writer.add_tensor(name, gguf.quants.quantize(value, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, value, raw_dtype=T.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# --- numpy reference -----------------------------------------------------------

def _f16(x):
    return np.asarray(x, np.float32).astype(np.float16).astype(np.float64)


def _rms(x, w, eps=1e-6):
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * w


def _rope(x, pos, neox, base):
    """x [n, heads, hd] rotated by positions pos [n]."""
    hd = x.shape[-1]
    freqs = base ** (-np.arange(0, hd, 2) / hd)
    ang = pos[:, None, None] * freqs[None, None, :]
    cos, sin = np.cos(ang), np.sin(ang)
    x = x.copy()
    if neox:
        a, b = x[..., :hd // 2].copy(), x[..., hd // 2:].copy()
        x[..., :hd // 2], x[..., hd // 2:] = a * cos - b * sin, a * sin + b * cos
    else:
        a, b = x[..., 0::2].copy(), x[..., 1::2].copy()
        x[..., 0::2], x[..., 1::2] = a * cos - b * sin, a * sin + b * cos
    return x


def _gelu_f16(x):
    h = _f16(x)
    g = _f16(0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * h * (1 + 0.044715 * h * h))))
    return np.where(x <= -10, 0.0, np.where(x >= 10, x, g))


def reference_logits(arch, weights, ids):
    """Logits [n, vocab] of ids at positions 0.., the whole sequence at once, with
    K and V rounded to f16 as the cache stores them (Q kept in float64)."""
    c = TINY[arch]
    W = {k: v.astype(np.float64) for k, v in weights.items()}
    n, hd, H, Hkv = len(ids), c["head_dim"], c["n_head"], c["n_head_kv"]
    pos = np.arange(n, dtype=np.float64)
    x = W["token_embd.weight"][ids]
    if arch == "gemma3":
        x = x * math.sqrt(c["n_embd"])
    for i in range(c["n_layer"]):
        p = f"blk.{i}."
        sliding = "window" in c and i % 6 < 5
        base = 10000.0 if (arch != "gemma3" or sliding) else 1e6
        h = _rms(x, W[p + "attn_norm.weight"])
        q, k, v = (h @ W[p + f"attn_{t}.weight"].T + W.get(p + f"attn_{t}.bias", 0.0)
                   for t in "qkv")
        q, k, v = q.reshape(n, H, hd), k.reshape(n, Hkv, hd), v.reshape(n, Hkv, hd)
        if c.get("qk_norm"):
            q, k = _rms(q, W[p + "attn_q_norm.weight"]), _rms(k, W[p + "attn_k_norm.weight"])
        q, k = _rope(q, pos, NEOX[arch], base), _f16(_rope(k, pos, NEOX[arch], base))
        v = _f16(v)
        mask = np.tril(np.ones((n, n), bool))
        if sliding:
            mask &= (pos[:, None] - pos[None, :]) < c["window"]
        att = np.zeros((n, H, hd))
        for head in range(H):
            kh = head // (H // Hkv)
            s = q[:, head] @ k[:, kh].T / math.sqrt(hd)
            s = np.where(mask, s, -np.inf)
            s = np.exp(s - s.max(axis=1, keepdims=True))
            att[:, head] = (s / s.sum(axis=1, keepdims=True)) @ v[:, kh]
        o = att.reshape(n, H * hd) @ W[p + "attn_output.weight"].T
        if arch == "gemma3":
            o = _rms(o, W[p + "post_attention_norm.weight"])
        x = x + o
        h = _rms(x, W[p + "ffn_norm.weight"])
        g, u = h @ W[p + "ffn_gate.weight"].T, h @ W[p + "ffn_up.weight"].T
        a = _gelu_f16(g) if arch == "gemma3" else g / (1 + np.exp(-g))
        o = (a * u) @ W[p + "ffn_down.weight"].T
        if arch == "gemma3":
            o = _rms(o, W[p + "post_ffw_norm.weight"])
        x = x + o
    out = W.get("output.weight", W["token_embd.weight"])
    return _rms(x, W["output_norm.weight"]) @ out.T
