"""GGUF reader: memory-maps the file, validates the header, hands out zero-copy views.

Every field is checked before it is trusted, as llama.cpp's ggml/src/gguf.cpp
(gguf_init_from_file_impl) does: counts and lengths are bounded by the bytes that
remain, so a hostile file can neither make us allocate nor loop beyond its size.
Each violation raises GGUFError naming the field and its byte offset.
"""
import mmap
import os
import re
import struct
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from .errors import GGUFError
from .strings import InvalidString, StringArray

GGUF_MAGIC = b"GGUF"
GGML_MAX_DIMS = 4           # ggml.h
DEFAULT_ALIGNMENT = 32      # gguf.h GGUF_DEFAULT_ALIGNMENT
_INT64_MAX = (1 << 63) - 1

# value type -> (struct format, numpy dtype) for fixed-size scalars
_SCALARS = {
    GGUFValueType.UINT8: ("<B", "<u1"), GGUFValueType.INT8: ("<b", "<i1"),
    GGUFValueType.UINT16: ("<H", "<u2"), GGUFValueType.INT16: ("<h", "<i2"),
    GGUFValueType.UINT32: ("<I", "<u4"), GGUFValueType.INT32: ("<i", "<i4"),
    GGUFValueType.FLOAT32: ("<f", "<f4"), GGUFValueType.BOOL: ("<?", "<u1"),
    GGUFValueType.UINT64: ("<Q", "<u8"), GGUFValueType.INT64: ("<q", "<i8"),
    GGUFValueType.FLOAT64: ("<d", "<f8"),
}
_SPLIT_NAME = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def _can_drop_pages(mapping) -> bool:
    """madvise(MADV_DONTNEED) exists here (not on Windows)."""
    return hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED")


class GGUFTensor:
    """One tensor: name, GGML type, numpy-order shape, and its bytes as a view."""

    __slots__ = ("name", "type", "shape", "offset", "nbytes", "_mapping")

    def __init__(self, name, qtype, shape, offset, nbytes, mapping):
        self.name, self.type, self.shape = name, qtype, shape
        self.offset, self.nbytes, self._mapping = offset, nbytes, mapping

    @property
    def data(self) -> np.ndarray:
        """uint8 [rows, bytes per row], zero-copy and read-only."""
        if self._mapping.closed:
            raise GGUFError(f"tensor '{self.name}': file is closed")
        rows = int(np.prod(self.shape[:-1], dtype=np.int64)) if len(self.shape) > 1 else 1
        flat = np.frombuffer(self._mapping, np.uint8, self.nbytes, self.offset)
        return flat.reshape(rows, self.nbytes // rows)

    def release_pages(self, start: int, stop: int):
        """Drop the mapped pages holding bytes [start, stop) of this tensor from RSS
        (re-read from disk if used again; a page shared with a neighbour is dropped
        too, and re-read the same way); a no-op where mmap has no madvise."""
        if not _can_drop_pages(self._mapping):
            return
        first = (self.offset + max(0, start)) // mmap.PAGESIZE * mmap.PAGESIZE
        end = self.offset + min(stop, self.nbytes)
        if end > first:
            self._mapping.madvise(mmap.MADV_DONTNEED, first, end - first)

    def __repr__(self):
        return f"GGUFTensor({self.name!r}, {self.type.name}, {self.shape})"


class _Cursor:
    """Reads little-endian fields from the mapping, checking every length."""

    def __init__(self, buf, size):
        self.buf, self.size, self.pos = buf, size, 0

    def need(self, n, what):
        if n < 0 or n > self.size - self.pos:
            raise GGUFError(f"{what} at byte {self.pos}: needs {n} bytes, "
                            f"{self.size - self.pos} left")

    def scalar(self, fmt, what):
        n = struct.calcsize(fmt)
        self.need(n, what)
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return value

    def string(self, what):
        at = self.pos
        length = self.scalar("<Q", f"{what} length")
        self.need(length, what)
        raw = bytes(self.buf[self.pos:self.pos + length])
        self.pos += length
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFError(f"{what} at byte {at}: invalid UTF-8") from None


def _read_value(cur, vtype, what):
    if vtype in _SCALARS:
        value = cur.scalar(_SCALARS[vtype][0], what)
        return bool(value) if vtype == GGUFValueType.BOOL else value
    if vtype == GGUFValueType.STRING:
        return cur.string(what)
    if vtype == GGUFValueType.ARRAY:
        return _read_array(cur, what)
    raise GGUFError(f"{what} at byte {cur.pos}: unknown value type {vtype}")


def _read_array(cur, what):
    at = cur.pos
    item_type = cur.scalar("<I", f"{what} item type")
    count = cur.scalar("<Q", f"{what} count")
    if item_type == GGUFValueType.ARRAY:
        raise GGUFError(f"{what} at byte {at}: nested arrays are not allowed")
    if item_type in _SCALARS:
        dtype = np.dtype(_SCALARS[item_type][1])
        cur.need(count * dtype.itemsize, f"{what} ({count} items)")
        values = np.frombuffer(cur.buf, dtype, count, cur.pos).copy()
        cur.pos += count * dtype.itemsize
        return values.astype(bool) if item_type == GGUFValueType.BOOL else values
    if item_type == GGUFValueType.STRING:
        cur.need(count * 8, f"{what} ({count} strings)")  # each string has an 8-byte length
        return _read_strings(cur, count, what)
    raise GGUFError(f"{what} at byte {at}: unknown array item type {item_type}")


_U64 = struct.Struct("<Q")


def _read_strings(cur, count, what):
    """count strings, each a u64 length and UTF-8 bytes: cur.string's checks, inlined
    (a vocabulary holds ~10^5 of them; per-call overhead was most of the load time),
    kept as one StringArray (strings.py: decoded when read, ~4x less memory)."""
    buf, pos, size, unpack = cur.buf, cur.pos, cur.size, _U64.unpack_from
    first, pieces = pos, []
    for i in range(count):
        if size - pos < 8:
            cur.pos = pos
            cur.need(8, f"{what}[{i}] length")
        (length,) = unpack(buf, pos)
        if length > size - pos - 8:
            cur.pos = pos + 8
            cur.need(length, f"{what}[{i}]")
        pieces.append(buf[pos + 8:pos + 8 + length])
        pos += 8 + length
    cur.pos = pos
    try:
        return StringArray.from_pieces(pieces)
    except InvalidString as e:
        at = first + 8 * e.index + sum(len(p) for p in pieces[:e.index])
        raise GGUFError(f"{what}[{e.index}] at byte {at}: invalid UTF-8") from None


def _parse_header(cur):
    magic = bytes(cur.buf[:4]) if cur.size >= 4 else b""
    if magic != GGUF_MAGIC:
        raise GGUFError(f"not a GGUF file (magic {magic!r} at byte 0)")
    cur.pos = 4
    version = cur.scalar("<I", "version")
    if version not in (2, 3):
        raise GGUFError(f"version at byte 4: unsupported GGUF version {version}")
    n_tensors = cur.scalar("<Q", "tensor count")
    n_kv = cur.scalar("<Q", "metadata count")
    # gguf.cpp: counts are bounded by what the remaining bytes could hold
    cur.need(min(n_kv, _INT64_MAX) * 13, f"metadata count {n_kv}")
    metadata, spans = {}, {}
    for i in range(n_kv):
        at = cur.pos
        key = cur.string(f"metadata key #{i}")
        if key in metadata:
            raise GGUFError(f"metadata key '{key}' at byte {at}: duplicate key")
        vtype = cur.scalar("<I", f"metadata '{key}' type")
        metadata[key] = _read_value(cur, vtype, f"metadata '{key}'")
        spans[key] = (at, cur.pos)
    cur.need(min(n_tensors, _INT64_MAX) * 24, f"tensor count {n_tensors}")
    infos = [_read_tensor_info(cur, i) for i in range(n_tensors)]
    return version, metadata, spans, infos


def _read_tensor_info(cur, index):
    at = cur.pos
    name = cur.string(f"tensor #{index} name")
    n_dims = cur.scalar("<I", f"tensor '{name}' n_dims")
    if not 1 <= n_dims <= GGML_MAX_DIMS:
        raise GGUFError(f"tensor '{name}' at byte {at}: n_dims {n_dims} not in 1..4")
    dims = [cur.scalar("<Q", f"tensor '{name}' dim {d}") for d in range(n_dims)]
    type_id = cur.scalar("<I", f"tensor '{name}' type")
    offset = cur.scalar("<Q", f"tensor '{name}' offset")
    try:
        qtype = GGMLQuantizationType(type_id)
    except ValueError:
        raise GGUFError(f"tensor '{name}' at byte {at}: unknown type id {type_id}") from None
    n_elements = 1
    for d in dims:
        if d == 0 or d > _INT64_MAX or n_elements > _INT64_MAX // d:
            raise GGUFError(f"tensor '{name}' at byte {at}: bad dims {dims}")
        n_elements *= d
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    if dims[0] % block_size:
        raise GGUFError(f"tensor '{name}' at byte {at}: row length {dims[0]} is not a "
                        f"multiple of the {qtype.name} block size {block_size}")
    nbytes = n_elements // block_size * type_size
    return name, qtype, tuple(int(d) for d in reversed(dims)), offset, nbytes, at


def _alignment(metadata):
    value = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0 \
            or value & (value - 1):
        raise GGUFError(f"metadata 'general.alignment': {value!r} is not a power of two")
    return value


def _open_mapping(path):
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise GGUFError(f"{path}: file is empty")
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except IsADirectoryError:
        raise GGUFError(f"{path}: is a directory, not a GGUF file") from None


class _Part:
    """One mapped file: its header and tensors."""

    def __init__(self, path):
        self.path = Path(path)
        self.mapping = _open_mapping(self.path)
        try:
            self._load()
        except BaseException:
            self.mapping.close()
            raise

    def _load(self):
        size = len(self.mapping)
        cur = _Cursor(self.mapping, size)
        self.version, self.metadata, self.kv_spans, infos = _parse_header(cur)
        self.alignment = _alignment(self.metadata)
        data_start = -(-cur.pos // self.alignment) * self.alignment
        self.tensors = []
        for name, qtype, shape, offset, nbytes, at in infos:
            if offset % self.alignment:
                raise GGUFError(f"tensor '{name}' at byte {at}: data offset {offset} is "
                                f"not aligned to {self.alignment}")
            if offset > size or nbytes > size - data_start - offset:
                raise GGUFError(f"tensor '{name}' at byte {at}: data [{offset}, "
                                f"{offset + nbytes}) lies outside the file")
            self.tensors.append(GGUFTensor(name, qtype, shape, data_start + offset, nbytes,
                                           self.mapping))
        _check_overlaps(self.tensors)


def _check_overlaps(tensors):
    ordered = sorted(tensors, key=lambda t: t.offset)
    for a, b in zip(ordered, ordered[1:]):
        if a.offset + a.nbytes > b.offset:
            raise GGUFError(f"tensors '{a.name}' and '{b.name}' overlap "
                            f"(byte {b.offset} < {a.offset + a.nbytes})")


class GGUFFile:
    """A GGUF model: metadata, tensors in file order, and their zero-copy data.

    A split model (name-00001-of-0000N.gguf) opens as one: metadata from the first
    part, tensors from all parts."""

    def __init__(self, path):
        self.path = Path(path)
        first = _Part(self.path)
        self._parts = [first]
        try:
            self._open_other_splits(first)
            self.version, self.metadata = first.version, first.metadata
            self.alignment = first.alignment
            self.tensors = [t for part in self._parts for t in part.tensors]
            self._by_name = {}
            for t in self.tensors:
                if t.name in self._by_name:
                    raise GGUFError(f"tensor '{t.name}': duplicate tensor name")
                self._by_name[t.name] = t
        except BaseException:
            self.close()
            raise

    def _open_other_splits(self, first):
        count = first.metadata.get("split.count", 1)
        if not isinstance(count, int) or count <= 1:
            return
        match = _SPLIT_NAME.match(self.path.name)
        if not match or int(match["no"]) != 1 or int(match["count"]) != count:
            raise GGUFError(f"metadata 'split.count' is {count}: open the first part, "
                            "named <name>-00001-of-<count>.gguf")
        for no in range(2, count + 1):
            part_path = self.path.with_name(f"{match['prefix']}-{no:05d}-of-{count:05d}.gguf")
            if not part_path.exists():
                raise GGUFError(f"split part {part_path.name} is missing")
            self._parts.append(_Part(part_path))

    def metadata_bytes(self, key) -> bytes:
        """One metadata entry as stored (key, type and value), for copying it verbatim."""
        start, end = self._parts[0].kv_spans[key]
        return bytes(self._parts[0].mapping[start:end])

    def tensor(self, name) -> GGUFTensor:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no tensor named '{name}'") from None

    @property
    def architecture(self):
        return self.metadata.get("general.architecture")

    def release_pages(self):
        """Drop the mapped pages from RSS (the kernel re-reads them from disk if used
        again); a no-op where mmap has no madvise (Windows)."""
        for part in self._parts:
            if _can_drop_pages(part.mapping):
                part.mapping.madvise(mmap.MADV_DONTNEED)

    def close(self):
        """Release the mappings (views handed out earlier keep theirs alive)."""
        for part in self._parts:
            try:
                part.mapping.close()
            except BufferError:
                pass  # a view still exists; the mapping closes when it is collected

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
