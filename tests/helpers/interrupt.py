"""Send Ctrl-C (SIGINT) to a running tool; used by tests/test_cli_cancel.py and
bench/cancel.py."""
import signal
import subprocess
import sys
import time


def interrupt_after(entry, args, ready, timeout=120):
    """Start the tool, wait until `ready` shows on its stream, send SIGINT."""
    # A job started in the background of a non-interactive shell (nohup, `&`, some CI
    # runners) inherits SIGINT ignored, and so would the tool: give it the default
    # Ctrl-C behaviour a terminal user has.
    code = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            f"import sys, cli; sys.argv = ['{entry}'] + sys.argv[1:]; cli.{entry}_main()")
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
