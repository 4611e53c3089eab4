"""Checks shared by the K-quant test files: llama.cpp's own C code through ctypes.

gguf-py cannot quantize K-quants (only dequantize), so a round trip needs ggml:
quantize_row_<type>_ref and dequantize_row_<type> from libggml-base, and the
x86 ggml_vec_dot_<type>_q8_K from libggml-cpu. The libraries are looked for in
$GGML_REF_LIB_DIR, then the llama.cpp reference build in ~/.cache; tests using
them skip when neither exists.
"""
import ctypes
import os
from pathlib import Path

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

import quant_formats as qf

_LIB_DIRS = [os.environ.get("GGML_REF_LIB_DIR", ""),
             str(Path.home() / ".cache/llama.cpp-ref/bin"),
             str(Path.home() / ".cache/llama.cpp-ref/build/bin")]


def _load_ggml():
    for lib_dir in filter(None, _LIB_DIRS):
        base, cpu = Path(lib_dir, "libggml-base.so"), Path(lib_dir, "libggml-cpu.so")
        if base.exists() and cpu.exists():
            base_lib = ctypes.CDLL(str(base), mode=ctypes.RTLD_GLOBAL)
            cpu_lib = ctypes.CDLL(str(cpu))
            cpu_lib.ggml_cpu_init()  # fills the f16 tables the vec_dot kernels read
            return base_lib, cpu_lib
    return None, None


_BASE, _CPU = _load_ggml()
needs_ggml = pytest.mark.skipif(_BASE is None, reason="llama.cpp libggml not found")


def _ptr(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def _c_name(qtype):
    """Q4_K -> q4_K, as ggml spells its functions."""
    return qtype.name[:-1].lower() + "K"


def ggml_quantize(qtype, x):
    """f32 [n] -> the bytes ggml's quantize_row_<type>_ref writes."""
    x = np.ascontiguousarray(x, np.float32)
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    out = np.zeros(x.size // block_size * type_size, np.uint8)
    fn = getattr(_BASE, f"quantize_row_{_c_name(qtype)}_ref")
    fn(_ptr(x), _ptr(out), ctypes.c_int64(x.size))
    return out


def ggml_dequantize(qtype, data):
    """Bytes of one row -> f32 [n] from ggml's dequantize_row_<type>."""
    data = np.ascontiguousarray(data, np.uint8)
    out = np.zeros(qf.row_elements(qtype, data.size), np.float32)
    fn = getattr(_BASE, f"dequantize_row_{_c_name(qtype)}")
    fn(_ptr(data), _ptr(out), ctypes.c_int64(out.size))
    return out


def ggml_vec_dot(qtype, w_row, act_row):
    """ggml's x86 dot of one weight row with one block_q8_K activation row."""
    n = qf.row_elements(qtype, w_row.size)
    result = ctypes.c_float(0.0)
    fn = getattr(_CPU, f"ggml_vec_dot_{_c_name(qtype)}_q8_K")
    fn(ctypes.c_int(n), ctypes.byref(result), ctypes.c_size_t(0), _ptr(w_row),
       ctypes.c_size_t(0), _ptr(act_row), ctypes.c_size_t(0), ctypes.c_int(1))
    return result.value


def realistic_rows(n_rows, n_cols, seed):
    """Weight-like rows: gaussian with per-row scale and a few outliers."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_rows, n_cols)) * rng.uniform(0.01, 2.0, (n_rows, 1))
    x[rng.random(x.shape) < 0.01] *= 8
    return x.astype(np.float32)


def check_ggml_round_trip(qtype, n_rows=6, n_cols=1024):
    """ggml-quantized rows: our dequantize is bit-identical to ggml's."""
    for row in realistic_rows(n_rows, n_cols, seed=int(qtype)):
        data = ggml_quantize(qtype, row)
        ours = qf.dequantize(data[None, :], qtype)[0]
        assert np.array_equal(ours.view(np.uint32), ggml_dequantize(qtype, data).view(np.uint32))


def check_matmul_against_ggml_vec_dot(qtype, n_rows=8, n_cols=1024):
    """Our decode matmul against ggml's vec_dot on the same Q8_K activation.

    Same integer products; only the float summation order differs."""
    from quant_formats import q8_k
    w = np.stack([ggml_quantize(qtype, r) for r in realistic_rows(n_rows, n_cols, int(qtype) + 1)])
    x = realistic_rows(1, n_cols, seed=99)
    act = q8_k.quantize(x)
    blocks = q8_k.to_blocks(act[0][0], act[1][0], act[2][0])
    theirs = np.array([ggml_vec_dot(qtype, row, blocks) for row in w])
    ours = qf.matmul(x, w, qtype)[0]
    w_f32 = qf.dequantize(w, qtype).astype(np.float64)
    scale = np.abs(w_f32) @ np.abs(q8_k.dequantize(*act)[0]).astype(np.float64)
    assert np.all(np.abs(ours - theirs) <= 1e-5 * scale)


def integer_activations(n_cols, seed):
    """x whose Q8_K rounding is exact: integers in [-127, 127], each 256-block's
    largest |x| a -127, so iscale = -127/max = 1 and d = 1."""
    x = np.random.default_rng(seed).integers(-126, 127, (1, n_cols)).astype(np.float32)
    x[0, ::256] = -127
    return x


def check_matmul_exact_on_hand_block(qtype, block_bytes, expected_weights):
    """matmul of a hand-built block with integer activations == sum(w * x).

    expected_weights are the hand-computed dequantized values (float64)."""
    x = integer_activations(expected_weights.size, seed=int(qtype))
    w = np.ascontiguousarray(block_bytes, np.uint8)[None, :]
    expected = float(expected_weights @ x[0].astype(np.float64))
    bound = float(np.abs(expected_weights) @ np.abs(x[0]).astype(np.float64))
    got = float(qf.matmul(x, w, qtype)[0, 0])
    assert abs(got - expected) <= 1e-6 * bound


def pack_scales_mins(scales, mins):
    """Q4_K/Q5_K: 8 six-bit scales and mins into 12 bytes, the inverse of
    get_scale_min_k4 (ggml-quants.c), written out from its bit layout."""
    packed = np.zeros(12, np.uint8)
    for j in range(4):
        packed[j] = scales[j] | (scales[j + 4] >> 4) << 6
        packed[j + 4] = mins[j] | (mins[j + 4] >> 4) << 6
        packed[j + 8] = (scales[j + 4] & 15) | (mins[j + 4] & 15) << 4
    return packed
