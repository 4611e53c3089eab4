"""Ctrl-C latency: time from SIGINT to exit for gguf-run (generating) and
gguf-perplexity (in a 512-token batch), 5 times each. Target: under 1 s.

    python bench/cancel.py
"""
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.append(str(ROOT / "tests" / "helpers"))
from interrupt import interrupt_after  # noqa: E402

CASES = {
    "gguf-run (generating)": ("run", ["-m", "smollm2-135m", "-p", "Once upon a time", "-no-cnv",
                                      "-n", "-1", "--ignore-eos"], "stdout"),
    "gguf-perplexity (prefill)": ("perplexity", ["-m", "smollm2-135m", "-f", str(
        ROOT / "tests/data/english_text.txt"), "-c", "512"], "stderr"),
}


def main():
    print("| tool | exit codes | latency s (median / max) |\n|---|---|---:|")
    for label, (entry, args, ready) in CASES.items():
        runs = [interrupt_after(entry, args, ready) for _ in range(5)]
        codes = sorted({code for code, _, _ in runs})
        seconds = [s for _, _, s in runs]
        print(f"| {label} | {codes} | {statistics.median(seconds):.2f} / {max(seconds):.2f} |")


if __name__ == "__main__":
    main()
