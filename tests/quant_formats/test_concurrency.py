"""Kernels called from several Python threads at once (a desktop app's workers,
two models): same results as alone, no abort from Numba's threading layer."""
import threading

import numba
import numpy as np
from gguf import GGMLQuantizationType as T

import quant_formats as qf
from quant_formats.random import random_blocks


def test_parallel_kernels_from_two_threads_match_serial_results():
    jobs = [(T.Q4_K, random_blocks(T.Q4_K, 96, 512, seed=1)),
            (T.Q8_0, random_blocks(T.Q8_0, 96, 512, seed=2))]
    x = np.random.default_rng(0).standard_normal((2, 512)).astype(np.float32)
    expected = [qf.matmul(x, w, qtype) for qtype, w in jobs]
    results, errors = [[], []], []

    def work(i):
        try:
            for _ in range(50):
                results[i].append(qf.matmul(x, jobs[i][1], jobs[i][0]))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    for i in range(2):
        assert len(results[i]) == 50
        assert all(np.array_equal(r, expected[i]) for r in results[i])
    assert numba.threading_layer() in ("tbb", "omp")  # workqueue would abort here
