"""Numba helpers shared by the weight quantizers (quantize_blocks), matching the C
float semantics of ggml-quants.c bit for bit.

Everything here computes in float32 the way the C code does: every operand is
cast to np.float32 (a Python float literal or `/` on ints would promote to
float64), sums run sequentially in the C order (libggml-base is built without
FMA contraction), and the C conversions are spelled out:
    nearest_int      ggml-quants.c nearest_int: round half to even via 1.5*2^23
    round_away       roundf: half away from zero
    c_int            (int)f on x86 (cvttss2si): truncation, INT_MIN when out of range
    fp16_bits        GGML_FP32_TO_FP16 (ggml-impl.h ggml_compute_fp32_to_fp16)
    bf16_bits        ggml-impl.h ggml_compute_fp32_to_bf16
and the Python side every format's quantize_blocks goes through (run_row_kernel,
run_row_kernel_f16_d).
"""
import math

import numpy as np
from numba import njit

_MAGIC = np.float32(12582912.0)          # 1.5 * 2^23
_TO_INF = np.float32(2.0 ** 112)         # ggml_compute_fp32_to_fp16's scale_to_inf
_TO_ZERO = np.float32(2.0 ** -110)
GROUP_MAX_EPS = np.float32(1e-15)        # ggml-quants.c GROUP_MAX_EPS
_INT_MIN = -2147483648


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def f32_bits(x):
    return np.int64(np.float32(x).view(np.uint32))


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def f32_from_bits(bits):
    return np.uint32(bits & 0xFFFFFFFF).view(np.float32)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def nearest_int(fval):
    """ggml-quants.c nearest_int: the float sum's mantissa holds the rounded value."""
    return np.int32((f32_bits(np.float32(fval) + _MAGIC) & 0x007FFFFF) - 0x00400000)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def round_away(x):
    """roundf as float32. x + 0.5 is exact in float64 for every float32 x, so the
    float64 floor is the correctly rounded half-away-from-zero result."""
    return np.float32(math.copysign(math.floor(abs(np.float64(x)) + 0.5), x))


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def c_int(x):
    """(int)x for a float32 x, as x86's cvttss2si: NaN and out of range give INT_MIN.
    A further (int8_t)/(uint8_t) cast is the low byte of this."""
    if x >= np.float32(-2147483648.0) and x < np.float32(2147483648.0):
        return np.int32(x)
    return np.int32(_INT_MIN)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def low_byte_signed(i):
    """(int8_t) of an int: its low byte, sign-extended."""
    b = np.int32(i) & 0xFF
    return b - 256 * (b >> 7)


@njit(cache=True, nogil=True, error_model="numpy")
def fp16_bits(f):
    """GGML_FP32_TO_FP16: round to nearest even by adding a power of two that pushes
    the dropped bits out of the float32 mantissa (ggml-impl.h)."""
    f = np.float32(f)
    base = (abs(f) * _TO_INF) * _TO_ZERO
    w = f32_bits(f)
    shl1_w = (w + w) & 0xFFFFFFFF
    sign = w & 0x80000000
    bias = shl1_w & 0xFF000000
    if bias < 0x71000000:
        bias = 0x71000000
    base = f32_from_bits((bias >> 1) + 0x07800000) + base
    bits = f32_bits(base)
    nonsign = ((bits >> 13) & 0x00007C00) + (bits & 0x00000FFF)
    if shl1_w > 0xFF000000:  # NaN
        nonsign = 0x7E00
    return ((sign >> 16) | nonsign) & 0xFFFF


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def bf16_bits(f):
    """ggml_compute_fp32_to_bf16: round to nearest even; NaN kept, made quiet."""
    u = f32_bits(f)
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return ((u >> 16) | 64) & 0xFFFF
    return ((u + (0x7FFF + ((u >> 16) & 1))) >> 16) & 0xFFFF


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def store_f16(out, offset, x):
    """x rounded to f16, little-endian at out[offset]."""
    bits = fp16_bits(x)
    out[offset] = np.uint8(bits & 0xFF)
    out[offset + 1] = np.uint8(bits >> 8)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def store_nibbles(out, offset, L):
    """16 bytes: L[j] low nibble, L[j + 16] high nibble (Q4_0, Q4_1)."""
    for j in range(16):
        out[offset + j] = np.uint8((np.int32(L[j]) & 0x0F) | ((np.int32(L[j + 16]) & 0x0F) << 4))


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def store_five_bits(out, qh_offset, qs_offset, L):
    """Q5_0/Q5_1: low nibbles as store_nibbles, bit 4 of L[j] into bit j of the
    little-endian uint32 qh."""
    qh = np.int64(0)
    for j in range(32):
        qh |= np.int64((np.int32(L[j]) >> 4) & 1) << j
    for k in range(4):
        out[qh_offset + k] = np.uint8((qh >> (8 * k)) & 0xFF)
    store_nibbles(out, qs_offset, L)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def max_abs(x):
    """(largest |x|, that x with its sign), the first one on ties: ggml's amax/max loops."""
    amax = np.float32(0.0)
    vmax = np.float32(0.0)
    for i in range(x.shape[0]):
        ax = abs(x[i])
        if ax > amax:
            amax = ax
            vmax = x[i]
    return amax, vmax


@njit(cache=True, nogil=True, error_model="numpy")
def block_weights(row, o, quant_weights, sigma2, weight):
    """weight[:32] = qw * sqrtf(sigma2 + x^2) with an imatrix (length > 0), else x^2,
    for row[o:o+32] (quantize_row_iq4_nl_impl, iq4_xs, iq3_xxs, iq3_s)."""
    for j in range(32):
        x = row[o + j]
        if quant_weights.shape[0] > 0:
            weight[j] = quant_weights[o + j] * np.sqrt(sigma2 + x * x)
        else:
            weight[j] = x * x


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def mean_square(x, factor):
    """factor * sum(x^2) / n in float32, summed in order: ggml's sigma2 (sumx2/n in
    the Q4_0..Q5_1 and Q2_K _impl, 2*sumx2/QK_K in Q3_K..Q5_K and the IQ formats)."""
    sum_x2 = np.float32(0.0)
    for j in range(x.shape[0]):
        sum_x2 += x[j] * x[j]
    return np.float32(factor) * sum_x2 / np.float32(x.shape[0])


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def scale_level(inv_d, scale, top):
    """The IQ formats' sub-block scale code: MAX(0, MIN(top, nearest_int(0.5f*(id*scale - 1))))."""
    return max(0, min(top, nearest_int(np.float32(0.5) * (inv_d * scale - np.float32(1.0)))))


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def sigma2_weights(xb, qw, sigma2, weight):
    """weight[j] = qw[j] * sqrtf(sigma2 + xb[j]^2) (the Q4_0..Q5_1 _impl weighting)."""
    for j in range(xb.shape[0]):
        weight[j] = qw[j] * np.float32(math.sqrt(sigma2 + xb[j] * xb[j]))


# --- the Python side of quantize_blocks ---------------------------------------

_NO_IMATRIX = np.empty(0, np.float32)


def check_rows(x, imatrix, block_size):
    """Sizes the kernels trust (Numba does no bounds checks)."""
    if x.ndim != 2 or x.dtype != np.float32 or not x.flags.c_contiguous or x.shape[1] % block_size:
        raise ValueError(f"quantize: expected C-contiguous float32 rows of a multiple of "
                         f"{block_size} values, got {x.dtype} {x.shape}")
    if imatrix is not None and (imatrix.dtype != np.float32 or imatrix.shape != (x.shape[1],)):
        raise ValueError(f"quantize: importance matrix must be float32 [{x.shape[1]}]")


def run_row_kernel(kernel, x, imatrix, block_size, type_size, *tables, required_by=None):
    """f32 [rows, n] -> uint8 [rows, n // block_size * type_size]: a format's prange
    kernel(x, imatrix, *tables, out) fills zeroed rows (some paths leave bytes as
    zeros). No imatrix is passed as an empty one: ggml's _ref / quant_weights == NULL
    path. required_by: the type name, for formats ggml refuses to quantize without one."""
    if imatrix is None and required_by:
        raise ValueError(f"{required_by} quantization requires an importance matrix")
    check_rows(x, imatrix, block_size)
    out = np.zeros((x.shape[0], x.shape[1] // block_size * type_size), np.uint8)
    kernel(x, _NO_IMATRIX if imatrix is None else imatrix, *tables, out)
    return out


def run_row_kernel_f16_d(kernel, x, imatrix, block_dtype, block_size, *tables):
    """run_row_kernel for kernels(x, imatrix, *tables, d, out) that leave each block's
    scale in d (f32 [rows, n_blocks]); stored as f16 in the block's "d" field here
    (numpy's float16 cast is GGML_FP32_TO_FP16: nearest even, |d| > 65504 -> inf)."""
    check_rows(x, imatrix, block_size)
    out = np.zeros((x.shape[0], x.shape[1] // block_size * block_dtype.itemsize), np.uint8)
    d = np.empty((x.shape[0], x.shape[1] // block_size), np.float32)
    kernel(x, _NO_IMATRIX if imatrix is None else imatrix, *tables, d, out)
    with np.errstate(over="ignore"):
        out.view(block_dtype)["d"] = d.astype(np.float16)
    return out
