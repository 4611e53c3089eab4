"""Regenerate tests/data/ggml_vec_refs.npz: SwiGLU and softmax as ggml itself computes them.

Calls ggml_vec_swiglu_f32 (the CPU kernel of llama.cpp's fused SiLU-gate op, which
llama-family FFNs run) and ggml_vec_soft_max_f32 (the exponentials of every softmax and
of the tiled flash attention) from the libggml-cpu built by
../shared/tools/build-llama-cpp.sh, through ctypes. Their whole 16s go through
ggml_v_expf as built for AVX-512 on the machine that made the file; the rest through
libm's expf. Tests read only the npz.

    python tests/data/make_ggml_vec_refs.py [--lib DIR]

Keys: swiglu_x, swiglu_g  f32 [4099] (the gate and up rows: random magnitudes over
      2^-4..2^4, then zeros, tiny, huge, infinite and overflow-edge values)
      swiglu_y  f32 [4099]
      softmax_x  f32 [4099] (scores: random over -40..10 with -inf entries, masked keys)
      softmax_max  f32 [] (the max subtracted)   softmax_y  f32 [4099] (exp(x - max))
"""
import argparse
import ctypes
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
SPECIAL = [0.0, -0.0, 1e-30, -1e-30, 1e-40, 88, 88.5, 89, 100, 104, 105, 130, 200, -87,
           -88.5, -89, -100, -104, -105, -130, -200, 1e30, -1e30, np.inf, -np.inf, 3e38,
           -3e38, 0.5, -0.5, 16, -16, 80]
N = 4096 + 3  # 3 past the last whole 16: the libm tails


def swiglu_refs(lib):
    swiglu = lib.ggml_vec_swiglu_f32
    swiglu.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    rng = np.random.default_rng(20261130)
    x = (rng.standard_normal(N) * np.exp(rng.uniform(-3, 3, N))).astype(np.float32)
    x[:len(SPECIAL)] = SPECIAL
    g = rng.standard_normal(N).astype(np.float32)
    y = np.empty(N, np.float32)
    swiglu(N, y.ctypes.data, x.ctypes.data, g.ctypes.data)
    return {"swiglu_x": x, "swiglu_g": g, "swiglu_y": y}


def softmax_refs(lib):
    soft_max = lib.ggml_vec_soft_max_f32
    soft_max.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float]
    soft_max.restype = ctypes.c_double
    rng = np.random.default_rng(20261201)
    x = rng.uniform(-40, 10, N).astype(np.float32)
    x[rng.random(N) < 0.05] = -np.inf
    m = np.float32(x.max())
    y = np.empty(N, np.float32)
    soft_max(N, y.ctypes.data, x.ctypes.data, m)
    return {"softmax_x": x, "softmax_max": m, "softmax_y": y}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lib", default=Path.home() / ".cache/llama.cpp-ref/bin", type=Path)
    parser.add_argument("--out", default=HERE / "ggml_vec_refs.npz", type=Path)
    args = parser.parse_args()
    lib = ctypes.CDLL(str(args.lib / "libggml-cpu.so"))
    np.savez_compressed(args.out, **swiglu_refs(lib), **softmax_refs(lib))


if __name__ == "__main__":
    main()
