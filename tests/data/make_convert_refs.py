"""Reference outputs of llama.cpp's convert_hf_to_gguf.py for the gguf-convert tests.

Builds the test checkpoints (tests/helpers/hf_checkpoints.py: SmolLM2 rebuilt
from its GGUF, tiny random llama/qwen2/qwen3/gemma3), runs llama.cpp's converter
on each (checkpoint, outtype) and stores a fingerprint of every output
(tests/helpers/gguf_summary.py: metadata keys, types and values in order,
tensor names/types/shapes/offsets and the sha256 of each tensor's bytes) in
tests/data/convert_refs.json, with their converter's wall time and peak RSS.

Needs what their converter needs, outside CI: pip install torch==2.13.0
transformers safetensors sentencepiece protobuf. Run:
    python tests/data/make_convert_refs.py [--work DIR]
    python tests/data/make_convert_refs.py --hashes   # pre_tokenizer_hashes.py only
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
LLAMA_SRC = Path(os.environ.get("LLAMA_CPP_SRC", Path.home() / ".cache/llama.cpp-ref/src"))
OUT = Path(__file__).parent / "convert_refs.json"

# (checkpoint, outtypes): what the tests convert and compare
CASES = {
    "smollm2-f32": ("f32", "f16", "bf16", "q8_0"),
    "smollm2-bf16": ("auto",),
    "tiny-llama": ("f32", "f16", "bf16", "q8_0", "auto"),
    "tiny-qwen2": ("f32", "f16", "bf16", "q8_0", "auto"),
    "tiny-qwen3": ("f32", "f16", "bf16", "q8_0", "auto"),
    "tiny-gemma3": ("f32", "f16", "bf16", "q8_0", "auto"),
    "gemma3-bf16": ("auto",),
    "tiny-llama3": ("f16", "q8_0"),
}


def build_checkpoint(name: str, work: Path) -> Path:
    import hf_checkpoints
    from gguf_runtime.pull import resolve_model
    smollm2 = resolve_model("smollm2-135m")
    if name == "smollm2-f32":
        return hf_checkpoints.from_smollm2(smollm2, work / name, dtype="F32")
    if name == "smollm2-bf16":
        return hf_checkpoints.from_smollm2(smollm2, work / name, dtype="BF16")
    if name == "gemma3-bf16":
        return hf_checkpoints.from_gemma3(resolve_model("gemma3-270m"), work / name, dtype="BF16")
    return hf_checkpoints.tiny(name.removeprefix("tiny-"), work / name, smollm2)


def run_theirs(model_dir: Path, outfile: Path, outtype: str) -> tuple:
    """(seconds, peak RSS MB) of their converter, run with their bundled gguf-py.

    Peak RSS through /usr/bin/time: a child forked from this (large) process
    would inherit its high-water mark in ru_maxrss."""
    env = dict(os.environ, PYTHONPATH=str(LLAMA_SRC / "gguf-py"))
    rss_file = outfile.with_suffix(".rss")
    start = time.monotonic()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss_file), sys.executable,
                           str(LLAMA_SRC / "convert_hf_to_gguf.py"), str(model_dir),
                           "--outfile", str(outfile), "--outtype", outtype],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"their converter failed on {model_dir} {outtype}:\n{proc.stderr[-3000:]}")
    rss_kb = int(rss_file.read_text().split()[-1])
    rss_file.unlink()
    return round(seconds, 2), round(rss_kb / 1024, 1)


def write_hash_table():
    """gguf_runtime/convert/pre_tokenizer_hashes.py from their get_vocab_base_pre."""
    src = (LLAMA_SRC / "conversion" / "base.py").read_text(encoding="utf-8")
    body = src[src.index("# Marker: Start get_vocab_base_pre"):
               src.index("# Marker: End get_vocab_base_pre")]
    pairs = re.findall(r'if chkhsh == "([0-9a-f]{64})":\n\s+# ref: (\S+)\n\s+res = "([^"]+)"',
                       body)
    check_text = re.search(r"chktxt = ('.*')\n", body).group(1)
    names = {}
    for digest, ref, name in pairs:  # a later `if` re-assigns: the last name wins
        names[digest] = (name, ref)
    lines = ['"""BPE pre-tokenizer names by the sha256 of the token ids of CHECK_TEXT.', "",
             "Data from llama.cpp's conversion/base.py get_vocab_base_pre (generated there by",
             "convert_hf_to_gguf_update.py); regenerate with "
             "tests/data/make_convert_refs.py --hashes.",
             "A hash listed twice there is re-assigned by the later `if`, so the last name wins,",
             "as here.", '"""', "", "# the fixed text llama.cpp encodes (get_vocab_base_pre chktxt)",
             f"CHECK_TEXT = {check_text}", "", "PRE_TOKENIZERS = {"]
    lines += [f'    "{d}": "{n}",  # {r}' for d, (n, r) in names.items()]
    lines.append("}")
    path = ROOT / "gguf_runtime" / "convert" / "pre_tokenizer_hashes.py"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{path}: {len(names)} hashes")


def main():
    import gguf_summary
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default="/tmp/gguf-convert-refs")
    parser.add_argument("--hashes", action="store_true")
    parser.add_argument("--only", nargs="*", help="checkpoint names to (re)make; others kept")
    args = parser.parse_args()
    if args.hashes:
        return write_hash_table()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    refs = json.loads(OUT.read_text(encoding="utf-8")) if args.only and OUT.exists() else {}
    for name, outtypes in CASES.items():
        if args.only and name not in args.only:
            continue
        model_dir = build_checkpoint(name, work)
        for outtype in outtypes:
            out = work / f"ref-{name}-{outtype}.gguf"
            seconds, rss = run_theirs(model_dir, out, outtype)
            refs[f"{name}/{outtype}"] = {"seconds": seconds, "peak_rss_mb": rss,
                                         **gguf_summary.summarize(out)}
            out.unlink()
            print(f"{name} {outtype}: {seconds} s, {rss} MB", flush=True)
    OUT.write_text(json.dumps(refs, indent=0, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
