"""config.json -> GGUF hyperparameters, as llama.cpp's convert_hf_to_gguf.py writes them.

Their converter reads the config through transformers' AutoConfig, which fills
every field config.json leaves out with the config class's default. HF_DEFAULTS
holds those defaults (transformers 4.57.6, the version llama.cpp's
requirements pin: LlamaConfig, Qwen2Config, Qwen3Config, Gemma3TextConfig) so the
same keys come out without transformers.

Key order matters (tests compare it): the generic keys follow
conversion/base.py TextModel.set_gguf_parameters; ARCH_EXTRAS lists what each
model class adds after them (llama.py LlamaModel, qwen.py Qwen2Model/Qwen3Model,
gemma.py Gemma3Model). A key written twice keeps its first position (GGUFWriter
replaces the value in place).
"""
import gguf

from ..errors import ModelError

# HF "architectures"[0] -> GGUF architecture (conversion/__init__.py registry)
HF_ARCHS = {
    "LlamaForCausalLM": "llama", "LLaMAForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3",
    "Gemma3ForCausalLM": "gemma3",
}

_COMMON = dict(rms_norm_eps=1e-6, rope_theta=10000.0)
HF_DEFAULTS = {
    "llama": dict(_COMMON, vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                  num_hidden_layers=32, num_attention_heads=32, max_position_embeddings=2048),
    "qwen2": dict(_COMMON, vocab_size=151936, hidden_size=4096, intermediate_size=22016,
                  num_hidden_layers=32, num_attention_heads=32, max_position_embeddings=32768),
    "qwen3": dict(_COMMON, vocab_size=151936, hidden_size=4096, intermediate_size=22016,
                  num_hidden_layers=32, num_attention_heads=32, max_position_embeddings=32768,
                  head_dim=128),
    "gemma3": dict(_COMMON, vocab_size=262208, hidden_size=2304, intermediate_size=9216,
                   num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
                   head_dim=256, max_position_embeddings=131072, rope_theta=1_000_000.0,
                   rope_local_base_freq=10000.0, sliding_window=4096),
}

# TextModel.set_gguf_parameters: (GGUFWriter method, hparam names tried in order)
GENERIC_KEYS = (
    ("add_context_length", ("max_position_embeddings", "n_ctx", "n_positions", "max_length",
                            "max_sequence_length", "model_max_length")),
    ("add_embedding_length", ("hidden_size", "n_embd", "dim")),
    ("add_feed_forward_length", ("prefix_dense_intermediate_size", "dense_intermediate_size",
                                 "intermediate_size", "n_inner", "hidden_dim")),
    ("add_head_count", ("num_attention_heads", "n_head", "n_heads")),
    ("add_head_count_kv", ("num_key_value_heads", "n_kv_heads")),
)


THETA_KEYS = ("global_rope_theta", "rope_global_theta", "rope_theta_global", "rope_theta",
              "rotary_emb_base")
LOCAL_THETA_KEYS = ("local_rope_theta", "rope_local_theta", "rope_theta_local", "swa_rope_theta",
                    "rope_local_base_freq")


def find(hparams: dict, names):
    return next((hparams[k] for k in names if k in hparams), None)


def load_hparams(config: dict) -> tuple:
    """(gguf arch, hparams with transformers' defaults and rope_parameters)."""
    archs = config.get("architectures")
    hf_arch = archs[0] if isinstance(archs, list) and archs else None
    if hf_arch not in HF_ARCHS:
        raise ModelError(f"unsupported architecture {hf_arch!r} in config.json "
                         f"(supported: {', '.join(HF_ARCHS)})")
    arch = HF_ARCHS[hf_arch]
    hparams = {**HF_DEFAULTS[arch], **config}
    if hparams.get("num_key_value_heads") is None:
        hparams["num_key_value_heads"] = hparams["num_attention_heads"]
    if arch == "llama" and hparams.get("head_dim") is None:
        hparams["head_dim"] = hparams["hidden_size"] // hparams["num_attention_heads"]
    hparams["rope_parameters"] = _rope_parameters(hparams)
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "vocab_size"):
        if type(hparams[name]) is not int or hparams[name] <= 0:
            raise ModelError(f"config.json: bad {name} {hparams[name]!r}")
    return arch, hparams


def _rope_parameters(hparams) -> dict:
    """base.py TextModel.__init__: rope_scaling plus the mirrored global/local thetas."""
    rope = dict(hparams.get("rope_parameters") or hparams.get("rope_scaling") or {})
    if "full_attention" in rope or "sliding_attention" in rope:
        return rope
    if (local := find(hparams, LOCAL_THETA_KEYS)) is not None:
        rope["sliding_attention"] = {"rope_theta": local}
    if "rope_theta" not in rope and (theta := find(hparams, THETA_KEYS)) is not None:
        rope["rope_theta"] = theta
    if "rope_type" not in rope and (kind := rope.get("type")) is not None:
        rope["rope_type"] = kind
    for key in ("partial_rotary_factor", "original_max_position_embeddings"):
        if key not in rope and (value := hparams.get(key)) is not None:
            rope[key] = value
    return rope


def write_hparams(writer: gguf.GGUFWriter, arch: str, hparams: dict, ftype):
    """All hyperparameter keys, in the converter's order."""
    writer.add_block_count(hparams["num_hidden_layers"])
    for method, names in GENERIC_KEYS:
        if (value := find(hparams, names)) is not None:
            getattr(writer, method)(value)
    rope = hparams["rope_parameters"]
    full = rope.get("full_attention", rope)
    _rope_scaling(writer, full)
    if (theta := full.get("rope_theta")) is not None:
        writer.add_rope_freq_base(theta)
    if (theta_swa := rope.get("sliding_attention", {}).get("rope_theta")) is not None:
        writer.add_rope_freq_base_swa(theta_swa)
    if (eps := find(hparams, ("rms_norm_eps", "norm_eps"))) is not None:
        writer.add_layer_norm_rms_eps(eps)
    if (eps := find(hparams, ("layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"))) is not None:
        writer.add_layer_norm_eps(eps)
    if (head_dim := hparams.get("head_dim")) is not None:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type(ftype)
    ARCH_EXTRAS[arch](writer, hparams)


def _rope_scaling(writer, rope):
    """base.py TextModel.set_gguf_parameters: linear and yarn scaling keys."""
    kind, factor = rope.get("rope_type"), rope.get("factor")
    if kind in ("linear", "yarn") and factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType(kind))
        writer.add_rope_scaling_factor(factor)
    if kind == "yarn" and factor is not None:
        writer.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
        for method, names in (("ext_factor", ("extrapolation_factor",)),
                              ("attn_factor", ("attention_factor", "attn_factor")),
                              ("beta_fast", ("beta_fast",)), ("beta_slow", ("beta_slow",))):
            if (value := find(rope, names)) is not None:
                getattr(writer, f"add_rope_scaling_yarn_{method}")(value)
    elif kind in ("su", "longrope"):
        writer.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)
    # llama3: no keys, a rope_freqs.weight tensor instead (tensors._generated)


def _llama_extras(writer, hparams):
    writer.add_vocab_size(hparams["vocab_size"])
    writer.add_rope_dimension_count(hparams["head_dim"])


def _gemma3_extras(writer, hparams):
    """gemma.py Gemma3Model.set_gguf_parameters (rewrites some generic keys)."""
    writer.add_context_length(hparams["max_position_embeddings"])
    writer.add_head_count(hparams["num_attention_heads"])
    writer.add_layer_norm_rms_eps(hparams["rms_norm_eps"])
    writer.add_key_length(hparams["head_dim"])
    writer.add_value_length(hparams["head_dim"])
    rope = hparams["rope_parameters"]
    writer.add_rope_freq_base(rope.get("full_attention", rope).get("rope_theta", 1_000_000.0))
    if hparams.get("attn_logit_softcapping") is not None:
        raise ModelError("gemma3 with attn_logit_softcapping is not supported")
    if softcap := hparams.get("final_logit_softcapping"):
        writer.add_final_logit_softcapping(softcap)
    if hparams.get("sliding_window_pattern") != 1:
        writer.add_sliding_window(hparams["sliding_window"])
    writer.add_head_count_kv(hparams["num_key_value_heads"])


ARCH_EXTRAS = {
    "llama": _llama_extras,
    "qwen2": lambda writer, hparams: None,   # _try_set_pooling_type: no modules.json here
    "qwen3": lambda writer, hparams: None,
    "gemma3": _gemma3_extras,
}
