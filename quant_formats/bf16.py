"""BF16 weights (the top 16 bits of a float32); activations rounded to bf16 as
ggml's GGML_FP32_TO_BF16 (ggml-impl.h ggml_compute_fp32_to_bf16: round to nearest
even on the dropped 16 bits, NaN kept quiet), products summed in float32."""
import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit, prange

from .quantize_common import bf16_bits

QTYPE = T.BF16
BLOCK_SIZE = 1
BLOCK_DTYPE = np.dtype("<u2")
VEC_DOT_TYPE = T.BF16


def dequantize_reference(blocks):
    return (blocks.astype(np.uint32) << 16).view(np.float32).reshape(-1, 1)


@njit(cache=True, nogil=True, inline="always")
def _bf16_value(bits):
    return np.uint32(np.uint32(bits) << np.uint32(16)).view(np.float32)


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    for r in range(w.shape[0]):
        bits = w[r].view(np.uint16)
        for j in range(bits.shape[0]):
            out[r, j] = _bf16_value(bits[j])


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    bits = w.view(np.uint16)
    acc = np.float32(0.0)
    for j in range(bits.shape[0]):
        acc += _bf16_value(bits[j]) * qs[j]
    return acc


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    for r in prange(w.shape[0]):
        for t in range(qs.shape[0]):
            out[t, r] = vec_dot(w[r], qs[t], d[t], sums[t])


def round_to_bf16(x):
    """float32 -> nearest bf16 value (ties to even), as float32."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16).astype(np.uint32)
    nan = np.isnan(x)
    rounded[nan] = (bits[nan] >> 16).astype(np.uint32) | 64  # force quiet, as ggml
    return (rounded << 16).view(np.float32)


def quantize(x):
    empty = np.zeros((x.shape[0], 0), np.float32)
    return round_to_bf16(x), empty, empty


def dequantize(qs, d, sums):
    return qs


# --- weight quantizer ------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _to_bf16_bits(x, out):
    """ggml.c ggml_fp32_to_bf16_row_ref: ggml_compute_fp32_to_bf16 per value."""
    for r in prange(x.shape[0]):
        for j in range(x.shape[1]):
            out[r, j] = bf16_bits(x[r, j])


def quantize_blocks(x, imatrix):
    out = np.empty(x.shape, np.uint16)
    _to_bf16_bits(x, out)
    return out.view(np.uint8)
