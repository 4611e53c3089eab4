"""Every registered block format against gguf-py and against its own numpy reference,
on random blocks (quant_formats.random)."""
import gguf
import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

import quant_formats as qf


def offset_term(act_fmt, x, qtype, w):
    """Q8_1 activations: ggml's offset term uses s = f16(d*sum), not d*sum."""
    if not hasattr(act_fmt, "offset_residual"):
        return 0.0
    residual = act_fmt.offset_residual(*act_fmt.quantize(x)).astype(np.float64)
    return residual @ qf.get(qtype).block_offsets(w).astype(np.float64).T
from quant_formats.random import random_blocks

ALL_TYPES = sorted(qf.FORMATS, key=int)

# ggml-cpu.c type_traits_cpu[...].vec_dot_type, typed out from the C source.
GGML_VEC_DOT_TYPE = {
    T.F32: T.F32, T.F16: T.F16, T.BF16: T.BF16,
    T.Q4_0: T.Q8_0, T.Q5_0: T.Q8_0, T.Q8_0: T.Q8_0, T.IQ4_NL: T.Q8_0,
    T.Q4_1: T.Q8_1, T.Q5_1: T.Q8_1,
    **{t: T.Q8_K for t in (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_XS, T.IQ3_XXS,
                           T.IQ3_S, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ1_S, T.IQ1_M)},
}


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_layout_matches_gguf_size_table(qtype):
    fmt = qf.get(qtype)
    assert (fmt.BLOCK_SIZE, fmt.BLOCK_DTYPE.itemsize) == GGML_QUANT_SIZES[qtype]
    assert fmt.QTYPE == qtype
    assert fmt.VEC_DOT_TYPE == GGML_VEC_DOT_TYPE[qtype]


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_dequantize_bit_identical_to_gguf_py(qtype):
    w = random_blocks(qtype, 8, 512)
    ours = qf.dequantize(w, qtype)
    theirs = gguf.quants.dequantize(w, qtype)
    assert ours.shape == theirs.shape == (8, 512)
    assert np.array_equal(ours.view(np.uint32), theirs.astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_numpy_reference_equals_kernel(qtype):
    fmt = qf.get(qtype)
    w = random_blocks(qtype, 4, 512, seed=1)
    blocks = w.reshape(-1).view(fmt.BLOCK_DTYPE)
    ref = fmt.dequantize_reference(blocks).reshape(4, 512)
    assert np.array_equal(ref.view(np.uint32), qf.dequantize(w, qtype).view(np.uint32))


@pytest.mark.parametrize("n_tokens", [1, 3, 2 * qf.PREFILL_MIN_TOKENS])
@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_matmul_equals_float_product_of_rounded_activations(qtype, n_tokens):
    """matmul == dequant(quant(x)) @ dequant(W).T up to float32 summation order.

    The only approximation matmul makes is rounding x to its vec_dot format, as
    ggml does; with that rounding applied to x in float, the results agree to a
    relative 1e-5 of sum(|x||w|) (f32 sums of ~512 products in another order)."""
    w = random_blocks(qtype, 37, 512, seed=2)
    x = np.random.default_rng(3).standard_normal((n_tokens, 512)).astype(np.float32)
    act_fmt = qf.get(qf.get(qtype).VEC_DOT_TYPE)
    x_rounded = act_fmt.dequantize(*act_fmt.quantize(x))
    w_f32 = qf.dequantize(w, qtype).astype(np.float64)
    expected = x_rounded.astype(np.float64) @ w_f32.T
    expected += offset_term(act_fmt, x, qtype, w)
    scale = np.abs(x_rounded).astype(np.float64) @ np.abs(w_f32).T
    got = qf.matmul(x, w, qtype)
    assert got.dtype == np.float32 and got.shape == (n_tokens, 37)
    assert np.all(np.abs(got - expected) <= 1e-5 * scale + 1e-30)


@pytest.mark.parametrize("act_type", [T.Q8_0, T.Q8_1, T.Q8_K, T.F16, T.BF16, T.F32],
                         ids=lambda t: t.name)
def test_activation_rounding_is_within_half_a_step(act_type):
    """Each activation element is off by at most half its block's step (+ f16 scale rounding)."""
    x = (np.random.default_rng(4).standard_normal((5, 512)) *
         np.logspace(-3, 3, 512)).astype(np.float32)
    fmt = qf.get(act_type)
    x_rounded = fmt.dequantize(*fmt.quantize(x))
    block = 256 if act_type == T.Q8_K else 32 if act_type in (T.Q8_0, T.Q8_1) else 1
    amax = np.abs(x).reshape(5, -1, block).max(axis=2, keepdims=True)
    if block == 1:  # float formats: relative rounding of the format
        rel = {T.F32: 0, T.F16: 2.0 ** -11, T.BF16: 2.0 ** -8}[act_type]
        assert np.all(np.abs(x_rounded - x) <= rel * np.abs(x) + 1e-7)
    else:
        step = amax / 127 * (1 + 2.0 ** -10)
        err = np.abs(x_rounded - x).reshape(5, -1, block)
        assert np.all(err <= step / 2 + step * 2.0 ** -10 * 127)


ROUNDING_TYPES = [t for t in (T.Q8_0, T.Q8_1, T.Q8_K) if hasattr(qf.get(t), "rounded")]


@pytest.mark.parametrize("act_type", ROUNDING_TYPES, ids=lambda t: t.name)
def test_one_pass_rounding_is_dequantize_of_quantize(act_type):
    """The prefill path's rounded(x) (no int8 copy) equals dequantize(quantize(x)) bit
    for bit: zero blocks, exact ties, signs, magnitudes over 12 decades."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((40, 1024)) * np.logspace(-6, 6, 1024)).astype(np.float32)
    x[3, :256] = 0
    x[4, :256] = np.repeat(np.float32([0.5, -1.5, 2.5, 127.0]), 64)  # ties after scaling
    x[5, 7] = -1e4
    fmt = qf.get(act_type)
    expected = fmt.dequantize(*fmt.quantize(x))
    assert np.array_equal(fmt.rounded(x).view(np.uint32), expected.view(np.uint32))
    assert {T.Q8_0, T.Q8_K} <= set(ROUNDING_TYPES)  # the prefill path of most formats


PACKED_TYPES = [t for t in ALL_TYPES if hasattr(qf.get(t), "pack")]


def test_decode_layout_covers_the_common_formats():
    assert {T.Q4_0, T.Q4_1, T.Q5_0, T.Q8_0, T.IQ4_NL} <= set(PACKED_TYPES)


@pytest.mark.parametrize("n_out", [37, 64, 200])
@pytest.mark.parametrize("n_tokens", [1, 3, 2 * qf.PREFILL_MIN_TOKENS])
@pytest.mark.parametrize("qtype", PACKED_TYPES, ids=lambda t: t.name)
def test_packed_matmul_equals_float_product(qtype, n_tokens, n_out):
    """The decode layout (interleave.py), padded groups included, gives the float
    product of the rounded activations, as the row-major kernels do (same bound)."""
    w = random_blocks(qtype, n_out, 512, seed=5)
    x = np.random.default_rng(6).standard_normal((n_tokens, 512)).astype(np.float32)
    act_fmt = qf.get(qf.get(qtype).VEC_DOT_TYPE)
    x_rounded = act_fmt.dequantize(*act_fmt.quantize(x))
    w_f32 = qf.dequantize(w, qtype).astype(np.float64)
    expected = x_rounded.astype(np.float64) @ w_f32.T + offset_term(act_fmt, x, qtype, w)
    scale = np.abs(x_rounded).astype(np.float64) @ np.abs(w_f32).T
    out = np.full((n_tokens, n_out), np.nan, np.float32)
    qf.matmul(x, w, qtype, out, packed=qf.pack(w, qtype))
    assert np.all(np.abs(out - expected) <= 1e-5 * scale + 1e-30)


@pytest.mark.parametrize("qtype", PACKED_TYPES, ids=lambda t: t.name)
def test_packed_decode_is_bit_identical_to_the_row_major_kernel(qtype):
    """One token: the same integer block sums and float steps in the same order."""
    w = random_blocks(qtype, 200, 512, seed=7)
    x = np.random.default_rng(8).standard_normal((1, 512)).astype(np.float32)
    packed = qf.matmul(x, w, qtype, packed=qf.pack(w, qtype))
    if qtype == T.IQ4_NL:  # its row kernel adds four blocks per step (another order)
        np.testing.assert_allclose(packed, qf.matmul(x, w, qtype), rtol=1e-5, atol=1e-5)
    else:
        assert np.array_equal(packed.view(np.uint32), qf.matmul(x, w, qtype).view(np.uint32))


INT8_PREFILL_TYPES = [t for t in PACKED_TYPES if getattr(qf.get(t), "INT8_PREFILL", False)]


def test_int8_prefill_covers_the_common_formats():
    assert {T.Q4_0, T.Q4_1, T.Q5_0, T.Q8_0, T.IQ4_NL, T.Q6_K, T.IQ4_XS,
            T.IQ2_XXS} <= set(INT8_PREFILL_TYPES)


@pytest.mark.parametrize("qtype", INT8_PREFILL_TYPES, ids=lambda t: t.name)
def test_int8_prefill_is_the_decode_kernel_token_by_token(qtype):
    """A batch of 19 tokens (4 at a time in interleave.quads_dot, then a tail of 3):
    where it runs packed_matmul (VNNI) each token's outputs are those of decoding it
    alone, bit for bit; elsewhere the dequantized tiles agree to float rounding."""
    fmt = qf.get(qtype)
    w = random_blocks(qtype, 200, 512, seed=11)
    x = np.random.default_rng(12).standard_normal((19, 512)).astype(np.float32)
    packed = qf.pack(w, qtype)
    batch = qf.matmul(x, w, qtype, packed=packed)
    one_by_one = np.vstack([qf.matmul(x[t:t + 1], w, qtype, packed=packed) for t in range(19)])
    if qf._int8_prefill(fmt):
        assert np.array_equal(batch.view(np.uint32), one_by_one.view(np.uint32))
    else:
        np.testing.assert_allclose(batch, one_by_one, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("qtype", PACKED_TYPES, ids=lambda t: t.name)
def test_packed_dequantize_equals_gguf_py(qtype):
    import gguf
    w = random_blocks(qtype, 100, 256, seed=9)
    packed = qf.pack(w, qtype)
    fmt = qf.get(qtype)
    out_t = np.empty((256, packed[0].shape[0] * qf.interleave.ROWS), np.float32)
    fmt.packed_dequantize(*packed, 0, out_t)  # rows as columns
    theirs = gguf.quants.dequantize(w, qtype).astype(np.float32)
    assert np.array_equal(out_t[:, :100].T.view(np.uint32), theirs.view(np.uint32))
