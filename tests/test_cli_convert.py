"""gguf-convert from the command line: progress on stderr (silenced by -q),
one-line errors, atomic output (Ctrl-C or a kill leaves no OUT and no temp file)."""
import json
import os
import subprocess
import sys

import pytest

import hf_checkpoints
from interrupt import interrupt_after
from tools import gguf_tensor_list, kill_at_random_points, run_tool


def run_convert(*args):
    return run_tool("convert", *args, timeout=300)


@pytest.fixture(scope="module")
def tiny_qwen2(smollm2_path, tmp_path_factory):
    return hf_checkpoints.tiny("qwen2", tmp_path_factory.mktemp("cli") / "tiny-qwen2", smollm2_path)


@pytest.fixture(scope="module")
def smollm2_bf16(smollm2_path, tmp_path_factory):
    return hf_checkpoints.from_smollm2(smollm2_path, tmp_path_factory.mktemp("cli") / "smollm2",
                                       dtype="BF16")


def test_progress_and_output(tiny_qwen2, tmp_path):
    out = tmp_path / "m.gguf"
    result = run_convert(tiny_qwen2, "--outfile", out, "--outtype", "q8_0")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    tensor_lines = [line for line in lines if line.startswith("[")]
    assert len(tensor_lines) == 27  # 2 layers x 12 (q/k/v biases), embeddings, output, norm
    assert all("MB" in line and "ETA" in line for line in tensor_lines)
    assert tensor_lines[-1].startswith("[27/27]")
    from gguf_runtime.reader import GGUFFile
    with GGUFFile(out) as f:
        assert f.metadata["general.architecture"] == "qwen2"
        assert len(f.tensors) == 27
    assert os.listdir(tmp_path) == ["m.gguf"]


def test_quiet(tiny_qwen2, tmp_path):
    result = run_convert(tiny_qwen2, "--outfile", tmp_path / "m.gguf", "-q")
    assert result.returncode == 0 and result.stderr == "" and result.stdout == ""


def test_default_outfile_name(tiny_qwen2, tmp_path):
    """Without --outfile: their naming convention, inside the checkpoint directory."""
    import shutil
    model_dir = tmp_path / "tiny-qwen2"
    shutil.copytree(tiny_qwen2, model_dir)
    result = run_convert(model_dir, "--outtype", "f32", "-q")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in model_dir.glob("*.gguf")) == ["Tiny-Qwen2-6.4M-F32.gguf"]


def _one_line_error(result, fragment):
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert fragment in result.stderr and "Traceback" not in result.stderr


def test_bad_inputs(tiny_qwen2, tmp_path):
    _one_line_error(run_convert(tmp_path / "missing"), "not a directory")
    _one_line_error(run_convert(tmp_path), "no config.json")
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (bad / name).write_bytes((tiny_qwen2 / name).read_bytes())
    config = json.loads((tiny_qwen2 / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps(dict(config, architectures=["GPT2LMHeadModel"])))
    _one_line_error(run_convert(bad), "unsupported architecture 'GPT2LMHeadModel'")
    (bad / "config.json").write_text(json.dumps(config))
    (bad / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    _one_line_error(run_convert(bad), "not valid JSON")
    (bad / "config.json").write_text("{")
    _one_line_error(run_convert(bad), "config.json")


def test_unwritable_output(tiny_qwen2, tmp_path):
    _one_line_error(run_convert(tiny_qwen2, "--outfile", tmp_path / "no" / "m.gguf"),
                    "does not exist")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = run_convert(tiny_qwen2, "--outfile", locked / "m.gguf")
        if os.geteuid() != 0:  # root writes anywhere
            _one_line_error(result, "ermission denied")
    finally:
        locked.chmod(0o700)


def test_ctrl_c_leaves_nothing(smollm2_bf16, tmp_path):
    out = tmp_path / "m.gguf"
    code, err, _ = interrupt_after("convert", [str(smollm2_bf16), "--outfile", str(out),
                                               "--outtype", "q8_0"], "stderr")
    assert code == 130 and err.rstrip().endswith("interrupted")
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL needs POSIX")
def test_sigkill_at_random_points_never_leaves_a_partial_output(smollm2_bf16, tmp_path):
    """20 kills spread over a whole run: OUT is absent or a complete file (a kill
    cannot remove the temporary file; it never carries OUT's name)."""
    out = tmp_path / "m.gguf"
    outcomes = kill_at_random_points("convert", [smollm2_bf16, "--outfile", out, "--outtype",
                                                 "q8_0", "-q"], out, gguf_tensor_list, seed=11)
    assert "absent" in outcomes


def test_peak_memory_is_bounded(smollm2_bf16, tmp_path):
    """Peak RSS <= 4 x the largest tensor (token_embd as f32: 113 MB) + 300 MB, with
    the output in f32 (the largest conversion). VmHWM, not ru_maxrss: the latter
    keeps the forking parent's high-water mark across exec."""
    code = ("import re, sys, cli; sys.argv = ['gguf-convert'] + sys.argv[1:]\n"
            "try:\n    cli.convert_main()\nexcept SystemExit:\n    pass\n"
            "status = open('/proc/self/status').read()\n"
            "print(re.search(r'VmHWM:\\s+(\\d+) kB', status)[1])")
    result = subprocess.run([sys.executable, "-c", code, str(smollm2_bf16), "--outfile",
                             str(tmp_path / "m.gguf"), "--outtype", "f32", "-q"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    peak_mb = int(result.stdout.split()[-1]) / 1024
    largest_mb = 49152 * 576 * 4 / 2**20
    assert peak_mb <= 4 * largest_mb + 300, peak_mb
