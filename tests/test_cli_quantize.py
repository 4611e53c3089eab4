"""gguf-quantize from the command line: bad input, Ctrl-C and kills leave no broken file."""
import sys

import pytest

from interrupt import interrupt_after
from tools import gguf_tensor_list, kill_at_random_points, run_tool




def gguf_quantize(*args):
    return run_tool("quantize", *args)


def assert_one_line_error(proc, fragment):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr


def test_bad_arguments_give_one_line(tmp_path, smollm2_path):
    not_gguf = tmp_path / "notes.txt"
    not_gguf.write_text("hello")
    out = tmp_path / "out.gguf"
    assert_one_line_error(gguf_quantize(tmp_path / "missing.gguf", out, "Q4_0"), "no such file")
    assert_one_line_error(gguf_quantize(tmp_path, out, "Q4_0"), "is a directory")
    assert_one_line_error(gguf_quantize(not_gguf, out, "Q4_0"), "not a GGUF file")
    assert_one_line_error(gguf_quantize(smollm2_path, out, "Q9_X"), "invalid type 'Q9_X'")
    assert_one_line_error(gguf_quantize(smollm2_path, tmp_path, "Q4_0"), "is a directory")
    assert_one_line_error(gguf_quantize(smollm2_path, tmp_path / "no" / "x.gguf", "Q4_0"),
                          "no such directory")
    assert_one_line_error(gguf_quantize(smollm2_path, smollm2_path, "Q4_0"),
                          "input and output files are the same")
    assert_one_line_error(gguf_quantize("--tensor-type", "attn_q", smollm2_path, out, "Q4_0"),
                          "PATTERN=TYPE")
    assert not out.exists()


def test_refusals_as_llama_quantize(tmp_path, smollm2_path):
    out = tmp_path / "out.gguf"
    assert_one_line_error(gguf_quantize(smollm2_path, out, "Q8_0"),
                          "requantizing is disabled (use --allow-requantize)")
    assert_one_line_error(gguf_quantize("--allow-requantize", smollm2_path, out, "IQ2_XXS"),
                          "requires an importance matrix")
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind either


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child needs POSIX")
def test_ctrl_c_exits_130_and_leaves_nothing(tmp_path, smollm2_path):
    out = tmp_path / "out.gguf"
    code, err, _ = interrupt_after("quantize", ["--allow-requantize", str(smollm2_path),
                                                str(out), "Q4_K_M", "1"], "stderr")
    assert code == 130
    assert "Traceback" not in err and err.rstrip().splitlines()[-1] == "interrupted"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL needs POSIX")
def test_sigkill_at_random_points_never_leaves_a_partial_output(tmp_path, smollm2_path):
    """20 kills spread over a whole run: the output is absent or a complete file."""
    out = tmp_path / "out.gguf"
    outcomes = kill_at_random_points("quantize", ["-q", "--allow-requantize", smollm2_path,
                                                  out, "Q8_0", "1"], out, gguf_tensor_list)
    assert "absent" in outcomes  # the kills did land while it was writing


class _FullDisk:
    """A file whose writes fail with ENOSPC once `room` bytes are written."""

    def __init__(self, f, room):
        self._f, self._room = f, room

    def write(self, data):
        import errno
        self._room -= len(memoryview(data).cast("B"))
        if self._room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def test_disk_full_gives_one_line_and_leaves_nothing(tmp_path, smollm2_path, monkeypatch,
                                                     capsys):
    import builtins

    import cli
    from gguf_runtime import atomic
    monkeypatch.setattr(atomic, "open", lambda path, mode: _FullDisk(builtins.open(path, mode),
                                                                      5 << 20), raising=False)
    monkeypatch.setattr(sys, "argv", ["gguf-quantize", "-q", "--allow-requantize",
                                      str(smollm2_path), str(tmp_path / "out.gguf"), "Q8_0"])
    with pytest.raises(SystemExit) as exit_info:
        cli.quantize_main()
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert err.strip() == "error: [Errno 28] No space left on device"
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_directory_gives_one_line(tmp_path, smollm2_path, monkeypatch,
                                                    capsys):
    """As root every directory is writable, so the permission answer is simulated:
    the check must refuse before any work starts."""
    import os

    import cli
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if os.fspath(path) == str(
        tmp_path) and mode == os.W_OK else real_access(path, mode))
    monkeypatch.setattr(sys, "argv", ["gguf-quantize", "--allow-requantize", str(smollm2_path),
                                      str(tmp_path / "out.gguf"), "Q8_0"])
    with pytest.raises(SystemExit) as exit_info:
        cli.quantize_main()
    assert exit_info.value.code != 0
    assert capsys.readouterr().err.strip() == f"Error: {tmp_path}: not writable"
    assert list(tmp_path.iterdir()) == []
