"""Ctrl-C latency: time from SIGINT to exit for gguf-run (generating),
gguf-perplexity (in a 512-token batch), gguf-quantize, gguf-convert and gguf-imatrix
(mid-job), 5 times each. Target: under 1 s.

    python bench/cancel.py
"""
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.append(str(ROOT / "tests" / "helpers"))
from interrupt import interrupt_after  # noqa: E402

WORK = Path(tempfile.mkdtemp(prefix="gguf-cancel-"))
CASES = {
    "gguf-run (generating)": ("run", ["-m", "smollm2-135m", "-p", "Once upon a time", "-no-cnv",
                                      "-n", "-1", "--ignore-eos"], "stdout"),
    "gguf-perplexity (prefill)": ("perplexity", ["-m", "smollm2-135m", "-f", str(
        ROOT / "tests/data/english_text.txt"), "-c", "512"], "stderr"),
    "gguf-quantize (Q4_K_M)": ("quantize", ["--allow-requantize", "SMOLLM2",
                                            str(WORK / "q.gguf"), "Q4_K_M"], "stderr"),
    "gguf-convert (f32)": ("convert", ["CHECKPOINT", "--outfile", str(WORK / "c.gguf"),
                                       "--outtype", "f32"], "stderr"),
    "gguf-imatrix": ("imatrix", ["-m", "smollm2-135m", "-f", str(
        ROOT / "tests/data/english_text.txt"), "-c", "512", "-o", str(WORK / "i.gguf")],
        "stderr"),
}


def resolve(args):
    """Real paths for the placeholders: the model file, an HF checkpoint built from it."""
    from gguf_runtime.pull import resolve_model
    import hf_checkpoints
    model = resolve_model("smollm2-135m")
    subs = {"SMOLLM2": str(model)}
    if "CHECKPOINT" in args:
        subs["CHECKPOINT"] = str(hf_checkpoints.from_smollm2(model, WORK / "hf", dtype="BF16"))
    return [subs.get(a, a) for a in args]


def main():
    print("| tool | exit codes | latency s (median / max) |\n|---|---|---:|")
    for label, (entry, args, ready) in CASES.items():
        args = resolve(args)
        runs = [interrupt_after(entry, args, ready) for _ in range(5)]
        codes = sorted({code for code, _, _ in runs})
        seconds = [s for _, _, s in runs]
        print(f"| {label} | {codes} | {statistics.median(seconds):.2f} / {max(seconds):.2f} |")


if __name__ == "__main__":
    main()
