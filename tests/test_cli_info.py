"""gguf-info as a user runs it: a real model, JSON output, bad files."""
import json
import subprocess
import sys



def gguf_info(*args):
    code = "import sys, cli; sys.argv = ['gguf-info'] + sys.argv[1:]; cli.info_main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120)


def test_json_has_numpy_order_shapes(smollm2_path):
    out = gguf_info("--json", str(smollm2_path))
    assert out.returncode == 0
    data = json.loads(out.stdout)
    assert data["metadata"]["general.architecture"] == "llama"
    embd = next(t for t in data["tensors"] if t["name"] == "token_embd.weight")
    assert embd["shape"] == [49152, 576] and embd["type"] == "Q8_0"
    assert embd["nbytes"] == 49152 * 576 // 32 * 34


def test_known_name_is_resolved_and_listed(smollm2_path):
    out = gguf_info("smollm2-135m")
    assert out.returncode == 0
    assert "architecture llama" in out.stdout and "blk.0.attn_q.weight" in out.stdout


def test_bad_file_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 16)
    out = gguf_info(str(bad))
    assert out.returncode == 1
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1
    assert "Traceback" not in out.stderr
