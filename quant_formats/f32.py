"""F32: plain float32 weights; activations stay float32 (ggml-cpu.c type_traits_cpu)."""
import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit, prange

QTYPE = T.F32
BLOCK_SIZE = 1
BLOCK_DTYPE = np.dtype("<f4")
VEC_DOT_TYPE = T.F32


def dequantize_reference(blocks):
    return blocks.astype(np.float32).reshape(-1, 1)


@njit(cache=True, nogil=True)
def dequantize_rows(w, out):
    # a loop: the slice assignment out[r, :] = ... took 3.9 s to compile, this 0.8
    for r in range(w.shape[0]):
        values = w[r].view(np.float32)
        for j in range(out.shape[1]):
            out[r, j] = values[j]


@njit(cache=True, nogil=True)
def vec_dot(w, qs, d, sums):
    values = w.view(np.float32)
    acc = np.float32(0.0)
    for j in range(values.shape[0]):
        acc += values[j] * qs[j]
    return acc


@njit(cache=True, nogil=True, parallel=True)
def matmul_kernel(w, qs, d, sums, out):
    for r in prange(w.shape[0]):
        for t in range(qs.shape[0]):
            out[t, r] = vec_dot(w[r], qs[t], d[t], sums[t])


def quantize(x):
    """F32 activations are used as they are."""
    n_tokens = x.shape[0]
    empty = np.zeros((n_tokens, 0), np.float32)
    return np.ascontiguousarray(x, np.float32), empty, empty


def dequantize(qs, d, sums):
    return qs


def quantize_blocks(x, imatrix):
    """ggml_quantize_chunk copies F32 rows as they are."""
    return np.ascontiguousarray(x, np.float32).view(np.uint8).copy()
