"""gguf-convert: an HF checkpoint directory -> one GGUF file, as llama.cpp's
convert_hf_to_gguf.py writes it (same keys in the same order, same tensors and
bytes), without torch or transformers.

Order of work, as ModelBase.write: plan the tensors (prepare_tensors), then the
metadata (prepare_metadata: general.* from gguf-py's Metadata, hyperparameters,
quantization version, vocabulary), then the header; then the tensor data one
tensor at a time from the memory-mapped safetensors. gguf-py's GGUFWriter lays
out the file, as in their converter. The output is written to a temporary file
beside OUT and renamed at the end.
"""
import logging
import sys
import time
from pathlib import Path

import gguf
import numpy as np

from ..atomic import atomic_path
from ..errors import ModelError
from . import hf_config, vocab
from .safetensors import TensorReader, index_tensors
from .special_vocab import SpecialVocab
from .tensors import FTYPES, GGUF_ARCHS, guess_ftype, plan_tensors, tensor_data


def convert(model_dir, outfile=None, outtype="auto", quiet=False) -> Path:
    model_dir = Path(model_dir)
    logging.getLogger("gguf").setLevel(logging.ERROR)  # GGUFWriter's duplicate-key notes
    if not model_dir.is_dir():
        raise ModelError(f"{model_dir}: not a directory")
    if not (model_dir / "config.json").is_file():
        raise ModelError(f"{model_dir}: no config.json")
    config = vocab.read_json(model_dir / "config.json", "the model config")
    if not isinstance(config, dict):
        raise ModelError("config.json: not a JSON object")
    arch, hparams = hf_config.load_hparams(config)
    tok_config_path = model_dir / "tokenizer_config.json"
    tok_config = vocab.read_json(tok_config_path, "the tokenizer config") \
        if tok_config_path.is_file() else {}
    entries = index_tensors(model_dir)
    ftype = FTYPES[outtype] if outtype != "auto" else guess_ftype(entries.values())
    kind = vocab.vocab_kind(model_dir)
    if kind == "bpe" and arch == "llama" and vocab.uses_llama_hf_vocab(model_dir):
        raise ModelError("Llama-2 style BPE tokenizer.json with byte fallback is not supported "
                         "(llama.cpp converts it through transformers)")
    n_vocab = _vocab_rows(model_dir, kind, hparams, tok_config) if arch == "gemma3" else None
    plans = plan_tensors(arch, hparams, entries, ftype, n_vocab)

    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[GGUF_ARCHS[arch]])
    for p in plans:
        # shape in elements (any dtype but uint8 means that), type from raw_dtype
        writer.add_tensor_info(p.name, p.shape, np.dtype(np.float32), p.nbytes, raw_dtype=p.qtype)
    meta = _general_metadata(writer, model_dir)
    hf_config.write_hparams(writer, arch, hparams, ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    out = Path(outfile) if outfile else model_dir / _default_name(meta, ftype, writer)
    if out.is_dir():
        out = out / _default_name(meta, ftype, writer)
    _add_vocab(writer, arch, kind, model_dir, hparams, tok_config)
    _write(writer, plans, model_dir, out, quiet)
    return out


def _general_metadata(writer, model_dir):
    """prepare_metadata: general.type, then gguf-py Metadata's general.* keys."""
    total, shared, expert, expert_count = writer.get_total_parameter_count()
    meta = gguf.Metadata.load(None, model_dir, None, total)
    # llama.cpp's gguf-py (newer than PyPI's 0.19) also reads repetition_penalty
    gen_config = gguf.Metadata.load_generation_config(model_dir)
    if meta.sampling_penalty_repeat is None and "repetition_penalty" in gen_config:
        meta.sampling_penalty_repeat = gen_config["repetition_penalty"]
    if meta.name is None:
        meta.name = model_dir.name
    if meta.size_label is None and total > 0:
        meta.size_label = gguf.size_label(total, shared, expert, expert_count)
    writer.add_type(gguf.GGUFType.MODEL)
    meta.set_gguf_meta_model(writer)
    return meta


def _default_name(meta, ftype, writer) -> str:
    """TextModel.prepare_metadata's file name when OUT is not given."""
    output_type = ftype.name.partition("_")[2]
    return gguf.naming_convention(meta.name, meta.basename, meta.finetune, meta.version,
                                  meta.size_label, output_type) + ".gguf"


def _vocab_rows(model_dir, kind, hparams, tok_config) -> int:
    """gemma.py Gemma3Model.modify_tensors: token_embd keeps this many rows (the
    SentencePiece token list is exactly vocab_size long, padded or cut)."""
    if kind == "spm":
        return hparams["vocab_size"]
    data = vocab.read_json(model_dir / "tokenizer.json", "the tokenizer")
    return len(data["model"]["vocab"]) + len(data.get("added_tokens", []))


def _add_vocab(writer, arch, kind, model_dir, hparams, tok_config):
    """set_vocab of LlamaModel, Qwen2Model/Qwen3Model and Gemma3Model."""
    if arch == "llama" and (prefix := tok_config.get("add_prefix_space")) is not None:
        writer.add_add_space_prefix(prefix)
    if kind == "spm":
        vocab.add_spm_vocab(writer, model_dir, hparams.get("vocab_size"), tok_config)
        if arch == "gemma3":
            writer.add_add_space_prefix(False)
    else:
        vocab.add_bpe_vocab(writer, model_dir, hparams["vocab_size"], tok_config)
    if arch == "llama" and hparams["vocab_size"] == 32016:  # CodeLlama infill tokens
        special = SpecialVocab(model_dir, types=("prefix", "suffix", "middle", "eot"))
        for typ, tid in (("prefix", 32007), ("suffix", 32008), ("middle", 32009), ("eot", 32010)):
            special.set_id(typ, tid)
        special.add_to_gguf(writer)
    if arch == "llama" and hparams["vocab_size"] == 49152:  # granite small / SmolLM: no BOS
        writer.add_add_bos_token(False)


def _write(writer, plans, model_dir, out: Path, quiet: bool):
    """Header, metadata, tensor infos, then each tensor; temp file, then rename."""
    directory = out.parent if str(out.parent) else Path(".")
    if not directory.is_dir():
        raise ModelError(f"{directory}: output directory does not exist")
    reader = TensorReader()
    try:
        with atomic_path(out) as tmp:
            try:
                writer.write_header_to_file(path=Path(tmp))
                writer.write_kv_data_to_file()
                writer.write_ti_data_to_file()
                progress = Progress(sum(p.nbytes for p in plans), len(plans), quiet)
                for i, plan in enumerate(plans):
                    writer.write_tensor_data(tensor_data(plan, reader))
                    progress.update(i, plan)
            finally:
                writer.close()
        progress.done(out)
    finally:
        reader.close()


class Progress:
    """One stderr line per tensor: index, name, type, shape, bytes done, ETA."""

    def __init__(self, total_bytes, n_tensors, quiet):
        self.total, self.n, self.quiet = total_bytes, n_tensors, quiet
        self.done_bytes, self.start = 0, time.monotonic()

    def update(self, i, plan):
        self.done_bytes += plan.nbytes
        if self.quiet:
            return
        elapsed = time.monotonic() - self.start
        eta = elapsed / self.done_bytes * (self.total - self.done_bytes) if self.done_bytes else 0
        shape = "x".join(str(d) for d in reversed(plan.shape))
        print(f"[{i + 1:{len(str(self.n))}}/{self.n}] {plan.name:<32} {plan.qtype.name:<5} "
              f"{shape:<14} {self.done_bytes / 1e6:8.1f}/{self.total / 1e6:.1f} MB  "
              f"ETA {eta:4.0f} s", file=sys.stderr, flush=True)

    def done(self, out):
        if not self.quiet:
            print(f"wrote {out} ({self.total / 1e6:.1f} MB of tensors) in "
                  f"{time.monotonic() - self.start:.1f} s", file=sys.stderr, flush=True)
