"""gguf-run: a pure-CPU GGUF inference runtime in Python + Numba."""
from .errors import GGUFError, ModelError
from .reader import GGUFFile, GGUFTensor

__all__ = ["GGUFFile", "GGUFTensor", "GGUFError", "ModelError", "Model"]


def __getattr__(name):
    if name == "Model":  # imported lazily: it pulls in numba and the kernels
        from .model import Model
        return Model
    raise AttributeError(name)
