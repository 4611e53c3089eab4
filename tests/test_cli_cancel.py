"""Ctrl-C in the long-running tools: exit code 130, a short message, no traceback."""
import sys
from pathlib import Path

import pytest

from interrupt import interrupt_after

TEXT = Path(__file__).parent / "data" / "english_text.txt"


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
