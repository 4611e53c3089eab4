"""Search tables and shared helpers for the IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S and IQ1_M
quantizers (ggml-quants.c iq2xs_init_impl and the quantize_row_iq*_impl searches).

Each of those grids holds 8-value points whose values take 3 levels; ggml's search
works on level codes 0..2 (stored as 2 code + 1 = 1, 3, 5 in its kgrid_q2xs). A
point's key packs its 8 codes 2 bits each. `search_tables(qtype)` gives
    grid        int8 [n_grid, 8]  2 code + 1 per value, the same order as the format's GRID
    key_map     int32 [2^16]      grid index of a key on the grid, else -(offset + 1)
    neighbours  uint16 [...]      at offset: count, then the grid indices of the points
                                  at the NWANT smallest squared distances, by (distance, index)
exactly as iq2xs_init_impl lays them out (the order decides ties in the searches).
Tables are built on first use (a second or two under Numba) and kept per process;
dequantize users never build them. The codes come from gguf-py's grids and grid_map,
so they equal llama.cpp's kgrid_2bit_256/512/1024 and kgrid_1bit_2048.
"""
import math
import threading

import numpy as np
from gguf import GGMLQuantizationType as T, quants as gguf_quants
from numba import njit, prange

from .common import to_f16
from .iq_common import grid_from_gguf
from .quantize_common import nearest_int  # noqa: F401 (re-exported for the IQ modules)

KEY_COUNT = 43692  # iq2xs_init_impl kmap_size: every key with codes <= 2, plus one
FLT_MAX = np.float32(3.4028234663852886e38)
_MAX_DIST2 = 8 * 36  # keys may hold code 3 (position 7); grid positions are 1..5

# iq2xs_init_impl: nwant, the number of distinct distances kept per off-grid key.
# IQ1_S and IQ1_M share one table (iq2_data_index).
_GRID_CLASS = {T.IQ2_XXS: (gguf_quants.IQ2_XXS, 2), T.IQ2_XS: (gguf_quants.IQ2_XS, 2),
               T.IQ2_S: (gguf_quants.IQ2_S, 1), T.IQ1_S: (gguf_quants.IQ1_S, 3),
               T.IQ1_M: (gguf_quants.IQ1_S, 3)}
_tables = {}
_lock = threading.Lock()


def search_tables(qtype):
    """(grid, key_map, neighbours) for an IQ2/IQ1 type, built once per process."""
    quant_class, nwant = _GRID_CLASS[qtype]
    with _lock:
        if quant_class not in _tables:
            _tables[quant_class] = _build_tables(quant_class, nwant)
        return _tables[quant_class]


def _build_tables(quant_class, nwant):
    values = grid_from_gguf(quant_class).astype(np.int32)
    levels = np.array(quant_class.grid_map, np.int32)
    codes = np.argmax(values[:, :, None] == levels, axis=2)
    assert np.array_equal(levels[codes], values), quant_class.__name__
    grid = (2 * codes + 1).astype(np.int8)
    keys = (codes << (2 * np.arange(8))).sum(axis=1)
    # Padded to every 16-bit key, so that a key of codes 3 (only from NaN/inf input,
    # on which ggml aborts) still reads inside the table.
    key_map = np.full(1 << 16, -1, np.int32)
    key_map[keys] = np.arange(len(grid), dtype=np.int32)
    thresholds = np.zeros(KEY_COUNT, np.int32)
    counts = np.zeros(KEY_COUNT, np.int32)
    _neighbour_counts(grid, key_map, nwant, thresholds, counts)
    off_grid = key_map[:KEY_COUNT] < 0
    slots = np.where(off_grid, counts + 1, 0)  # a count, then the list
    offsets = np.cumsum(slots) - slots
    neighbours = np.zeros(int(slots.sum()), np.uint16)
    key_map[:KEY_COUNT][off_grid] = -(offsets[off_grid] + 1).astype(np.int32)
    _write_neighbours(grid, key_map, thresholds, neighbours)
    return grid, key_map, neighbours


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _distance2(key, grid, j):
    d2 = 0
    for k in range(8):
        diff = np.int32(grid[j, k]) - (2 * ((key >> (2 * k)) & 3) + 1)
        d2 += diff * diff
    return d2


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _neighbour_counts(grid, key_map, nwant, thresholds, counts):
    """Per off-grid key: the NWANT-th smallest distinct squared distance to the grid
    and how many grid points lie within it (iq2xs_init_impl's first pass)."""
    for key in prange(KEY_COUNT):
        if key_map[key] >= 0:
            continue
        histogram = np.zeros(_MAX_DIST2 + 1, np.int32)
        for j in range(grid.shape[0]):
            histogram[_distance2(key, grid, j)] += 1
        have = 0
        count = 0
        for dist2 in range(_MAX_DIST2 + 1):
            if histogram[dist2]:
                have += 1
                count += histogram[dist2]
                thresholds[key] = dist2
                if have == nwant:
                    break
        counts[key] = count


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _write_neighbours(grid, key_map, thresholds, neighbours):
    """The lists, sorted by (distance, grid index) as iq2xs_init_impl's qsort."""
    for key in prange(KEY_COUNT):
        if key_map[key] >= 0:
            continue
        start = -key_map[key] - 1
        distances = np.empty(grid.shape[0], np.int32)
        for j in range(grid.shape[0]):
            distances[j] = _distance2(key, grid, j)
        n = 0
        for dist2 in range(thresholds[key] + 1):
            for j in range(grid.shape[0]):
                if distances[j] == dist2:
                    n += 1
                    neighbours[start + n] = j
        neighbours[start] = n


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def f16_bits(x):
    """The uint16 bits of GGML_FP32_TO_FP16(x) (round to nearest even)."""
    r = to_f16(x)
    sign = 0x8000 if math.copysign(1.0, r) < 0 else 0
    a = abs(r)
    if math.isinf(a):
        return sign | 0x7C00
    if a < 6.103515625e-05:  # 2^-14: subnormal (or zero), a multiple of 2^-24
        return sign | np.int32(a * 16777216.0)
    mantissa, exponent = math.frexp(a)
    return sign | ((exponent + 14) << 10) | np.int32((2.0 * mantissa - 1.0) * 1024.0)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def put_u16(out, o, value):
    out[o] = value & 255
    out[o + 1] = (value >> 8) & 255


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def key_of(L, lo):
    """The 2-bit-per-value key of the 8 codes L[lo:lo + 8]."""
    key = 0
    for i in range(8):
        key |= (L[lo + i] & 3) << (2 * i)
    return key


@njit(cache=True, nogil=True, error_model="numpy")
def iq2_find_best_neighbour(neighbours, key_entry, grid, xval, weight, lo, scale, L):
    """ggml-quants.c iq2_find_best_neighbour: of a key's neighbour list, the grid point
    nearest to xval[lo:lo+8] / scale in weighted squared error (first on ties);
    its codes go to L[lo:lo+8]."""
    start = -key_entry - 1
    best_d2 = FLT_MAX
    grid_index = -1
    for j in range(1, np.int32(neighbours[start]) + 1):
        candidate = np.int32(neighbours[start + j])
        d2 = np.float32(0.0)
        for i in range(8):
            diff = scale * np.float32(grid[candidate, i]) - xval[lo + i]
            d2 += weight[lo + i] * diff * diff
        if d2 < best_d2:
            best_d2 = d2
            grid_index = candidate
    for i in range(8):
        L[lo + i] = (np.int32(grid[grid_index, i]) - 1) // 2
    return grid_index


@njit(cache=True, nogil=True, error_model="numpy")
def iq1_find_best_neighbour2(neighbours, key_entry, grid, xb, weight, lo, scale, levels, L):
    """ggml-quants.c iq1_find_best_neighbour2: as iq2_find_best_neighbour with the
    shifted levels (x_p or x_m) in place of 2 code + 1; whole grid if none is finite."""
    start = -key_entry - 1
    best_d2 = FLT_MAX
    grid_index = -1
    for j in range(1, np.int32(neighbours[start]) + 1):
        candidate = np.int32(neighbours[start + j])
        d2 = _iq1_distance2(grid, candidate, xb, weight, lo, scale, levels)
        if d2 < best_d2:
            best_d2 = d2
            grid_index = candidate
    if grid_index < 0:  # ggml's fallback indexes xval by the grid index (a bug); ours does not
        for candidate in range(grid.shape[0]):
            d2 = _iq1_distance2(grid, candidate, xb, weight, lo, scale, levels)
            if d2 < best_d2:
                best_d2 = d2
                grid_index = candidate
    grid_index = max(grid_index, 0)
    for i in range(8):
        L[lo + i] = (np.int32(grid[grid_index, i]) - 1) // 2
    return grid_index


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _iq1_distance2(grid, candidate, xb, weight, lo, scale, levels):
    d2 = np.float32(0.0)
    for i in range(8):
        diff = scale * levels[(np.int32(grid[candidate, i]) - 1) // 2] - xb[lo + i]
        d2 += weight[lo + i] * diff * diff
    return d2


@njit(cache=True, nogil=True, error_model="numpy")
def stable_order(values, order):
    """order = indices sorting values ascending, equal values in index order: the
    order glibc's qsort (a merge sort) gives iq1_sort_helper, which compares values only."""
    n = values.shape[0]
    for j in range(n):
        order[j] = j
    for j in range(1, n):
        moving = order[j]
        k = j
        while k > 0 and values[order[k - 1]] > values[moving]:
            order[k] = order[k - 1]
            k -= 1
        order[k] = moving


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def snap_to_grid(xval, waux, lo, inv_scale, scale, grid, key_map, neighbours, L):
    """Codes of xval[lo:lo+8] * inv_scale (levels 0..2) into L, replaced by the best
    listed neighbour when off the grid (the IQ2 searches); True if on the grid."""
    for i in range(lo, lo + 8):
        level = nearest_int(np.float32(0.5) * (inv_scale * xval[i] - np.float32(1.0)))
        L[i] = max(0, min(2, level))
    entry = key_map[key_of(L, lo)]
    if entry < 0:
        iq2_find_best_neighbour(neighbours, entry, grid, xval, waux, lo, scale, L)
    return entry >= 0


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def weighted_sums(xval, weight, L):
    sumqx = np.float32(0.0)
    sumq2 = np.float32(0.0)
    for i in range(xval.shape[0]):
        q = np.float32(2 * L[i] + 1)
        sumqx += weight[i] * xval[i] * q
        sumq2 += weight[i] * q * q
    return sumqx, sumq2


@njit(cache=True, nogil=True, error_model="numpy")
def iq2_search_16(xval, weight, waux, eps, grid, key_map, neighbours, L, trial):
    """(scale, skipped) for 16 values as quantize_row_iq2_xs_impl and _iq2_s_impl:
    19 trial scales, then the off-grid groups of the best re-snapped at its scale;
    their codes in L."""
    L[:] = 0
    top = xval[0]
    for i in range(1, 16):
        top = max(top, xval[i])
    if top < eps:
        return np.float32(0.0), True
    best = np.float32(0.0)
    scale = top / np.float32(5)
    on_grid0, on_grid1 = True, True
    for step in range(-9, 10):
        inv = (np.float32(5) + np.float32(step) * np.float32(0.1)) / top
        this_scale = np.float32(1.0) / inv
        trial_on0 = snap_to_grid(xval, waux, 0, inv, this_scale, grid, key_map, neighbours, trial)
        trial_on1 = snap_to_grid(xval, waux, 8, inv, this_scale, grid, key_map, neighbours, trial)
        sumqx, sumq2 = weighted_sums(xval, weight, trial)
        if sumq2 > 0 and sumqx * sumqx > best * sumq2:
            scale = sumqx / sumq2
            best = scale * sumqx
            L[:] = trial
            on_grid0, on_grid1 = trial_on0, trial_on1
    if (not on_grid0 or not on_grid1) and scale > 0:
        inv = np.float32(1.0) / scale
        if not on_grid0:
            snap_to_grid(xval, waux, 0, inv, scale, grid, key_map, neighbours, L)
        if not on_grid1:
            snap_to_grid(xval, waux, 8, inv, scale, grid, key_map, neighbours, L)
        sumqx, sumq2 = weighted_sums(xval, weight, L)
        if sumq2 > 0:
            scale = sumqx / sumq2
    return scale, False


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def even_signs(xb, weight, xval, n_groups):
    """xval = |xb| except, per 8, the least important value (weight x^2) of an odd
    count of negatives keeps its sign (IQ2_XXS, IQ2_XS store only even sign
    patterns); returns the groups' 7-bit sign indices packed at bit 7 k."""
    packed = 0
    for k in range(n_groups):
        flips = 0
        s = 0
        for i in range(8 * k, 8 * k + 8):
            if xb[i] >= 0:
                xval[i] = xb[i]
            else:
                xval[i] = -xb[i]
                flips += 1
                s |= 1 << (i - 8 * k)
        if flips % 2:
            imin = 8 * k
            least = weight[imin] * xb[imin] * xb[imin]
            for i in range(8 * k + 1, 8 * k + 8):
                importance = weight[i] * xb[i] * xb[i]
                if importance < least:
                    least = importance
                    imin = i
            xval[imin] = -xval[imin]
            s ^= 1 << (imin - 8 * k)
        packed |= (s & 127) << (7 * k)
    return packed


@njit(cache=True, nogil=True, error_model="numpy")
def iq1_snap_group(L, xb, weight, lo, scale, levels, grid, key_map, neighbours):
    """(grid index, on grid) for the codes L[lo:lo+8] of IQ1_S/IQ1_M; off the grid,
    iq1_find_best_neighbour2's choice (its codes replace L's)."""
    entry = key_map[key_of(L, lo)]
    if entry >= 0:
        return entry, True
    return iq1_find_best_neighbour2(neighbours, entry, grid, xb, weight, lo, scale,
                                    levels, L), False


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def iq1_accumulate(grid, grid_index, xb, weight, lo, levels, factor, sumqx, sumq2):
    """sumqx, sumq2 plus one group's w q x and w q q, q = level * factor, in ggml's order."""
    for j in range(8):
        w = weight[lo + j]
        q = levels[(np.int32(grid[grid_index, j]) - 1) // 2] * factor
        sumqx += w * q * xb[lo + j]
        sumq2 += w * q * q
    return sumqx, sumq2


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def iq1_split_codes(order, i1, i2, L):
    """Codes 0 / 1 / 2 for the sorted positions below i1 / below i2 / the rest."""
    for j in range(order.shape[0]):
        L[order[j]] = 0 if j < i1 else (1 if j < i2 else 2)
