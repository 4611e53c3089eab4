"""gguf_runtime/quantize.py: whole files byte-identical to llama-quantize's.

SmolLM2 (Q4_1) requantized to F32, then that F32 to Q4_0, Q8_0, Q4_K_M, Q6_K and IQ4_XS,
without and with llama-imatrix's importance matrix; tests/data/quantize_refs.json holds
the sha256 of llama-quantize's outputs for the same commands (make_quantize_refs.py)."""
import hashlib
import json
from pathlib import Path

import pytest

from gguf_runtime.quantize import quantize_model
from gguf_runtime.quantize_mix import Options
from gguf_runtime.reader import GGUFFile

DATA = Path(__file__).parents[1] / "data"
REFS = json.loads((DATA / "quantize_refs.json").read_text())["files"]


def assert_same_as_llama(path, key):
    expected = REFS[key]
    if hashlib.sha256(path.read_bytes()).hexdigest() == expected["sha256"]:
        return
    with GGUFFile(path) as f:
        ours = {t.name: hashlib.sha256(t.data).hexdigest() for t in f.tensors}
    differing = sorted(n for n in expected["tensors"] if ours.get(n) != expected["tensors"][n])
    pytest.fail(f"{key}: file differs from llama-quantize's; tensors differing: "
                f"{differing[:8] or 'none (metadata or layout)'}")


@pytest.fixture(scope="module")
def smollm2_f32(smollm2_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("quantize") / "smollm2-f32.gguf"
    quantize_model(smollm2_path, out, "F32", Options("F32"), allow_requantize=True, quiet=True)
    return out


def test_requantize_to_f32_identical(smollm2_f32):
    assert_same_as_llama(smollm2_f32, "F32")


@pytest.mark.parametrize("key", [k for k in REFS if k != "F32"])
def test_quantize_identical_to_llama_quantize(smollm2_f32, key, tmp_path, monkeypatch):
    file_type, _, weighting = key.partition("+")
    imatrix = None
    if weighting:
        # quantize.imatrix.file records the argument as given: run where llama's ran
        monkeypatch.chdir(DATA)
        imatrix = "imatrix_smollm2.gguf"
    out = tmp_path / f"{key}.gguf"
    quantize_model(smollm2_f32, out, file_type, Options(file_type), imatrix_path=imatrix,
                   quiet=True)
    assert_same_as_llama(out, key)
