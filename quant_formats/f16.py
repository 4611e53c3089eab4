"""F16 weights; activations are rounded to f16 too (ggml-cpu.c: vec_dot_type F16),
and ggml_vec_dot_f16 multiplies and sums the converted values in float32."""
import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit, prange

from .common import F16_TO_F32, to_f16
from .quantize_common import fp16_bits

QTYPE = T.F16
BLOCK_SIZE = 1
BLOCK_DTYPE = np.dtype("<f2")
VEC_DOT_TYPE = T.F16


def dequantize_reference(blocks):
    return blocks.astype(np.float32).reshape(-1, 1)


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    for r in range(w.shape[0]):
        bits = w[r].view(np.uint16)
        for j in range(bits.shape[0]):
            out[r, j] = F16_TO_F32[bits[j]]


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    bits = w.view(np.uint16)
    acc = np.float32(0.0)
    for j in range(bits.shape[0]):
        acc += F16_TO_F32[bits[j]] * qs[j]
    return acc


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    for r in prange(w.shape[0]):
        for t in range(qs.shape[0]):
            out[t, r] = vec_dot(w[r], qs[t], d[t], sums[t])


@njit(cache=True, nogil=True)
def _round_rows(x, out):
    for t in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[t, j] = to_f16(x[t, j])


def quantize(x):
    """Activations rounded to f16 (GGML_CPU_FP32_TO_FP16), held as float32."""
    rounded = np.empty(x.shape, np.float32)
    _round_rows(np.ascontiguousarray(x, np.float32), rounded)
    empty = np.zeros((x.shape[0], 0), np.float32)
    return rounded, empty, empty


def dequantize(qs, d, sums):
    return qs


# --- weight quantizer ------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _to_f16_bits(x, out):
    """ggml.c ggml_fp32_to_fp16_row: GGML_FP32_TO_FP16 per value (NaN -> 0x7E00)."""
    for r in prange(x.shape[0]):
        for j in range(x.shape[1]):
            out[r, j] = fp16_bits(x[r, j])


def quantize_blocks(x, imatrix):
    out = np.empty(x.shape, np.uint16)
    _to_f16_bits(x, out)
    return out.view(np.uint8)
