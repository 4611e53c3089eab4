"""Per-layer key/value caches, preallocated once (after mlx-lm's cache.py).

A global layer keeps every position: row p holds position p. A sliding-window
layer keeps a ring of window + n_batch rows, row p % n_cells: a batch of
n_batch new tokens then never overwrites a key that its first query still sees.
Values are stored rounded to f16, as llama.cpp's default f16 cache holds them.
Pages of the arrays are touched only as positions fill, so a large n_ctx costs
memory only as it is used.
"""
import numpy as np

from . import layers


class KVCache:
    def __init__(self, n_cells: int, k_width: int, v_width: int, window: int = 0):
        self.n_cells = n_cells
        self.window = window          # 0: attend to every earlier position
        self.keys = np.zeros((n_cells, k_width), np.float32)
        self.values = np.zeros((n_cells, v_width), np.float32)
        self.length = 0               # positions 0..length-1 have been written

    @classmethod
    def for_layer(cls, n_ctx, n_batch, k_width, v_width, window):
        if window and window + n_batch < n_ctx:
            return cls(window + n_batch, k_width, v_width, window)
        return cls(n_ctx, k_width, v_width, window)

    def update_and_fetch(self, k, v, pos0: int):
        """Store rows k, v for positions pos0..pos0+n-1; return the caches the
        attention kernel reads (row of position p: p % n_cells)."""
        layers.store_f16(k, self.keys, pos0, self.n_cells)
        layers.store_f16(v, self.values, pos0, self.n_cells)
        self.length = pos0 + k.shape[0]
        return self.keys, self.values

    def oldest_kept(self) -> int:
        """The first position whose row is still intact."""
        return max(0, self.length - self.n_cells)

    def truncate(self, n: int) -> int:
        """Forget positions >= n. Returns how many positions can be kept: fewer
        than n when a ring has already overwritten keys that position n needs."""
        n = min(n, self.length)
        needed_from = max(0, n - self.window) if self.window else 0
        if needed_from < self.oldest_kept():
            n = 0
        self.length = n
        return n

    def shift(self, n_keep: int, n_discard: int, rotate):
        """Drop positions n_keep..n_keep+n_discard-1 and move the later ones down
        by n_discard; rotate(keys, delta) re-applies RoPE for the new positions."""
        start = max(n_keep + n_discard, self.oldest_kept())
        rows = np.arange(start, self.length) % self.n_cells
        keys, values = self.keys[rows], self.values[rows]
        rotate(keys, -n_discard)
        layers.store_f16(keys, self.keys, start - n_discard, self.n_cells)
        layers.store_f16(values, self.values, start - n_discard, self.n_cells)
        self.length -= n_discard
