"""Importance matrix files as llama-imatrix writes them and llama-quantize reads them.

Two formats (tools/imatrix/imatrix.cpp, common/imatrix-loader.cpp):
- GGUF (the default): per weight `<name>.in_sum2` (f32 [n_mat, n_in], the sums of
  x^2 per input column) and `<name>.counts` (f32 [n_mat], rows summed), plus the
  keys imatrix.datasets, imatrix.chunk_count and imatrix.chunk_size;
- legacy .dat: int32 entry count; per entry name, ncall and (sum / count) * ncall;
  then optionally the chunk count and the dataset name.
Every size is checked against the bytes present; a malformed file raises GGUFError
with one line, never a crash or an allocation beyond the file's size.
"""
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType

from .atomic import atomic_output
from .errors import GGUFError
from .reader import GGUFFile
from .strings import StringArray

KV_DATASETS = "imatrix.datasets"
KV_CHUNK_COUNT = "imatrix.chunk_count"
KV_CHUNK_SIZE = "imatrix.chunk_size"
_U32_MAX = (1 << 32) - 1
_INT64_LIMIT = float(1 << 63)
_ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT
_QUANTIZE_KV_MAX = 127  # quantize.cpp copies strings into char[128] (strncpy 127)


@dataclass
class ImatrixStats:
    """What llama-imatrix accumulates: per weight name, sums of x^2 per column
    (f32 [n_mat, n_in]) and rows counted (int64 [n_mat])."""
    sums: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    datasets: list = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    legacy: bool = False  # sums are (sum / count) * ncall, counts are ncall


@dataclass
class Imatrix:
    """The importance per input column llama-quantize passes to ggml_quantize_chunk."""
    values: dict    # tensor name -> f32 [n_mat * n_in]
    file: str       # the path as given (quantize.imatrix.file)
    datasets: list  # text files it was computed on (first: quantize.imatrix.dataset)
    chunks: int     # chunk count as the file states it (quantize.imatrix.chunks_count if > 0)

    def quantize_metadata(self) -> dict:
        """The quantize.imatrix.* keys llama-quantize adds, with its value types
        (quantize.cpp main: strings cut at 127 bytes, chunks only when positive)."""
        meta = {"quantize.imatrix.file": (_cut(self.file), GGUFValueType.STRING)}
        if self.datasets:
            meta["quantize.imatrix.dataset"] = (_cut(self.datasets[0]), GGUFValueType.STRING)
        # integer overrides are stored as uint32 of their absolute value (llama-quant.cpp)
        meta["quantize.imatrix.entries_count"] = (len(self.values), GGUFValueType.UINT32)
        if self.chunks > 0:
            meta["quantize.imatrix.chunks_count"] = (self.chunks, GGUFValueType.UINT32)
        return meta


def _cut(text: str) -> str:
    return text.encode("utf-8")[:_QUANTIZE_KV_MAX].decode("utf-8", errors="ignore")


# --- reading ---------------------------------------------------------------------

def load_imatrix(path) -> Imatrix:
    """Read either format and turn it into llama-quantize's per-column values
    (tools/quantize/quantize.cpp load_imatrix)."""
    stats = read_imatrix(path)
    values = {}
    for name in sorted(stats.sums):
        sums, counts = stats.sums[name], stats.counts[name]
        values[name] = _legacy_values(sums, counts) if stats.legacy else _gguf_values(sums, counts)
    return Imatrix(values=values, file=str(path), datasets=list(stats.datasets),
                   chunks=stats.chunk_count)


def _gguf_values(sums, counts):
    """sums / (float) count per matrix; a matrix that saw no rows gets 1."""
    count = counts.astype(np.float32)[:, None]  # (float) int64, round to nearest
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where(count > 0, sums / np.where(count > 0, count, 1), np.float32(1))
    return values.astype(np.float32).reshape(-1)


def _legacy_values(sums, counts):
    """sums / ncall when ncall > 0, else the sums as stored."""
    ncall = int(counts[0])
    if ncall > 0:
        return (sums / np.float32(ncall)).astype(np.float32).reshape(-1)
    return sums.astype(np.float32).reshape(-1)


def read_imatrix(path) -> ImatrixStats:
    """Sums and counts of either format (common/imatrix-loader.cpp common_imatrix_load:
    GGUF when the file is one, else the legacy layout)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"GGUF":
        return _read_gguf(path)
    return _read_legacy(path)


def _read_gguf(path) -> ImatrixStats:
    try:
        gguf_file = GGUFFile(path)
    except GGUFError as e:  # name the file: gguf-quantize reads a model as well
        raise GGUFError(f"{path}: {e}") from None
    with gguf_file:
        if not gguf_file.tensors:
            raise GGUFError(f"{path}: imatrix file has no tensors")
        meta = gguf_file.metadata
        missing = [k for k in (KV_DATASETS, KV_CHUNK_COUNT, KV_CHUNK_SIZE) if k not in meta]
        if missing:  # quantize.cpp: "missing imatrix metadata"
            raise GGUFError(f"{path}: imatrix metadata '{missing[0]}' is missing")
        stats = ImatrixStats(chunk_count=_u32(meta, KV_CHUNK_COUNT, as_int32=True),
                             chunk_size=_u32(meta, KV_CHUNK_SIZE))
        datasets = meta[KV_DATASETS]
        if isinstance(datasets, (list, StringArray)):  # other types are ignored, as llama.cpp does
            stats.datasets = list(datasets)
        pairs = {}
        for t in gguf_file.tensors:
            for slot, suffix in ((0, ".in_sum2"), (1, ".counts")):
                if t.name.endswith(suffix) and len(t.name) > len(suffix):
                    pairs.setdefault(t.name[:-len(suffix)], [None, None])[slot] = t
        for name in sorted(pairs):
            stats.sums[name], stats.counts[name] = _gguf_entry(path, name, *pairs[name])
    return stats


def _u32(meta, key, as_int32=False):
    value = meta[key]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _U32_MAX:
        raise GGUFError(f"imatrix metadata '{key}': {value!r} is not a uint32")
    if as_int32 and value >= 1 << 31:  # stored into an int32 by the loader
        value -= 1 << 32
    return value


def _gguf_entry(path, name, sums_t, counts_t):
    if sums_t is None or counts_t is None:
        raise GGUFError(f"{path}: mismatched sums and counts for '{name}'")
    for t in (sums_t, counts_t):
        if t.type != GGMLQuantizationType.F32:
            raise GGUFError(f"{path}: tensor '{t.name}' is {t.type.name}, imatrix data must be F32")
    sums = np.frombuffer(sums_t.data, "<f4").astype(np.float32)
    raw_counts = np.frombuffer(counts_t.data, "<f4").astype(np.float64)
    if sums.size % raw_counts.size:
        raise GGUFError(f"{path}: '{name}' has {sums.size} sums, not a multiple of its "
                        f"{raw_counts.size} counts")
    if not np.all(np.isfinite(raw_counts)) or np.any(np.abs(raw_counts) >= _INT64_LIMIT):
        raise GGUFError(f"{path}: '{name}' has counts that are not finite integers")
    # std::lround: nearest integer, halves away from zero
    counts = (np.sign(raw_counts) * np.floor(np.abs(raw_counts) + 0.5)).astype(np.int64)
    return sums.reshape(raw_counts.size, -1), counts


class _LegacyCursor:
    """Little-endian fields of a legacy .dat file, every length checked."""

    def __init__(self, buf, path):
        self.buf, self.path, self.pos = buf, path, 0

    def left(self):
        return len(self.buf) - self.pos

    def int32(self, what):
        if self.left() < 4:
            raise GGUFError(f"{self.path}: {what} at byte {self.pos}: file ends")
        value = struct.unpack_from("<i", self.buf, self.pos)[0]
        self.pos += 4
        return value

    def take(self, n, what):
        if n < 0 or n > self.left():
            raise GGUFError(f"{self.path}: {what} at byte {self.pos}: needs {n} bytes, "
                            f"{self.left()} left")
        data = self.buf[self.pos:self.pos + n]
        self.pos += n
        return data


def _read_legacy(path) -> ImatrixStats:
    """common/imatrix-loader.cpp common_imatrix_load_legacy."""
    with open(path, "rb") as f:
        if f.seek(0, 2) == 0:
            raise GGUFError(f"{path}: imatrix file is empty")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapping:
            return _parse_legacy(_LegacyCursor(mapping, path))


def _parse_legacy(cur) -> ImatrixStats:
    path = cur.path
    n_entries = cur.int32("entry count")
    if n_entries < 1 or n_entries > cur.left() // 16:  # an entry takes >= 16 bytes
        raise GGUFError(f"{path}: not an imatrix file (GGUF or legacy .dat): entry "
                        f"count {n_entries} does not fit its {len(cur.buf)} bytes")
    stats = ImatrixStats(legacy=True)
    for i in range(n_entries):
        name = _c_string(cur.take(cur.int32(f"entry {i} name length"), f"entry {i} name"),
                         path, f"entry {i} name")
        ncall = cur.int32(f"entry '{name}' ncall")
        nval = cur.int32(f"entry '{name}' value count")
        if nval < 1:
            raise GGUFError(f"{path}: entry '{name}' has {nval} values")
        data = cur.take(4 * nval, f"entry '{name}' values")
        stats.sums[name] = np.frombuffer(data, "<f4").astype(np.float32).reshape(1, -1)
        stats.counts[name] = np.array([ncall], np.int64)  # a repeated name replaces
    _legacy_trailer(cur, stats, path)
    stats.sums = dict(sorted(stats.sums.items()))
    return stats


def _legacy_trailer(cur, stats, path):
    """Optional: the chunk count, then the dataset name (if its bytes are all there)."""
    if cur.left() >= 4:
        stats.chunk_count = cur.int32("chunk count")
        if cur.left() >= 4:
            length = cur.int32("dataset name length")
            if 0 < length <= cur.left():
                stats.datasets.append(_c_string(cur.take(length, "dataset name"), path,
                                                "dataset name"))


def _c_string(data, path, what):
    raw = bytes(data).split(b"\0", 1)[0]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise GGUFError(f"{path}: {what} is not valid UTF-8") from None


# --- writing ---------------------------------------------------------------------

def write_gguf(stats: ImatrixStats, path):
    """The file llama-imatrix writes (IMatrixCollector::save_imatrix), byte for byte:
    general.type, datasets, chunk count and size, then per name in sorted order its
    in_sum2 [n_mat, n_in] and counts [n_mat] as f32."""
    kv = [_string("general.type") + struct.pack("<I", GGUFValueType.STRING)
          + _string("imatrix"),
          _string(KV_DATASETS) + struct.pack("<IIQ", GGUFValueType.ARRAY,
                                             GGUFValueType.STRING, len(stats.datasets))
          + b"".join(_string(d) for d in stats.datasets),
          _string(KV_CHUNK_COUNT) + struct.pack("<II", GGUFValueType.UINT32,
                                                stats.chunk_count & _U32_MAX),
          _string(KV_CHUNK_SIZE) + struct.pack("<II", GGUFValueType.UINT32, stats.chunk_size)]
    blobs, infos, offset = [], [], 0
    for name in sorted(stats.sums):
        counts = np.asarray(stats.counts[name], np.float64).astype("<f4")
        sums = np.ascontiguousarray(stats.sums[name], "<f4").reshape(counts.size, -1)
        for suffix, data in ((".in_sum2", sums), (".counts", counts.reshape(-1, 1))):
            # ggml order [n_in, n_mat]; ggml_n_dims drops a trailing dim of 1
            dims = (data.shape[1],) if data.shape[0] == 1 else (data.shape[1], data.shape[0])
            infos.append(_string(name + suffix)
                         + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims,
                                       GGMLQuantizationType.F32, offset))
            blobs.append(data.tobytes())
            offset += _padded(len(blobs[-1]))
    head = b"GGUF" + struct.pack("<IQQ", 3, len(blobs), len(kv)) + b"".join(kv + infos)
    with atomic_output(path) as out:
        out.write(head + bytes(_padded(len(head)) - len(head)))
        for blob in blobs:
            out.write(blob + bytes(_padded(len(blob)) - len(blob)))


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def _padded(n: int) -> int:
    return -(-n // _ALIGNMENT) * _ALIGNMENT


def write_dat(stats: ImatrixStats, path):
    """The legacy file (IMatrixCollector::save_imatrix_legacy): per name in sorted
    order ncall = ceil(max count / chunk size) and (sum / count) * ncall; matrices
    with no rows store 1 * ncall; names with no rows at all are left out."""
    if stats.chunk_size <= 0:
        raise ValueError("write_dat: chunk_size must be positive")
    entries = []
    for name in sorted(stats.sums):
        counts = np.asarray(stats.counts[name], np.int64)
        sums = np.ascontiguousarray(stats.sums[name], np.float32).reshape(counts.size, -1)
        if not counts.any():
            continue
        ncall = np.int32((int(counts.max()) + stats.chunk_size - 1) // stats.chunk_size)
        count = counts.astype(np.float32)[:, None]
        value = np.where(count == 0, np.float32(1), sums)
        count = np.where(count == 0, np.float32(1), count)
        scaled = (value / count * np.float32(ncall)).astype("<f4")
        encoded = name.encode("utf-8")
        entries.append(struct.pack("<i", len(encoded)) + encoded
                       + struct.pack("<ii", ncall, scaled.size) + scaled.tobytes())
    dataset = stats.datasets[-1].encode("utf-8") if stats.datasets else b""
    with atomic_output(path) as out:
        out.write(struct.pack("<i", len(entries)))
        for entry in entries:
            out.write(entry)
        out.write(struct.pack("<ii", stats.chunk_count, len(dataset)) + dataset)
