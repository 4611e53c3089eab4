"""KV cache types (-ctk/-ctv f16|q8_0) next to llama.cpp: speed, perplexity cost, bytes.

For SmolLM2-135M and gemma-3-270m and each K/V type pair: llama-bench and
gguf-bench alternately (pp512, tg128, 2 threads, same -ctk/-ctv); perplexity on
the first chunks of tests/data/english_text.txt (-c 512), ours computed here and
llama-perplexity's from tests/data/llama_refs.json (make_llama_refs.py) after
the same chunks; KV cache bytes at -c 4096: ours summed over the layer caches,
llama.cpp's from the llama_kv_cache "size =" lines of a one-token llama-completion.
Writes bench/kv_cache.md (bench/compare.py puts the f16/f16 and q8_0/q8_0 rows
into results.md).

    python bench/kv_cache.py [--root ~/.cache/llama.cpp-ref] [-r 2] [--ppl-chunks 2]
"""
import argparse
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
DATA = HERE.parent / "tests" / "data"
MODELS = [("SmolLM2-135M Q4_1", "smollm2-135m"), ("gemma-3-270m Q4_K_M", "gemma3-270m")]
PAIRS = [("f16", "f16"), ("q8_0", "q8_0"), ("q8_0", "f16"), ("f16", "q8_0")]
N_CTX_BYTES = 4096


def run(cmd):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=True)


def llama_bench(root, model, pair, reps):
    out = run([root / "bin/llama-bench", "-m", model, "-p", "512", "-n", "128", "-t", "2",
               "-r", reps, "-ctk", pair[0], "-ctv", pair[1], "-o", "json"])
    return {("pp" if r["n_prompt"] else "tg"): r["avg_ts"] for r in json.loads(out.stdout)}


def gguf_bench(model, pair, reps):
    code = "import sys, cli; sys.argv = ['gguf-bench'] + sys.argv[1:]; cli.bench_main()"
    out = run([sys.executable, "-c", code, "-m", model, "-p", "512", "-n", "128", "-t", "2",
               "-r", reps, "-ctk", pair[0], "-ctv", pair[1], "-o", "json"])
    return {("pp" if r["n_prompt"] else "tg"): r["avg_ts"] for r in json.loads(out.stdout)}


def llama_cache_bytes(root, model, pair):
    """Sum of llama.cpp's KV cache sizes (one line per cache; two for iSWA)."""
    out = run([root / "bin/llama-completion", "-m", model, "-p", "Hi", "-n", "1", "-no-cnv",
               "-t", "2", "-c", N_CTX_BYTES, "-ctk", pair[0], "-ctv", pair[1], "-v"])
    sizes = re.findall(r"llama_kv_cache[^\n]*?: size = +([0-9.]+) MiB", out.stderr)
    # llama-completion sets the context up twice (a no-alloc fitting pass, then the
    # real one) and logs the caches each time: count the second half only
    return sum(float(s) for s in sizes[len(sizes) // 2:]) * 2**20


def ours_cache_bytes(model, pair):
    from gguf_runtime import Model
    with Model.load(model, n_ctx=N_CTX_BYTES, cache_type_k=pair[0], cache_type_v=pair[1]) as m:
        return sum(c.nbytes for c in m.transformer.caches)


def ours_perplexity(model, pair, chunks):
    from gguf_runtime import Model
    from gguf_runtime.perplexity import perplexity
    text = (DATA / "english_text.txt").read_text(encoding="utf-8")
    with Model.load(model, n_ctx=512, cache_type_k=pair[0], cache_type_v=pair[1]) as m:
        return perplexity(m, text, n_ctx=512, n_chunks=chunks, out=io.StringIO(),
                          progress=None).ppl


def llama_perplexity(refs, name, pair, chunks):
    if pair == ("f16", "f16"):
        return refs["perplexity"][name]["512"]["chunks"][chunks - 1]
    return refs["perplexity_kv"][name]["512"]["/".join(pair)]["chunks"][chunks - 1]


def measure(root, pairs, reps, chunks):
    """One row per model and K/V pair: both tools' t/s, perplexities and cache bytes."""
    from gguf_runtime.pull import resolve_model
    refs = json.loads((DATA / "llama_refs.json").read_text())
    rows = []
    for label, name in MODELS:
        path = resolve_model(name)
        for pair in pairs:
            print(f"{label} {pair} ...", file=sys.stderr, flush=True)
            theirs = llama_bench(root, path, pair, reps)
            ours = gguf_bench(path, pair, reps)
            rows.append(dict(label=label, pair=pair, theirs=theirs, ours=ours,
                             ppl_ours=ours_perplexity(path, pair, chunks),
                             ppl_llama=llama_perplexity(refs, name, pair, chunks),
                             bytes_ours=ours_cache_bytes(path, pair),
                             bytes_llama=llama_cache_bytes(root, path, pair)))
    return rows


def parse_pairs(text):
    return [tuple(p.split("/")) for p in text.split(",") if p]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default=Path.home() / ".cache/llama.cpp-ref", type=Path)
    parser.add_argument("-r", "--repetitions", default="2")
    parser.add_argument("--ppl-chunks", type=int, default=2)
    parser.add_argument("--pairs", default=",".join("/".join(p) for p in PAIRS),
                        help="K/V type pairs, f16/f16 first (the cost baseline)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows = measure(args.root, parse_pairs(args.pairs), args.repetitions, args.ppl_chunks)
    write(rows, args, load, os.getloadavg()[0])


def table(rows, chunks):
    """Markdown lines: speed, perplexity cost (vs the same tool's f16/f16) and bytes."""
    lines = [f"Perplexity after the first {chunks} chunks of tests/data/english_text.txt at "
             "-c 512 (llama's from llama-perplexity, tests/data/llama_refs.json); cost: vs the "
             f"same tool's f16/f16. KV bytes at -c {N_CTX_BYTES} (our f16 cache holds float32 "
             "rows of f16 values: 4 bytes a value).", "",
             "| model | K/V | pp512 llama | pp512 ours | ratio | tg128 llama | tg128 ours | ratio "
             "| PPL llama (cost) | PPL ours (cost) | KV MiB llama | KV MiB ours |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = {r["label"]: r for r in rows if r["pair"] == ("f16", "f16")}
    for r in rows:
        b, t, o = base[r["label"]], r["theirs"], r["ours"]
        cost_l = (r["ppl_llama"] / b["ppl_llama"] - 1) * 100
        cost_o = (r["ppl_ours"] / b["ppl_ours"] - 1) * 100
        lines.append(f"| {r['label']} | {'/'.join(r['pair'])} | {t['pp']:.1f} | {o['pp']:.1f} | "
                     f"{o['pp'] / t['pp']:.2f} | {t['tg']:.1f} | {o['tg']:.1f} | "
                     f"{o['tg'] / t['tg']:.2f} | {r['ppl_llama']:.4f} ({cost_l:+.2f}%) | "
                     f"{r['ppl_ours']:.4f} ({cost_o:+.2f}%) | {r['bytes_llama'] / 2**20:.1f} | "
                     f"{r['bytes_ours'] / 2**20:.1f} |")
    return lines


def write_atomic(path, lines):
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    print("\n".join(lines))


def write(rows, args, load_before, load_after):
    lines = ["# KV cache types: -ctk / -ctv", "",
             f"`python bench/kv_cache.py -r {args.repetitions} --ppl-chunks {args.ppl_chunks} "
             f"--pairs {args.pairs}` "
             f"on {os.cpu_count()} cores, 2 threads, {time.strftime('%Y-%m-%d %H:%M')}; load "
             f"average {load_before:.1f} at the start, {load_after:.1f} at the end (a shared "
             "machine: the ratios, from alternating runs, mean more than the t/s).", ""]
    write_atomic(HERE / "kv_cache.md", lines + table(rows, args.ppl_chunks))


if __name__ == "__main__":
    main()
