"""gguf-info: a GGUF file's metadata and tensor table, as text or JSON."""
import json

import numpy as np

from .strings import StringArray

_ARRAY_PREVIEW = 8  # items of a long array shown in the text view


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, StringArray):
        return list(value)
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value


def as_json(gguf_file) -> str:
    return json.dumps({
        "metadata": {k: _jsonable(v) for k, v in gguf_file.metadata.items()},
        "tensors": [{"name": t.name, "type": t.type.name, "shape": list(t.shape),
                     "offset": t.offset, "nbytes": t.nbytes} for t in gguf_file.tensors],
    }, ensure_ascii=False)


def _preview(value):
    if isinstance(value, (list, np.ndarray, StringArray)) and len(value) > _ARRAY_PREVIEW:
        head = ", ".join(repr(_jsonable(v)) for v in value[:_ARRAY_PREVIEW])
        return f"[{head}, ...] ({len(value)} items)"
    if isinstance(value, str) and len(value) > 120:
        return repr(value[:117] + "...") + f" ({len(value)} chars)"
    return repr(_jsonable(value) if not isinstance(value, list) else value)


def as_text(gguf_file) -> str:
    total = sum(t.nbytes for t in gguf_file.tensors)
    lines = [f"file: {gguf_file.path}", f"GGUF version {gguf_file.version}, "
             f"architecture {gguf_file.architecture}, {len(gguf_file.tensors)} tensors, "
             f"{total / 2**20:.1f} MiB of weights", "", "metadata:"]
    lines += [f"  {key} = {_preview(value)}" for key, value in gguf_file.metadata.items()]
    lines += ["", f"  {'name':<40} {'type':<8} {'shape':<20} {'bytes':>12}"]
    lines += [f"  {t.name:<40} {t.type.name:<8} {str(list(t.shape)):<20} {t.nbytes:>12}"
              for t in gguf_file.tensors]
    return "\n".join(lines)
