"""gguf-quantize: rewrite a GGUF file in another type mix, as llama-quantize does.

Follows llama.cpp's src/llama-quant.cpp llama_model_quantize_impl: tensors in the
model loader's order (layer, then name), metadata copied verbatim with
general.quantization_version and general.file_type re-set (so moved to the end),
split keys dropped, the imatrix keys of tools/quantize/quantize.cpp appended; each
tensor dequantized to f32 in slabs of rows and quantized by quant_formats (byte for
byte ggml_quantize_chunk). Memory stays bounded: one slab of f32 rows at a time, and
the input's mapped pages are released after each tensor.
"""
import re
import sys
import time
from dataclasses import dataclass

import numpy as np
from gguf import GGMLQuantizationType as T, GGUFValueType

import quant_formats as qf

from . import gguf_writer as gw
from .atomic import atomic_output
from .errors import ModelError
from .quantize_mix import FILE_TYPES, ModelShape, Options, TypeChooser, requires_imatrix

QUANTIZATION_VERSION = 2  # ggml.h GGML_QNT_VERSION
_SLAB_VALUES = 1 << 24    # f32 values per slab: 64 MB
_DROPPED_KEYS = ("general.quantization_version", "general.file_type", "split.no",
                 "split.count", "split.tensors.count")


def type_name(qtype) -> str:
    """ggml_type_name spelling: q4_K, iq2_xxs, f32, bf16."""
    return T(qtype).name.lower().replace("_k", "_K")


@dataclass
class Job:
    """One tensor of the output: where it comes from and the type it is written in."""
    tensor: object  # reader.GGUFTensor
    new_type: T
    requires_imatrix: bool


def loader_order(tensors):
    """llama_model_loader's weights_map order (weight_name_comparer): layer number
    from 'blk.N.' (-1 without), then name bytes."""
    def key(t):
        match = re.match(r"blk\.(\d+)\.", t.name)
        return (int(match[1]) if match else -1, t.name.encode())
    return sorted(tensors, key=key)


def model_shape(metadata) -> ModelShape:
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str):
        raise ModelError("metadata 'general.architecture' is missing")

    def number(key, default=None):
        value = metadata.get(f"{arch}.{key}", default)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            value = np.asarray(value).ravel()[:1]  # per-layer arrays: layer 0's value
            if value.size != 1 or not np.issubdtype(value.dtype, np.integer):
                raise ModelError(f"metadata '{arch}.{key}' is missing or not an integer")
            value = value[0]
        return int(value)
    n_head = number("attention.head_count", 0)
    return ModelShape(arch=arch, n_layer=number("block_count"), n_head=n_head,
                      n_head_kv=number("attention.head_count_kv", n_head),
                      n_expert=number("expert_count", 0))


def plan(gguf_file, opts: Options, allow_requantize: bool) -> tuple:
    """The output's tensors in order with their types, and the TypeChooser (fallbacks)."""
    tensors = loader_order(gguf_file.tensors)
    chooser = TypeChooser([t.name for t in tensors], model_shape(gguf_file.metadata), opts)
    jobs = []
    for t in tensors:
        n_dims = len(t.shape)
        new_type = chooser.choose(t.name, t.shape[-1], n_dims, t.type)
        needs = requires_imatrix(t.name, new_type, chooser.ftype) and new_type != t.type
        if needs and not opts.has_imatrix:
            raise ModelError(f"this quantization requires an importance matrix (--imatrix): "
                             f"tensor {t.name} would be {type_name(new_type)}")
        if new_type != t.type:
            if t.type not in qf.FORMATS or new_type not in qf.FORMATS:
                raise ModelError(f"tensor {t.name}: cannot convert {type_name(t.type)} "
                                 f"to {type_name(new_type)}")
            if t.type not in (T.F32, T.F16, T.BF16) and not allow_requantize:
                raise ModelError(f"tensor {t.name} is {type_name(t.type)}: requantizing "
                                 "is disabled (use --allow-requantize)")
        jobs.append(Job(t, new_type, needs))
    return jobs, chooser


def metadata_entries(gguf_file, ftype, imatrix_info) -> list:
    """The input's entries verbatim, then the keys llama-quantize sets (in its order);
    imatrix_info: Imatrix.quantize_metadata() or None."""
    entries = [gguf_file.metadata_bytes(k) for k in gguf_file.metadata if k not in _DROPPED_KEYS]
    entries.append(gw.kv_u32("general.quantization_version", QUANTIZATION_VERSION))
    entries.append(gw.kv_u32("general.file_type", int(ftype)))
    for key, (value, vtype) in (imatrix_info or {}).items():  # re-set: moved to the end
        entries = [e for e in entries if not e.startswith(gw.encode_string(key))]
        entries.append(gw.kv_string(key, value) if vtype == GGUFValueType.STRING
                       else gw.kv_u32(key, value))
    return entries


def _imatrix_for(job, imatrix):
    """quantize's lookup: by name; a size mismatch is an error except for token_embd."""
    if imatrix is None or job.new_type == job.tensor.type:
        return None
    values = imatrix.values.get(job.tensor.name)
    n_in = job.tensor.shape[-1]
    n_expert = job.tensor.shape[0] if len(job.tensor.shape) == 3 else 1
    if values is not None and values.size != n_in * n_expert:
        if job.tensor.name in ("token_embd.weight", "per_layer_token_embd.weight"):
            return None
        raise ModelError(f"imatrix size {values.size} is different from tensor size "
                         f"{n_in * n_expert} for {job.tensor.name}")
    if values is None and job.requires_imatrix:
        raise ModelError(f"missing importance matrix for tensor {job.tensor.name} in a "
                         "very low-bit quantization")
    return None if values is None else values.reshape(n_expert, n_in)


def write_tensor(out, job, imatrix_rows):
    """Stream one tensor's rows into out, converted slab by slab; returns bytes written."""
    t = job.tensor
    data = t.data  # uint8 [rows, row_bytes], zero-copy
    if job.new_type == t.type:
        out.write(data)  # straight from the mapping, no copy
        return t.nbytes
    n_in = t.shape[-1]
    rows_per_expert = t.shape[-2] if len(t.shape) > 1 else 1
    slab_rows = max(1, min(rows_per_expert, _SLAB_VALUES // n_in))
    written = 0
    for r0 in range(0, data.shape[0], slab_rows):
        # slabs never cross an expert: each expert has its own imatrix row
        expert = r0 // rows_per_expert
        r1 = min(r0 + slab_rows, (expert + 1) * rows_per_expert, data.shape[0])
        rows = data[r0:r1]
        x = rows.view(np.float32) if t.type == T.F32 else qf.dequantize(rows, t.type)
        weights = None if imatrix_rows is None else imatrix_rows[expert]
        quantized = qf.quantize(x, job.new_type, weights)
        out.write(quantized.data)
        written += quantized.nbytes
    return written


def quantize_model(inp, out, file_type: str, opts: Options, imatrix_path=None,
                   allow_requantize=False, n_threads=None, quiet=False):
    """Write `out` from `inp` in llama-quantize's file type `file_type` (e.g. 'Q4_K_M')."""
    from . import threads
    from .reader import GGUFFile
    log = (lambda *a, **k: None) if quiet else (lambda *a, **k: print(*a, **k, file=sys.stderr))
    threads.apply(threads.configure(n_threads))
    imatrix = None
    if imatrix_path is not None:
        from .imatrix import load_imatrix
        imatrix = load_imatrix(imatrix_path)
        opts.has_imatrix = True
    with GGUFFile(inp) as gguf_file:
        jobs, chooser = plan(gguf_file, opts, allow_requantize)
        log(f"gguf-quantize: quantizing '{inp}' to '{out}' as {file_type}")
        for name, wanted, used in chooser.fallbacks:
            log(f"warning: {name:<36} - ncols not divisible by the {type_name(wanted)} block "
                f"-> falling back to {type_name(used)}")
        entries = metadata_entries(gguf_file, FILE_TYPES[file_type][0],
                                   None if imatrix is None else imatrix.quantize_metadata())
        layout = [(j.tensor.name, j.tensor.shape, j.new_type) for j in jobs]
        total_in = sum(j.tensor.nbytes for j in jobs)
        total_out = sum(gw.tensor_nbytes(j.tensor.shape, j.new_type) for j in jobs)
        start, done = time.monotonic(), 0
        with atomic_output(out) as f:
            f.write(gw.header(entries, layout))
            for i, job in enumerate(jobs, 1):
                t = job.tensor
                written = write_tensor(f, job, _imatrix_for(job, imatrix))
                expected = gw.tensor_nbytes(t.shape, job.new_type)
                if written != expected:  # a kernel that wrote the wrong size: never rename
                    raise RuntimeError(f"{t.name}: wrote {written} bytes, expected {expected}")
                f.write(bytes(gw.padded(written) - written))
                gguf_file.release_pages()
                done += t.nbytes
                log(_progress_line(i, len(jobs), job, written, done, total_in, start))
    log(f"model size = {total_in / 2**20:.2f} MiB, quant size = {total_out / 2**20:.2f} MiB")
    if chooser.fallbacks:
        log(f"warning: {len(chooser.fallbacks)} of {len(jobs)} tensor(s) required fallback "
            "quantization")
    return jobs


def _progress_line(i, n, job, written, done, total, start):
    t = job.tensor
    elapsed = time.monotonic() - start
    eta = elapsed / done * (total - done) if done else 0.0
    dims = ", ".join(f"{d:5d}" for d in (list(reversed(t.shape)) + [1, 1, 1])[:4])
    action = "" if job.new_type == t.type else f"converting to {type_name(job.new_type)} .. "
    return (f"[{i:4d}/{n:4d}] {t.name:>36} - [{dims}], type = {type_name(t.type):>6}, "
            f"{action}size = {t.nbytes / 2**20:8.3f} MiB -> {written / 2**20:8.3f} MiB "
            f"| {done / 2**20:.0f}/{total / 2**20:.0f} MiB, ETA {eta:.0f} s")
