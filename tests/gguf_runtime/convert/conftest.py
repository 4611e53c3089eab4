"""Checkpoints for the gguf-convert tests, built once per session under the same
directory names as tests/data/make_convert_refs.py uses (general.name comes from
the directory name)."""
import json
from pathlib import Path

import pytest

REFS = Path(__file__).parents[2] / "data" / "convert_refs.json"


@pytest.fixture(scope="session")
def convert_refs():
    return json.loads(REFS.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def checkpoint(smollm2_path, gemma3_path, tmp_path_factory):
    """checkpoint(name) -> directory, for the names in make_convert_refs.CASES."""
    import hf_checkpoints
    root = tmp_path_factory.mktemp("hf")

    def build(name):
        if name == "smollm2-f32":
            return hf_checkpoints.from_smollm2(smollm2_path, root / name, dtype="F32")
        if name == "smollm2-bf16":
            return hf_checkpoints.from_smollm2(smollm2_path, root / name, dtype="BF16")
        if name == "gemma3-bf16":
            return hf_checkpoints.from_gemma3(gemma3_path, root / name, dtype="BF16")
        return hf_checkpoints.tiny(name.removeprefix("tiny-"), root / name, smollm2_path)
    return build
