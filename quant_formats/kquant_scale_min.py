"""Q4_K and Q5_K quantizing steps they share (ggml-quants.c quantize_row_q4_K_ref /
q5_K_ref and quantize_row_q4_K_impl / q5_K_impl): the same header (d, dmin, 12 bytes
of 6-bit scales and mins at bytes 0..16) and every step before the quants are
packed; only nmax and the search settings differ. Searches: kquant_quantize.
"""
import numpy as np
from numba import njit

from .kquant_common import scale_min_k4
from .kquant_quantize import make_qkx_quants, make_qp_quants, nearest_int, requantize, store_f16
from .quantize_common import mean_square

F32 = np.float32


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def pack_scale_min_k4(out, o, ls, lm):
    """Pack 8 six-bit (scale, min) pairs into the 12 bytes at out[o:o+12] as
    quantize_row_q4_K/q5_K do (the inverse of kquant_common.scale_min_k4);
    values wider than 6 bits are truncated to uint8 as in ggml."""
    for j in range(8):
        s = np.int32(ls[j]) & 0xFF
        m = np.int32(lm[j]) & 0xFF
        if j < 4:
            out[o + j] = s
            out[o + j + 4] = m
        else:
            out[o + j + 4] = ((s & 0xF) | (m << 4)) & 0xFF
            out[o + j - 4] = (out[o + j - 4] | (s >> 4) << 6) & 0xFF
            out[o + j] = (out[o + j] | (m >> 4) << 6) & 0xFF


@njit(cache=True, nogil=True, error_model="numpy")
def scale_min_scratch():
    """Per-row work arrays: L[256], levels of the scales and mins[16], weights[32],
    scales, mins, sw, ls, lm, tmp[256]."""
    return (np.empty(256, np.uint8), np.empty(16, np.uint8), np.empty(32, F32),
            np.empty(8, F32), np.empty(8, F32), np.empty(8, F32),
            np.empty(8, np.int32), np.empty(8, np.int32), np.empty(256, np.int32))


@njit(cache=True, nogil=True, error_model="numpy")
def scale_min_block_ref(x, out, o, nmax, rmin, rdelta, nstep, work):
    """quantize_row_q4_K_ref / q5_K_ref up to the quant packing: one super-block x[256]
    -> header bytes out[o:o+16], levels in work[0]. Weights av_x + |x| per sub-block."""
    L, _, weights, scales, mins, _, ls, lm, _ = work
    max_scale = F32(0.0)
    max_min = F32(0.0)
    for j in range(8):
        xs = x[32 * j:32 * j + 32]
        av_x = np.sqrt(mean_square(xs, 1))
        for l in range(32):
            weights[l] = av_x + abs(xs[l])
        scales[j], mins[j] = make_qkx_quants(xs, weights, nmax, L[32 * j:32 * j + 32],
                                             rmin, rdelta, nstep, False)
        if scales[j] > max_scale:
            max_scale = scales[j]
        if mins[j] > max_min:
            max_min = mins[j]
    inv_scale = F32(63.0) / max_scale if max_scale > 0 else F32(0.0)
    inv_min = F32(63.0) / max_min if max_min > 0 else F32(0.0)
    for j in range(8):  # stored in uint8, then clamped, as ggml
        ls[j] = min(63, nearest_int(inv_scale * scales[j]) & 0xFF)
        lm[j] = min(63, nearest_int(inv_min * mins[j]) & 0xFF)
    pack_scale_min_k4(out, o + 4, ls, lm)
    d = store_f16(out, o, max_scale / F32(63.0))
    dmin = store_f16(out, o + 2, max_min / F32(63.0))
    _requantize_scale_min(x, out, o, nmax, d, dmin, work)


@njit(cache=True, nogil=True, error_model="numpy")
def scale_min_block_impl(x, qw, out, o, nmax, clamp_levels, work):
    """quantize_row_q4_K_impl / q5_K_impl (imatrix qw[256] given) up to the quant
    packing. clamp_levels: Q5_K clamps the 6-bit levels to 63 before packing, Q4_K not."""
    L, Lsm, weights, scales, mins, sw, ls, lm, _ = work
    sigma2 = mean_square(x, 2)
    for j in range(8):
        xs = x[32 * j:32 * j + 32]
        sumw = F32(0.0)
        for l in range(32):
            weights[l] = qw[32 * j + l] * np.sqrt(sigma2 + xs[l] * xs[l])
        for l in range(32):
            sumw += weights[l]
        sw[j] = sumw
        scales[j], mins[j] = make_qkx_quants(xs, weights, nmax, L[32 * j:32 * j + 32],
                                             -0.9, 0.05, 36, False)
    Ls, Lm = Lsm[:8], Lsm[8:]  # levels of the scales and of the mins
    d_block = make_qp_quants(scales, sw, 63, Ls)
    m_block = make_qp_quants(mins, sw, 63, Lm)
    for j in range(8):
        ls[j] = min(63, Ls[j]) if clamp_levels else Ls[j]
        lm[j] = min(63, Lm[j]) if clamp_levels else Lm[j]
    pack_scale_min_k4(out, o + 4, ls, lm)
    d = store_f16(out, o, d_block)
    dmin = store_f16(out, o + 2, m_block)
    _requantize_scale_min(x, out, o, nmax, d, dmin, work)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def scale_min_block(x, imatrix, b, out, o, nmax, rmin, rdelta, nstep, clamp_levels, work):
    """Super-block b of the row x: scale_min_block_ref (search rmin, rdelta, nstep)
    without an imatrix (empty), else scale_min_block_impl (clamp_levels)."""
    xb = x[256 * b:256 * b + 256]
    if imatrix.shape[0] == 0:
        scale_min_block_ref(xb, out, o, nmax, rmin, rdelta, nstep, work)
    else:
        scale_min_block_impl(xb, imatrix[256 * b:256 * b + 256], out, o, nmax, clamp_levels, work)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _requantize_scale_min(x, out, o, nmax, d_all, dmin_all, work):
    """Levels again from the stored (f16 and 6-bit) scales; sub-blocks whose scale is
    zero keep the search's levels (ggml's `if (!d) continue`)."""
    L, _, _, d, dm, _, _, _, tmp = work  # scales and mins are free again: d and dm
    for j in range(8):
        sc, m = scale_min_k4(out, o + 4, j)
        d[j] = d_all * F32(sc)
        dm[j] = dmin_all * F32(m)
    requantize(x, d, dm, 32, 0, nmax, 0, L, tmp)
