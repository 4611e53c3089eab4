"""Regenerate tests/data/llama_refs.json: llama.cpp's perplexities, greedy tokens
(with the top-20 logits that show near-ties) and llama-completion texts for the
real models and the derived qwen2/qwen3 files. Needs llama.cpp's tools and source
(../shared/tools/build-llama-cpp.sh), gcc, and the models (gguf-pull); tests don't.

    python tests/data/make_llama_refs.py [--root ~/.cache/llama.cpp-ref]
"""
import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
sys.path.append(str(HERE.parent / "helpers"))
import derived_models  # noqa: E402

TEXT = HERE / "english_text.txt"
PERPLEXITY_RUNS = [("smollm2-135m", 512), ("gemma3-270m", 512), ("gemma3-270m", 2048),
                   ("qwen2-derived", 512), ("qwen3-derived", 512)]
# quantized KV caches (-ctk/-ctv): refs["perplexity_kv"][model][n_ctx]["<K>/<V>"]
KV_CACHE_TYPES = [("q8_0", "q8_0"), ("q8_0", "f16"), ("f16", "q8_0")]
PROMPTS = ["The capital of France is", "Once upon a time, in a small village,",
           "def fibonacci(n):", "The three primary colors are", "Water boils at",
           "The best way to learn a new language is", "In 1969, the first person to walk",
           "Here is a list of fruits:", "The train left the station at",
           "Photosynthesis is the process by which",
           # confident continuations: llama.cpp's top two logits stay far apart
           "1, 2, 3, 4, 5,", "Monday, Tuesday, Wednesday,", "January, February, March,",
           "A, B, C, D, E,", "The quick brown fox jumps over the lazy dog. The quick brown fox",
           "Twinkle, twinkle, little star,"]
N_GEN = 32


def build_oracle(root: Path, out_dir: Path) -> Path:
    exe = out_dir / "llama_oracle"
    src = HERE.parent / "tools" / "llama_oracle.c"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src), f"-I{root}/src/include",
                    f"-I{root}/src/ggml/include", f"-L{root}/bin", "-lllama", "-lggml",
                    "-lggml-base", f"-Wl,-rpath,{root}/bin"], check=True)
    return exe


def model_paths(tmp: Path) -> dict:
    from gguf_runtime.pull import resolve_model
    paths = {name: resolve_model(name) for name in ("smollm2-135m", "gemma3-270m")}
    for arch in derived_models.ARCHS:
        paths[f"{arch}-derived"] = derived_models.build(arch, paths["smollm2-135m"], tmp)
    return paths


def perplexity(root, model, n_ctx, cache_types=("f16", "f16")):
    run = subprocess.run([str(root / "bin/llama-perplexity"), "-m", str(model), "-f", str(TEXT),
                          "-c", str(n_ctx), "-t", "2", "-ctk", cache_types[0], "-ctv", cache_types[1]],
                         capture_output=True, text=True, check=True)
    chunks = [float(v) for v in re.findall(r"\[\d+\]([0-9.]+),", run.stdout)]
    final = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", run.stderr)
    return {"chunks": chunks, "ppl": float(final[1]), "error": float(final[2])}


def prompt_ids(root, model, prompt):
    out = subprocess.run([str(root / "bin/llama-tokenize"), "-m", str(model), "-p", prompt,
                          "--ids", "--log-disable"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def greedy(oracle, model, ids):
    out = subprocess.run([str(oracle), "greedy", str(model), "512", str(N_GEN)]
                         + [str(i) for i in ids], capture_output=True, text=True, check=True)
    steps = [line.split() for line in out.stdout.strip().splitlines()]
    return {"tokens": [int(s[0]) for s in steps],
            "top_ids": [[int(v) for v in s[0::2]] for s in steps],
            "top_logits": [[float(v) for v in s[1::2]] for s in steps]}


def completion(root, model, prompt, cache_types=("f16", "f16")):
    out = subprocess.run([str(root / "bin/llama-completion"), "-m", str(model), "-p", prompt,
                          "--temp", "0", "-no-cnv", "-n", str(N_GEN), "--no-display-prompt",
                          "-t", "2", "-ctk", cache_types[0], "-ctv", cache_types[1]],
                         capture_output=True, text=True, check=True)
    return out.stdout


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default=Path.home() / ".cache/llama.cpp-ref", type=Path)
    parser.add_argument("--greedy-only", action="store_true",
                        help="keep the perplexities already in llama_refs.json")
    parser.add_argument("--kv-cache-only", action="store_true",
                        help="keep everything else in llama_refs.json; (re)record perplexity_kv")
    args = parser.parse_args()
    if args.kv_cache_only:
        return kv_cache_refs(args.root)
    old = json.loads((HERE / "llama_refs.json").read_text()) if args.greedy_only else None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        oracle = build_oracle(args.root, tmp)
        paths = model_paths(tmp)
        refs = {"text": TEXT.name, "n_gen": N_GEN, "perplexity": {}, "greedy": {}}
        for name, n_ctx in [] if old else PERPLEXITY_RUNS:
            print(f"perplexity {name} -c {n_ctx}", file=sys.stderr)
            refs["perplexity"].setdefault(name, {})[str(n_ctx)] = perplexity(
                args.root, paths[name], n_ctx)
        if old:  # everything but the greedy runs stays as recorded
            refs.update({k: v for k, v in old.items() if k != "greedy"})
        for name, path in paths.items():
            print(f"greedy {name}", file=sys.stderr)
            refs["greedy"][name] = []
            for prompt in PROMPTS:
                ids = prompt_ids(args.root, path, prompt)
                refs["greedy"][name].append(dict(prompt=prompt, ids=ids, **greedy(oracle, path, ids),
                                                 completion=completion(args.root, path, prompt)))
    (HERE / "llama_refs.json").write_text(json.dumps(refs, indent=1) + "\n")


def kv_cache_refs(root):
    """llama-perplexity with each quantized -ctk/-ctv pair on the real models, and
    llama-completion with -ctk/-ctv q8_0 on the prompts whose f16 greedy path has
    no near-tie (top-2 logit gap >= 1). Records only what is missing: delete
    perplexity_kv / completion_kv from llama_refs.json to re-record them."""
    from gguf_runtime.pull import resolve_model
    refs = json.loads((HERE / "llama_refs.json").read_text())
    runs = refs.setdefault("perplexity_kv", {})
    for name, n_ctx in PERPLEXITY_RUNS:
        if name.endswith("-derived"):
            continue
        for types in KV_CACHE_TYPES:
            recorded = runs.setdefault(name, {}).setdefault(str(n_ctx), {})
            if "/".join(types) not in recorded:
                print(f"perplexity {name} -c {n_ctx} -ctk {types[0]} -ctv {types[1]}",
                      file=sys.stderr)
                recorded["/".join(types)] = perplexity(root, resolve_model(name), n_ctx, types)
    completions = refs.setdefault("completion_kv", {})
    for name in ("smollm2-135m", "gemma3-270m"):
        tie_free = [c["prompt"] for c in refs["greedy"][name]
                    if min(top[0] - top[1] for top in c["top_logits"]) >= 1.0][:2]
        recorded = completions.setdefault(name, {}).setdefault("q8_0/q8_0", {})
        for prompt in tie_free:
            if prompt not in recorded:
                print(f"completion {name} -ctk q8_0 -ctv q8_0 {prompt!r}", file=sys.stderr)
                recorded[prompt] = completion(root, resolve_model(name), prompt, ("q8_0", "q8_0"))
    (HERE / "llama_refs.json").write_text(json.dumps(refs, indent=1) + "\n")


if __name__ == "__main__":
    main()
