"""What a fuzz case does, shared by tests/fuzz/ and bench/fuzz.py: mutate a seed
GGUF file, load it with Model.load and run it; the only acceptable outcomes are
success, GGUFError or ModelError, each error a single line."""
import struct

from gguf_runtime import GGUFError, ModelError
from gguf_runtime.model import Model

HUGE = [0, 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1]


def flip_bytes(seed: bytes, flips) -> bytes:
    raw = bytearray(seed)
    for position, value in flips:
        raw[position % len(raw)] = value
    return bytes(raw)


def put_huge(seed: bytes, offset: int, value: int, wide: bool) -> bytes:
    """A count, length, dim or offset replaced by an extreme value."""
    raw = bytearray(seed)
    width = 8 if wide else 4
    position = offset % (len(raw) - width)
    raw[position:position + width] = struct.pack("<Q" if wide else "<I",
                                                 value if wide else value % 2**32)
    return bytes(raw)


def load_and_run(path) -> str:
    """Load, evaluate three tokens, tokenize; returns the outcome's name."""
    try:
        with Model.load(path, n_ctx=32, n_threads=1) as model:
            n = model.tokenizer.n_vocab
            model.logits([i % n for i in range(3)])
            model.tokenize("ab c", parse_special=True)
        return "ok"
    except (GGUFError, ModelError) as e:
        message = str(e)
        assert message and "\n" not in message, repr(message)
        return type(e).__name__
