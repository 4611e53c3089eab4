"""gguf-tokenize prints what llama-tokenize prints (committed outputs of
llama-tokenize for the same arguments, tests/data/tokenize_cli_refs.json)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REFS = json.loads((Path(__file__).parent / "data" / "tokenize_cli_refs.json")
                  .read_text(encoding="utf-8"))


def gguf_tokenize(*args, stdin=None):
    code = "import sys, cli; sys.argv = ['gguf-tokenize'] + sys.argv[1:]; cli.tokenize_main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          input=stdin, timeout=120)


@pytest.mark.parametrize("ref", REFS, ids=lambda r: f"{r['model']}:{' '.join(r['args'][:-2])}")
def test_output_equals_llama_tokenize(ref, smollm2_path, gemma3_path):
    out = gguf_tokenize("-m", ref["model"], *ref["args"])
    assert out.returncode == 0, out.stderr
    assert out.stdout == ref["stdout"]


def test_stdin_and_missing_input(smollm2_path):
    out = gguf_tokenize("-m", "smollm2-135m", "--stdin", "--ids", stdin="Hello world")
    assert out.stdout.strip() == "[19556, 905]"
    out = gguf_tokenize("-m", "smollm2-135m")
    assert out.returncode == 1 and out.stderr.startswith("error: ")
