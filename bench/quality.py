"""Quality of every quantization type on SmolLM2: ours next to llama-quantize's.

SmolLM2 (Q4_1) is requantized to F32 by gguf-quantize; from that F32, gguf-quantize
and llama-quantize each write every llama-quantize file type (types that need an
importance matrix get tests/data/imatrix_smollm2.gguf, the same file for both). For
each: file size, bits per weight, whether the two files are byte-identical, and
llama-perplexity's perplexity and KL-divergence against the F32 model's logits
(--kl-divergence-base) on tests/data/english_text.txt (-c 512, first --chunks). When
the files differ, the same figures are given for both. Writes bench/quality.md.

    python bench/quality.py [--root ~/.cache/llama.cpp-ref] [--chunks 12] [--types Q4_0,...]

Each finished type is appended to bench/quality.jsonl as it completes, and a later run
skips the types already there (same --chunks), so an interrupted run resumes; delete
the file to start over. The table is rewritten after every type.
"""
import json
import argparse
import filecmp
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
DATA = HERE.parent / "tests" / "data"
TEXT = DATA / "english_text.txt"
IMATRIX = DATA / "imatrix_smollm2.gguf"
ROWS = HERE / "quality.jsonl"
NEEDS_IMATRIX = {"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ1_S", "IQ1_M", "IQ3_XXS", "Q2_K_S"}


def run(cmd):
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True)


def bits_per_weight(path):
    from gguf_runtime.reader import GGUFFile
    with GGUFFile(path) as f:
        n_bytes = sum(t.nbytes for t in f.tensors)
        n_weights = 0
        for t in f.tensors:
            n = 1
            for d in t.shape:
                n *= d
            n_weights += n
    return n_bytes * 8 / n_weights


def kld(root, model, base, chunks):
    """(perplexity, mean KLD) from llama-perplexity against the saved F32 logits."""
    out = run([root / "bin/llama-perplexity", "-m", model, "-f", TEXT, "-c", "512",
               "--chunks", chunks, "-t", "2", "--kl-divergence-base", base, "--kl-divergence"])
    text = out.stdout + out.stderr
    ppl = float(re.search(r"Mean PPL\(Q\)\s*:\s*(-?[\d.]+)", text)[1])
    mean_kld = float(re.search(r"Mean\s+KLD:\s*(-?[\d.]+)", text)[1])
    return ppl, mean_kld


def quantize_both(root, f32, qtype, work):
    ours, theirs = work / f"ours-{qtype}.gguf", work / f"llama-{qtype}.gguf"
    extra = ["--imatrix", IMATRIX] if qtype in NEEDS_IMATRIX else []
    run([Path(sys.executable).parent / "gguf-quantize", "-q", *extra, f32, ours, qtype, "2"])
    run([root / "bin/llama-quantize", *extra, f32, theirs, qtype, "2"])
    return ours, theirs


def main():
    from gguf_runtime.quantize_mix import FILE_TYPES
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default=Path.home() / ".cache/llama.cpp-ref", type=Path)
    parser.add_argument("--chunks", type=int, default=12)
    parser.add_argument("--types", default=",".join(t for t in FILE_TYPES
                                                    if t not in ("Q3_K", "Q4_K", "Q5_K")))
    args = parser.parse_args()
    from gguf_runtime.pull import resolve_model
    work = Path(tempfile.mkdtemp(prefix="gguf-quality-"))
    f32, base = work / "smollm2-f32.gguf", work / "f32.kld"
    run([Path(sys.executable).parent / "gguf-quantize", "-q", "--allow-requantize",
         resolve_model("smollm2-135m"), f32, "F32"])
    run([args.root / "bin/llama-perplexity", "-m", f32, "-f", TEXT, "-c", "512", "--chunks",
         args.chunks, "-t", "2", "--kl-divergence-base", base])
    rows = [r for r in load_rows() if r["chunks"] == args.chunks]
    done = {r["type"] for r in rows}
    for qtype in (t for t in args.types.split(",") if t not in done):
        ours, theirs = quantize_both(args.root, f32, qtype, work)
        same = filecmp.cmp(ours, theirs, shallow=False)
        row = {"type": qtype, "MiB": ours.stat().st_size / 2**20, "bpw": bits_per_weight(ours),
               "same": same, "imatrix": qtype in NEEDS_IMATRIX, "chunks": args.chunks,
               "ours": kld(args.root, ours, base, args.chunks)}
        row["llama"] = row["ours"] if same else kld(args.root, theirs, base, args.chunks)
        rows.append(row)
        with ROWS.open("a") as f:
            f.write(json.dumps(row) + "\n")
        ours.unlink(), theirs.unlink()
        write_report(rows, args.chunks)


def load_rows():
    if not ROWS.exists():
        return []
    return [json.loads(line) for line in ROWS.read_text().splitlines() if line.strip()]


def write_report(rows, chunks):
    lines = ["# Quantization quality: gguf-quantize next to llama-quantize", "",
             "SmolLM2-135M, F32 made with `gguf-quantize --allow-requantize ... F32` from the "
             "Q4_1 release (so F32 is the reference, itself 4-bit-derived). Perplexity and "
             "KL-divergence by llama-perplexity against the F32 logits, tests/data/"
             f"english_text.txt, -c 512, {chunks} chunks (`python bench/quality.py`). "
             "imatrix: tests/data/imatrix_smollm2.gguf, given to both tools, only for the "
             "types that require one.", "",
             "| type | MiB | bits/weight | byte-identical to llama-quantize | imatrix | "
             "PPL ours | PPL llama | KLD ours | KLD llama |",
             "|---|---:|---:|---|---|---:|---:|---:|---:|"]
    for r in rows:
        (po, ko), (pl, kl) = r["ours"], r["llama"]
        lines.append(f"| {r['type']} | {r['MiB']:.1f} | {r['bpw']:.2f} | "
                     f"{'yes' if r['same'] else 'no'} | {'yes' if r['imatrix'] else ''} | "
                     f"{po:.4f} | {pl:.4f} | {ko:.6f} | {kl:.6f} |")
    (HERE / "quality.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
