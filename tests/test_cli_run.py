"""gguf-run and gguf-perplexity as a user runs them."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

NEAR_TIE = 1.0  # as tests/gguf_runtime/test_model.py
TEXT = Path(__file__).parent / "data" / "english_text.txt"


def cli(entry, *args, timeout=300):
    code = f"import sys, cli; sys.argv = ['{entry}'] + sys.argv[1:]; cli.{entry}_main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout)


def tie_free_cases(llama_refs, name, count):
    """Prompts whose llama.cpp greedy path never has a near-tie: there the text
    must be identical to llama-completion's."""
    cases = [c for c in llama_refs["greedy"][name]
             if min(top[0] - top[1] for top in c["top_logits"]) >= NEAR_TIE]
    return cases[:count]


@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_greedy_completion_equals_llama_completion(model_paths, llama_refs, name):
    cases = tie_free_cases(llama_refs, name, 2)
    assert cases
    for case in cases:
        out = cli("run", "-m", str(model_paths[name]), "-p", case["prompt"], "--temp", "0",
                  "-no-cnv", "-n", "32", "--no-display-prompt", "-c", "512")
        assert out.returncode == 0, out.stderr
        assert out.stdout == case["completion"]
        assert re.search(r"generation: 32 tokens in [0-9.]+ s", out.stderr)


@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_greedy_completion_with_q8_0_kv_cache_equals_llama_completion(model_paths, llama_refs,
                                                                      name):
    """-ctk q8_0 -ctv q8_0 on the tie-free prompts, against llama-completion's."""
    cases = llama_refs["completion_kv"][name]["q8_0/q8_0"]
    assert cases
    for prompt, completion in cases.items():
        out = cli("run", "-m", str(model_paths[name]), "-p", prompt, "--temp", "0", "-no-cnv",
                  "-n", "32", "--no-display-prompt", "-c", "512", "-ctk", "q8_0", "-ctv", "q8_0")
        assert out.returncode == 0, out.stderr
        assert out.stdout == completion


def test_run_bad_model_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    out = cli("run", "-m", str(bad), "-p", "hi")
    assert out.returncode == 1
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1


def test_perplexity_prints_as_llama_perplexity(model_paths):
    out = cli("perplexity", "-m", str(model_paths["smollm2-135m"]), "-f", str(TEXT),
              "-c", "128", "--chunks", "3")
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"\[1\][0-9.]+,\[2\][0-9.]+,\[3\][0-9.]+,\n", out.stdout)
    assert re.search(r"^Final estimate: PPL = [0-9.]+ \+/- [0-9.]+$", out.stderr, re.M)
