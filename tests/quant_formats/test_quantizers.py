"""Every format's quantizer against ggml's own (ggml_quantize_chunk, the function
llama-quantize calls), byte for byte, with and without an importance matrix.

References: tests/data/quantizer_refs.npz, made by tests/data/make_quantizer_refs.py
from real SmolLM2 rows, Gaussian rows (scaled, outliers, heavy tails) and edge rows
(zeros, constants, a single spike)."""
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

import quant_formats as qf

REFS = np.load(Path(__file__).parents[1] / "data" / "quantizer_refs.npz")
CASES = sorted(k for k in REFS.files if not k.startswith(("input/", "imatrix/")))


@pytest.mark.parametrize("key", CASES)
def test_quantize_byte_identical_to_ggml(key):
    type_name, input_set, weighting = key.split("/")
    x = REFS[f"input/{input_set}"]
    imatrix = REFS[f"imatrix/{input_set}"] if weighting == "imatrix" else None
    ours = qf.quantize(x, T[type_name], imatrix)
    expected = REFS[key]
    assert ours.dtype == np.uint8 and ours.shape == expected.shape
    differing_rows = np.flatnonzero((ours != expected).any(axis=1))
    assert differing_rows.size == 0, f"rows {differing_rows.tolist()} differ"


def test_quantize_rejects_partial_blocks():
    with pytest.raises(ValueError, match="block size"):
        qf.quantize(np.zeros((2, 100), np.float32), T.Q4_0)
    with pytest.raises(ValueError, match="importance matrix"):
        qf.quantize(np.zeros((2, 256), np.float32), T.Q4_K, np.ones(255, np.float32))
