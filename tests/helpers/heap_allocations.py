"""Counting Numba's heap allocations (NRT's counter), for tests that code allocates
nothing per call or per row group."""
from contextlib import contextmanager

from numba.core.runtime import _nrt_python, rtsys


@contextmanager
def counting():
    """Counting on while the block runs (as it was after); yields a function giving the
    allocations made since the block began."""
    enabled = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    before = rtsys.get_allocation_stats().alloc
    try:
        yield lambda: rtsys.get_allocation_stats().alloc - before
    finally:
        if not enabled:
            _nrt_python.memsys_disable_stats()
