"""gguf-convert's output against llama.cpp's convert_hf_to_gguf.py on the same
checkpoints (tests/data/convert_refs.json, made by tests/data/make_convert_refs.py):
same metadata keys, value types and values in the same order, same tensor
names, order, types, shapes and offsets, identical tensor bytes."""
import pytest

import gguf_summary
from gguf_runtime.convert import convert

CASES = [
    "smollm2-f32/f32", "smollm2-f32/f16", "smollm2-f32/bf16", "smollm2-f32/q8_0",
    "smollm2-bf16/auto", "gemma3-bf16/auto",
    *(f"tiny-{arch}/{outtype}" for arch in ("llama", "qwen2", "qwen3", "gemma3")
      for outtype in ("f32", "f16", "bf16", "q8_0", "auto")),
    "tiny-llama3/f16", "tiny-llama3/q8_0",
]


@pytest.mark.parametrize("case", CASES)
def test_identical_to_llama_cpp_converter(case, checkpoint, convert_refs, tmp_path):
    name, outtype = case.split("/")
    ref = convert_refs[case]
    out = convert(checkpoint(name), tmp_path / "out.gguf", outtype, quiet=True)
    ours = gguf_summary.summarize(out)
    differences = gguf_summary.diff(ours, ref)
    assert not differences, "\n".join(differences)
    assert ours["kv"] == ref["kv"] and ours["tensors"] == ref["tensors"]


def test_outtype_auto_follows_checkpoint_dtype(convert_refs):
    """bf16 checkpoints become BF16 files, f16 ones F16, f32 ones F16 (their rule)."""
    file_type = {case: dict((k[0], k[2]) for k in ref["kv"])["general.file_type"]
                 for case, ref in convert_refs.items() if case.endswith("/auto")}
    assert file_type["smollm2-bf16/auto"] == 32   # MOSTLY_BF16
    assert file_type["tiny-llama/auto"] == 32     # stored as BF16
    assert file_type["tiny-qwen2/auto"] == 1      # stored as F16
    assert file_type["tiny-qwen3/auto"] == 1      # stored as F32 -> F16


def test_q8_0_falls_back_to_f16_where_rows_do_not_split(convert_refs):
    """tiny llama's ffn_down has 80 columns: not whole Q8_0 blocks."""
    types = {t[0]: t[1] for t in convert_refs["tiny-llama/q8_0"]["tensors"]}
    assert types["blk.0.ffn_down.weight"] == "F16"
    assert types["blk.0.ffn_gate.weight"] == "Q8_0"


def test_llama3_rope_freqs_tensor_comes_first(convert_refs):
    """Llama 3 RoPE scaling: a generated F32 rope_freqs.weight (head_dim / 2 factors)."""
    first = convert_refs["tiny-llama3/f16"]["tensors"][0]
    assert first[:3] == ["rope_freqs.weight", "F32", [16]]
