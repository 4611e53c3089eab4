"""Model configuration: GGUF metadata plus the rules llama.cpp hard-codes per
architecture. Architectures differ only by this data; the forward pass is shared.
"""
import math
from dataclasses import dataclass

from .errors import ModelError
from .strings import StringArray

# What llama.cpp decides in code rather than reading from the file.
#   rope_neox      rope type NEOX (pairs i, i+n/2) vs NORM (pairs 2i, 2i+1):
#                  llama-model.cpp llama_model_rope_type
#   activation     gated FFN activation: build_ffn LLM_FFN_SILU / LLM_FFN_GELU
#   embd_scale     inputs scaled by sqrt(n_embd): src/models/gemma3.cpp
#   post_norms     attn_post_norm / ffn_post_norm after each block: gemma3.cpp
#   swa_pattern    every n-th layer is global, the rest sliding-window
#                  (llama-hparams.cpp set_swa_pattern; gemma3.cpp load_swa_pattern(ml, 6))
#   q_prescale     Q scaled by 1/sqrt(head_dim) before attention, kq_scale 1 (gemma3.cpp)
ARCH_RULES = {
    "llama": dict(rope_neox=False, activation="silu"),
    "qwen2": dict(rope_neox=True, activation="silu"),
    "qwen3": dict(rope_neox=True, activation="silu"),
    "gemma3": dict(rope_neox=True, activation="gelu", embd_scale=True, post_norms=True,
                   swa_pattern=6, q_prescale=True),
}


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int        # per-head width of Q and K (attention.key_length)
    head_dim_v: int      # per-head width of V (attention.value_length)
    n_vocab: int
    n_ctx_train: int
    norm_eps: float
    n_rot: int
    rope_neox: bool
    rope_base: float
    rope_scale: float    # freq_scale = 1 / rope.scaling.factor
    rope_base_swa: float
    activation: str
    embd_scale: float    # 1.0, or sqrt(n_embd) for gemma
    post_norms: bool
    q_prescale: float    # multiply Q before attention (1.0: none)
    kq_scale: float      # multiply Q.K in attention
    final_softcap: float
    sliding_window: int
    swa_layers: tuple    # True where the layer attends within the sliding window

    @classmethod
    def from_metadata(cls, metadata: dict) -> "ModelConfig":
        arch = metadata.get("general.architecture")
        if arch not in ARCH_RULES:
            raise ModelError(f"unsupported architecture {arch!r} "
                             f"(supported: {', '.join(ARCH_RULES)})")
        rules = ARCH_RULES[arch]

        def key(name, default=None, kind=int):
            value = metadata.get(f"{arch}.{name}", default)
            if value is None:
                raise ModelError(f"metadata key {arch}.{name} is missing")
            try:
                return kind(value)
            except (TypeError, ValueError):
                raise ModelError(f"metadata key {arch}.{name} has a bad value {value!r}")

        n_embd, n_head, n_layer = key("embedding_length"), key("attention.head_count"), key("block_count")
        if not (0 < n_head <= n_embd and 0 < n_layer <= 1024):
            raise ModelError(f"bad shape in metadata: n_embd {n_embd}, n_head {n_head}, "
                             f"n_layer {n_layer}")
        head_dim = key("attention.key_length", n_embd // n_head)
        n_head_kv = key("attention.head_count_kv", n_head)
        if n_head_kv <= 0 or n_head % n_head_kv:
            raise ModelError(f"head_count {n_head} is not a multiple of head_count_kv {n_head_kv}")
        scaling = metadata.get(f"{arch}.rope.scaling.factor") or metadata.get(
            f"{arch}.rope.scale_linear") or 0.0
        window = key("attention.sliding_window", 0) if rules.get("swa_pattern") else 0
        pattern = rules.get("swa_pattern", 0)
        swa_layers = tuple(bool(window) and (i % pattern < pattern - 1) for i in range(n_layer))
        attn_scale = 1.0 / math.sqrt(head_dim)
        if arch == "gemma3" and n_layer == 62:  # gemma3.cpp: 27B scales by n_embd / n_head
            attn_scale = 1.0 / math.sqrt(n_embd // n_head)
        q_prescale = rules.get("q_prescale", False)
        # llama-vocab.cpp: the vocabulary's size is its token count; token_embd must match
        tokens = metadata.get("tokenizer.ggml.tokens")
        n_vocab = len(tokens) if isinstance(tokens, (list, StringArray)) else key("vocab_size")
        return cls(
            arch=arch, n_layer=n_layer, n_embd=n_embd, n_ff=key("feed_forward_length"),
            n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim,
            head_dim_v=key("attention.value_length", n_embd // n_head), n_vocab=n_vocab,
            n_ctx_train=key("context_length", 4096),
            norm_eps=key("attention.layer_norm_rms_epsilon", 1e-5, float),
            n_rot=key("rope.dimension_count", head_dim),
            rope_neox=rules["rope_neox"], rope_base=key("rope.freq_base", 10000.0, float),
            rope_scale=1.0 / float(scaling) if scaling else 1.0,
            rope_base_swa=key("rope.freq_base_swa", 10000.0, float),
            activation=rules["activation"],
            embd_scale=math.sqrt(n_embd) if rules.get("embd_scale") else 1.0,
            post_norms=rules.get("post_norms", False),
            q_prescale=attn_scale if q_prescale else 1.0,
            kq_scale=1.0 if q_prescale else attn_scale,
            final_softcap=key("final_logit_softcapping", 0.0, float),
            sliding_window=window, swa_layers=swa_layers)

    def validate(self):
        """Reject shapes the kernels cannot run (they check no bounds)."""
        if self.n_rot % 2 or not 0 < self.n_rot <= self.head_dim:
            raise ModelError(f"rope dimension count {self.n_rot} does not fit head_dim "
                             f"{self.head_dim}")
        for name in ("n_ff", "head_dim", "head_dim_v", "n_vocab", "n_ctx_train"):
            if getattr(self, name) <= 0:
                raise ModelError(f"bad {name} {getattr(self, name)} in metadata")
        if self.sliding_window < 0:
            raise ModelError(f"bad sliding window {self.sliding_window}")
