"""How many threads the kernels use: the cores this process may run on.

Numba's thread count is per calling thread, so every entry point that runs
kernels applies the model's count on the thread it runs on.
"""
import os


def available_cores() -> int:
    """Cores this process may use: affinity mask, then the cgroup CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call here
        n = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, n)


def configure(n_threads=None) -> int:
    import numba
    n = n_threads or available_cores()
    if n < 1:
        raise ValueError(f"n_threads must be >= 1, got {n}")
    return min(n, numba.config.NUMBA_NUM_THREADS)


def apply(n_threads: int):
    import numba
    numba.set_num_threads(n_threads)
