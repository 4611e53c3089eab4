"""A streaming GGUF writer: header first, then tensor data one tensor at a time.

Byte layout as ggml/src/gguf.cpp writes it (gguf_write_to_buf): magic, version 3,
tensor and metadata counts, metadata entries, tensor infos, zero padding to the
alignment, then each tensor's data padded to the alignment. Callers write it
through atomic.atomic_output.
"""
import struct

from gguf import GGML_QUANT_SIZES, GGUFValueType

ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT


def encode_string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def kv_u32(key: str, value: int) -> bytes:
    return encode_string(key) + struct.pack("<II", GGUFValueType.UINT32, value)


def kv_string(key: str, value: str) -> bytes:
    return encode_string(key) + struct.pack("<I", GGUFValueType.STRING) + encode_string(value)


def tensor_nbytes(shape, qtype) -> int:
    """shape in numpy order (rows last-dim-major), as GGUFTensor.shape."""
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    n = 1
    for d in shape:
        n *= d
    return n // block_size * type_size


def padded(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def header(kv_entries: list, tensors: list) -> bytes:
    """kv_entries: encoded metadata entries (bytes); tensors: (name, shape, qtype) in
    file order. Data offsets follow from the sizes, each padded to ALIGNMENT."""
    parts = [b"GGUF", struct.pack("<IQQ", 3, len(tensors), len(kv_entries)), *kv_entries]
    offset = 0
    for name, shape, qtype in tensors:
        dims = tuple(reversed(shape))  # ggml order: ne[0] is the row length
        parts.append(encode_string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims,
                                                 qtype, offset))
        offset += padded(tensor_nbytes(shape, qtype))
    blob = b"".join(parts)
    return blob + bytes(padded(len(blob)) - len(blob))
