"""Llama 3 RoPE scaling factors (the rope_freqs.weight tensor), as llama.cpp's
converter computes them in torch float32 (conversion/llama.py
LlamaModel.generate_extra_tensors), step for step in numpy float32:

  - base ** (arange(0, dim, 2) / dim): torch rounds the power correctly here,
    so it is taken in float64 and rounded once (float32 powf from libm is off by
    one ulp for some exponents). Checked bit-identical to torch for
    theta 500000 (every Llama 3.x) and head_dim 8..160; other thetas can differ
    by one ulp in an entry where torch's vectorized pow does not round exactly.
  - python_number / tensor is tensor.reciprocal() * number in torch (__rdiv__),
    so it is computed that way here.
"""
import math

import numpy as np

f32 = np.float32


def llama3_rope_factors(rope: dict, head_dim: int) -> np.ndarray:
    base = rope.get("rope_theta", 10000.0)
    factor = rope.get("factor", 8.0)
    low_freq_factor = rope.get("low_freq_factor", 1.0)
    high_freq_factor = rope.get("high_freq_factor", 4.0)
    old_context = rope.get("original_max_position_embeddings", 8192)
    low_freq_wavelen = f32(old_context / low_freq_factor)
    high_freq_wavelen = f32(old_context / high_freq_factor)

    exponents = np.arange(0, head_dim, 2, dtype=f32) / f32(head_dim)
    powers = np.power(np.float64(base), exponents.astype(np.float64)).astype(f32)
    freqs = f32(1.0) / powers
    factors = np.empty(len(freqs), dtype=f32)
    for i, freq in enumerate(freqs):
        wavelen = (f32(1.0) / freq) * f32(2 * math.pi)
        if wavelen < high_freq_wavelen:
            factors[i] = 1.0
        elif wavelen > low_freq_wavelen:
            factors[i] = factor
        else:
            smooth = ((f32(1.0) / wavelen) * f32(old_context) - f32(low_freq_factor)) / f32(
                high_freq_factor - low_freq_factor)
            factors[i] = f32(1.0) / ((f32(1.0) - smooth) / f32(factor) + smooth)
    return factors
