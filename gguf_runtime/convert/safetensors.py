"""Safetensors checkpoints read through a memory map, one tensor at a time.

Format (huggingface/safetensors docs): an 8-byte little-endian header length N,
N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__":
{...}}, then the data block; offsets are relative to the data block. Every entry
is checked before any tensor is touched: known dtype, non-negative shape, an
offset range inside the file whose size matches dtype x shape.

Tensor order follows llama.cpp's converter (gguf-py utility.SafetensorsLocal and
ModelBase.index_tensors): parts in sorted file-name order, names sorted within a
part, a later part's tensor replacing an earlier one of the same name.
"""
import json
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError

# safetensors dtype -> (numpy dtype of the stored bits, bytes per element)
DTYPES = {
    "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "F64": np.dtype("<f8"), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
MAX_HEADER = 100 << 20  # the safetensors library's own limit


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str          # safetensors name: F32, F16, BF16, ...
    shape: tuple
    path: Path
    offset: int         # absolute byte offset in the file
    nbytes: int


def read_header(path: Path) -> list:
    """The tensor entries of one .safetensors file (validated), sorted by name."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelError(f"{path.name}: not a safetensors file (shorter than 8 bytes)")
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER or 8 + n > size:
            raise ModelError(f"{path.name}: bad safetensors header length {n} "
                             f"(file has {size} bytes)")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelError(f"{path.name}: safetensors header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise ModelError(f"{path.name}: safetensors header is not a JSON object")
    data_start, data_size = 8 + n, size - 8 - n
    entries = [_entry(path, name, meta, data_start, data_size)
               for name, meta in header.items() if name != "__metadata__"]
    return sorted(entries, key=lambda e: e.name)


def _entry(path, name, meta, data_start, data_size) -> TensorEntry:
    where = f"{path.name}: tensor {name!r}"
    if not isinstance(meta, dict):
        raise ModelError(f"{where}: entry is not an object")
    dtype, shape, offsets = meta.get("dtype"), meta.get("shape"), meta.get("data_offsets")
    if dtype not in DTYPES:
        raise ModelError(f"{where}: unknown dtype {dtype!r}")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise ModelError(f"{where}: bad shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data_size):
        raise ModelError(f"{where}: data offsets {offsets!r} outside the data block "
                         f"({data_size} bytes)")
    nbytes = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype].itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise ModelError(f"{where}: {offsets[1] - offsets[0]} data bytes for {dtype} "
                         f"shape {shape} ({nbytes} expected)")
    return TensorEntry(name, dtype, tuple(shape), path, data_start + offsets[0], nbytes)


def part_files(model_dir: Path) -> list:
    """The checkpoint's .safetensors files, as llama.cpp's converter picks them."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            parts = sorted(dict.fromkeys(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ModelError(f"{index.name}: no valid 'weight_map'") from None
        for part in parts:
            if not isinstance(part, str) or "/" in part or part.startswith("."):
                raise ModelError(f"{index.name}: bad part file name {part!r}")
            if not (model_dir / part).is_file():
                raise ModelError(f"{index.name}: part file {part} is missing")
        return [model_dir / p for p in parts]
    parts = sorted(p for p in os.listdir(model_dir)
                   if p.startswith("model") and p.endswith(".safetensors"))
    if not parts:
        raise ModelError(f"{model_dir}: no model*.safetensors files")
    return [model_dir / p for p in parts]


def index_tensors(model_dir: Path) -> dict:
    """name -> TensorEntry over all parts, in llama.cpp's converter order."""
    tensors = {}
    for part in part_files(model_dir):
        for entry in read_header(part):
            tensors[entry.name] = entry
    return tensors


class TensorReader:
    """Memory maps of the part files; load() returns one tensor as float32/float16.

    BF16 becomes float32 (exactly: the bits shifted up), other non-f16/f32 types
    become float32, as convert_hf_to_gguf.py's prepare_tensors does."""

    def __init__(self):
        self._maps = {}

    def _map(self, path):
        if path not in self._maps:
            with open(path, "rb") as f:
                self._maps[path] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._maps[path]

    def raw(self, entry: TensorEntry, row0=0, row1=None) -> np.ndarray:
        """The stored bits of rows [row0, row1), zero-copy (read-only view of the map)."""
        dtype = DTYPES[entry.dtype]
        if not entry.shape:
            return np.frombuffer(self._map(entry.path), dtype, 1, entry.offset).reshape(())
        row1 = entry.shape[0] if row1 is None else row1
        row_elems = int(np.prod(entry.shape[1:], dtype=np.int64))
        data = np.frombuffer(self._map(entry.path), dtype=dtype, count=(row1 - row0) * row_elems,
                             offset=entry.offset + row0 * row_elems * dtype.itemsize)
        return data.reshape((row1 - row0, *entry.shape[1:]))

    def release(self, entry: TensorEntry, row0=0, row1=None):
        """Drop rows' pages from this process (they stay in the page cache), so a
        large tensor does not stay resident once converted."""
        if not hasattr(mmap, "MADV_DONTNEED") or not entry.shape:
            return
        row1 = entry.shape[0] if row1 is None else row1
        row_bytes = entry.nbytes // max(entry.shape[0], 1)
        page = mmap.PAGESIZE
        start = (entry.offset + row0 * row_bytes) // page * page
        length = entry.offset + row1 * row_bytes - start
        if length > 0:
            self._map(entry.path).madvise(mmap.MADV_DONTNEED, start, length)

    def load(self, entry: TensorEntry, row0=0, row1=None) -> np.ndarray:
        data = self.raw(entry, row0, row1)
        if entry.dtype == "BF16":
            return (data.astype(np.uint32) << 16).view(np.float32)
        if entry.dtype in ("F32", "F16"):
            return data
        return data.astype(np.float32)

    def close(self):
        maps, self._maps = self._maps, {}
        for m in maps.values():
            try:
                m.close()
            except BufferError:  # a view still alive: the map closes when it dies
                pass
