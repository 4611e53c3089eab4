"""Numba's on-disk cache, made safe for kernels that call kernels in other modules.

Numba stamps a cached function with its own source file only. A kernel in q5_0.py that
inlines kquant_quantize.make_qx_quants keeps its cached machine code when only
kquant_quantize.py changes (an upgrade, an edit), and silently computes with the old
callee: seen here, Q5_0 bytes differing from ggml's until the cache was cleared.

install() wraps Numba's cache locators so that, for functions defined in this project's
packages, the stamp is a digest of every source file of those packages: any change to
any of them invalidates all their cached kernels. Functions of other libraries keep
Numba's own behaviour. It must run before the kernel modules are imported (their
@njit(cache=True) picks a locator at decoration time).
"""
import functools
import hashlib
from pathlib import Path

PACKAGES = [Path(__file__).resolve().parent, Path(__file__).resolve().parent.parent / "gguf_runtime"]
_installed = False


@functools.lru_cache(maxsize=None)
def tree_digest() -> str:
    """sha256 over the names and contents of every .py file in PACKAGES."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        for path in sorted(package.glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _ours(py_file) -> bool:
    try:
        return Path(py_file).resolve().parent in PACKAGES
    except (OSError, ValueError):
        return False


def _tree_stamped(locator_class):
    """A subclass of one of Numba's locators: same place, project-wide stamp, and it
    only takes functions defined in this project."""
    class TreeStamped(locator_class):
        def get_source_stamp(self):
            return tree_digest()

        @classmethod
        def from_function(cls, py_func, py_file):
            return super().from_function(py_func, py_file) if _ours(py_file) else None

    TreeStamped.__name__ = f"TreeStamped{locator_class.__name__}"
    return TreeStamped


def install():
    """Put the tree-stamped locators ahead of Numba's own (idempotent). If Numba's
    internals ever change shape, caching falls back to Numba's default behaviour."""
    global _installed
    if _installed:
        return
    _installed = True
    from numba.core import caching
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    originals = list(getattr(impl, "_locator_classes", []))
    if originals:  # numba >= 0.61 names it CacheImpl, older versions _CacheImpl
        impl._locator_classes = [_tree_stamped(c) for c in originals] + originals
