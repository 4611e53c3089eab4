"""Which GGML type each tensor gets in a llama-quantize file type (Q4_K_M, IQ2_M, ...).

The rules are llama.cpp's (src/llama-quant.cpp: tensor_allows_quantization,
llama_tensor_get_type_impl, tensor_type_fallback, tensor_requires_imatrix), in the same
order, so that a mix picks the same type per tensor as llama-quantize does. Only the
file types of tools/quantize/quantize.cpp QUANT_OPTIONS that this project can write
are listed (no TQ*, MXFP4, Q1_0, Q2_0).
"""
import re
from dataclasses import dataclass, field

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T, LlamaFileType as F

# llama-quantize type name -> (file type written to general.file_type, default tensor
# type) -- quantize.cpp QUANT_OPTIONS and llama-quant.cpp llama_ftype_get_default_type
FILE_TYPES = {
    "Q4_0": (F.MOSTLY_Q4_0, T.Q4_0), "Q4_1": (F.MOSTLY_Q4_1, T.Q4_1),
    "Q5_0": (F.MOSTLY_Q5_0, T.Q5_0), "Q5_1": (F.MOSTLY_Q5_1, T.Q5_1),
    "IQ2_XXS": (F.MOSTLY_IQ2_XXS, T.IQ2_XXS), "IQ2_XS": (F.MOSTLY_IQ2_XS, T.IQ2_XS),
    "IQ2_S": (F.MOSTLY_IQ2_S, T.IQ2_XS), "IQ2_M": (F.MOSTLY_IQ2_M, T.IQ2_S),
    "IQ1_S": (F.MOSTLY_IQ1_S, T.IQ1_S), "IQ1_M": (F.MOSTLY_IQ1_M, T.IQ1_M),
    "Q2_K": (F.MOSTLY_Q2_K, T.Q2_K), "Q2_K_S": (F.MOSTLY_Q2_K_S, T.Q2_K),
    "IQ3_XXS": (F.MOSTLY_IQ3_XXS, T.IQ3_XXS), "IQ3_S": (F.MOSTLY_IQ3_S, T.IQ3_S),
    "IQ3_M": (F.MOSTLY_IQ3_M, T.IQ3_S), "Q3_K": (F.MOSTLY_Q3_K_M, T.Q3_K),
    "IQ3_XS": (F.MOSTLY_IQ3_XS, T.IQ3_S), "Q3_K_S": (F.MOSTLY_Q3_K_S, T.Q3_K),
    "Q3_K_M": (F.MOSTLY_Q3_K_M, T.Q3_K), "Q3_K_L": (F.MOSTLY_Q3_K_L, T.Q3_K),
    "IQ4_NL": (F.MOSTLY_IQ4_NL, T.IQ4_NL), "IQ4_XS": (F.MOSTLY_IQ4_XS, T.IQ4_XS),
    "Q4_K": (F.MOSTLY_Q4_K_M, T.Q4_K), "Q4_K_S": (F.MOSTLY_Q4_K_S, T.Q4_K),
    "Q4_K_M": (F.MOSTLY_Q4_K_M, T.Q4_K), "Q5_K": (F.MOSTLY_Q5_K_M, T.Q5_K),
    "Q5_K_S": (F.MOSTLY_Q5_K_S, T.Q5_K), "Q5_K_M": (F.MOSTLY_Q5_K_M, T.Q5_K),
    "Q6_K": (F.MOSTLY_Q6_K, T.Q6_K), "Q8_0": (F.MOSTLY_Q8_0, T.Q8_0),
    "F16": (F.MOSTLY_F16, T.F16), "BF16": (F.MOSTLY_BF16, T.BF16), "F32": (F.ALL_F32, T.F32),
}
_LOW_BIT_IQ = {F.MOSTLY_IQ2_XXS, F.MOSTLY_IQ2_XS, F.MOSTLY_IQ1_S, F.MOSTLY_IQ2_S,
               F.MOSTLY_IQ2_M, F.MOSTLY_IQ1_M}
# tensor_type_fallback: 256-wide types on rows that are not a multiple of 256
_FALLBACK = {T.IQ1_S: T.IQ4_NL, T.IQ1_M: T.IQ4_NL, T.IQ2_XXS: T.IQ4_NL,
             T.IQ2_XS: T.IQ4_NL, T.IQ2_S: T.IQ4_NL, T.IQ3_XXS: T.IQ4_NL,
             T.IQ3_S: T.IQ4_NL, T.IQ4_XS: T.IQ4_NL, T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0,
             T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}
_NOT_QUANTIZED_PARTS = ("_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight",
                        "altup", "laurel", "per_layer_model_proj", "ssm_conv1d",
                        "shortconv.conv.weight", "indexer.k_proj.weight",
                        "indexer.q_proj.weight", "attn_rel_b.weight", ".position_embd",
                        "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd",
                        ".patch_merger", "a.rvq.codebook", "mm.a.code_embd")
_NOT_QUANTIZED_NAMES = ("position_embd.weight", "token_types.weight")


@dataclass
class Options:
    """llama-quantize's options that steer type choice (llama_model_quantize_params)."""
    file_type: str
    pure: bool = False
    leave_output_tensor: bool = False
    output_tensor_type: T | None = None
    token_embedding_type: T | None = None
    tensor_types: list = field(default_factory=list)  # [(compiled regex, GGML type)]
    has_imatrix: bool = False


@dataclass
class ModelShape:
    """The hyperparameters llama-quant.cpp consults."""
    arch: str
    n_layer: int
    n_head: int
    n_head_kv: int
    n_expert: int = 0

    @property
    def n_gqa(self):
        return self.n_head // self.n_head_kv if self.n_head_kv else 0

    @property
    def is_70b(self):  # llama_quant_model_from_metadata's rule for LLM_TYPE_70B
        return self.arch == "llama" and self.n_layer == 80 and self.n_head != self.n_head_kv


def category(name):
    """llama-quant.cpp tensor_get_category."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for part, cat in (("attn_qkv.weight", "attn_qkv"), ("attn_kv_b.weight", "attn_kv_b"),
                      ("attn_v.weight", "attn_v"), ("attn_k.weight", "attn_k"),
                      ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                      ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if part in name:
            return cat
    return "other"


def allows_quantization(name, n_dims, opts):
    """llama-quant.cpp tensor_allows_quantization (the arch-specific names left out
    belong to architectures this project does not run)."""
    if n_dims < 2 or not name.endswith("weight"):
        return False
    if any(part in name for part in _NOT_QUANTIZED_PARTS) or name in _NOT_QUANTIZED_NAMES:
        return False
    if opts.leave_output_tensor and name == "output.weight":
        return False
    return not re.search(r"time_mix_(first|w[012]|v[012]|a[012]|g[12]|decay_w[12]|"
                         r"lerp_fused)\.weight", name)


def requires_imatrix(name, qtype, ftype):
    """llama-quant.cpp tensor_requires_imatrix."""
    if name in ("token_embd.weight", "per_layer_token_embd.weight", "output.weight"):
        return False
    if qtype in (T.IQ3_XXS, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ1_M, T.IQ1_S):
        return True
    return qtype == T.Q2_K and ftype == F.MOSTLY_Q2_K_S


def is_quantized(qtype):
    return qtype not in (T.F32, T.F16, T.BF16)


def use_more_bits(i_layer, n_layers):
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or \
        (i_layer - n_layers // 8) % 3 == 2


class TypeChooser:
    """llama_tensor_get_type with its per-model counters (quantize_state_impl).

    Call choose() once per tensor in llama-quantize's tensor order: the attn_v and
    ffn_* counters advance as in llama-quant.cpp, and some rules depend on them."""

    def __init__(self, names, shape: ModelShape, opts: Options):
        self.shape, self.opts = shape, opts
        self.ftype, self.default_type = FILE_TYPES[opts.file_type]
        cats = [category(n) for n in names]
        self.n_attention_wv = sum(c in ("attn_v", "attn_qkv", "attn_kv_b") for c in cats)
        self.has_tied_embeddings = "output" not in cats
        self.n_ffn = shape.n_layer
        self.i_attention_wv = self.i_ffn_down = self.i_ffn_gate = self.i_ffn_up = 0
        self.fallbacks = []  # (name, wanted type, type used)

    def choose(self, name, ne0, n_dims, current_type):
        """The type this tensor is written in (ne0 = row length)."""
        opts = self.opts
        if not allows_quantization(name, n_dims, opts):
            return current_type
        cat = category(name)
        if opts.token_embedding_type is not None and cat == "token_embd":
            return opts.token_embedding_type
        if opts.output_tensor_type is not None and cat == "output":
            return opts.output_tensor_type
        new_type = self.default_type
        if not is_quantized(new_type):
            return new_type
        manual = False
        for pattern, qtype in opts.tensor_types:
            if pattern.search(name):
                new_type, manual = qtype, True
                break
        if not manual and not opts.pure:
            new_type = self._mix_rule(new_type, name, ne0, cat)
        return self._fallback(name, ne0, new_type)

    def _fallback(self, name, ne0, qtype):
        """tensor_type_fallback."""
        if ne0 % GGML_QUANT_SIZES[qtype][0] == 0:
            return qtype
        used = _FALLBACK.get(qtype, qtype)
        if ne0 % GGML_QUANT_SIZES[used][0]:
            used = T.F16
        self.fallbacks.append((name, qtype, used))
        return used

    def _mix_rule(self, new_type, name, ne0, cat):
        """llama_tensor_get_type_impl, branch by branch."""
        f, s = self.ftype, self.shape
        if cat == "output" or (self.has_tied_embeddings and cat == "token_embd"):
            return self._output_type(new_type, ne0)
        if cat == "token_embd":
            return self._token_embd_type(new_type)
        if f in _LOW_BIT_IQ:
            return self._low_bit_iq_type(new_type, cat)
        if cat in ("attn_v", "attn_qkv", "attn_kv_b"):
            new_type = self._attn_v_type(new_type)
            self.i_attention_wv += 1
            return new_type
        if cat == "attn_k":
            if s.n_expert == 8:
                return T.Q8_0
            return {F.MOSTLY_IQ3_XS: T.IQ3_XXS, F.MOSTLY_IQ3_XXS: T.IQ2_S}.get(f, new_type)
        if cat == "attn_q":
            return {F.MOSTLY_IQ3_XS: T.IQ3_XXS, F.MOSTLY_IQ3_XXS: T.IQ2_S}.get(f, new_type)
        if cat == "ffn_down":
            new_type = self._ffn_down_type(new_type, self._layer(self.i_ffn_down, name))
            self.i_ffn_down += 1
            return new_type
        if cat == "attn_output":
            return self._attn_output_type(new_type)
        if cat == "attn_qkv":
            return new_type  # unreachable: attn_qkv is handled with attn_v above
        if cat in ("ffn_gate", "ffn_up"):
            i_layer = self._layer(self.i_ffn_gate if cat == "ffn_gate" else self.i_ffn_up, name)
            if f == F.MOSTLY_IQ3_XS and self.n_ffn // 8 <= i_layer < 7 * self.n_ffn // 8:
                new_type = T.IQ3_XXS
            if cat == "ffn_gate":
                self.i_ffn_gate += 1
            else:
                self.i_ffn_up += 1
        return new_type

    def _output_type(self, new_type, ne0):
        if self.opts.output_tensor_type is not None:
            return self.opts.output_tensor_type
        if self.shape.arch == "falcon" or ne0 % GGML_QUANT_SIZES[new_type][0]:
            return T.Q8_0
        if self.ftype in _LOW_BIT_IQ | {F.MOSTLY_IQ3_XXS}:
            return T.Q5_K
        return new_type if new_type == T.Q8_0 else T.Q6_K

    def _token_embd_type(self, new_type):
        f = self.ftype
        if self.opts.token_embedding_type is not None:
            return self.opts.token_embedding_type
        if f in (F.MOSTLY_IQ2_XXS, F.MOSTLY_IQ2_XS, F.MOSTLY_IQ1_S, F.MOSTLY_IQ1_M):
            return T.Q2_K
        if f in (F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M, F.MOSTLY_IQ3_XXS):
            return T.IQ3_S
        return new_type

    def _low_bit_iq_type(self, new_type, cat):
        f, s = self.ftype, self.shape
        iq2_s_or_m = f in (F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M)
        if cat in ("attn_v", "attn_qkv", "attn_kv_b"):
            if s.n_gqa >= 4 or s.n_expert >= 4:
                new_type = T.Q4_K
            else:
                new_type = T.IQ3_S if iq2_s_or_m else T.Q2_K
            self.i_attention_wv += 1
        elif s.n_expert == 8 and cat == "attn_k":
            new_type = T.Q4_K
        elif cat == "ffn_down":
            if self.i_ffn_down < self.n_ffn // 8:
                new_type = T.IQ3_S if iq2_s_or_m else T.Q2_K
            self.i_ffn_down += 1
        elif cat == "attn_output":
            if s.n_expert == 8:
                new_type = T.Q5_K
            elif f in (F.MOSTLY_IQ1_S, F.MOSTLY_IQ1_M):
                new_type = T.IQ2_XXS
            elif iq2_s_or_m:
                new_type = T.IQ3_S
        return new_type

    def _layer(self, counter, name):
        """layer_info: with experts the layer comes from the name, else the counter."""
        if self.shape.n_expert <= 1:
            return counter
        match = re.match(r"blk\.(\d+)\.", name)
        if not match or int(match[1]) >= self.n_ffn:
            raise ValueError(f"cannot tell the layer of tensor {name}")
        return int(match[1])

    def _attn_v_type(self, new_type):
        f, s, i = self.ftype, self.shape, self.i_attention_wv
        if f == F.MOSTLY_Q2_K:
            new_type = T.Q4_K if s.n_gqa >= 4 else T.Q3_K
        elif f == F.MOSTLY_Q2_K_S and s.n_gqa >= 4:
            new_type = T.Q4_K
        elif f == F.MOSTLY_IQ3_XXS:
            new_type = T.Q4_K if s.n_gqa >= 4 else \
                T.IQ3_S if not self.opts.has_imatrix else T.IQ3_XXS
        elif f in (F.MOSTLY_IQ3_XS, F.MOSTLY_IQ3_S) and s.n_gqa >= 4:
            new_type = T.Q4_K
        elif f == F.MOSTLY_IQ3_M:
            new_type = T.Q4_K
        elif f == F.MOSTLY_Q3_K_M:
            new_type = T.Q5_K if i < 2 else T.Q4_K
        elif f == F.MOSTLY_Q3_K_L:
            new_type = T.Q5_K
        elif f in (F.MOSTLY_IQ4_NL, F.MOSTLY_IQ4_XS) and s.n_gqa >= 4:
            new_type = T.Q5_K
        elif f in (F.MOSTLY_Q4_K_M, F.MOSTLY_Q5_K_M) and use_more_bits(i, self.n_attention_wv):
            new_type = T.Q6_K
        elif f == F.MOSTLY_Q4_K_S and i < 4:
            new_type = T.Q5_K
        if s.is_70b and new_type in (T.Q3_K, T.Q4_K):
            new_type = T.Q5_K  # 8 heads share attn_v: more bits cost little
        if s.n_expert == 8:
            new_type = T.Q8_0
        return new_type

    def _ffn_down_type(self, new_type, i_layer):
        f, n, falcon = self.ftype, self.n_ffn, self.shape.arch == "falcon"
        if f == F.MOSTLY_Q2_K:
            return T.Q3_K
        if f == F.MOSTLY_Q2_K_S:
            return T.Q4_K if i_layer < n // 8 else new_type
        if f == F.MOSTLY_IQ3_XXS and not self.opts.has_imatrix:
            return T.Q4_K if i_layer < n // 8 else T.Q3_K
        if f == F.MOSTLY_Q3_K_M:
            return T.Q5_K if i_layer < n // 16 else \
                T.Q4_K if not falcon or use_more_bits(i_layer, n) else T.Q3_K
        if f == F.MOSTLY_IQ3_M and (i_layer < n // 8 or
                                    (self.shape.n_expert == 8 and use_more_bits(i_layer, n))):
            return T.Q4_K
        if f == F.MOSTLY_Q3_K_L:
            return T.Q4_K if falcon else T.Q5_K
        if f == F.MOSTLY_Q4_K_M:
            if falcon:
                return T.Q6_K if i_layer < n // 16 else \
                    T.Q5_K if use_more_bits(i_layer, n) else T.Q4_K
            return T.Q6_K if use_more_bits(i_layer, n) else new_type
        if i_layer < n // 8 and f in (F.MOSTLY_IQ4_NL, F.MOSTLY_IQ4_XS) \
                and not self.opts.has_imatrix:
            return T.Q5_K
        if f == F.MOSTLY_Q5_K_M and use_more_bits(i_layer, n):
            return T.Q6_K
        if f == F.MOSTLY_Q4_K_S and not falcon and i_layer < n // 8:
            return T.Q5_K
        if f in (F.MOSTLY_Q4_0, F.MOSTLY_Q5_0) and self.opts.has_imatrix and i_layer < n // 8:
            # the first ffn_down layers go astray even with an imatrix in Q4_0/Q5_0
            return T.Q4_1 if f == F.MOSTLY_Q4_0 else T.Q5_1
        return new_type

    def _attn_output_type(self, new_type):
        f = self.ftype
        if self.shape.arch == "falcon":
            return T.Q4_K if f == F.MOSTLY_Q3_K_L else new_type
        if self.shape.n_expert == 8:
            bumped = (F.MOSTLY_Q2_K, F.MOSTLY_IQ3_XS, F.MOSTLY_IQ3_XXS, F.MOSTLY_Q3_K_S,
                      F.MOSTLY_Q3_K_M, F.MOSTLY_IQ4_NL, F.MOSTLY_Q4_K_S, F.MOSTLY_Q4_K_M,
                      F.MOSTLY_IQ3_S, F.MOSTLY_IQ3_M, F.MOSTLY_IQ4_XS)
            return T.Q5_K if f in bumped else new_type
        return {F.MOSTLY_Q2_K: T.Q3_K, F.MOSTLY_IQ3_XXS: T.IQ3_S, F.MOSTLY_Q3_K_M: T.Q4_K,
                F.MOSTLY_Q3_K_L: T.Q5_K, F.MOSTLY_IQ3_M: T.Q4_K}.get(f, new_type)
