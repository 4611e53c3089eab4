"""Regenerate tests/data/swiglu_refs.npz: SwiGLU as ggml itself computes it.

Calls ggml_vec_swiglu_f32 (the CPU kernel of llama.cpp's fused SiLU-gate op, which
llama-family FFNs run) from the libggml-cpu built by ../shared/tools/build-llama-cpp.sh,
through ctypes. Its whole 16s go through ggml_v_silu as built for AVX-512 on the
machine that made the file; the rest through ggml_silu_f32 (libm's expf). Tests read
only the npz.

    python tests/data/make_swiglu_refs.py [--lib DIR]

Keys: x, g  f32 [4099] (the gate and up rows: random magnitudes over 2^-4..2^4, then
      zeros, tiny, huge, infinite and overflow-edge values)   y  f32 [4099]
"""
import argparse
import ctypes
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
SPECIAL = [0.0, -0.0, 1e-30, -1e-30, 1e-40, 88, 88.5, 89, 100, 104, 105, 130, 200, -87,
           -88.5, -89, -100, -104, -105, -130, -200, 1e30, -1e30, np.inf, -np.inf, 3e38,
           -3e38, 0.5, -0.5, 16, -16, 80]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lib", default=Path.home() / ".cache/llama.cpp-ref/bin", type=Path)
    parser.add_argument("--out", default=HERE / "swiglu_refs.npz", type=Path)
    args = parser.parse_args()
    swiglu = ctypes.CDLL(str(args.lib / "libggml-cpu.so")).ggml_vec_swiglu_f32
    swiglu.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    rng = np.random.default_rng(20261130)
    n = 4096 + 3  # 3 past the last whole 16: ggml_silu_f32's tail
    x = (rng.standard_normal(n) * np.exp(rng.uniform(-3, 3, n))).astype(np.float32)
    x[:len(SPECIAL)] = SPECIAL
    g = rng.standard_normal(n).astype(np.float32)
    y = np.empty(n, np.float32)
    swiglu(n, y.ctypes.data, x.ctypes.data, g.ctypes.data)
    np.savez_compressed(args.out, x=x, g=g, y=y)


if __name__ == "__main__":
    main()
