"""Search tables and the shared sub-block search of the IQ3 quantizers (IQ3_XXS,
IQ3_S), as ggml-quants.c iq3xs_init_impl / quantize_row_iq3_{xxs,s}_impl.

A group of 4 weights is quantized to 4 lattice levels l in 0..7 (value 2 l + 1);
only the grid's 256 (IQ3_XXS) or 512 (IQ3_S) level patterns are storable. The
search rounds each group to levels, looks the pattern u = sum l_i << 3i up in
`kmap` (grid index, or -(offset + 1) into `neighbours` when u is off the grid),
and for an off-grid u picks the best of its listed neighbours: the grid points
at the nearest 2 (256-grid) or 3 (512-grid) squared distances from u, ordered
by (distance, grid index) as ggml's qsort orders them, since the first of equal
weighted errors wins.

The tables are built from the format's grid (gguf-py's, via iq_common) once
per process, on the first quantize call, and passed to the kernels as arrays.

The quantizer kernels of the IQ3/IQ4 modules compile with error_model="numpy":
a float division by zero gives inf/NaN as in C (an infinite input makes
ggml compute 1/0) instead of raising ZeroDivisionError.
"""
import threading

import numpy as np
from numba import njit

from .quantize_common import block_weights, mean_square, nearest_int, scale_level

_LEVELS_PER_VALUE = 8
_KMAP_SIZE = 4096  # 8^4 level patterns
_NEAREST_DISTANCES = {256: 2, 512: 3}  # iq3xs_init_impl nwant
_FLT_MAX = np.float32(3.4028234663852886e38)

_lock = threading.Lock()
_tables = {}


def lattice_points(grid: np.ndarray) -> np.ndarray:
    """The grid as lattice values 2 l + 1 (int8 [n, 4]), as iq3xs_init_impl builds
    from kgrid: gguf-py's IQ3_S grid already holds them; IQ3_XXS's stores levels
    as 4, 12, ..., 52, 62, so levels are the ranks of the 8 distinct values."""
    values = np.unique(grid)
    assert values.size == _LEVELS_PER_VALUE, values
    levels = np.searchsorted(values, grid)
    return (2 * levels + 1).astype(np.int8)


def build_tables(grid: np.ndarray):
    """(points int8 [n, 4], kmap int32 [4096], neighbours int32 [m], neighbour_values
    f32 [m, 4]) for a grid: neighbour_values[j] is the lattice point of grid index
    neighbours[j] (rows at the count entries are unused), read contiguously by
    best_neighbour instead of through points."""
    points = lattice_points(grid)
    levels = (points.astype(np.int32) - 1) // 2
    kmap = np.full(_KMAP_SIZE, -1, np.int32)
    kmap[(levels << np.array([0, 3, 6, 9])).sum(axis=1)] = np.arange(len(points))
    n_wanted = _NEAREST_DISTANCES[len(points)]
    u = np.arange(_KMAP_SIZE)
    patterns = 2 * ((u[:, None] >> np.array([0, 3, 6, 9])) & 7) + 1
    dist2 = ((points[None, :, :].astype(np.int32) - patterns[:, None, :]) ** 2).sum(axis=2)
    neighbours = []
    for i in np.flatnonzero(kmap < 0):
        order = np.argsort(dist2[i], kind="stable")  # ties by grid index: qsort's order
        kept_distances = np.unique(dist2[i])[:n_wanted]
        near = order[dist2[i][order] <= kept_distances[-1]]
        kmap[i] = -(len(neighbours) + 1)
        neighbours.append(len(near))
        neighbours.extend(near.tolist())
    neighbours = np.array(neighbours, np.int32)
    return points, kmap, neighbours, points[neighbours].astype(np.float32)


def search_tables(grid: np.ndarray):
    """build_tables(grid), built once per process per grid size (thread-safe)."""
    key = len(grid)
    with _lock:
        if key not in _tables:
            _tables[key] = build_tables(grid)
        return _tables[key]


# best_neighbour and snap_group run ~50 M times per 1M weights: inlined (Numba
# otherwise calls them with every array argument spilled), 1.6x faster (perf).
@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def best_neighbour(neighbours, values, start, points, xval, waux, o, scale, L):
    """ggml-quants.c iq3_find_best_neighbour: of the neighbours listed at start, the
    grid point with the least sum waux * (scale * q - xval)^2 over xval[o:o+4]
    (first one on ties); its levels go to L[o:o+4]. Returns its grid index.
    C sums from d2 = 0; starting from the first term differs only in the sign of
    a zero, which no comparison sees. When no error is below FLT_MAX (inf or NaN
    input) ggml aborts; here the first neighbour is taken."""
    best_d2 = _FLT_MAX
    best = start + 1
    x0, x1, x2, x3 = xval[o], xval[o + 1], xval[o + 2], xval[o + 3]
    w0, w1, w2, w3 = waux[o], waux[o + 1], waux[o + 2], waux[o + 3]
    for j in range(start + 1, start + 1 + neighbours[start]):
        e0 = scale * values[j, 0] - x0
        e1 = scale * values[j, 1] - x1
        e2 = scale * values[j, 2] - x2
        e3 = scale * values[j, 3] - x3
        d2 = w0 * e0 * e0 + w1 * e1 * e1 + w2 * e2 * e2 + w3 * e3 * e3
        if d2 < best_d2:
            best_d2 = d2
            best = j
    g = neighbours[best]
    for i in range(4):
        L[o + i] = (points[g, i] - 1) // 2
    return g


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def snap_group(k, inv_scale, scale, xval, waux, L, tables):
    """Group k's levels clamp(nearest_int(0.5 (inv_scale x - 1)), 0, 7) into L[4k:4k+4],
    replaced by the best neighbour's (weighted at `scale`) when off the grid.
    Returns (grid index, whether the rounded pattern was on the grid)."""
    u = 0
    for i in range(4):
        v = np.float32(0.5) * (inv_scale * xval[4 * k + i] - np.float32(1.0))
        l = max(0, min(7, nearest_int(v)))
        L[4 * k + i] = l
        u |= l << (3 * i)
    points, kmap, neighbours, values = tables
    g = kmap[u]
    if g >= 0:
        return g, True
    return best_neighbour(neighbours, values, -g - 1, points, xval, waux, 4 * k, scale, L), False


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def level_sums(weight, xval, L):
    """sum w x q and sum w q^2 with q = 2 L + 1, in the C order."""
    sumqx = np.float32(0.0)
    sumq2 = np.float32(0.0)
    for i in range(32):
        w = weight[i]
        q = np.float32(2 * L[i] + 1)
        sumqx += w * xval[i] * q
        sumq2 += w * q * q
    return sumqx, sumq2


@njit(cache=True, nogil=True, error_model="numpy")
def search_sub_block(xval, xmax, weight, waux, L, Laux, on_grid, on_grid_aux,
                     n_steps, tables, refine_on_grid):
    """The scale search of quantize_row_iq3_{xxs,s}_impl for 32 |x| values with
    maximum xmax > 0: try inverse scales (15 + 0.2 is) / xmax for |is| <= n_steps,
    keep the best weighted fit (levels in L, per group whether it was on the grid
    in on_grid, whose initial value the caller sets). If a group was off the grid,
    re-round at the found scale (every group if refine_on_grid, else only those)
    and refit. Returns the scale; L holds the levels, all on the grid."""
    points = tables[0]
    L[:] = 0  # the levels if no trial scale fits (C: memset(L, 0, ...))
    best = np.float32(0.0)
    scale = xmax / np.float32(15.0)
    for step in range(-n_steps, n_steps + 1):
        inv = (np.float32(15.0) + np.float32(step) * np.float32(0.2)) / xmax
        this_scale = np.float32(1.0) / inv
        for k in range(8):
            on_grid_aux[k] = snap_group(k, inv, this_scale, xval, waux, Laux, tables)[1]
        sumqx, sumq2 = level_sums(weight, xval, Laux)
        if sumq2 > 0 and sumqx * sumqx > best * sumq2:
            scale = sumqx / sumq2
            best = scale * sumqx
            L[:] = Laux
            on_grid[:] = on_grid_aux
    if on_grid.all() or not scale > 0:
        return scale
    inv = np.float32(1.0) / scale
    for k in range(8):
        if refine_on_grid or not on_grid[k]:
            g = snap_group(k, inv, scale, xval, waux, L, tables)[0]
            for i in range(4):
                L[4 * k + i] = (points[g, i] - 1) // 2
    sumqx, sumq2 = level_sums(weight, xval, L)
    if sumq2 > 0:
        scale = sumqx / sumq2
    return scale


@njit(cache=True, nogil=True, error_model="numpy")
def sub_block_weights(row, o, quant_weights, sigma2, weight, waux):
    """weight = qw * sqrtf(sigma2 + x^2) with an imatrix (length > 0), else x^2;
    waux = sqrtf(weight) (quantize_row_iq3_{xxs,s}_impl)."""
    block_weights(row, o, quant_weights, sigma2, weight)
    for i in range(32):
        waux[i] = np.sqrt(weight[i])


@njit(cache=True, nogil=True, error_model="numpy")
def super_block_sigma2(row, o):
    """2 * sum(x^2) / 256 over the super-block at row[o], summed in order."""
    return mean_square(row[o:o + 256], 2)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def sub_block_scale_code(inv_d, scale):
    """4-bit scale: clamp(nearest_int(0.5 (scale / d - 1)), 0, 15)."""
    return scale_level(inv_d, scale, 15)
