"""Regenerate tests/data/quantize_refs.json from llama.cpp.

- "mix": the type llama-quantize --dry-run picks for every tensor (names in its order,
  types space-separated), for every file type, on both real models, without and with
  an importance matrix.
- "files": sha256 of llama-quantize's whole output file and of each tensor's bytes,
  for SmolLM2 requantized to F32 and from that F32 to the listed types.
- The "files" entries with "imatrix" use imatrix_smollm2.gguf (llama-imatrix's output,
  made by make_imatrix_refs.py).

Needs ../shared/tools/build-llama-cpp.sh's tools and both models (gguf-pull).

    python tests/data/make_quantize_refs.py [--bin DIR] [--work DIR]
"""
import argparse
import hashlib
import json
import re
import subprocess
from pathlib import Path

HERE = Path(__file__).parent
FILE_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M",
              "IQ1_S", "IQ1_M", "Q2_K", "Q2_K_S", "IQ3_XXS", "IQ3_S", "IQ3_M", "IQ3_XS",
              "Q3_K_S", "Q3_K_M", "Q3_K_L", "IQ4_NL", "IQ4_XS", "Q4_K_S", "Q4_K_M",
              "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "F16", "BF16", "F32"]
# (type, with imatrix) whose whole files the tests rebuild and compare
FILES = [("Q4_0", False), ("Q8_0", False), ("Q4_K_M", False), ("Q6_K", False),
         ("IQ4_XS", False), ("Q4_K_M", True), ("IQ4_XS", True)]
_LINE = re.compile(r"^\[\s*\d+/\s*\d+\] (\S+)\s+- \[.*\], type =\s+(\w+),.*?(?:\((\w+)\))?$")


def run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True,
                          **kw)


def dry_run_types(bin_dir, model, file_type, imatrix):
    cmd = [bin_dir / "llama-quantize", "--dry-run"]
    cmd += ["--imatrix", imatrix] if imatrix else []
    proc = run(cmd + [model, file_type])
    types = []
    for line in (proc.stdout + proc.stderr).splitlines():
        match = _LINE.match(line.strip())
        if match:
            types.append([match[1], match[3] or match[2]])
    assert types, f"no tensor lines from {cmd}"
    return types


def file_hashes(path):
    from gguf_runtime.reader import GGUFFile
    with GGUFFile(path) as f:
        tensors = {t.name: hashlib.sha256(t.data).hexdigest() for t in f.tensors}
    return {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "tensors": tensors}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default=Path.home() / ".cache/llama.cpp-ref/bin", type=Path)
    parser.add_argument("--work", default=Path("/tmp/gguf-run-quantize-refs"), type=Path)
    args = parser.parse_args()
    from gguf_runtime.pull import resolve_model
    args.work.mkdir(parents=True, exist_ok=True)
    models = {"smollm2": resolve_model("smollm2-135m"), "gemma3": resolve_model("gemma3-270m")}
    imatrices = {}
    for name, model in models.items():  # has_imatrix changes some mix rules
        out = args.work / f"{name}.imatrix.gguf"
        run([args.bin / "llama-imatrix", "-m", model, "-f", HERE / "imatrix_text.txt",
             "-o", out, "-c", "128", "--chunks", "2", "-t", "2"])
        imatrices[name] = out
    refs = {"mix": {}, "files": {}}
    for name, model in models.items():
        mix = {}
        for ft in FILE_TYPES:
            for key, imatrix in (("none", None), ("imatrix", imatrices[name])):
                pairs = dry_run_types(args.bin, model, ft, imatrix)
                mix["names"] = [n for n, _ in pairs]  # the same order for every type
                mix.setdefault(ft, {})[key] = " ".join(t for _, t in pairs)
        refs["mix"][name] = mix
        print(name, "mix done", flush=True)
    f32 = args.work / "smollm2-f32.gguf"
    run([args.bin / "llama-quantize", "--allow-requantize", models["smollm2"], f32, "F32"])
    refs["files"]["F32"] = file_hashes(f32)
    for file_type, with_imatrix in FILES:
        out = args.work / f"smollm2-{file_type}{'-imatrix' if with_imatrix else ''}.gguf"
        cmd = [args.bin / "llama-quantize"]
        # the file name recorded in quantize.imatrix.file is the argument as given
        cmd += ["--imatrix", "imatrix_smollm2.gguf"] if with_imatrix else []
        run(cmd + [f32, out, file_type, "2"], cwd=HERE)
        key = file_type + ("+imatrix" if with_imatrix else "")
        refs["files"][key] = file_hashes(out)
        print(key, refs["files"][key]["sha256"][:12], flush=True)
    (HERE / "quantize_refs.json").write_text(json.dumps(refs, indent=0) + "\n")


if __name__ == "__main__":
    main()
