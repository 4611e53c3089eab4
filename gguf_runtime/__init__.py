"""gguf-run: a pure-CPU GGUF inference runtime in Python + Numba."""
import os

# numpy's OpenBLAS threads spin for 2^28 cycles (~0.1 s) after each BLAS call,
# on the cores Numba's threads need next: prefill alternates sgemm with Numba
# kernels hundreds of times a batch. 2^4 lets them sleep at once (SmolLM2 Q8_0
# pp512 388-556 -> 558-578 t/s, alternating runs). Read when OpenBLAS loads, so
# it applies only where numpy is not imported yet; a value already set is kept.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from .errors import GGUFError, ModelError
from .reader import GGUFFile, GGUFTensor

__all__ = ["GGUFFile", "GGUFTensor", "GGUFError", "ModelError", "Model"]


def __getattr__(name):
    if name == "Model":  # imported lazily: it pulls in numba and the kernels
        from .model import Model
        return Model
    raise AttributeError(name)
