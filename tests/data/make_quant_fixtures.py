"""Regenerate tests/data/quant_fixtures.npz: real SmolLM2 tensor rows in all 22 types,
quantized by llama.cpp's llama-quantize, with gguf-py's dequantization of them.

Needs llama.cpp's tools (../shared/tools/build-llama-cpp.sh, default
~/.cache/llama.cpp-ref/bin) and the SmolLM2 model (gguf-pull smollm2-135m). Tests read
only the npz, so CI needs neither.

    python tests/data/make_quant_fixtures.py [--bin DIR] [--work DIR]
"""
import argparse
import subprocess
from pathlib import Path

import gguf
import numpy as np

HERE = Path(__file__).parent
ROWS = 4  # rows cut per type: a few KB each
# llama-quantize type name -> GGML type its --pure output carries on ffn_down (1536-wide
# rows, a multiple of 256, so no fallback); under --pure a mix collapses to its base
# type (llama-quant.cpp default_type: Q4_K_M -> Q4_K, IQ2_M -> IQ2_S).
TYPES = {
    "F32": "F32", "F16": "F16", "BF16": "BF16", "Q4_0": "Q4_0", "Q4_1": "Q4_1",
    "Q5_0": "Q5_0", "Q5_1": "Q5_1", "Q8_0": "Q8_0", "Q2_K": "Q2_K", "Q3_K_M": "Q3_K",
    "Q4_K_M": "Q4_K", "Q5_K_M": "Q5_K", "Q6_K": "Q6_K", "IQ4_NL": "IQ4_NL",
    "IQ4_XS": "IQ4_XS", "IQ3_XXS": "IQ3_XXS", "IQ3_S": "IQ3_S", "IQ2_XXS": "IQ2_XXS",
    "IQ2_XS": "IQ2_XS", "IQ2_M": "IQ2_S", "IQ1_S": "IQ1_S", "IQ1_M": "IQ1_M",
}
SOURCE_TENSOR = "blk.3.ffn_down.weight"


def run(cmd):
    subprocess.run([str(c) for c in cmd], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def prepare(bin_dir, work, model):
    f32, imatrix = work / "smollm2-f32.gguf", work / "imatrix.gguf"
    if not f32.exists():
        run([bin_dir / "llama-quantize", "--allow-requantize", model, f32, "F32"])
    if not imatrix.exists():
        run([bin_dir / "llama-imatrix", "-m", f32, "-f", HERE / "imatrix_text.txt",
             "-o", imatrix, "-c", "128", "-t", "2"])
    return f32, imatrix


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default=Path.home() / ".cache/llama.cpp-ref/bin", type=Path)
    parser.add_argument("--work", default=Path("/tmp/gguf-run-quants"), type=Path)
    args = parser.parse_args()
    from gguf_runtime.pull import resolve_model
    args.work.mkdir(parents=True, exist_ok=True)
    f32, imatrix = prepare(args.bin, args.work, resolve_model("smollm2-135m"))
    arrays = {}
    for name, ggml_type in TYPES.items():
        out = args.work / f"smollm2-pure-{name}.gguf"
        cmd = [args.bin / "llama-quantize", "--pure", "--imatrix", imatrix, f32, out, name]
        if not out.exists():
            run(cmd)
        tensor = next(t for t in gguf.GGUFReader(out).tensors if t.name == SOURCE_TENSOR)
        assert tensor.tensor_type.name == ggml_type, (name, tensor.tensor_type.name)
        raw = np.asarray(tensor.data).view(np.uint8).reshape(int(tensor.shape[1]), -1)[:ROWS]
        arrays[f"{ggml_type}/raw"] = raw.copy()
        arrays[f"{ggml_type}/dequant"] = gguf.quants.dequantize(raw, tensor.tensor_type)
        arrays[f"{ggml_type}/command"] = np.array(
            " ".join(["llama-quantize"] + [Path(str(c)).name for c in cmd[1:]]))
        print(ggml_type, raw.shape, flush=True)
    np.savez_compressed(HERE / "quant_fixtures.npz", source=np.array(SOURCE_TENSOR), **arrays)


if __name__ == "__main__":
    main()
