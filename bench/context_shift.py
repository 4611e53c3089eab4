"""Long greedy generation past the context with context shift: memory over time.

Generates N tokens (default 3000) with n_ctx 1024 and context shift on, as
`gguf-run -m M -c 1024 --context-shift --temp 0 -n 3000 --ignore-eos` does, and
records resident memory and speed every 100 tokens. With the KV cache allocated
once and no per-token allocation, RSS stays flat after warm-up however long it
runs. Writes bench/context_shift.md.

    python bench/context_shift.py [-m smollm2-135m] [-n 3000] [-c 1024]
"""
import argparse
import os
import time
from pathlib import Path


def rss_mb() -> float:
    """Resident set size now (Linux /proc; elsewhere the peak from resource)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-m", "--model", default="smollm2-135m")
    parser.add_argument("-n", "--n-predict", type=int, default=3000)
    parser.add_argument("-c", "--ctx-size", type=int, default=1024)
    parser.add_argument("-p", "--prompt", default="Once upon a time, in a small village,")
    parser.add_argument("--out", default=Path(__file__).with_name("context_shift.md"),
                        help="bench/soak.md for the 20,000-token soak run (-n 20000)")
    args = parser.parse_args()
    from gguf_runtime import Model
    rows = []
    with Model.load(args.model, n_ctx=args.ctx_size) as model:
        start = last = time.perf_counter()
        n = 0
        rows.append((0, 0, rss_mb(), 0.0))
        for _ in model.generate(args.prompt, args.n_predict, temp=0, context_shift=True,
                                ignore_eos=True):
            n = model.last_result.n_generated
            if n % 100 == 0 and n != rows[-1][0]:
                now = time.perf_counter()
                rows.append((n, len(model.tokens), rss_mb(), 100 / (now - last)))
                last = now
        result = model.last_result
        total = time.perf_counter() - start
    lines = [f"# Context shift: {args.n_predict} tokens, n_ctx {args.ctx_size}",
             "", f"`python bench/context_shift.py -m {args.model} -n {args.n_predict} "
             f"-c {args.ctx_size}` on {os.cpu_count()} cores. Generated "
             f"{result.n_generated} tokens in {total:.1f} s (stop: {result.stop_reason}).",
             "", "| tokens generated | tokens in cache | RSS MB | tokens/s (last 100) |",
             "|---:|---:|---:|---:|"]
    lines += [f"| {n} | {cached} | {rss:.1f} | {rate:.1f} |" for n, cached, rss, rate in rows]
    # warm-up: until the cache is first full (the first context shift)
    shifted = next((i for i in range(1, len(rows)) if rows[i][1] < rows[i - 1][1]), None)
    if shifted is not None:
        rss = [r[2] for r in rows[shifted:]]
        rates = [r[3] for r in rows[shifted:]]
        lines += ["", f"After warm-up (the first shift, by token {rows[shifted][0]}): RSS "
                  f"{min(rss):.1f}-{max(rss):.1f} MB ({(max(rss) / min(rss) - 1) * 100:.1f}% "
                  f"spread); tokens/s {min(rates):.1f}-{max(rates):.1f} "
                  f"(median {sorted(rates)[len(rates) // 2]:.1f})."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
