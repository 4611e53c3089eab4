"""gguf-quantize next to llama-quantize: wall clock (start-up included) and peak RSS.

Both real models are first turned into F32 with llama-quantize --allow-requantize;
then llama-quantize and gguf-quantize alternately quantize each F32 file to Q4_K_M and
Q8_0 (2 threads), best of -r runs each. gguf-quantize's Numba cache is warmed by one
run first (the first run on a fresh install compiles; that time is reported too).
Each output is checked byte for byte against llama-quantize's. Writes bench/quantize.md.

    python bench/quantize.py [--root ~/.cache/llama.cpp-ref] [-r 3]
"""
import argparse
import filecmp
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
TYPES = ["Q4_K_M", "Q8_0"]


def timed(cmd):
    """Wall seconds and peak RSS (MB) of one child process."""
    start = time.perf_counter()
    pid = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL).pid
    _, status, usage = os.wait4(pid, 0)
    if status != 0:
        raise RuntimeError(f"{cmd} failed ({status})")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def gguf_quantize_cmd(src, out, qtype):
    return [Path(sys.executable).parent / "gguf-quantize", "-q", src, out, qtype, "2"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default=Path.home() / ".cache/llama.cpp-ref", type=Path)
    parser.add_argument("-r", "--repetitions", type=int, default=3)
    args = parser.parse_args()
    from gguf_runtime.pull import resolve_model
    work = Path(tempfile.mkdtemp(prefix="gguf-quantize-bench-"))
    llama_quantize = args.root / "bin" / "llama-quantize"
    rows = []
    for name in ("smollm2-135m", "gemma3-270m"):
        f32 = work / f"{name}-f32.gguf"
        subprocess.run([llama_quantize, "--allow-requantize", resolve_model(name), f32, "F32"],
                       check=True, capture_output=True)
        for qtype in TYPES:
            ours, theirs = work / f"ours-{qtype}.gguf", work / f"llama-{qtype}.gguf"
            first, _ = timed(gguf_quantize_cmd(f32, ours, qtype))  # cache warm-up
            best = {"llama": (1e9, 0), "ours": (1e9, 0)}
            for _ in range(args.repetitions):
                for who, cmd in (("llama", [llama_quantize, f32, theirs, qtype, "2"]),
                                 ("ours", gguf_quantize_cmd(f32, ours, qtype))):
                    t, rss = timed(cmd)
                    best[who] = min(best[who], (t, rss))
            identical = filecmp.cmp(ours, theirs, shallow=False)
            rows.append((name, qtype, best["llama"], best["ours"], first, identical))
            print(rows[-1], flush=True)
            ours.unlink(), theirs.unlink()
        f32.unlink()
    write_report(rows, args.repetitions)


def write_report(rows, reps):
    lines = ["# gguf-quantize next to llama-quantize", "",
             f"F32 input, 2 threads, wall clock including start-up, best of {reps} "
             "alternating runs (`python bench/quantize.py`). Speed ratio = llama time / our "
             "time (>= 0.5 is the target). First run: ours before the timed runs (with the "
             "Numba cache as it was; a fresh install compiles then).", "",
             "| model | type | llama-quantize s | gguf-quantize s | speed ratio | peak RSS MB "
             "(llama / ours) | our first run s | output identical |",
             "|---|---|---:|---:|---:|---|---:|---|"]
    for name, qtype, (lt, lrss), (ot, orss), first, identical in rows:
        lines.append(f"| {name} | {qtype} | {lt:.2f} | {ot:.2f} | {lt / ot:.2f} | "
                     f"{lrss:.0f} / {orss:.0f} | {first:.1f} | {'yes' if identical else 'NO'} |")
    (HERE / "quantize.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
