"""Regenerate the importance-matrix references from llama.cpp's own tools.

    python tests/data/make_imatrix_refs.py [--bin DIR]     (run from anywhere)

Writes, in tests/data:
- imatrix_smollm2.gguf: llama-imatrix on SmolLM2, tests/data/imatrix_text.txt,
  -c 128 (all 6 chunks), as llama-imatrix writes it (GGUF format);
- imatrix_smollm2_subset.dat: the same run with --output-format dat, cut down to the
  entries of layers 0 and 29 (their bytes copied as written, the entry count fixed);
- imatrix_refs.json: per-tensor means (mean over columns of sum / count) and counts
  of llama-imatrix on gemma3-270m (same text, -c 128, --chunks 2), and what
  llama-quantize makes of both files: its quantize.imatrix.* keys ([value, type]), the first
  rows of two weights requantized to Q4_0 with each (hex), to check the values
  load_imatrix hands to the quantizers.
Commands run with the repository root as working directory, so the dataset and file
names the tools store are the relative paths below.
"""
import argparse
import json
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parents[2]
TEXT = "tests/data/imatrix_text.txt"
GGUF_OUT = "tests/data/imatrix_smollm2.gguf"
DAT_OUT = "tests/data/imatrix_smollm2_subset.dat"
SUBSET_LAYERS = ("blk.0.", "blk.29.")
QUANT_ROWS = {"blk.0.ffn_down.weight": 8, "blk.29.attn_q.weight": 8}


def run(cmd):
    subprocess.run([str(c) for c in cmd], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def imatrix(bin_dir, model, out, *extra):
    run([bin_dir / "llama-imatrix", "-m", model, "-f", TEXT, "-c", 128, "-t", 2,
         "--no-ppl", "-o", out, *extra])


def dat_subset(full: bytes) -> bytes:
    """Entries whose names start with SUBSET_LAYERS, byte spans as written, then the
    trailer (chunk count, dataset) as written."""
    n_entries, pos, kept = struct.unpack_from("<i", full)[0], 4, []
    for _ in range(n_entries):
        start = pos
        length = struct.unpack_from("<i", full, pos)[0]
        name = full[pos + 4:pos + 4 + length].decode()
        pos += 4 + length + 4
        nval = struct.unpack_from("<i", full, pos)[0]
        pos += 4 + 4 * nval
        if name.startswith(SUBSET_LAYERS):
            kept.append(full[start:pos])
    return struct.pack("<i", len(kept)) + b"".join(kept) + full[pos:]


def tensor_means(path):
    from gguf import GGUFReader
    reader = GGUFReader(str(path))
    tensors = {t.name: np.asarray(t.data, np.float64) for t in reader.tensors}
    out = {}
    for name in sorted(n[:-len(".in_sum2")] for n in tensors if n.endswith(".in_sum2")):
        sums, counts = tensors[name + ".in_sum2"], tensors[name + ".counts"]
        out[name] = {"mean": float((sums.reshape(counts.size, -1) / counts.reshape(-1, 1)).mean()),
                     "count": int(counts.reshape(-1)[0])}
    chunks = int(reader.get_field("imatrix.chunk_count").contents())
    return {"chunk_count": chunks, "tensors": out}


def quantize_refs(bin_dir, model, imatrix_file, tmp):
    """llama-quantize --pure Q4_0 with the imatrix: its quantize.imatrix.* keys and
    the first rows of QUANT_ROWS."""
    from gguf import GGUFReader
    out = Path(tmp) / "q4_0.gguf"
    run([bin_dir / "llama-quantize", "--allow-requantize", "--pure", "--imatrix",
         imatrix_file, model, out, "Q4_0", 2])
    reader = GGUFReader(str(out))
    keys = {f.name: [f.contents(), f.types[0].name] for f in reader.fields.values()
            if f.name.startswith("quantize.imatrix.")}
    rows = {}
    for t in reader.tensors:
        if t.name in QUANT_ROWS:
            data = np.asarray(t.data).reshape(int(t.shape[1]), -1)
            rows[t.name] = [bytes(r).hex() for r in data[:QUANT_ROWS[t.name]]]
    return {"keys": keys, "rows": rows}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", type=Path, default=Path.home() / ".cache/llama.cpp-ref/bin")
    args = parser.parse_args()
    from gguf_runtime.pull import resolve_model
    smollm2, gemma3 = resolve_model("smollm2-135m"), resolve_model("gemma3-270m")
    refs = {}
    with tempfile.TemporaryDirectory() as tmp:
        imatrix(args.bin, smollm2, GGUF_OUT)
        full_dat = Path(tmp) / "full.dat"
        imatrix(args.bin, smollm2, full_dat, "--output-format", "dat")
        (ROOT / DAT_OUT).write_bytes(dat_subset(full_dat.read_bytes()))
        gemma_out = Path(tmp) / "gemma3.gguf"
        imatrix(args.bin, gemma3, gemma_out, "--chunks", 2)
        refs["gemma3-270m"] = tensor_means(gemma_out)
        refs["quantize"] = {name: quantize_refs(args.bin, smollm2, name, tmp)
                            for name in (GGUF_OUT, DAT_OUT)}
    (ROOT / "tests/data/imatrix_refs.json").write_text(json.dumps(refs, indent=1) + "\n")


if __name__ == "__main__":
    main()
