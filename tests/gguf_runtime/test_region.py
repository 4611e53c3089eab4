"""gguf_runtime/region.py: work claimed from atomic counters inside one parallel region."""
import subprocess
import sys
import threading
import time
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange

from gguf_runtime import region
from quant_formats import launch

N_ITEMS = 1000


@njit(cache=True, nogil=True)
def _walk(sync, part, taken, order, out):
    """Two steps: every item of step 0 (taken[i] += 1, the claimer's part recorded),
    then a serial step 1 that sums step 0's output, after waiting for all of it."""
    i = region.claim(sync, 0, N_ITEMS, part)
    while i < N_ITEMS:
        taken[i] += 1
        order[i] = part
        out[i] = i * 2
        region.finish(sync, 0)
        i = region.claim(sync, 0, N_ITEMS, part)
    region.wait(sync, 0, N_ITEMS)
    if region.claim(sync, 1, 1, part) == 0:
        out[N_ITEMS] = out[:N_ITEMS].sum()
        region.finish(sync, 1)
    region.wait(sync, 1, 1)


@njit(cache=True, nogil=True, parallel=True)
def _run(n_threads, taken, order, out, flags):
    sync = region.new_sync(2, n_threads)
    boxed = launch.box((taken, order, out, flags))
    for part in prange(n_threads):
        taken_b, order_b, out_b, flags_b = launch.unbox(boxed)
        if flags_b[1]:
            _walk(sync, part, taken_b, order_b, out_b)


def _arrays():
    return (np.zeros(N_ITEMS, np.int64), np.full(N_ITEMS, -1, np.int64),
            np.zeros(N_ITEMS + 1, np.int64), (np.int64(7), True))


def test_every_item_is_claimed_once_and_the_serial_step_sees_them_all():
    for n_threads in (1, 2, 3, numba.get_num_threads()):
        taken, order, out, flags = _arrays()
        _run(n_threads, taken, order, out, flags)
        assert (taken == 1).all()
        assert out[N_ITEMS] == 2 * np.arange(N_ITEMS).sum()
        if n_threads == 1:  # one part: its share is everything
            assert (order == 0).all()


def test_one_thread_running_every_iteration_does_not_wait_forever():
    """With one Numba thread all iterations run in turn on it: the first claims
    everything (its own share, then the others'), the rest find it done. In a
    subprocess, so a deadlock fails the test instead of hanging the run."""
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "import numba; numba.set_num_threads(1)\n"
            "from test_region import _run, _arrays\n"
            "taken, order, out, flags = _arrays()\n"
            "_run(4, taken, order, out, flags)\n"
            "assert (taken == 1).all() and (order == order[0]).all(), (taken, order)\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def test_unbox_borrows_the_boxed_arrays():
    """The region's view of the boxed tuple writes the caller's arrays, and leaves
    their reference counts as they were."""
    taken, order, out, flags = _arrays()
    before = [sys.getrefcount(a) for a in (taken, order, out)]
    for _ in range(100):
        _run(2, taken, order, out, flags)
    assert (taken == 100).all()
    assert [sys.getrefcount(a) for a in (taken, order, out)] == before


@njit(cache=True, nogil=True)
def _wait_prefetching(sync, span, cursor):
    return region.wait_prefetching(sync, 0, 1, span, cursor)


def test_wait_prefetching_reads_ahead_only_while_it_waits_and_within_its_span():
    """A finished step: the cursor comes back as it was. A step another thread finishes
    0.2 s later: the cursor has walked the whole span a line a check and stopped at its
    end (an array this test owns); an empty span is never read."""
    weights = np.zeros(64 * 1024, np.uint8)
    finish = njit(lambda s: region.finish(s, 0))
    sync = region.new_sync(1, 2)
    finish(sync)
    span = (np.int64(weights.ctypes.data), np.int64(weights.nbytes))
    assert _wait_prefetching(sync, span, np.int64(128)) == 128
    for n_bytes in (weights.nbytes, 0):
        sync, result = region.new_sync(1, 2), []
        span = (np.int64(weights.ctypes.data), np.int64(n_bytes))
        waiter = threading.Thread(target=lambda: result.append(
            _wait_prefetching(sync, span, np.int64(0))))
        waiter.start()
        time.sleep(0.2)
        finish(sync)
        waiter.join()
        assert result == [n_bytes]
