"""Regenerate tests/data/tokenizer_refs.json: llama-tokenize's ids for each stress
text, with special parsing on and off. Needs llama.cpp's tools
(../shared/tools/build-llama-cpp.sh) and the models (gguf-pull); tests don't.

    python tests/data/make_tokenizer_refs.py [--bin DIR]
"""
import argparse
import json
import subprocess
from pathlib import Path

HERE = Path(__file__).parent
MODELS = ["smollm2-135m", "gemma3-270m"]


def llama_tokenize(binary, model, text, parse_special):
    cmd = [str(binary), "-m", str(model), "-p", text, "--ids", "--log-disable", "--no-escape"]
    if not parse_special:
        cmd.append("--no-parse-special")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default=Path.home() / ".cache/llama.cpp-ref/bin", type=Path)
    args = parser.parse_args()
    from gguf_runtime.pull import resolve_model
    texts = json.loads((HERE / "tokenizer_stress.json").read_text(encoding="utf-8"))
    refs = {}
    for name in MODELS:
        model = resolve_model(name)
        refs[name] = [{"text": t,
                       "special": llama_tokenize(args.bin / "llama-tokenize", model, t, True),
                       "plain": llama_tokenize(args.bin / "llama-tokenize", model, t, False)}
                      for t in texts]
    (HERE / "tokenizer_refs.json").write_text(json.dumps(refs, ensure_ascii=False, indent=0),
                                              encoding="utf-8")


if __name__ == "__main__":
    main()
