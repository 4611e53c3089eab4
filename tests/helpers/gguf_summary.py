"""A small, JSON-able fingerprint of a GGUF file for comparing converters.

Every metadata key in file order with its GGUF value types and value (long
arrays: length and sha256 of their canonical JSON), every tensor in file order
with its type, ggml shape, data offset and sha256 of its bytes. Read with
gguf-py's GGUFReader, independent of gguf_runtime's reader.
"""
import hashlib
import json

import numpy as np
from gguf import GGUFReader, GGUFValueType

LONG = 64  # arrays longer than this are stored as (length, sha256)


def _value(field):
    vtype = field.types[0]
    value = field.contents()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if vtype == GGUFValueType.FLOAT32:  # exact bits, not a rounded decimal
        value = float(np.float32(value))
    if isinstance(value, list) and len(value) > LONG:
        blob = json.dumps(value, ensure_ascii=False).encode()
        return {"len": len(value), "sha256": hashlib.sha256(blob).hexdigest()}
    return value


def summarize(path) -> dict:
    reader = GGUFReader(str(path))
    kv = [[f.name, [t.name for t in f.types], _value(f)]
          for f in reader.fields.values() if not f.name.startswith("GGUF.")]
    tensors = [[t.name, t.tensor_type.name, [int(n) for n in t.shape], int(t.data_offset),
                hashlib.sha256(np.ascontiguousarray(t.data).view(np.uint8)).hexdigest()]
               for t in reader.tensors]
    return {"kv": kv, "tensors": tensors}


def diff(ours: dict, ref: dict, limit=10) -> list:
    """Human-readable differences (empty when identical)."""
    out = []
    ours_keys, ref_keys = [k[0] for k in ours["kv"]], [k[0] for k in ref["kv"]]
    if ours_keys != ref_keys:
        out.append(f"key order/set differs: ours-only {sorted(set(ours_keys) - set(ref_keys))}, "
                   f"ref-only {sorted(set(ref_keys) - set(ours_keys))}, "
                   f"ours {ours_keys}, ref {ref_keys}")
    ref_kv = {k[0]: k for k in ref["kv"]}
    for k in ours["kv"]:
        if k[0] in ref_kv and k != ref_kv[k[0]]:
            out.append(f"key {k[0]}: ours {str(k[1:])[:200]} ref {str(ref_kv[k[0]][1:])[:200]}")
    if len(ours["tensors"]) != len(ref["tensors"]):
        out.append(f"{len(ours['tensors'])} tensors, ref {len(ref['tensors'])}")
    for a, b in zip(ours["tensors"], ref["tensors"]):
        if a != b:
            out.append(f"tensor ours {a} ref {b}")
    return out[:limit]
