"""Checks shared by the i-quant test files: llama.cpp's own C code through ctypes.

gguf-py dequantizes every i-quant but quantizes none, so round trips use ggml's
quantize_row_<type>_ref, dequantize_row_<type> and the x86 ggml_vec_dot_<type>_<act>,
from the libraries kquant_reference loads (tests skip when they are absent).
"""
import ctypes

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

import kquant_reference as kref
import quant_formats as qf
from kquant_reference import needs_ggml, realistic_rows  # noqa: F401  (re-exported)

# ggml spells its C functions with the lower-case type name, except Q8_K's K.
_C_ACT_NAME = {T.Q8_0: "q8_0", T.Q8_K: "q8_K"}


def _ptr(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def ggml_quantize(qtype, x):
    """f32 [n] -> the bytes ggml's quantize_row_<type>_ref writes.

    IQ3 quantizers search a grid neighbour table that ggml_quantize_init
    builds (ggml.c ggml_quantize_init -> iq3xs_init_impl); it is idempotent."""
    x = np.ascontiguousarray(x, np.float32)
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    out = np.zeros(x.size // block_size * type_size, np.uint8)
    kref._BASE.ggml_quantize_init(ctypes.c_int(int(qtype)))
    fn = getattr(kref._BASE, f"quantize_row_{qtype.name.lower()}_ref")
    fn(_ptr(x), _ptr(out), ctypes.c_int64(x.size))
    return out


def ggml_dequantize(qtype, data):
    data = np.ascontiguousarray(data, np.uint8)
    out = np.zeros(qf.row_elements(qtype, data.size), np.float32)
    getattr(kref._BASE, f"dequantize_row_{qtype.name.lower()}")(
        _ptr(data), _ptr(out), ctypes.c_int64(out.size))
    return out


def activation_blocks(qtype, act):
    """One token's (qs, d, sums) as the interleaved blocks ggml's vec_dot reads."""
    fmt = qf.get(qf.get(qtype).VEC_DOT_TYPE)
    if fmt.QTYPE == T.Q8_K:
        return fmt.to_blocks(act[0][0], act[1][0], act[2][0])
    blocks = np.empty(act[1].shape[1], fmt.BLOCK_DTYPE)  # Q8_0: d already f16-rounded
    blocks["d"] = act[1][0]
    blocks["qs"] = act[0][0].reshape(-1, 32)
    return blocks


def ggml_vec_dot(qtype, w_row, act_row):
    n = qf.row_elements(qtype, w_row.size)
    act_name = _C_ACT_NAME[qf.get(qtype).VEC_DOT_TYPE]
    result = ctypes.c_float(0.0)
    fn = getattr(kref._CPU, f"ggml_vec_dot_{qtype.name.lower()}_{act_name}")
    fn(ctypes.c_int(n), ctypes.byref(result), ctypes.c_size_t(0), _ptr(w_row),
       ctypes.c_size_t(0), _ptr(act_row), ctypes.c_size_t(0), ctypes.c_int(1))
    return result.value


def check_ggml_round_trip(qtype, n_rows=6, n_cols=1024):
    """ggml-quantized rows: our dequantize is bit-identical to ggml's and gguf-py's."""
    import gguf
    for row in realistic_rows(n_rows, n_cols, seed=int(qtype)):
        data = ggml_quantize(qtype, row)
        ours = qf.dequantize(data[None, :], qtype)[0]
        assert np.array_equal(ours.view(np.uint32), ggml_dequantize(qtype, data).view(np.uint32))
        theirs = gguf.quants.dequantize(data[None, :], qtype)[0].astype(np.float32)
        assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32))


def check_matmul_against_ggml_vec_dot(qtype, n_rows=8, n_cols=1024):
    """Decode matmul of ggml-quantized rows against ggml's vec_dot on the same
    activation blocks: same integer products, float sums in another order."""
    w = np.stack([ggml_quantize(qtype, r) for r in realistic_rows(n_rows, n_cols, int(qtype) + 1)])
    x = realistic_rows(1, n_cols, seed=99)
    act = qf.quantize_activations(x, qtype)
    blocks = activation_blocks(qtype, act)
    theirs = np.array([ggml_vec_dot(qtype, row, blocks) for row in w])
    ours = qf.matmul(x, w, qtype)[0]
    x_rounded = qf.get(qf.get(qtype).VEC_DOT_TYPE).dequantize(*act)[0].astype(np.float64)
    scale = np.abs(qf.dequantize(w, qtype).astype(np.float64)) @ np.abs(x_rounded)
    assert np.all(np.abs(ours - theirs) <= 1e-5 * scale)


def integer_activations(n_cols, block, seed):
    """x whose activation rounding is exact: integers in [-126, 126] with a -127
    (Q8_K) or 127 (Q8_0) leading each block, so every block's scale is 1."""
    x = np.random.default_rng(seed).integers(-126, 127, (1, n_cols)).astype(np.float32)
    x[0, ::block] = -127 if block == 256 else 127
    return x


def check_matmul_exact_on_hand_block(qtype, block_bytes, expected_weights):
    """matmul of hand-built blocks with integer activations == sum(w * x) in float64."""
    block = 256 if qf.get(qtype).VEC_DOT_TYPE == T.Q8_K else 32
    x = integer_activations(expected_weights.size, block, seed=int(qtype))
    w = np.ascontiguousarray(block_bytes, np.uint8)[None, :]
    expected = float(expected_weights @ x[0].astype(np.float64))
    bound = float(np.abs(expected_weights) @ np.abs(x[0]).astype(np.float64))
    got = float(qf.matmul(x, w, qtype)[0, 0])
    assert abs(got - expected) <= 1e-6 * bound
