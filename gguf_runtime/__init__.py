"""gguf-run: a pure-CPU GGUF inference runtime in Python + Numba."""
import os

# numpy's OpenBLAS threads spin for 2^28 cycles (~0.1 s) after each BLAS call,
# on the cores Numba's threads need next: prefill alternates sgemm with Numba
# kernels hundreds of times a batch. 2^4 lets them sleep at once (SmolLM2 Q8_0
# pp512 388-556 -> 558-578 t/s, alternating runs). Read when OpenBLAS loads, so
# it applies only where numpy is not imported yet; a value already set is kept.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


def _cpu_description() -> str:
    """/proc/cpuinfo's start on Linux; Windows names vendor and family in processor()."""
    try:
        with open("/proc/cpuinfo") as f:
            return f.read(4096)
    except OSError:
        import platform
        return platform.processor()


def _amd_family(description: str) -> int:
    """The CPU family of an AMD x86 processor (25: Zen 3 and 4), 0 for others or unknown."""
    import re
    if "AuthenticAMD" not in description:
        return 0
    found = re.search(r"[Ff]amily\s*:?\s*(\d+)", description)
    return int(found.group(1)) if found else 0


# Zen 4 runs AVX-512 as two 256-bit halves: OpenBLAS picks its SkylakeX sgemm there,
# its Zen (Haswell) kernel is faster (here 190 -> 211 GFLOP/s at 512x576x3072, small
# attention products +15%; SmolLM2 Q4_0 pp512 in 3 alternating pairs 549 -> 604 t/s
# median). Zen 1-3 get that kernel anyway; Zen 5 (family 26, full-width) is left alone.
if _amd_family(_cpu_description()) == 25:
    os.environ.setdefault("OPENBLAS_CORETYPE", "Zen")

from .errors import GGUFError, ModelError
from .reader import GGUFFile, GGUFTensor

__all__ = ["GGUFFile", "GGUFTensor", "GGUFError", "ModelError", "Model"]


def __getattr__(name):
    if name == "Model":  # imported lazily: it pulls in numba and the kernels
        from .model import Model
        return Model
    raise AttributeError(name)
