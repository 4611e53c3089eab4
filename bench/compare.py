"""gguf-run next to llama.cpp, one run: tokens/s, time to first token, peak RSS.

For each model: llama-bench and gguf-bench alternately, -r rounds each (pp512,
tg128, 2 threads; the median round counts),
then `llama-completion -n 1` and `gguf-run -n 1` for time to first token and peak
RSS (each in its own process, measured with getrusage), then gguf-run's first-run
compile time with an empty Numba cache. SmolLM2 is requantized with llama-quantize
into the types listed (an imatrix from tests/data/english_text.txt for IQ2_XXS).
Then the KV cache types (bench/kv_cache.py: both tools' speed with the same
-ctk/-ctv, perplexity cost, bytes). Writes bench/results.md, with a line saying
which of the speed issue's targets the run met.

    python bench/compare.py [--root ~/.cache/llama.cpp-ref] [--types Q4_0,Q4_1] [-r 3]
                            [--kv-pairs f16/f16,q8_0/q8_0] [--ppl-chunks 2]
"""
import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import kv_cache
from kv_cache import gguf_bench, llama_bench, run

HERE = Path(__file__).parent
TEXT = HERE.parent / "tests" / "data" / "english_text.txt"
SMOLLM2_TYPES = ["Q4_0", "Q4_1", "Q8_0", "Q4_K_M", "Q6_K", "IQ4_XS", "IQ2_XXS"]
PROMPT = "Name three primary colors."
F16 = ("f16", "f16")
# the bars: tg128 ratio 0.9 for these files, 0.7 for the others; pp512 0.6;
# first-run compile 60 s; warm start (smollm2-135m is the Q4_1 file) 2 s
TG_09 = {"Q4_0", "Q4_1", "Q8_0", "Q4_K_M"}  # gemma3 is a Q4_K_M too
PP_MIN, COMPILE_MAX, WARM_MAX = 0.6, 60.0, 2.0


def requantize(root, source, qtype, out_dir, imatrix):
    out = out_dir / f"smollm2-135m-{qtype}.gguf"
    if not out.exists():
        cmd = [root / "bin/llama-quantize", "--allow-requantize"]
        if qtype.startswith("IQ2") or qtype.startswith("IQ1"):
            cmd += ["--imatrix", imatrix]
        run(cmd + [source, out, qtype, "2"])
    return out


def make_imatrix(root, source, out_dir):
    out = out_dir / "smollm2-135m.imatrix.gguf"
    if not out.exists():
        run([root / "bin/llama-imatrix", "-m", source, "-f", TEXT, "-o", out, "-c", "512",
             "--chunks", "20", "-t", "2"])
    return out


_MEASURE = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "subprocess.run(sys.argv[1:], capture_output=True, check=True); "
            "print(time.perf_counter() - t, "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def first_token(cmd):
    """Wall time and peak RSS (MB, 10^6 bytes; ru_maxrss is in KiB) of a one-token
    run, measured by a fresh parent process (a parent's RUSAGE_CHILDREN peak covers
    all its children so far)."""
    out = run([sys.executable, "-c", _MEASURE] + list(cmd)).stdout.split()
    return float(out[0]), int(out[1]) * 1024 / 1e6


def memory_target(model, n_ctx=4096):
    """The issue's bound in MB: model file + KV cache (as gguf-run allocates it for
    n_ctx, f16 held as float32) + 200 MB."""
    from gguf_runtime.config import ModelConfig
    from gguf_runtime.kv_cache import KVCache
    from gguf_runtime.model import N_BATCH
    from gguf_runtime.reader import GGUFFile
    with GGUFFile(model) as f:
        cfg = ModelConfig.from_metadata(f.metadata)
    caches = KVCache.for_model(cfg, min(n_ctx, cfg.n_ctx_train), N_BATCH)
    return (Path(model).stat().st_size + sum(c.nbytes for c in caches)) / 1e6 + 200


def gguf_run_cmd(model, n_predict=1):
    code = "import sys, cli; sys.argv = ['gguf-run'] + sys.argv[1:]; cli.run_main()"
    return [sys.executable, "-c", code, "-m", model, "-p", PROMPT, "-n", str(n_predict),
            "-no-cnv", "-t", "2", "-c", "4096"]


def compile_time(model):
    """A first run that decodes too (-n 4: the one-token run compiles no decode path)."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        start = time.perf_counter()
        subprocess.run(gguf_run_cmd(model, 4), capture_output=True, check=True, env=env)
        return time.perf_counter() - start


def alternate(ours, theirs, rounds):
    """Each tool's pp/tg t/s, median over rounds run one after the other (ours,
    theirs, ours, ...): a machine whose speed drifts affects both alike."""
    runs = [(ours(), theirs()) for _ in range(rounds)]
    return [{k: statistics.median(r[i][k] for r in runs) for k in ("pp", "tg")} for i in (0, 1)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default=Path.home() / ".cache/llama.cpp-ref", type=Path)
    parser.add_argument("--types", default=",".join(SMOLLM2_TYPES))
    parser.add_argument("-r", "--rounds", default="3",
                        help="alternating rounds of one pp512 and one tg128 run per tool")
    parser.add_argument("--work", default=Path.home() / ".cache/gguf-run/bench", type=Path)
    parser.add_argument("--kv-pairs", default="f16/f16,q8_0/q8_0",
                        help="K/V cache type pairs for the KV section ('' skips it)")
    parser.add_argument("--ppl-chunks", type=int, default=2)
    args = parser.parse_args()
    from gguf_runtime.pull import resolve_model
    args.work.mkdir(parents=True, exist_ok=True)
    smollm2, gemma3 = resolve_model("smollm2-135m"), resolve_model("gemma3-270m")
    imatrix = make_imatrix(args.root, smollm2, args.work)
    models = [(f"SmolLM2-135M {t}", requantize(args.root, smollm2, t, args.work, imatrix))
              for t in args.types.split(",") if t]
    models.append(("gemma3-270m Q4_K_M", gemma3))
    rows = []
    for label, path in models:
        print(f"{label} ...", file=sys.stderr, flush=True)
        ours, theirs = alternate(lambda: gguf_bench(path, F16, "1"),
                                 lambda: llama_bench(args.root, path, F16, "1"),
                                 int(args.rounds))
        ttft_l, rss_l = first_token([args.root / "bin/llama-completion", "-m", path, "-p",
                                     PROMPT, "-n", "1", "-no-cnv", "-t", "2", "-c", "4096"])
        ttft_g, rss_g = first_token(gguf_run_cmd(path))
        rows.append((label, path.stat().st_size, theirs, ours, ttft_l, ttft_g, rss_l, rss_g,
                     memory_target(path), compile_time(path)))
    pairs = kv_cache.parse_pairs(args.kv_pairs)
    kv_rows = kv_cache.measure(args.root, pairs, args.rounds, args.ppl_chunks) if pairs else []
    write(rows, kv_rows, args)


def misses(rows):
    """The issue's targets this run missed, by how much (an empty list: all met)."""
    out = []
    for label, _, theirs, ours, _, ttft_g, _, rss_g, target, comp in rows:
        tg_min = 0.9 if label.split()[-1] in TG_09 else 0.7
        for test, bar in (("pp", PP_MIN), ("tg", tg_min)):
            if ours[test] / theirs[test] < bar:
                out.append(f"{label} {test} ratio {ours[test] / theirs[test]:.2f} < {bar}")
        if rss_g > target:
            out.append(f"{label} peak RSS {rss_g:.0f} MB > {target:.0f}")
        if comp > COMPILE_MAX:
            out.append(f"{label} first-run compile {comp:.1f} s > {COMPILE_MAX:.0f}")
        if label.endswith("Q4_1") and ttft_g > WARM_MAX:
            out.append(f"warm start {ttft_g:.2f} s > {WARM_MAX:.0f}")
    return out


def cpu_description():
    """The CPU's name and which of simd's instruction paths Numba may use on it."""
    from quant_formats import simd
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                 if ln.startswith("model name")]
        name = names[0] if names else name
    has = [f for f in simd.X86_FEATURES if simd.host_has(f)]
    return f"{name} ({', '.join(has) if has else 'none of ' + ', '.join(simd.X86_FEATURES)})"


def write(rows, kv_rows, args):
    lines = ["# gguf-run vs llama.cpp", "",
             f"`python bench/compare.py` on {cpu_description()}, {os.cpu_count()} cores, "
             "2 threads, "
             f"{args.rounds} rounds, {time.strftime('%Y-%m-%d')}. t/s: median over rounds "
             "of llama-bench and gguf-bench (pp512, tg128, `-r 1` after their warm-up) run "
             "alternately; time to first token "
             "and peak RSS from one-token runs (`-n 1`, `-c 4096`, own process each, warm "
             "Numba cache, imports included; MB = "
             "10^6 bytes), against the target file + KV cache (gguf-run's, `-c 4096`) + "
             "200 MB; compile: gguf-run's first run (4 tokens: prefill and decode) with an "
             "empty Numba cache.", "",
             "| model | file MB | pp512 llama.cpp | pp512 gguf-run | ratio | tg128 llama.cpp "
             "| tg128 gguf-run | ratio | first token s (llama / ours) | peak RSS MB "
             "(llama / ours) | RSS target MB | first-run compile s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, size, theirs, ours, ttft_l, ttft_g, rss_l, rss_g, target, comp in rows:
        lines.append(f"| {label} | {size / 1e6:.0f} | {theirs['pp']:.1f} | {ours['pp']:.1f} | "
                     f"{ours['pp'] / theirs['pp']:.2f} | {theirs['tg']:.1f} | {ours['tg']:.1f} | "
                     f"{ours['tg'] / theirs['tg']:.2f} | {ttft_l:.2f} / {ttft_g:.2f} | "
                     f"{rss_l:.0f} / {rss_g:.0f} | {target:.0f} | {comp:.1f} |")
    missed = misses(rows)
    lines += ["", "Targets (tg128 >= 0.9 for Q4_0, Q4_1, Q8_0, Q4_K_M and gemma3, >= 0.7 for "
              "the others; pp512 >= 0.6; peak RSS <= target; first-run compile <= 60 s; warm "
              "start, the one-token run of smollm2-135m (the Q4_1 file), <= 2 s): "
              + ("all met." if not missed else "missed: " + "; ".join(missed) + ".")]
    if kv_rows:
        lines += ["", "## KV cache types (-ctk / -ctv)", "",
                  f"gguf-bench and llama-bench with the same -ctk/-ctv, -r {args.rounds} each."]
        lines += kv_cache.table(kv_rows, args.ppl_chunks)
    kv_cache.write_atomic(HERE / "results.md", lines)


if __name__ == "__main__":
    main()
