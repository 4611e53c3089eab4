"""A SentencePiece tokenizer.model written as raw protobuf, for gguf-convert tests
(no protobuf package needed)."""
import struct

# sentencepiece_model.proto: ModelProto{1: repeated SentencePiece{1: piece, 2: score,
# 3: type}, 2: TrainerSpec{3: model_type, 4: vocab_size, 35: byte_fallback},
# 3: NormalizerSpec{1: name, 3: add_dummy_prefix, 4: remove_extra_whitespaces,
# 5: escape_whitespaces}}. Hand-encoded so the tests need no protobuf package.


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _message(number: int, body: bytes) -> bytes:
    return _field(number, 2, _varint(len(body)) + body)


def spm_model_bytes(pieces) -> bytes:
    """pieces: (text, score, type) with sentencepiece types (1 normal, 2 unknown,
    3 control, 4 user-defined, 5 unused, 6 byte); a byte-fallback BPE model."""
    out = bytearray()
    for text, score, kind in pieces:
        body = (_message(1, text.encode()) + _field(2, 5, struct.pack("<f", score))
                + _field(3, 0, _varint(kind)))
        out += _message(1, body)
    trainer = _field(3, 0, _varint(2)) + _field(4, 0, _varint(len(pieces))) + _field(35, 0, b"\x01")
    normalizer = (_message(1, b"identity") + _field(3, 0, b"\x00") + _field(4, 0, b"\x00")
                  + _field(5, 0, b"\x01"))
    return bytes(out + _message(2, trainer) + _message(3, normalizer))


def tiny_spm_pieces(n_normal=40):
    """Gemma-like: <pad> <eos> <bos> <unk> <mask>, chat markers, 256 byte pieces, words."""
    pieces = [("<pad>", 0.0, 3), ("<eos>", 0.0, 3), ("<bos>", 0.0, 3), ("<unk>", 0.0, 2),
              ("<mask>", 0.0, 4), ("<start_of_turn>", 0.0, 4), ("<end_of_turn>", 0.0, 4)]
    pieces += [(f"<0x{b:02X}>", 0.0, 6) for b in range(256)]
    words = ["\u2581", "\u2581the", "\u2581a", "e", "t", "h", "th", "he", "\u2581t", "in", "an",
             "er", "on", "re", "\u2581of", "\u2581and", "ing", "\u2581to", "is", "\u2581is"]
    words += [chr(ord("a") + i) for i in range(26) if chr(ord("a") + i) not in words]
    pieces += [(w, -float(i), 1) for i, w in enumerate(words[:n_normal])]
    return pieces
