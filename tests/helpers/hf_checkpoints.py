"""Hugging Face checkpoint directories for gguf-convert tests.

No real HF checkpoint is reachable offline, so these are built:
  - from_smollm2: the real SmolLM2 GGUF turned back into an HF llama checkpoint
    (weights dequantized, Q/K rows un-permuted to HF order, the exact
    tokenizer.json rebuilt from the GGUF vocabulary and merges);
  - tiny: small random checkpoints for llama, qwen2, qwen3 (SmolLM2's BPE
    tokenizer, whose pre-tokenizer hash llama.cpp's converter knows) and gemma3
    (a small SentencePiece tokenizer.model, spm_model.py); and from_gemma3: the
    real gemma-3-270m GGUF as an HF Gemma3ForCausalLM checkpoint.
Safetensors files are written here with plain json + numpy, so a test can also
make them malformed on purpose.
"""
import json
import struct
from pathlib import Path

import numpy as np

from spm_model import spm_model_bytes, tiny_spm_pieces

# numpy dtype (or "BF16": uint16 bit patterns) -> safetensors dtype name
_ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """f32 -> bf16 bit patterns, round to nearest even (as torch's .to(bfloat16))."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def write_safetensors(path, tensors: dict, bf16=(), metadata=None):
    """tensors: name -> array; names in bf16 hold uint16 bf16 bit patterns."""
    header, offset, blobs = {}, 0, []
    if metadata:
        header["__metadata__"] = metadata
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        dtype = "BF16" if name in bf16 else _ST_DTYPES[array.dtype]
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
        blobs.append(array)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for array in blobs:
            f.write(array.tobytes())


def write_checkpoint(out_dir, tensors: dict, dtype="F32", shards=1):
    """model.safetensors, or model-0000i-of-0000n.safetensors plus the index."""
    out_dir = Path(out_dir)
    names = list(tensors)
    if dtype == "BF16":
        tensors = {n: bf16_bits(a) for n, a in tensors.items()}
    elif dtype == "F16":
        tensors = {n: a.astype(np.float16) for n, a in tensors.items()}
    bf16 = set(names) if dtype == "BF16" else ()
    if shards == 1:
        write_safetensors(out_dir / "model.safetensors", tensors, bf16, {"format": "pt"})
        return
    weight_map = {}
    for i in range(shards):
        part = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        chunk = {n: tensors[n] for n in names[i::shards]}
        write_safetensors(out_dir / part, chunk, bf16, {"format": "pt"})
        weight_map.update(dict.fromkeys(chunk, part))
    index = {"metadata": {"total_size": sum(a.nbytes for a in tensors.values())},
             "weight_map": dict(sorted(weight_map.items()))}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def write_json(path, obj):
    Path(path).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---- GGUF names -> HF names ------------------------------------------------

_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GEMMA_LAYER_NAMES = dict(_LAYER_NAMES, ffn_norm="pre_feedforward_layernorm",
                          post_attention_norm="post_attention_layernorm",
                          post_ffw_norm="post_feedforward_layernorm")
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm",
                 "output": "lm_head"}


def hf_name(gguf_name: str, arch: str) -> str:
    stem, _, suffix = gguf_name.rpartition(".")
    if stem.startswith("blk."):
        _, layer, kind = stem.split(".", 2)
        table = _GEMMA_LAYER_NAMES if arch == "gemma3" else _LAYER_NAMES
        return f"model.layers.{layer}.{table[kind]}.{suffix}"
    return f"{_GLOBAL_NAMES[stem]}.{suffix}"


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of convert_hf_to_gguf.py LlamaModel.permute: llama.cpp rows -> HF rows."""
    rows = w.shape[0]
    return (w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2)
            .reshape(w.shape))


# ---- the real SmolLM2 GGUF as an HF llama checkpoint ------------------------

def _byte_level_tokenizer_json(tokens, token_types, merges):
    """tokenizer.json of SmolLM2 (GPT-2 byte-level BPE, digits split one by one)."""
    added = [{"id": i, "content": tokens[i], "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True}
             for i in range(len(tokens)) if token_types[i] == 3]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": True}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True,
                           "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)},
                  "merges": [m.split(" ") for m in merges]},
    }


def _smollm2_tokenizer_config(tokens, token_types, chat_template):
    added = {str(i): {"content": tokens[i], "lstrip": False, "normalized": False,
                      "rstrip": False, "single_word": False, "special": True}
             for i in range(len(tokens)) if token_types[i] == 3}
    return {"add_prefix_space": False, "added_tokens_decoder": added,
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
            "bos_token": "<|im_start|>", "chat_template": chat_template,
            "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>",
            "model_max_length": 8192, "pad_token": "<|im_end|>",
            "tokenizer_class": "GPT2Tokenizer", "unk_token": "<|endoftext|>",
            "vocab_size": 49152}


def smollm2_config(metadata, n_vocab):
    m = lambda key: metadata[f"llama.{key}"]  # noqa: E731
    return {"architectures": ["LlamaForCausalLM"], "attention_bias": False,
            "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
            "hidden_act": "silu", "hidden_size": int(m("embedding_length")),
            "initializer_range": 0.041666666666666664,
            "intermediate_size": int(m("feed_forward_length")), "is_llama_config": True,
            "max_position_embeddings": int(m("context_length")), "mlp_bias": False,
            "model_type": "llama", "num_attention_heads": int(m("attention.head_count")),
            "num_hidden_layers": int(m("block_count")),
            "num_key_value_heads": int(m("attention.head_count_kv")), "pad_token_id": 2,
            "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_interleaved": False,
            "rope_scaling": None, "rope_theta": float(m("rope.freq_base")),
            "tie_word_embeddings": True, "torch_dtype": "bfloat16",
            "transformers_version": "4.42.3", "use_cache": True, "vocab_size": n_vocab}


def smollm2_tokenizer_files(metadata):
    """tokenizer.json and tokenizer_config.json rebuilt from the GGUF vocabulary."""
    tokens = list(metadata["tokenizer.ggml.tokens"])
    types = [int(t) for t in metadata["tokenizer.ggml.token_type"]]
    merges = list(metadata["tokenizer.ggml.merges"])
    return (_byte_level_tokenizer_json(tokens, types, merges),
            _smollm2_tokenizer_config(tokens, types, metadata["tokenizer.chat_template"]))


def from_smollm2(gguf_path, out_dir, dtype="F32", shards=1) -> Path:
    """The real SmolLM2 GGUF as an HF llama checkpoint directory (built once)."""
    import quant_formats
    from gguf_runtime.reader import GGUFFile
    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    with GGUFFile(gguf_path) as f:
        md = f.metadata
        n_head, n_head_kv = md["llama.attention.head_count"], md["llama.attention.head_count_kv"]
        tensors = {}
        for t in f.tensors:
            w = quant_formats.dequantize(t.data, t.type).reshape(t.shape).astype(np.float32)
            if t.name.endswith("attn_q.weight"):
                w = unpermute_rows(w, n_head)
            elif t.name.endswith("attn_k.weight"):
                w = unpermute_rows(w, n_head_kv)
            tensors[hf_name(t.name, "llama")] = w
        tok_json, tok_config = smollm2_tokenizer_files(md)
        config = smollm2_config(md, len(md["tokenizer.ggml.tokens"]))
    write_checkpoint(out_dir, tensors, dtype, shards)
    write_json(out_dir / "config.json", config)
    write_json(out_dir / "tokenizer.json", tok_json)
    write_json(out_dir / "tokenizer_config.json", tok_config)
    write_json(out_dir / "generation_config.json",
               {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2})
    return out_dir


# ---- tiny random checkpoints, one per architecture ---------------------------
# Odd sizes on purpose: llama's ffn has 80 columns in ffn_down (not a multiple of
# Q8_0's 32: the converter falls back to F16 there); qwen3 has head_dim 24 !=
# hidden/heads; gemma3's embedding has 8 rows past the vocabulary (dropped).
TINY = {
    "llama": dict(cls="LlamaForCausalLM", model_type="llama", hidden_size=64,
                  num_attention_heads=4, num_key_value_heads=2, intermediate_size=80,
                  num_hidden_layers=2, rope_theta=50000.0, rms_norm_eps=1e-5,
                  max_position_embeddings=512, tie_word_embeddings=True,
                  dtype="BF16", shards=2),
    "qwen2": dict(cls="Qwen2ForCausalLM", model_type="qwen2", hidden_size=64,
                  num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
                  num_hidden_layers=2, rope_theta=1000000.0, rms_norm_eps=1e-6,
                  max_position_embeddings=1024, tie_word_embeddings=False,
                  dtype="F16", shards=1),
    "qwen3": dict(cls="Qwen3ForCausalLM", model_type="qwen3", hidden_size=64,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=24,
                  intermediate_size=96, num_hidden_layers=2, rope_theta=1000000.0,
                  rms_norm_eps=1e-6, max_position_embeddings=2048, tie_word_embeddings=True,
                  dtype="F32", shards=1),
    # Llama 3 RoPE scaling: converters add a generated rope_freqs.weight tensor
    "llama3": dict(cls="LlamaForCausalLM", model_type="llama", hidden_size=64,
                   num_attention_heads=2, num_key_value_heads=1, intermediate_size=96,
                   num_hidden_layers=2, rope_theta=500000.0, rms_norm_eps=1e-5,
                   rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                 "original_max_position_embeddings": 8192, "rope_type": "llama3"},
                   max_position_embeddings=131072, tie_word_embeddings=True,
                   dtype="BF16", shards=1),
    "gemma3": dict(cls="Gemma3ForCausalLM", model_type="gemma3_text", hidden_size=64,
                   num_attention_heads=4, num_key_value_heads=1, head_dim=32,
                   intermediate_size=96, num_hidden_layers=7, sliding_window=8,
                   rope_theta=1000000.0, rope_local_base_freq=10000.0, rms_norm_eps=1e-6,
                   max_position_embeddings=1024, query_pre_attn_scalar=32,
                   final_logit_softcapping=None, tie_word_embeddings=True,
                   dtype="BF16", shards=1),
}
_SEEDS = {"gemma3": 0, "llama": 1, "qwen2": 2, "qwen3": 3, "llama3": 4}
GEMMA_VOCAB = 320  # config vocab_size: the tokenizer.model's 303 pieces padded with [PAD]


def _tiny_config(arch, n_vocab):
    spec = TINY[arch]
    config = {k: v for k, v in spec.items() if k not in ("cls", "dtype", "shards")}
    config.update(architectures=[spec["cls"]], vocab_size=n_vocab, hidden_act="silu",
                  torch_dtype={"BF16": "bfloat16", "F16": "float16",
                               "F32": "float32"}[spec["dtype"]])
    if arch == "gemma3":
        config.update(hidden_activation="gelu_pytorch_tanh", bos_token_id=2, eos_token_id=1,
                      pad_token_id=0, sliding_window_pattern=6)
        del config["hidden_act"]
    else:
        config.update(bos_token_id=1, eos_token_id=2)
    return config


def _tiny_tensors(arch, n_vocab, rng):
    c = TINY[arch]
    d, n_head, n_kv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd, ff = c.get("head_dim", d // n_head), c["intermediate_size"]
    mat = lambda r, k: (rng.standard_normal((r, k)) / np.sqrt(k)).astype(np.float32)  # noqa: E731
    vec = lambda n, s=0.1: (s * rng.standard_normal(n)).astype(np.float32) + (  # noqa: E731
        0.0 if arch == "gemma3" else 1.0)
    rows = n_vocab + 8 if arch == "gemma3" else n_vocab
    t = {"model.embed_tokens.weight": rng.standard_normal((rows, d)).astype(np.float32),
         "model.norm.weight": vec(d)}
    if not c["tie_word_embeddings"]:
        t["lm_head.weight"] = mat(n_vocab, d)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = vec(d)
        t[p + "post_attention_layernorm.weight"] = vec(d)
        for name, rows_ in (("q", n_head * hd), ("k", n_kv * hd), ("v", n_kv * hd)):
            t[p + f"self_attn.{name}_proj.weight"] = mat(rows_, d)
            if arch == "qwen2":
                t[p + f"self_attn.{name}_proj.bias"] = vec(rows_, 0.05) - 1.0
        t[p + "self_attn.o_proj.weight"] = mat(d, n_head * hd)
        t[p + "mlp.gate_proj.weight"] = mat(ff, d)
        t[p + "mlp.up_proj.weight"] = mat(ff, d)
        t[p + "mlp.down_proj.weight"] = mat(d, ff)
        if arch in ("qwen3", "gemma3"):
            t[p + "self_attn.q_norm.weight"] = vec(hd)
            t[p + "self_attn.k_norm.weight"] = vec(hd)
        if arch == "gemma3":
            t[p + "pre_feedforward_layernorm.weight"] = vec(d)
            t[p + "post_feedforward_layernorm.weight"] = vec(d)
    return t


def _gemma_tokenizer_files(out_dir):
    pieces = tiny_spm_pieces()
    (out_dir / "tokenizer.model").write_bytes(spm_model_bytes(pieces))
    added = {str(i): {"content": text, "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False, "special": kind == 3}
             for i, (text, _, kind) in enumerate(pieces[:7])}
    write_json(out_dir / "tokenizer_config.json", {
        "add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": added,
        "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
        "chat_template": "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n"
                         "{{ m['content'] }}<end_of_turn>\n{% endfor %}",
        "spaces_between_special_tokens": False, "tokenizer_class": "GemmaTokenizer"})


def tiny(arch, out_dir, smollm2_gguf=None, seed=0) -> Path:
    """A small random checkpoint; BPE archs borrow SmolLM2's tokenizer (its
    pre-tokenizer hash is one llama.cpp's converter knows)."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    if arch == "gemma3":
        n_vocab = GEMMA_VOCAB
        _gemma_tokenizer_files(out_dir)
    else:
        from gguf_runtime.reader import GGUFFile
        with GGUFFile(smollm2_gguf) as f:
            tok_json, tok_config = smollm2_tokenizer_files(f.metadata)
            n_vocab = len(f.metadata["tokenizer.ggml.tokens"])
        write_json(out_dir / "tokenizer.json", tok_json)
        write_json(out_dir / "tokenizer_config.json", tok_config)
    rng = np.random.default_rng(seed + _SEEDS[arch])
    spec = TINY[arch]
    write_checkpoint(out_dir, _tiny_tensors(arch, n_vocab, rng), spec["dtype"], spec["shards"])
    write_json(out_dir / "config.json", _tiny_config(arch, n_vocab))
    return out_dir


# ---- the real gemma-3-270m GGUF as an HF Gemma3ForCausalLM checkpoint --------

def gemma3_config(md, n_vocab):
    m = lambda key, default=None: md.get(f"gemma3.{key}", default)  # noqa: E731
    n_layer = int(m("block_count"))
    return {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
            "attention_bias": False, "attention_dropout": 0.0, "attn_logit_softcapping": None,
            "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
            "final_logit_softcapping": None, "head_dim": int(m("attention.key_length")),
            "hidden_activation": "gelu_pytorch_tanh", "hidden_size": int(m("embedding_length")),
            "intermediate_size": int(m("feed_forward_length")),
            "layer_types": ["full_attention" if i % 6 == 5 else "sliding_attention"
                            for i in range(n_layer)],
            "max_position_embeddings": int(m("context_length")),
            "num_attention_heads": int(m("attention.head_count")), "num_hidden_layers": n_layer,
            "num_key_value_heads": int(m("attention.head_count_kv")),
            "query_pre_attn_scalar": int(m("attention.key_length")),
            "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000.0, "rope_scaling": None,
            "rope_theta": float(m("rope.freq_base")),
            "sliding_window": int(m("attention.sliding_window")),
            "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_cache": True,
            "vocab_size": n_vocab}


def from_gemma3(gguf_path, out_dir, dtype="F32") -> Path:
    """gemma-3-270m's GGUF as an HF checkpoint: weights dequantized, norms stored
    as HF does (value - 1), tokenizer.model rebuilt from the GGUF vocabulary."""
    import quant_formats
    from gguf_runtime.reader import GGUFFile
    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    with GGUFFile(gguf_path) as f:
        md = f.metadata
        tensors = {}
        for t in f.tensors:
            w = quant_formats.dequantize(t.data, t.type).reshape(t.shape).astype(np.float32)
            if t.name.endswith("norm.weight"):
                w = w - np.float32(1.0)
            tensors[hf_name(t.name, "gemma3")] = w
        tokens = list(md["tokenizer.ggml.tokens"])
        pieces = list(zip(tokens, [float(s) for s in md["tokenizer.ggml.scores"]],
                          [int(t) for t in md["tokenizer.ggml.token_type"]]))
        config = gemma3_config(md, len(tokens))
    (out_dir / "tokenizer.model").write_bytes(spm_model_bytes(pieces))
    write_checkpoint(out_dir, tensors, dtype)
    write_json(out_dir / "config.json", config)
    write_json(out_dir / "tokenizer_config.json", {
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<bos>",
        "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
        "spaces_between_special_tokens": False, "tokenizer_class": "GemmaTokenizer"})
    return out_dir
