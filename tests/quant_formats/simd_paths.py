"""The code paths of quant_formats/simd.py, for the tests of the decode kernels' integer
cores (test_interleave.py, test_interleave_nibbles.py)."""
import numpy as np
from numba import njit

from quant_formats import interleave, simd

ROWS = interleave.ROWS

# The code paths of simd's instructions, by the features left on: VNNI, pmaddubsw +
# pmaddwd (x86 without VNNI), portable IR. On a CPU without a feature the paths that
# need it check the next one down (by design, not a skip).
PATHS = {"vnni": set(), "pmaddubsw": {"avx512vnni"}, "portable-ir": set(simd.X86_FEATURES)}


def runner(intrinsic_fn):
    """A new function per call: compiled with simd.DISABLED of now."""
    @njit
    def run(q_block, k0, x, t0, n_tokens, o):
        out = np.full((interleave.TOKENS, ROWS), 777, np.int32)
        intrinsic_fn(out, q_block, k0, x, t0, n_tokens, o)
        return out
    return run


CASES = [(1, 0, 0), (4, 0, 32), (3, 2, 64), (2, 5, 0), (4, 4, 64)]  # n_tokens, t0, o
