"""Qwen2 and Qwen3 test models built from the real SmolLM2 weights.

No real qwen2/qwen3 GGUF is available offline. These files reuse SmolLM2's
tensors and vocabulary under the other architecture: Q/K rows un-permuted for
NEOX RoPE (the inverse of convert_hf_to_gguf.py's LlamaModel.permute), plus
seeded random Q/K/V biases (qwen2) or per-head Q/K norm weights (qwen3). They
are deterministic, so llama.cpp's reference numbers on them (tests/data) hold
for the file a test builds. gguf-py's reader is fine here: it reads our own
trusted test input, never a user's file.
"""
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter

ARCHS = ("qwen2", "qwen3")


def _unpermute_rows(raw: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of a Q/K weight in HF (NEOX) order from llama.cpp's interleaved order."""
    rows, row_bytes = raw.shape
    head_dim = rows // n_head
    return (raw.reshape(n_head, head_dim // 2, 2, row_bytes).swapaxes(1, 2)
            .reshape(rows, row_bytes))


def _copy_metadata(reader: GGUFReader, writer: GGUFWriter, arch: str):
    for field in reader.fields.values():
        name = field.name
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name.startswith("llama."):
            name = arch + name[len("llama"):]
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub)


def build(arch: str, smollm2_path, out_dir) -> Path:
    """Write (once) the derived model for arch; returns its path."""
    out = Path(out_dir) / f"smollm2-derived-{arch}.gguf"
    if out.exists():
        return out
    reader = GGUFReader(str(smollm2_path))
    n_head = int(reader.get_field("llama.attention.head_count").contents())
    n_head_kv = int(reader.get_field("llama.attention.head_count_kv").contents())
    head_dim = int(reader.get_field("llama.embedding_length").contents()) // n_head
    rng = np.random.default_rng({"qwen2": 2, "qwen3": 3}[arch])
    tmp = out.with_suffix(".tmp")
    writer = GGUFWriter(str(tmp), arch)
    _copy_metadata(reader, writer, arch)
    for t in reader.tensors:
        raw = np.asarray(t.data)
        qtype = GGMLQuantizationType(t.tensor_type)
        shape = tuple(int(n) for n in reversed(t.shape))  # numpy order
        if qtype != GGMLQuantizationType.F32:
            raw = raw.reshape(shape[0], -1)
            shape = raw.shape  # gguf-py takes quantized shapes in bytes
        for kind, heads in (("attn_q.weight", n_head), ("attn_k.weight", n_head_kv)):
            if t.name.endswith(kind):
                raw = _unpermute_rows(raw, heads)
        writer.add_tensor(t.name, raw, raw_shape=shape, raw_dtype=qtype)
        if t.name.endswith("attn_norm.weight"):
            prefix = t.name[:-len("attn_norm.weight")]
            for extra, values in _extra_tensors(arch, rng, n_head, n_head_kv, head_dim):
                writer.add_tensor(prefix + extra, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    return out


def _extra_tensors(arch, rng, n_head, n_head_kv, head_dim):
    if arch == "qwen2":
        return [(f"attn_{x}.bias", (0.05 * rng.standard_normal(n * head_dim)).astype(np.float32))
                for x, n in (("q", n_head), ("k", n_head_kv), ("v", n_head_kv))]
    # qwen3: RMS-normed heads; weights near the typical head scale keep attention sharp
    return [(f"attn_{x}_norm.weight", (2.0 + 0.5 * rng.standard_normal(head_dim)).astype(np.float32))
            for x in ("q", "k")]
