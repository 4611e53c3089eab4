"""Per-layer key/value caches, preallocated once (after mlx-lm's cache.py).

A global layer keeps every position: row p holds position p. A sliding-window
layer keeps a ring of window + n_batch rows, row p % n_cells: a batch of
n_batch new tokens then never overwrites a key that its first query still sees.
An f16 cache holds float32 rows of f16-rounded values, as llama.cpp's default
cache holds them; a q8_0 one ggml's q8_0 blocks (kv_quant.py), for K and V
independently. Pages of the arrays are touched only as positions fill, so a
large n_ctx costs memory only as it is used.
"""
import numpy as np

from . import flash_attention, kv_quant


def _rows(n_cells, width, cache_type):
    if cache_type == "q8_0":
        return np.zeros((n_cells, width // kv_quant.Q8_BLOCK * kv_quant.Q8_BYTES), np.uint8)
    return np.zeros((n_cells, width), np.float32)


def _store(src, cache, pos0, n_cells):
    if cache.dtype == np.uint8:
        kv_quant.store_q8_0(src, cache, pos0, n_cells)
    else:
        flash_attention.store_f16(src, cache, pos0, n_cells)


class KVCache:
    def __init__(self, n_cells: int, k_width: int, v_width: int, window: int = 0,
                 type_k: str = "f16", type_v: str = "f16", k_rot: int = 0):
        self.n_cells = n_cells
        self.window = window          # 0: attend to every earlier position
        self.type_k, self.type_v = type_k, type_v
        self.k_width = k_width
        self.k_rot = k_rot            # Hadamard size the stored keys are rotated by (0: none)
        self.keys = _rows(n_cells, k_width, type_k)
        self.values = _rows(n_cells, v_width, type_v)
        self.length = 0               # positions 0..length-1 have been written

    @classmethod
    def for_layer(cls, n_ctx, n_batch, k_width, v_width, window, **types):
        if window and window + n_batch < n_ctx:
            return cls(window + n_batch, k_width, v_width, window, **types)
        return cls(n_ctx, k_width, v_width, window, **types)

    @classmethod
    def for_model(cls, cfg, n_ctx, n_batch, **types):
        """One cache per layer of cfg (a ModelConfig); its arrays' pages are touched
        only as they fill, so bench/compare.py sizes a context this way for free."""
        return [cls.for_layer(n_ctx, n_batch, cfg.n_head_kv * cfg.head_dim,
                              cfg.n_head_kv * cfg.head_dim_v,
                              cfg.sliding_window if cfg.swa_layers[i] else 0, **types)
                for i in range(cfg.n_layer)]

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes

    def update_and_fetch(self, k, v, pos0: int):
        """Store rows k, v for positions pos0..pos0+n-1 (rounded or quantized to
        the cache type); return the caches the attention kernel reads (row of
        position p: p % n_cells)."""
        _store(k, self.keys, pos0, self.n_cells)
        _store(v, self.values, pos0, self.n_cells)
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
        by n_discard; rotate(keys, delta) re-applies RoPE for the new positions.
        A q8_0 K goes through f32 and back, undoing and redoing its Hadamard
        rotation around RoPE (llama-kv-cache.cpp build_rope_shift); values move
        unchanged."""
        start = max(n_keep + n_discard, self.oldest_kept())
        rows = np.arange(start, self.length) % self.n_cells
        keys, values = self.keys[rows], self.values[rows]
        if self.type_k == "q8_0":
            keys_f32 = np.empty((len(rows), self.k_width), np.float32)
            kv_quant.dequantize_q8_0(keys, keys_f32)
            keys = keys_f32
            if self.k_rot:
                kv_quant.hadamard_rows(keys, self.k_rot)
        rotate(keys, -n_discard)
        if self.k_rot:
            kv_quant.hadamard_rows(keys, self.k_rot)
        _store(keys, self.keys, start - n_discard, self.n_cells)
        kv_quant.store_rows(values, self.values, start - n_discard, self.n_cells)
        self.length -= n_discard
