"""GGUF metadata string arrays held compactly: one UTF-8 blob and its offsets.

A vocabulary is the largest: gemma3's has 262144 tokens. As Python str objects,
with a dict from text to id and its scores as Python floats, it held ~45 MB of the
process (gemma3-270m's peak RSS 526 MiB against a 510 MB target); as a blob,
offsets and a hash table of ids ~8 MB. Strings are decoded when asked for.
"""
from collections.abc import Sequence

import numpy as np

_CONTINUATION = 0x80  # UTF-8 bytes 10xxxxxx continue a character


class InvalidString(ValueError):
    """Piece `index` is not valid UTF-8 on its own."""

    def __init__(self, index):
        super().__init__(f"string {index} is not valid UTF-8")
        self.index = index


class StringArray(Sequence):
    """A read-only sequence of str over `blob`, string i = blob[offsets[i]:offsets[i+1]].
    The caller guarantees each slice is valid UTF-8 (from_pieces checks)."""

    def __init__(self, blob: bytes, offsets: np.ndarray):
        self.blob, self.offsets = blob, offsets
        self._table = self._dict = None

    @classmethod
    def from_pieces(cls, pieces):
        """From UTF-8 bytes pieces; InvalidString names the first that is not valid
        UTF-8 on its own."""
        lengths = np.fromiter((len(p) for p in pieces), np.int64, len(pieces))
        offsets = np.zeros(len(pieces) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        blob = b"".join(pieces)
        # valid pieces <=> the blob is valid UTF-8 and no piece starts inside a character
        starts = offsets[:-1][lengths > 0]
        inside = (np.frombuffer(blob, np.uint8)[starts] & 0xC0) == _CONTINUATION
        bad = [int(starts[np.argmax(inside)])] if inside.any() else []
        try:
            blob.decode("utf-8")
        except UnicodeDecodeError as e:
            bad.append(e.start)
        if bad:  # the piece holding the first bad byte (the last of any empty ones there)
            index = int(np.searchsorted(offsets, min(bad), "right")) - 1
            raise InvalidString(index)
        return cls(blob, offsets)

    def __len__(self):
        return len(self.offsets) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("string index out of range")
        return self.blob[self.offsets[i]:self.offsets[i + 1]].decode("utf-8")

    def __eq__(self, other):
        if isinstance(other, StringArray):
            return self.blob == other.blob and np.array_equal(self.offsets, other.offsets)
        return isinstance(other, (list, tuple)) and list(self) == list(other)

    __hash__ = None

    def __repr__(self):
        head = ", ".join(repr(s) for s in self[:4])
        return f"StringArray([{head}{', ...' if len(self) > 4 else ''}], {len(self)} strings)"

    def index_of(self, text: str):
        """The id of the last string equal to text (llama-vocab.cpp fills token_to_id
        in id order, so a repeated token maps to its last id), None if absent."""
        if self._table is None:
            self._build_index()
        if self._dict is not None:
            return self._dict.get(text)
        key = text.encode("utf-8")
        table, mask = self._table, len(self._table) - 1
        slot = hash(key) & mask
        while True:
            i = int(table[slot])
            if i < 0:
                return None
            if self._bytes(i) == key:
                return i
            slot = (slot + 1) & mask

    def _bytes(self, i):
        return self.blob[self.offsets[i]:self.offsets[i + 1]]

    def _build_index(self):
        # hashes of the UTF-8 bytes: str hashes are of CPython's internal form, where
        # 'eg' (two 1-byte chars) and '\u6765' (one 2-byte char) are the same bytes
        from .string_index import build_table
        bounds = self.offsets.tolist()
        hashes = np.fromiter((hash(self.blob[a:b]) for a, b in zip(bounds, bounds[1:])),
                             np.int64, len(self))
        # at most half full: a miss probes ~2.5 slots
        table = np.full(1 << max(4, (2 * len(self) - 1).bit_length()), -1, np.int32)
        replaced = np.empty((len(self), 2), np.int32)
        n_replaced = build_table(hashes, table, replaced)
        # equal hashes were taken for equal strings; if two differ (odds ~n^2 / 2^64),
        # a dict gives the exact answer instead
        if any(self._bytes(a) != self._bytes(b) for a, b in replaced[:n_replaced]):
            self._dict = {s: i for i, s in enumerate(self)}
        self._table = table
