"""A matrix's part of a decode layer (decode.py): its spec, its layout passed by
address, its input quantized and its row groups claimed in the region."""
import numba
import numpy as np
from numba import njit, types

from quant_formats import (interleave_k as ik, interleave_nibbles as nibbles, launch, q8_0, q8_1,
                           q8_k)

from . import layers, region

# The activation formats, as the int quantize_activation branches on (a runtime value:
# their arrays have the same types, and all three compile once).
ACT_KINDS = {"Q8_0": 0, "Q8_1": 1, "Q8_K": 2}

# The decode layouts (quant_formats/__init__.py pack), told apart by the dtype and rank
# of each item (layout_key). A spec holds its layout by address (launch.to_bytes), so
# every spec has one type whatever its format and a model compiles one decode
# _layer_steps, where it compiled one per combination of formats in a layer (SmolLM2
# Q4_K_M and gemma3: two, ~12 s each on a first run); the format is a runtime kind, the
# group function is called through its address (group_address). Each layout: its key,
# the parallel kernel (the batch path's; test_decode_matmul checks every packable format
# maps to its module's), the activations' offsets the kernel takes back (once per call)
# and one row group. _offsets and _group_at name the layout types once more.
F32_3, U16_3, I8_4, U8_4 = ("float32", 3), ("uint16", 3), ("int8", 4), ("uint8", 4)
LAYOUTS = (
    ((U16_3, U8_4),  # Q8_0
     q8_0.packed_matmul, q8_0.packed_offsets, q8_0.packed_group),
    ((F32_3, I8_4, U8_4),  # Q6_K, IQ4_XS, IQ2_XXS
     ik.int8_subblocks_matmul, ik.int8_subblocks_offsets, ik.int8_subblocks_group),
    ((U16_3, U16_3, U8_4, "int"),  # Q4_0, Q4_1, Q5_0, IQ4_NL
     nibbles.nibble_matmul, nibbles.nibble_offsets, nibbles.nibble_group),
    ((F32_3, F32_3, U8_4, U8_4, U8_4),  # Q4_K
     ik.q4_k_matmul, ik.scale_min_offsets, ik.q4_k_group),
    ((F32_3, F32_3, U8_4, U8_4, I8_4),  # Q5_K
     ik.int8_scale_min_matmul, ik.scale_min_offsets, ik.int8_scale_min_group),
)
KERNELS = {layout[0]: layout[1:] for layout in LAYOUTS}
KINDS = {layout[0]: kind for kind, layout in enumerate(LAYOUTS)}


def _numba_type(key):
    """The Numba type of a layout with this key (arrays C-contiguous, writable)."""
    return types.Tuple(tuple(
        types.int64 if k == "int" else types.Array(getattr(types, k[0]), k[1], "C") for k in key))


LAYOUT_TYPES = [_numba_type(layout[0]) for layout in LAYOUTS]
_Q8_0, _SUBBLOCKS, _NIBBLES, _Q4_K, _Q5_K = LAYOUT_TYPES
X_OFFSETS_TYPE = types.Array(types.int32, 2, "C")  # what every offsets function returns


def layout_key(packed):
    """LAYOUTS' key of a layout tuple (numpy arrays and ints)."""
    return tuple((a.dtype.name, a.ndim) if isinstance(a, np.ndarray) else "int" for a in packed)


@njit(cache=True, nogil=True)
def _offsets(kind, layout, qs):
    """LAYOUTS[kind]'s offsets function on the layout at address `layout`."""
    if kind == 0:
        return q8_0.packed_offsets(*launch.deref(layout, _Q8_0), qs)
    if kind == 1:
        return ik.int8_subblocks_offsets(*launch.deref(layout, _SUBBLOCKS), qs)
    if kind == 2:
        return nibbles.nibble_offsets(*launch.deref(layout, _NIBBLES), qs)
    if kind == 3:
        return ik.scale_min_offsets(*launch.deref(layout, _Q4_K), qs)
    return ik.scale_min_offsets(*launch.deref(layout, _Q5_K), qs)


@njit(cache=True, nogil=True)
def _group_at(kind, address, layout, qs, d, sums, x_offsets, out, g):
    """Row group g by LAYOUTS[kind]'s group function at address, on the layout at
    address `layout`."""
    rest = (qs, d, sums, x_offsets, out, g)
    if kind == 0:
        launch.call_at(address, launch.deref(layout, _Q8_0) + rest)
    elif kind == 1:
        launch.call_at(address, launch.deref(layout, _SUBBLOCKS) + rest)
    elif kind == 2:
        launch.call_at(address, launch.deref(layout, _NIBBLES) + rest)
    elif kind == 3:
        launch.call_at(address, launch.deref(layout, _Q4_K) + rest)
    else:
        launch.call_at(address, launch.deref(layout, _Q5_K) + rest)


@njit(cache=True, nogil=True)
def quantize_activation(kind, x, qs, d, sums):
    """x [1, n] into the arrays of its activation format (ACT_KINDS)."""
    if kind == 2:
        q8_k.quantize_rows(x, qs, d, sums)
    else:
        q8_0.quantize_rows(x, qs, d)
        if kind == 1:
            q8_1.block_sums(x, qs, sums)


# A matrix's spec: (kind, act_kind, layout, n_groups, qs, d, sums, bias, out, weights,
# group_bytes), out = x @ W.T (+ bias), layout the address of its layout's bytes
# (spec), weights the address of its largest array (the quants), group_bytes that
# array's bytes a row group; no row groups for a matrix fused into the one before it
# (absent_spec: each function below does nothing).

# share_span's cap: what a thread prefetches of its next share while it waits (64 KB
# gained 1.7% on SmolLM2 Q4_0's layers, 192 KB 1.8-2.8%; a core's L2 holds 512 KB)
PREFETCH_BYTES = 192 * 1024


@njit(cache=True, nogil=True)
def quantize_input(spec, x):
    """x into the spec's activation arrays (before its row groups run)."""
    if spec[3]:
        quantize_activation(spec[1], x, spec[4], spec[5], spec[6])


@njit(cache=True, nogil=True)
def row_groups(spec, address, sync, step, part):
    """Claim and compute the spec's row groups until none is left (step's counters;
    part: the thread's share, region.claim), calling its format's group function at
    address (load_steps)."""
    kind, act_kind, layout, n_groups, qs, d, sums, bias, out, _, _ = spec
    g = region.claim(sync, step, n_groups, part)
    if g >= n_groups:
        return
    x_offsets = _offsets(kind, layout, qs)  # each thread its own: no wait for a shared one
    while g < n_groups:
        _group_at(kind, address, layout, qs, d, sums, x_offsets, out, g)
        region.finish(sync, step)
        g = region.claim(sync, step, n_groups, part)


@njit(cache=True, nogil=True)
def wait_groups(spec, sync, step, span, cursor):
    """Until every row group of the spec is done, prefetching span from cursor meanwhile
    (region.wait_prefetching); the new cursor."""
    return region.wait_prefetching(sync, step, spec[3], span, cursor)


@njit(cache=True, nogil=True)
def share_span(spec, sync, part):
    """(address, n_bytes): the start of the quants of the thread's own share of the
    spec's row groups (region.claim's), at most PREFETCH_BYTES: what it reads first
    once the spec's input is ready."""
    n_groups, weights, group_bytes = spec[3], spec[9], spec[10]
    parts = region.n_parts(sync)
    first, end = part * n_groups // parts, (part + 1) * n_groups // parts
    return weights + first * group_bytes, min(PREFETCH_BYTES, (end - first) * group_bytes)


@njit(cache=True, nogil=True)
def add_bias(spec):
    """The spec's bias into its output (after its row groups)."""
    bias, out = spec[7], spec[8]
    for j in range(bias.shape[0]):
        out[0, j] += bias[j]



def spec(matrix, out):
    """The spec of a weights.Matrix or FusedMatrix writing into out; None if its layout
    is not of the type _group_at loads (not C-contiguous and writable). The matrix
    keeps the layout's bytes."""
    packed = tuple(matrix.packed)
    kind = KINDS[layout_key(packed)]
    if numba.typeof(packed) != LAYOUT_TYPES[kind]:
        return None
    matrix.layout_bytes = launch.to_bytes(packed)
    first = matrix.parts[0] if hasattr(matrix, "parts") else matrix
    qs, d, sums = first._one_token
    bias = matrix.bias if matrix.bias is not None else layers.NO_WEIGHT
    quants = max((a for a in packed if isinstance(a, np.ndarray)), key=lambda a: a.nbytes)
    return (kind, ACT_KINDS[first.act_type.name], matrix.layout_bytes.ctypes.data,
            packed[0].shape[0], qs, d, sums, bias, out, quants.ctypes.data,
            quants.nbytes // quants.shape[0])


def absent_spec():
    """A spec without row groups, of the others' type (for a matrix fused into the one
    before it)."""
    empty = np.zeros((1, 0), np.float32)
    return (0, 0, 0, 0, np.zeros((1, 0), np.int8), empty, empty, layers.NO_WEIGHT, empty, 0, 0)


def group_address(spec):
    """The address of the spec's group function compiled for the arguments row_groups
    passes it (0 for a spec without row groups)."""
    kind, act_kind, layout, n_groups, qs, d, sums, bias, out, _, _ = spec
    if not n_groups:
        return 0
    return launch.address_of(LAYOUTS[kind][3], (
        *LAYOUT_TYPES[kind].types, *(numba.typeof(a) for a in (qs, d, sums)), X_OFFSETS_TYPE,
        numba.typeof(out), types.int64))
