"""Ctrl-C in the long-running tools: exit code 130, a short message, no traceback."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TEXT = Path(__file__).parent / "data" / "english_text.txt"


def interrupt_after(entry, args, ready, timeout=120):
    """Start the tool, wait until `ready` shows on its stream, send SIGINT."""
    code = f"import sys, cli; sys.argv = ['{entry}'] + sys.argv[1:]; cli.{entry}_main()"
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    stream = proc.stdout if ready == "stdout" else proc.stderr
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stream.read(1):  # something was written: the tool is working
            break
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err, time.monotonic() - sent


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child needs POSIX")
@pytest.mark.parametrize("entry,args,ready", [
    ("run", ["-m", "smollm2-135m", "-p", "Once upon a time", "-no-cnv", "-n", "-1",
             "--ignore-eos", "-c", "2048"], "stdout"),
    ("perplexity", ["-m", "smollm2-135m", "-f", str(TEXT), "-c", "512"], "stderr"),
])
def test_ctrl_c_exits_130_with_one_line(smollm2_path, entry, args, ready):
    code, err, _ = interrupt_after(entry, args, ready)
    assert code == 130
    assert "Traceback" not in err
    assert err.rstrip().splitlines()[-1] == "interrupted"
