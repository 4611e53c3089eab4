"""Real SmolLM2 rows in every type, quantized by llama-quantize (tests/data/
make_quant_fixtures.py): our kernels against gguf-py's dequantization of them."""
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

import quant_formats as qf


def offset_term(act_fmt, x, qtype, w):
    """Q8_1 activations: ggml's offset term uses s = f16(d*sum), not d*sum."""
    if not hasattr(act_fmt, "offset_residual"):
        return 0.0
    residual = act_fmt.offset_residual(*act_fmt.quantize(x)).astype(np.float64)
    return residual @ qf.get(qtype).block_offsets(w).astype(np.float64).T

FIXTURES = np.load(Path(__file__).parents[1] / "data" / "quant_fixtures.npz")
FIXTURE_TYPES = sorted({T[key.split("/")[0]] for key in FIXTURES.files if "/" in key}, key=int)
REGISTERED = [t for t in FIXTURE_TYPES if qf.is_supported(t)]


def test_fixtures_cover_all_22_types():
    assert len(FIXTURE_TYPES) == 22 and set(FIXTURE_TYPES) == set(qf.ALL_FORMATS)


@pytest.mark.parametrize("qtype", REGISTERED, ids=lambda t: t.name)
def test_dequantize_bit_identical_to_gguf_py(qtype):
    raw, expected = FIXTURES[f"{qtype.name}/raw"], FIXTURES[f"{qtype.name}/dequant"]
    ours = qf.dequantize(raw, qtype)
    assert ours.shape == expected.shape
    assert np.array_equal(ours.view(np.uint32), expected.astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("n_tokens", [1, 2 * qf.PREFILL_MIN_TOKENS])
@pytest.mark.parametrize("qtype", REGISTERED, ids=lambda t: t.name)
def test_matmul_on_real_rows(qtype, n_tokens):
    """Against the float product of the rounded activations, as test_registry.py."""
    raw, w_f32 = FIXTURES[f"{qtype.name}/raw"], FIXTURES[f"{qtype.name}/dequant"]
    x = np.random.default_rng(7).standard_normal((n_tokens, w_f32.shape[1])).astype(np.float32)
    act_fmt = qf.get(qf.get(qtype).VEC_DOT_TYPE)
    x_rounded = act_fmt.dequantize(*act_fmt.quantize(x)).astype(np.float64)
    expected = x_rounded @ w_f32.astype(np.float64).T
    expected += offset_term(act_fmt, x, qtype, raw)
    scale = np.abs(x_rounded) @ np.abs(w_f32.astype(np.float64)).T
    got = qf.matmul(x, raw, qtype)
    assert np.all(np.abs(got - expected) <= 1e-5 * scale)
