"""Per-format kernel speed: GB/s of quantized weight bytes streamed by matmul.

For each registered type: decode (1 token) and prefill (512 tokens) on a matrix
larger than L3, next to numpy's read bandwidth measured in the same run. Formats
with a decode layout (quant_formats/interleave.py) are measured in it, as models
run them; the row-major kernel is shown beside it, and GB/s always counts the
file's bytes (the layout may hold more: its size relative to the file is shown).

    python bench/kernels.py [--rows 16384] [--cols 4096] [--types Q4_0,Q8_0] [--out FILE]
"""
import argparse
import time

import numpy as np
from gguf import GGMLQuantizationType as T

import quant_formats as qf
from quant_formats.random import random_blocks


def best_time(fn, repeats):
    fn()  # warm-up: compile (cached) and fault the pages in
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def numpy_read_gbs(n_bytes=256 << 20, repeats=5):
    data = np.ones(n_bytes // 4, np.float32)
    return data.nbytes / best_time(lambda: np.add.reduce(data), repeats) / 1e9


def bench_type(qtype, rows, cols, prefill_rows, repeats):
    w = random_blocks(qtype, rows, cols, seed=int(qtype))
    x1 = np.random.default_rng(0).standard_normal((1, cols)).astype(np.float32)
    row_major = w.nbytes / best_time(lambda: qf.matmul(x1, w, qtype), repeats) / 1e9
    packed = qf.pack(w, qtype)
    decode, layout_size = None, None
    if packed is not None:
        decode = w.nbytes / best_time(lambda: qf.matmul(x1, w, qtype, packed=packed),
                                      repeats) / 1e9
        layout_size = sum(a.nbytes for a in packed if isinstance(a, np.ndarray)) / w.nbytes
    # prefill on a slice of rows keeps the run short; the rate per byte is the same
    wp = w[:prefill_rows]
    pp = qf.pack(wp, qtype)
    x512 = np.random.default_rng(1).standard_normal((512, cols)).astype(np.float32)
    seconds = best_time(lambda: qf.matmul(x512, wp, qtype, packed=pp), max(1, repeats // 2))
    return (row_major, decode, layout_size, wp.nbytes / seconds / 1e9,
            2 * 512 * cols * prefill_rows / seconds / 1e9)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=16384)
    parser.add_argument("--cols", type=int, default=4096)
    parser.add_argument("--prefill-rows", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--types", help="comma-separated type names (default: all)")
    parser.add_argument("--out", help="also write the markdown table here")
    args = parser.parse_args()
    types = ([T[name.strip().upper()] for name in args.types.split(",")] if args.types
             else sorted(qf.FORMATS, key=int))
    lines = [f"numpy read bandwidth: {numpy_read_gbs():.1f} GB/s "
             f"(matrix {args.rows}x{args.cols})", "",
             "| type | decode GB/s (row-major) | decode GB/s (decode layout) | layout / file "
             "bytes | prefill GB/s | prefill GFLOP/s |", "|---|---:|---:|---:|---:|---:|"]
    print(lines[0], flush=True)
    for qtype in types:
        row_major, decode, size, prefill, gflops = bench_type(
            qtype, args.rows, args.cols, args.prefill_rows, args.repeats)
        layout = f"{decode:.2f} | {size:.2f}" if decode else "- | -"
        lines.append(f"| {qtype.name} | {row_major:.2f} | {layout} | {prefill:.2f} | "
                     f"{gflops:.1f} |")
        print(lines[-1], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
