"""Run the command-line tools in a child process, as a user would; kill them mid-run.
Used by the tests/test_cli_*.py files."""
import random
import signal
import subprocess
import sys
import time


def entry_code(entry):
    """Python code that runs cli.<entry>_main with the command line after -c."""
    return f"import sys, cli; sys.argv = ['gguf-{entry}'] + sys.argv[1:]; cli.{entry}_main()"


def run_tool(entry, *args, timeout=600, cwd=None):
    return subprocess.run([sys.executable, "-c", entry_code(entry), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def kill_at_random_points(entry, args, out, describe, kills=20, seed=7):
    """Run the tool once to time it, then start it `kills` times and SIGKILL it at a
    random moment of that span. After each kill, `out` must be absent or a complete
    file: describe(out) (which raises on a broken file) equals the full run's.
    Returns the set of outcomes seen ("absent", "complete")."""
    cmd = [sys.executable, "-c", entry_code(entry), *map(str, args)]
    start = time.monotonic()
    subprocess.run(cmd, check=True, timeout=600)
    duration = time.monotonic() - start
    expected = describe(out)
    rng = random.Random(seed)
    outcomes = set()
    for _ in range(kills):
        out.unlink(missing_ok=True)
        proc = subprocess.Popen(cmd)
        time.sleep(rng.uniform(0, duration))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if out.exists():
            assert describe(out) == expected
            outcomes.add("complete")
        else:
            outcomes.add("absent")
    return outcomes


def gguf_tensor_list(path):
    """(name, type, bytes) of every tensor; GGUFError if the file is not complete."""
    from gguf_runtime.reader import GGUFFile
    with GGUFFile(path) as f:
        return [(t.name, t.type, t.nbytes) for t in f.tensors]
