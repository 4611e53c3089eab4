"""Turning generated token pieces into text safely: UTF-8 and stop strings.

A token may end in the middle of a multi-byte character, and a stop string may
span tokens; text is released only once it can no longer change.
"""
import codecs


class TextStream:
    """Feed token bytes, get printable text; holds back partial characters and
    any tail that could still grow into a stop string."""

    def __init__(self, stop: list[str] | tuple[str, ...] = ()):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = [s for s in stop if s]
        self._pending = ""
        self.stopped = False

    def feed(self, piece: bytes) -> str:
        """Text that is safe to show after this piece ('' if none yet)."""
        if self.stopped:
            return ""
        self._pending += self._decoder.decode(piece)
        hits = [at for at in (self._pending.find(s) for s in self._stop) if at >= 0]
        if hits:
            self.stopped = True
            out, self._pending = self._pending[:min(hits)], ""
            return out
        keep = self._holdback()
        out = self._pending[:len(self._pending) - keep]
        self._pending = self._pending[len(out):]
        return out

    def flush(self) -> str:
        """The rest, at the end of generation."""
        if self.stopped:
            return ""
        out = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return out

    def _holdback(self) -> int:
        """Length of the longest tail of the pending text that starts a stop string."""
        longest = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(self._pending)), longest, -1):
                if self._pending.endswith(s[:n]):
                    longest = n
                    break
        return longest
