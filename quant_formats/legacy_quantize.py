"""The weight quantizers of the 32-weight formats Q4_0, Q5_0 (symmetric: d*(q - nmax))
and Q4_1, Q5_1 (offset: d*q + m), as ggml-quants.c quantize_row_q{4,5}_{0,1}_ref and
_impl. The four C functions per pair differ only in nmax, the clamp and where the
bits go, so each format module passes those numbers:
    qh_at   byte offset of the 32 fifth bits in the block (-1: 4-bit, none)
    qs_at   byte offset of the 16 nibble bytes
Without an imatrix the _ref rule, with one the _impl search (kquant_quantize.make_qx_quants
or make_qkx_quants weighted by imatrix * sqrt(sigma2 + x^2)).
"""
import numpy as np
from numba import njit

from .kquant_quantize import make_qkx_quants, make_qx_quants, search_scratch
from .quantize_common import (c_int, low_byte_signed, max_abs, mean_square, sigma2_weights, store_f16,
                              store_five_bits, store_nibbles)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _store_quants(dst, o, qh_at, qs_at, L):
    if qh_at >= 0:
        store_five_bits(dst, o + qh_at, o + qs_at, L)
    else:
        store_nibbles(dst, o + qs_at, L)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _symmetric_row_ref(x, dst, nmax, type_size, qh_at, qs_at):
    """quantize_row_q4_0_ref / q5_0_ref: d = max/-nmax (max the value of largest
    magnitude, first one on ties), q = MIN(2*nmax - 1, (int8_t)(x/d + nmax + 0.5f))."""
    L = np.empty(32, np.int32)
    neg_nmax = np.float32(-nmax)
    offset = np.float32(nmax) + np.float32(0.5)  # 8.5f, 16.5f: exact
    for b in range(x.shape[0] // 32):
        xb = x[b * 32:(b + 1) * 32]
        _, xmax = max_abs(xb)
        d = xmax / neg_nmax
        inv = np.float32(1.0) / d if d != 0 else np.float32(0.0)
        for j in range(32):
            L[j] = min(2 * nmax - 1, low_byte_signed(c_int(xb[j] * inv + offset)))
        store_f16(dst, b * type_size, d)
        _store_quants(dst, b * type_size, qh_at, qs_at, L)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _symmetric_row_impl(x, imatrix, dst, nmax, type_size, qh_at, qs_at):
    """quantize_row_q4_0_impl / q5_0_impl: make_qx_quants(nmax) weighted by
    imatrix * sqrt(sigma2 + x^2)."""
    weight = np.empty(32, np.float32)
    L = np.empty(32, np.int8)
    trials = search_scratch()
    sigma2 = mean_square(x, 1)
    for b in range(x.shape[0] // 32):
        xb = x[b * 32:(b + 1) * 32]
        sigma2_weights(xb, imatrix[b * 32:(b + 1) * 32], sigma2, weight)
        d = make_qx_quants(xb, weight, nmax, L, trials)
        store_f16(dst, b * type_size, d)
        _store_quants(dst, b * type_size, qh_at, qs_at, L)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _offset_row_ref(x, dst, nmax, clamp, type_size, qh_at, qs_at):
    """quantize_row_q4_1_ref / q5_1_ref: d = (max - min)/nmax, m = min,
    q = MIN(clamp, (int8_t)((x - min)/d + 0.5f)). Q5_1's (uint8_t) is unclamped: its
    clamp 255 keeps every low byte, whose bits store_five_bits takes alike."""
    L = np.empty(32, np.int32)
    for b in range(x.shape[0] // 32):
        xb = x[b * 32:(b + 1) * 32]
        xmin = np.float32(np.finfo(np.float32).max)
        xmax = -np.float32(np.finfo(np.float32).max)
        for j in range(32):
            if xb[j] < xmin:
                xmin = xb[j]
            if xb[j] > xmax:
                xmax = xb[j]
        d = (xmax - xmin) / np.float32(nmax)
        inv = np.float32(1.0) / d if d != 0 else np.float32(0.0)
        for j in range(32):
            L[j] = min(clamp, low_byte_signed(c_int((xb[j] - xmin) * inv + np.float32(0.5))))
        store_f16(dst, b * type_size, d)
        store_f16(dst, b * type_size + 2, xmin)
        _store_quants(dst, b * type_size, qh_at, qs_at, L)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _offset_row_impl(x, imatrix, dst, nmax, type_size, qh_at, qs_at):
    """quantize_row_q4_1_impl / q5_1_impl: make_qkx3_quants(nmax, -0.9, 0.05,
    36 steps, kquant_quantize.make_qkx_quants) weighted by imatrix * sqrt(sigma2 + x^2)."""
    weight = np.empty(32, np.float32)
    L = np.empty(32, np.uint8)
    sigma2 = mean_square(x, 1)
    for b in range(x.shape[0] // 32):
        xb = x[b * 32:(b + 1) * 32]
        sigma2_weights(xb, imatrix[b * 32:(b + 1) * 32], sigma2, weight)
        d, neg_min = make_qkx_quants(xb, weight, nmax, L, -0.9, 0.05, 36, False)
        store_f16(dst, b * type_size, d)
        store_f16(dst, b * type_size + 2, -neg_min)
        _store_quants(dst, b * type_size, qh_at, qs_at, L)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def symmetric_row(x, imatrix, dst, nmax, type_size, qh_at, qs_at):
    """One row of Q4_0 (nmax 8) or Q5_0 (16): _ref without an imatrix (empty), else
    _impl. Inlined into each format's prange kernel, so the numbers are constants."""
    if imatrix.shape[0] == 0:
        _symmetric_row_ref(x, dst, nmax, type_size, qh_at, qs_at)
    else:
        _symmetric_row_impl(x, imatrix, dst, nmax, type_size, qh_at, qs_at)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def offset_row(x, imatrix, dst, nmax, clamp, type_size, qh_at, qs_at):
    """One row of Q4_1 (nmax 15, clamp 15) or Q5_1 (31, unclamped: 255), as
    symmetric_row."""
    if imatrix.shape[0] == 0:
        _offset_row_ref(x, dst, nmax, clamp, type_size, qh_at, qs_at)
    else:
        _offset_row_impl(x, imatrix, dst, nmax, type_size, qh_at, qs_at)
