"""HF tensors -> GGUF tensors: names, order, output types and per-tensor edits,
following llama.cpp's conversion/base.py ModelBase.prepare_tensors and the model
classes' modify_tensors (llama.py, qwen.py, gemma.py).

plan_tensors decides everything from the safetensors headers alone, so the
GGUF header can be written before any tensor data is read; tensor_data then
produces one tensor's bytes at a time.
"""
from dataclasses import dataclass

import gguf
import numpy as np

from ..errors import ModelError
from .rope_freqs import llama3_rope_factors

T = gguf.GGMLQuantizationType
FTYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
          "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
FTYPE_QTYPE = {gguf.LlamaFileType.ALL_F32: T.F32, gguf.LlamaFileType.MOSTLY_F16: T.F16,
               gguf.LlamaFileType.MOSTLY_BF16: T.BF16, gguf.LlamaFileType.MOSTLY_Q8_0: T.Q8_0}
GGUF_ARCHS = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2,
              "qwen3": gguf.MODEL_ARCH.QWEN3, "gemma3": gguf.MODEL_ARCH.GEMMA3}

# base.py TextModel.filter_tensors: names of other modalities
_SKIP_PREFIXES = ("mlp", "vit.", "vpm.", "siglip2.", "conformer.", "merger.", "resampler.",
                  "sound_encoder.", "sound_projection.", "speech_embeddings.")
_SKIP_PARTS = ("visual.", "vision.", "audio.", "talker.", "vision_", "audio_", "token2wav.",
               "code2wav.", "projector.", "pre_mm_projector_norm", "image_newline",
               "view_seperator", "patch_embed", "patch_embedding", "patch_merger.",
               "patch_merge_mlp.", "model.connector.")
# prepare_tensors: tensors dropped outright
_UNUSED_SUFFIXES = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")


@dataclass
class TensorPlan:
    hf_name: str
    name: str            # GGUF name
    entry: object        # safetensors TensorEntry
    shape: tuple         # numpy order, after edits
    qtype: T
    permute_heads: int   # >0: llama Q/K rows permuted for this many heads
    norm_shift: float    # added to the values (gemma3 norms)
    nbytes: int
    values: np.ndarray = None  # a generated tensor (llama3 rope_freqs): no entry


def guess_ftype(entries) -> gguf.LlamaFileType:
    """--outtype auto (ModelBase.__init__): the first 2-D+ tensor's dtype decides."""
    for entry in entries:
        if len(entry.shape) >= 2:
            return {"BF16": gguf.LlamaFileType.MOSTLY_BF16}.get(
                entry.dtype, gguf.LlamaFileType.MOSTLY_F16)
    return gguf.LlamaFileType.MOSTLY_F16


def _hf_name(name: str, arch: str):
    """filter_tensors (TextModel and LlamaModel): None for skipped tensors."""
    if name.startswith(_SKIP_PREFIXES) or any(p in name for p in _SKIP_PARTS):
        return None
    if name.endswith("e_score_correction_bias"):
        name = name.replace("e_score_correction_bias", "e_score_correction.bias")
    name = name.replace("language_model.", "")
    if arch == "llama":
        name = name.replace("text_model.", "")
    return name


def _output_qtype(name: str, shape: tuple, ftype) -> T:
    """prepare_tensors' type rules for these architectures."""
    if len(shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        return T.F32
    qtype = FTYPE_QTYPE[ftype]
    if qtype == T.Q8_0 and shape[-1] % gguf.GGML_QUANT_SIZES[T.Q8_0][0]:
        return T.F16  # gguf.quants raises QuantError there; the converter falls back to F16
    return qtype


def plan_tensors(arch, hparams, entries: dict, ftype, n_vocab_real) -> list:
    """One TensorPlan per output tensor, in the converter's order."""
    name_map = gguf.get_tensor_name_map(GGUF_ARCHS[arch], hparams["num_hidden_layers"])
    plans = _generated(arch, hparams)
    for key, entry in entries.items():
        name = _hf_name(key, arch)
        if name is None or name.endswith(_UNUSED_SUFFIXES):
            continue
        new_name = name_map.get_name(key=name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise ModelError(f"cannot map tensor {key!r} to a GGUF name for {arch}")
        shape = entry.shape
        heads = 0
        if arch == "llama" and name.endswith(("q_proj.weight", "q_proj.bias")):
            heads = hparams["num_attention_heads"]
        elif arch == "llama" and name.endswith(("k_proj.weight", "k_proj.bias")):
            heads = hparams["num_key_value_heads"]
        if heads and shape[0] % (2 * heads):
            raise ModelError(f"{key}: {shape[0]} rows do not split into {heads} heads")
        shift = 0.0
        if arch == "gemma3":
            if "embed_tokens.weight" in name:
                shape = (min(shape[0], n_vocab_real), *shape[1:])
            shift = 1.0 if name.endswith("norm.weight") else 0.0
        qtype = _output_qtype(new_name, shape, ftype)
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        nbytes = int(np.prod(shape, dtype=np.int64)) // block * type_size
        plans.append(TensorPlan(key, new_name, entry, shape, qtype, heads, shift, nbytes))
    _check_unique(plans)
    return plans


def _generated(arch, hparams) -> list:
    """generate_extra_tensors (written before the checkpoint's tensors): llama's
    rope_freqs.weight for Llama 3 RoPE scaling."""
    rope = hparams["rope_parameters"]
    rope = rope.get("full_attention", rope)
    if arch != "llama" or str(rope.get("rope_type", "")).lower() != "llama3":
        return []
    values = llama3_rope_factors(rope, hparams["head_dim"])
    return [TensorPlan("(generated)", "rope_freqs.weight", None, values.shape, T.F32, 0, 0.0,
                       values.nbytes, values)]


def _check_unique(plans):
    seen = set()
    for p in plans:
        if p.name in seen:
            raise ModelError(f"two tensors map to {p.name}")
        seen.add(p.name)


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.py LlamaModel.permute: HF rotary halves -> llama.cpp interleaved pairs."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


CHUNK_ELEMENTS = 1 << 22  # rows converted at a time: bounds the float temporaries


def tensor_data(plan: TensorPlan, reader) -> np.ndarray:
    """The tensor's bytes in the output type, through gguf.quants as the converter
    does, a block of rows at a time (every step here is row-independent; Q/K
    permutation only within a head, so blocks hold whole heads)."""
    if plan.values is not None:
        return plan.values.view(np.uint8)
    shape = plan.shape
    if len(shape) < 2:
        return _convert(reader.load(plan.entry), plan, plan.permute_heads).view(np.uint8)
    row_elems = int(np.prod(shape[1:], dtype=np.int64))
    step = max(1, CHUNK_ELEMENTS // max(row_elems, 1))
    if plan.permute_heads:
        head_rows = shape[0] // plan.permute_heads
        step = max(head_rows, step // head_rows * head_rows)
    out = np.empty(plan.nbytes, dtype=np.uint8)
    pos = 0
    for r0 in range(0, shape[0], step):
        r1 = min(shape[0], r0 + step)
        heads = (r1 - r0) // head_rows if plan.permute_heads else 0
        block = _convert(reader.load(plan.entry, r0, r1), plan, heads).view(np.uint8).reshape(-1)
        out[pos:pos + block.size] = block
        pos += block.size
        reader.release(plan.entry, r0, r1)
    if pos != plan.nbytes:
        raise ModelError(f"{plan.hf_name}: {pos} bytes, {plan.nbytes} planned")
    return out


def _convert(data: np.ndarray, plan: TensorPlan, heads: int) -> np.ndarray:
    if heads:
        data = permute(data, heads)
    if plan.norm_shift:  # gemma.py Gemma3Model.modify_tensors: norm weight + 1
        data = data + data.dtype.type(plan.norm_shift)
    return gguf.quants.quantize(np.ascontiguousarray(data), plan.qtype)
