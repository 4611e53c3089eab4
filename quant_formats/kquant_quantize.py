"""Scale searches shared by the K-quant quantizers (Q2_K .. Q6_K), as ggml-quants.c.

Every function reproduces ggml's float32 arithmetic step by step, because ties
and near-ties in these searches decide the bytes: each product and sum is a
float32 (Numba would widen float32 op int or op Python float to float64, so
every int and constant is cast first), in C's left-to-right order, with no
fused multiply-add (libggml-base is built without FMA contraction) and the same
strictness of every comparison. nearest_int is ggml's bit trick itself, so it
also agrees on out-of-range inputs.

Integer stores follow C's narrowing: ggml keeps quants and 6-bit scales in
uint8/int8 arrays, so values are masked to 8 bits where ggml would wrap them.
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .common import to_f16
from .quantize_common import GROUP_MAX_EPS, max_abs, nearest_int  # noqa: F401 (re-exported)

F32 = np.float32


@intrinsic
def _f32_bits(typingctx, value):
    """The IEEE bit pattern of a float32, as int32 (C's memcpy(&i, &f, 4))."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.int32(types.float32), codegen


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def store_f16(out, offset, value):
    """Write GGML_FP32_TO_FP16(value) little-endian at out[offset]; return it as
    float32 (what GGML_FP16_TO_FP32 reads back). Round to nearest even, signed zero."""
    rounded = to_f16(np.float32(value))
    sign = (_f32_bits(np.float32(value)) >> 16) & 0x8000
    mag = abs(rounded)
    if mag != mag:  # NaN: ggml_compute_fp32_to_fp16 gives the quiet NaN 0x7E00, signed
        bits = 0x7E00
    elif mag == np.inf:
        bits = 0x7C00
    elif mag < np.float32(6.103515625e-05):  # below 2^-14: f16 subnormal, steps of 2^-24
        bits = np.int32(mag * np.float32(16777216.0))
    else:
        frac, exp = math.frexp(mag)  # mag = frac * 2^exp, frac in [0.5, 1)
        bits = ((exp + 14) << 10) | np.int32((frac * 2.0 - 1.0) * 1024.0)
    bits |= sign
    out[offset] = bits & 0xFF
    out[offset + 1] = (bits >> 8) & 0xFF
    return rounded


# The trial scales of make_qx_quants and make_qkx_quants are independent until ggml
# compares them, so their sums are accumulated side by side (one float32 accumulator
# per trial, each in ggml's element order: the same values) in loops that LLVM
# vectorizes across trials; the sequential comparisons then pick the same winner.
# Measured 2.7x on make_qx_quants (16 values, nmax 32), whose sums live in a per-row
# scratch (search_scratch()); make_qkx_quants' trials depend on the best min so far,
# so they go in windows (_qkx_trials).
TRIAL_WINDOW = 16  # make_qkx_quants trials evaluated together


@njit(cache=True, nogil=True, error_model="numpy")
def search_scratch():
    """f32 [3, 19]: make_qx_quants' iscales, sumlx, suml2 per trial."""
    return np.empty((3, 19), F32)


@njit(cache=True, nogil=True, error_model="numpy")
def make_qx_quants(x, weights, nmax, L, trials):
    """ggml-quants.c make_qx_quants, rmse_type 1 with weights given (the x*x default is
    passed in by the caller): signed levels L = l + nmax, l in [-nmax, nmax-1], for
    the scale among 19 trial scales that maximises sum(w*x*l)^2 / sum(w*l*l)."""
    n = x.shape[0]
    amax, vmax = max_abs(x)
    if amax < GROUP_MAX_EPS:
        L[:n] = 0
        return F32(0.0)
    iscales, sumlx, suml2 = trials[0, :19], trials[1, :19], trials[2, :19]
    iscales[0] = F32(-nmax) / vmax  # trial 0: ggml's first guess; then is = -9..-1, 1..9
    for t in range(1, 19):
        iscales[t] = -(F32(nmax) + F32(0.1) * F32(t - 10 if t < 10 else t - 9)) / vmax
    sumlx[:] = 0
    suml2[:] = 0
    lo, hi = np.int32(-nmax), np.int32(nmax - 1)
    for i in range(n):
        w = weights[i]
        wx = w * x[i]
        for t in range(19):
            fl = F32(max(lo, min(hi, nearest_int(iscales[t] * x[i]))))
            sumlx[t] += wx * fl
            suml2[t] += w * fl * fl
    scale = sumlx[0] / suml2[0] if suml2[0] != 0 else F32(0.0)
    best = scale * sumlx[0]
    chosen = 0
    for t in range(1, 19):
        if suml2[t] > 0 and sumlx[t] * sumlx[t] > best * suml2[t]:
            scale = sumlx[t] / suml2[t]
            best = scale * sumlx[t]
            chosen = t
    for i in range(n):
        L[i] = max(lo, min(hi, nearest_int(iscales[chosen] * x[i]))) + nmax
    return scale


@njit(cache=True, nogil=True, error_model="numpy")
def make_q3_quants(x, nmax, L):
    """ggml-quants.c make_q3_quants with do_rmse (the only use, Q3_K without imatrix):
    start from the max-abs scale, then up to 5 passes moving single levels while
    that raises sum(w*x*l)^2 / sum(w*l*l), w = x*x. Returns the scale; L = l + nmax."""
    n = x.shape[0]
    amax, vmax = max_abs(x)
    if amax < GROUP_MAX_EPS:
        L[:n] = 0
        return F32(0.0)
    iscale = F32(-nmax) / vmax
    sumlx = F32(0.0)
    suml2 = F32(0.0)
    for i in range(n):
        l = max(-nmax, min(nmax - 1, nearest_int(iscale * x[i])))
        L[i] = l
        w = x[i] * x[i]
        sumlx += w * x[i] * F32(l)
        suml2 += w * F32(l) * F32(l)
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            w = x[i] * x[i]
            fl = F32(L[i])
            slx = sumlx - w * x[i] * fl
            if slx > 0:
                sl2 = suml2 - w * fl * fl
                new_l = max(-nmax, min(nmax - 1, nearest_int(x[i] * sl2 / slx)))
                if new_l != L[i]:
                    slx += w * x[i] * F32(new_l)
                    sl2 += w * F32(new_l) * F32(new_l)
                    if sl2 > 0 and slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new_l
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    for i in range(n):
        L[i] += nmax
    return sumlx / suml2 if suml2 > 0 else F32(0.0)


@njit(cache=True, nogil=True, error_model="numpy")
def make_qkx_quants(x, weights, nmax, L, rmin, rdelta, nstep, use_mad):
    """ggml-quants.c make_qkx2_quants and make_qkx3_quants (identical when weights are
    given, as in every K-quant use): levels L in [0, nmax] for x ~ scale*L - the_min,
    trying nstep+1 scales and keeping the least weighted error (|e| if use_mad,
    else e^2), each trial's scale and min from a weighted least-squares fit.
    Returns (scale, the_min)."""
    n = x.shape[0]
    lo = x[0]
    hi = x[0]
    sum_w = weights[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        if x[i] < lo:
            lo = x[i]
        if x[i] > hi:
            hi = x[i]
        w = weights[i]
        sum_w += w
        sum_x += w * x[i]
    if lo > 0:
        lo = F32(0.0)
    if hi == lo:
        L[:n] = 0
        return F32(0.0), -lo
    iscale = F32(nmax) / (hi - lo)
    scale = F32(1.0) / iscale
    best_error = F32(0.0)
    for i in range(n):
        L[i] = max(0, min(nmax, nearest_int(iscale * (x[i] - lo))))
        diff = scale * F32(L[i]) + lo - x[i]
        best_error += weights[i] * (abs(diff) if use_mad else diff * diff)
    if nstep < 1:
        return scale, -lo
    # ggml's trial `is` scales by nmax + rmin + rdelta*is over (max - min) with the best
    # min so far: trials are evaluated side by side with the current min, and the ones
    # after a winner that moved the min are evaluated again. The winner's levels are
    # recomputed at the end from its iscale and the min it was evaluated with.
    won, won_iscale, won_lo = False, F32(0.0), lo
    first = 0
    while first <= nstep:
        found = _qkx_trials(x, weights, nmax, lo, hi, F32(rmin), F32(rdelta), first,
                            sum_w, sum_x, use_mad)
        batch_lo = lo
        next_first = min(first + TRIAL_WINDOW, nstep + 1)
        for t in range(next_first - first):
            if found[_ERRORS + t] < best_error:  # NaN (no fit) compares false
                best_error = found[_ERRORS + t]
                scale = found[_SCALES + t]
                won, won_iscale, won_lo = True, found[t], batch_lo
                lo = found[_OFFSETS + t]
                if lo != batch_lo:
                    next_first = first + t + 1
                    break
        first = next_first
    if won:
        for i in range(n):
            L[i] = max(0, min(nmax, nearest_int(won_iscale * (x[i] - won_lo))))
    return scale, -lo


# _qkx_trials' result: iscales at 0, then these offsets (TRIAL_WINDOW values each)
_ERRORS, _SUM_L2, _SUM_XL, _SCALES, _OFFSETS = (k * TRIAL_WINDOW for k in range(1, 6))


@njit(cache=True, nogil=True, error_model="numpy")
def _qkx_trials(x, weights, nmax, lo, hi, rmin, rdelta, first, sum_w, sum_x, use_mad):
    """Trials first..first+TRIAL_WINDOW-1 of make_qkx2/3_quants with min lo: iscale,
    fitted scale and min (NaN when ggml skips the trial: D <= 0), weighted error.

    Shaped for LLVM's vectorizer, measured 2.2x over summing in a row scratch: one
    fresh array at constant offsets (so LLVM keeps the sums in registers: it knows
    nothing else writes there), a constant trip count (trials past nstep are computed
    and never read), int32 levels, and the levels recomputed rather than stored."""
    found = np.zeros(6 * TRIAL_WINDOW, F32)
    for t in range(TRIAL_WINDOW):
        found[t] = (rmin + rdelta * F32(first + t) + F32(nmax)) / (hi - lo)
    zero, top = np.int32(0), np.int32(nmax)
    for i in range(x.shape[0]):
        w, xi = weights[i], x[i]
        for t in range(TRIAL_WINDOW):
            fl = F32(max(zero, min(top, nearest_int(found[t] * (xi - lo)))))
            found[_ERRORS + t] += w * fl  # sum_l until the errors are summed
            found[_SUM_L2 + t] += w * fl * fl
            found[_SUM_XL + t] += w * fl * xi
    for t in range(TRIAL_WINDOW):
        sum_l, sum_l2, sum_xl = found[_ERRORS + t], found[_SUM_L2 + t], found[_SUM_XL + t]
        det = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
        if this_min > 0:
            this_min = F32(0.0)
            this_scale = sum_xl / sum_l2
        found[_SCALES + t] = this_scale
        found[_OFFSETS + t] = this_min if det > 0 else np.nan
        found[_ERRORS + t] = 0
    for i in range(x.shape[0]):
        w, xi = weights[i], x[i]
        if use_mad:  # two loops: a select inside the vector loop measured 1.8x slower
            for t in range(TRIAL_WINDOW):
                fl = F32(max(zero, min(top, nearest_int(found[t] * (xi - lo)))))
                found[_ERRORS + t] += w * abs(found[_SCALES + t] * fl + found[_OFFSETS + t] - xi)
        else:
            for t in range(TRIAL_WINDOW):
                fl = F32(max(zero, min(top, nearest_int(found[t] * (xi - lo)))))
                diff = found[_SCALES + t] * fl + found[_OFFSETS + t] - xi
                found[_ERRORS + t] += w * (diff * diff)
    return found


@njit(cache=True, nogil=True, error_model="numpy")
def make_qp_quants(x, weights, nmax, L):
    """ggml-quants.c make_qp_quants: non-negative levels L in [0, nmax] (uint8) for the
    sub-block scales or mins x, weighted by weights; 8 trial scales around nmax/max,
    then up to 5 passes of single-level moves. Returns the super-block scale."""
    n = x.shape[0]
    vmax = F32(0.0)
    for i in range(n):
        vmax = vmax if vmax > x[i] else x[i]
    if vmax < GROUP_MAX_EPS:
        L[:n] = 0
        return F32(0.0)
    iscale = F32(nmax) / vmax
    scale = F32(1.0) / iscale
    best_mse = F32(0.0)
    for i in range(n):
        diff = x[i] - scale * F32(nearest_int(iscale * x[i]) & 0xFF)  # stored in uint8 L
        best_mse += weights[i] * diff * diff
    for step in range(-4, 5):
        if step == 0:
            continue
        iscale_step = (F32(0.1) * F32(step) + F32(nmax)) / vmax
        scale_step = F32(1.0) / iscale_step
        mse = F32(0.0)
        for i in range(n):
            diff = x[i] - scale_step * F32(min(nmax, nearest_int(iscale_step * x[i])))
            mse += weights[i] * diff * diff
        if mse < best_mse:
            best_mse = mse
            iscale = iscale_step
    sumlx = F32(0.0)
    suml2 = F32(0.0)
    for i in range(n):
        l = min(nmax, nearest_int(iscale * x[i]))
        L[i] = l & 0xFF
        w = weights[i]
        sumlx += w * x[i] * F32(l)
        suml2 += w * F32(l) * F32(l)
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            w = weights[i]
            fl = F32(L[i])
            slx = sumlx - w * x[i] * fl
            sl2 = suml2 - w * fl * fl
            if slx > 0 and sl2 > 0:
                new_l = min(nmax, nearest_int(x[i] * sl2 / slx))
                if new_l != L[i]:
                    slx += w * x[i] * F32(new_l)
                    sl2 += w * F32(new_l) * F32(new_l)
                    if slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new_l & 0xFF
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    return sumlx / suml2 if suml2 > 0 else F32(0.0)


@njit(cache=True, nogil=True, error_model="numpy")
def requantize_scratch(n_sub):
    """Per-row work arrays of requantize: d, dm (zeros), tmp."""
    return np.empty(n_sub, F32), np.zeros(n_sub, F32), np.empty(256, np.int32)


@njit(cache=True, nogil=True, error_model="numpy")
def requantize(x, d, dm, sub, lo, hi, offset, L, tmp):
    """The last pass of every K-quant quantizer, with the stored (f16 times 4/6/8-bit)
    scales: L[i] = clamp(nearest_int((x[i] + dm[j]) / d[j]), lo, hi) + offset for
    i in sub-block j (sub values each); where d[j] == 0 ggml skips the sub-block and
    its search levels stay. (x + 0) / d == x / d exactly, so formats without mins
    pass dm = 0. Computed for every sub-block into tmp, then copied where d != 0:
    skipping inside the loop, or a loop per sub-block, made LLVM emit branchy scalar
    code, 7x slower than this flat loop."""
    lo32, hi32, off32 = np.int32(lo), np.int32(hi), np.int32(offset)
    for i in range(d.shape[0] * sub):
        j = i // sub
        tmp[i] = max(lo32, min(hi32, nearest_int((x[i] + dm[j]) / d[j]))) + off32
    for j in range(d.shape[0]):
        if d[j] != 0:
            for i in range(sub * j, sub * j + sub):
                L[i] = tmp[i]


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def pack_2bit(L, out, o):
    """qs of Q2_K/Q3_K: byte 32n + l of each 128-weight half n holds the low two bits
    of weights 128n + l, +32, +64, +96 at bits 0, 2, 4, 6."""
    for n in range(2):
        for l in range(32):
            j = 128 * n + l
            out[o + 32 * n + l] = ((L[j] & 3) | ((L[j + 32] & 3) << 2) | ((L[j + 64] & 3) << 4)
                                   | ((L[j + 96] & 3) << 6))
