"""Regenerate tests/data/quantizer_refs.npz: rows quantized by ggml itself.

Calls ggml_quantize_chunk (the function llama-quantize calls per tensor chunk) from the
libggml-base built by ../shared/tools/build-llama-cpp.sh, through ctypes, on fixed
input rows, with and without an importance matrix. Tests read only the npz.

    python tests/data/make_quantizer_refs.py [--lib DIR]

Keys:  input/<set>  f32 [rows, n]     imatrix/<set>  f32 [n] (positive, a few zeros)
       <TYPE>/<set>/none  and  <TYPE>/<set>/imatrix   uint8 [rows, row_bytes]
(types that ggml refuses to quantize without an imatrix have only .../imatrix)
"""
import argparse
import ctypes
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

HERE = Path(__file__).parent
OVERFLOW_TYPES = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
TYPES = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K,
         T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_NL, T.IQ4_XS, T.IQ3_XXS, T.IQ3_S, T.IQ2_XXS,
         T.IQ2_XS, T.IQ2_S, T.IQ1_S, T.IQ1_M]


def real_rows():
    """Rows of SmolLM2's blk.3.ffn_down (1536 wide) as llama-quantize sees them after
    --allow-requantize F32: the Q4_1 file dequantized."""
    import quant_formats as qf
    from gguf_runtime.pull import resolve_model
    from gguf_runtime.reader import GGUFFile
    with GGUFFile(resolve_model("smollm2-135m")) as f:
        t = f.tensor("blk.3.ffn_down.weight")
        return qf.dequantize(t.data[:6], t.type)


def input_sets(rng):
    gauss = rng.standard_normal((6, 512)).astype(np.float32)
    gauss[1] *= 1e-3
    gauss[2] *= 100.0
    gauss[3, ::37] *= 20.0                                 # outliers
    gauss[4] = np.abs(gauss[4])                            # one-signed
    gauss[5] = rng.standard_t(3, 512).astype(np.float32)   # heavy tails
    edge = np.zeros((6, 512), np.float32)                  # row 0 all zeros
    edge[1] = 1.0                                          # constant
    edge[2, 100] = 5.0                                     # one spike
    edge[3] = np.where(np.arange(512) % 2, 1.0, -1.0)      # alternating
    edge[4] = np.linspace(-1, 1, 512)
    edge[5, :256] = rng.standard_normal(256)               # a zero super-block
    return {"real": real_rows(), "gauss": gauss, "edge": edge}


def sparse_rows(rng):
    """Mostly-zero rows (pruned weights, unused embedding columns) and extreme scales:
    blocks whose weighted sums vanish, scales that round to 0 or overflow in f16.
    Its own generator, so the sets above keep their values."""
    x = np.zeros((6, 512), np.float32)
    for r in range(3):                                     # 1, 2 and 3 nonzeros
        x[r, rng.choice(512, r + 1, replace=False)] = rng.standard_normal(r + 1)
    x[3] = rng.standard_normal(512) * 1e-30                # scales below f16's range
    x[4] = rng.standard_normal(512) * 3e4                  # values beyond f16's range
    x[5] = rng.standard_normal(512)
    x[5].reshape(-1, 32)[::2] = 0.0                        # every other block zero
    return x


def overflow_rows(rng):
    """Magnitudes where ggml's float32 sums overflow: x*x (and sigma2 + x*x under an
    imatrix) becomes inf, fitted scales inf or NaN, and the f16 scale NaN or inf
    (ggml writes NaN as sign|0x7E00). Its own generator, so the sets above keep
    their values. Only OVERFLOW_TYPES: ggml aborts on it in IQ3_XXS (GGML_ASSERT
    grid_index >= 0)."""
    x = rng.standard_normal((4, 512)).astype(np.float32)
    x[0] *= 1e19                                           # x*x near the float32 limit
    x[1] *= 1e30                                           # x*x overflows
    x[2] *= 1e37                                           # values near float32's max
    x[3, ::2] *= 1e25                                      # huge and ordinary values mixed
    return x


def quantize_chunk(lib, qtype, x, imatrix):
    rows, n = x.shape
    block, size = GGML_QUANT_SIZES[qtype]
    out = np.zeros((rows, n // block * size), np.uint8)
    x = np.ascontiguousarray(x, np.float32)
    imat = None if imatrix is None else np.ascontiguousarray(imatrix, np.float32)
    lib.ggml_quantize_chunk(int(qtype), x.ctypes.data, out.ctypes.data, 0, rows, n,
                            None if imat is None else imat.ctypes.data)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lib", default=Path.home() / ".cache/llama.cpp-ref/bin", type=Path)
    parser.add_argument("--out", default=HERE / "quantizer_refs.npz", type=Path)
    args = parser.parse_args()
    lib = ctypes.CDLL(str(args.lib / "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                        ctypes.c_void_p]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    rng = np.random.default_rng(20261130)
    arrays = {}
    sets = input_sets(rng)
    sets["sparse"] = sparse_rows(np.random.default_rng(20261131))
    sets["overflow"] = overflow_rows(np.random.default_rng(20261132))
    for name, x in sets.items():
        imatrix = np.exp(rng.standard_normal(x.shape[1])).astype(np.float32)
        imatrix[rng.choice(x.shape[1], 8, replace=False)] = 0.0
        if name == "sparse":
            imatrix[32:64] = 0.0                           # a never-activated block
        arrays[f"input/{name}"], arrays[f"imatrix/{name}"] = x, imatrix
        for qtype in OVERFLOW_TYPES if name == "overflow" else TYPES:
            if not lib.ggml_quantize_requires_imatrix(int(qtype)):
                arrays[f"{qtype.name}/{name}/none"] = quantize_chunk(lib, qtype, x, None)
            arrays[f"{qtype.name}/{name}/imatrix"] = quantize_chunk(lib, qtype, x, imatrix)
        print(name, x.shape, flush=True)
    np.savez_compressed(args.out, **arrays)


if __name__ == "__main__":
    main()
