"""GGML block formats: one module per type, one registry keyed by GGML type.

Every weight-format module has the same small interface:

    QTYPE          gguf.GGMLQuantizationType
    BLOCK_DTYPE    numpy structured dtype of one block (itemsize == type size)
    BLOCK_SIZE     weights per block
    VEC_DOT_TYPE   GGML type activations are quantized to (ggml's type_traits)
    dequantize_reference(blocks)      plain numpy: blocks[BLOCK_DTYPE] -> f32 [n_blocks, BLOCK_SIZE]
    dequantize_rows(w, out)           Numba: uint8 [rows, row_bytes] -> f32 [rows, n]
    vec_dot(w_row, qs, d, sums)       Numba: one weight row . one quantized activation row
    matmul_kernel(w, qs, d, sums, out)  Numba, parallel over weight rows: out[t, r]
    quantize_blocks(x, imatrix)       f32 [rows, n], f32 [n] or None -> uint8 [rows, row_bytes],
                                      byte-identical to ggml_quantize_chunk (llama-quantize)

Formats with a decode layout (interleave.py: 64 rows side by side) also have:

    pack(w)                           uint8 [rows, row_bytes] -> tuple of layout arrays
    packed_matmul(*packed, qs, d, sums, out)  Numba, parallel over row groups
    packed_dequantize(*packed, g0, out_t)     groups g0.. -> f32 [n, k * 64] (rows as columns)
    packed_block_offsets(*packed)     (Q8_1 formats) the per-block offsets, as block_offsets
    INT8_PREFILL                      (optional) True: batches run packed_matmul too, where
                                      simd.quad_dot has VNNI (interleave.quads_dot)

Activation formats (modules in ACTIVATIONS) quantize float rows to (qs, d, sums)
arrays; see quant_formats/q8_0.py for the shape of that tuple.
Modules are imported on first use, so a model compiles only the kernels it needs.
"""
import importlib

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

from . import numba_cache

numba_cache.install()  # before any kernel module is imported: see numba_cache.py

from . import interleave, simd  # noqa: E402  (kernels: after the stamp is installed)

# GGML type -> module name. Adding a format: its module and one line here.
FORMATS = {
    T.F32: "f32", T.F16: "f16", T.BF16: "bf16",
    T.Q4_0: "q4_0", T.Q4_1: "q4_1", T.Q5_0: "q5_0", T.Q5_1: "q5_1", T.Q8_0: "q8_0",
    T.Q2_K: "q2_k", T.Q3_K: "q3_k", T.Q4_K: "q4_k", T.Q5_K: "q5_k", T.Q6_K: "q6_k",
    T.IQ4_NL: "iq4_nl", T.IQ4_XS: "iq4_xs", T.IQ3_XXS: "iq3_xxs", T.IQ3_S: "iq3_s",
    T.IQ2_XXS: "iq2_xxs", T.IQ2_XS: "iq2_xs", T.IQ2_S: "iq2_s",
    T.IQ1_S: "iq1_s", T.IQ1_M: "iq1_m",
}
ALL_FORMATS = tuple(FORMATS)  # the 22 weight types the project covers
# Activation-only formats (vec_dot types that are not weight formats here).
ACTIVATIONS = {T.Q8_1: "q8_1", T.Q8_K: "q8_k"}

# Above this many tokens, matmul dequantizes weight tiles and uses BLAS on the
# quantize-dequantized activations: the same products, summed in float.
PREFILL_MIN_TOKENS = 8
_TILE_BYTES = 1 << 20  # float32 weight tile size for the prefill path


_modules = {}  # qtype -> module: get() runs per matmul, import_module costs ~3 us


def get(qtype):
    """The module for a GGML type (weight or activation format)."""
    module = _modules.get(qtype)
    if module is None:
        name = FORMATS.get(qtype) or ACTIVATIONS.get(qtype)
        if name is None:
            raise NotImplementedError(f"no kernel for GGML type {T(qtype).name}")
        module = _modules[qtype] = importlib.import_module(f"{__name__}.{name}")
    return module


def is_supported(qtype) -> bool:
    return qtype in FORMATS


def row_elements(qtype, row_bytes: int) -> int:
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    return row_bytes // type_size * block_size


def dequantize(data: np.ndarray, qtype) -> np.ndarray:
    """Same contract as gguf.quants.dequantize: bytes [..., row_bytes] -> f32 [..., n]."""
    data = np.ascontiguousarray(data).view(np.uint8)
    lead = data.shape[:-1]
    rows = data.reshape(-1, data.shape[-1])
    out = np.empty((rows.shape[0], row_elements(qtype, rows.shape[1])), np.float32)
    if rows.size:
        get(qtype).dequantize_rows(rows, out)
    return out.reshape(*lead, out.shape[-1])


def quantize(x: np.ndarray, qtype, imatrix: np.ndarray | None = None) -> np.ndarray:
    """f32 [rows, n] -> uint8 [rows, row_bytes]: the bytes llama-quantize writes for these
    rows (ggml_quantize_chunk), weighting errors by imatrix (f32 [n]) when given."""
    fmt = get(qtype)
    x = np.ascontiguousarray(x, np.float32)
    if x.ndim != 2 or x.shape[1] % fmt.BLOCK_SIZE:
        raise ValueError(f"quantize {T(qtype).name}: rows of {x.shape[-1]} values are not "
                         f"a multiple of the block size {fmt.BLOCK_SIZE}")
    if imatrix is not None:
        imatrix = np.ascontiguousarray(imatrix, np.float32)
        if imatrix.shape != (x.shape[1],):
            raise ValueError(f"quantize: importance matrix has {imatrix.size} values, "
                             f"rows have {x.shape[1]}")
    if not hasattr(fmt, "quantize_blocks"):
        raise NotImplementedError(f"no quantizer for GGML type {T(qtype).name}")
    return fmt.quantize_blocks(x, imatrix)


def quantize_activations(x: np.ndarray, qtype):
    """f32 [n_tokens, n_in] -> the (qs, d, sums) tuple of the weight format's vec_dot type."""
    return get(get(qtype).VEC_DOT_TYPE).quantize(np.ascontiguousarray(x, np.float32))


def pack(w: np.ndarray, qtype):
    """w in the format's decode layout (interleave.py), or None where it has none."""
    fmt = get(qtype)
    return fmt.pack(np.ascontiguousarray(w)) if hasattr(fmt, "pack") else None


def matmul(x: np.ndarray, w: np.ndarray, qtype, out: np.ndarray | None = None,
           act=None, packed=None) -> np.ndarray:
    """x f32 [n_tokens, n_in] @ W.T, W given as its quantized bytes uint8 [n_out, row_bytes].
    act: x already quantized to the format's vec_dot type (shared by matrices that
    read the same input). packed: pack(w, qtype), used instead of w when given."""
    fmt = get(qtype)
    n_tokens, n_in = x.shape
    if row_elements(qtype, w.shape[1]) != n_in:
        raise ValueError(f"matmul: x has {n_in} columns, weight rows hold "
                         f"{row_elements(qtype, w.shape[1])}")
    if out is None:
        out = np.empty((n_tokens, w.shape[0]), np.float32)
    if packed is not None:
        return matmul_packed(x, packed, qtype, out, act)
    act_fmt = get(fmt.VEC_DOT_TYPE)
    act = _activations(x, qtype, act_fmt, act)
    if n_tokens < PREFILL_MIN_TOKENS:
        fmt.matmul_kernel(w, *act, out)
        return out
    _matmul_tiled(fmt, _rounded_activations(x, act_fmt, act), w, out)
    if hasattr(act_fmt, "offset_residual"):  # Q8_1: ggml rounds s = d*sum to f16
        out += act_fmt.offset_residual(*act) @ fmt.block_offsets(w).T
    return out


def matmul_packed(x, packed, qtype, out, act=None):
    """matmul with W in its decode layout (pack()): out f32 [n_tokens, n_out] holds
    the first n_out of the layout's rows. The caller checks the shapes."""
    fmt = get(qtype)
    act_fmt = get(fmt.VEC_DOT_TYPE)
    if x.shape[0] < PREFILL_MIN_TOKENS or _int8_prefill(fmt):
        act = quantize_activations(x, qtype) if act is None else act
        fmt.packed_matmul(*packed, *act, out)
        return out
    act = _activations(x, qtype, act_fmt, act)
    _matmul_tiled_packed(fmt, _rounded_activations(x, act_fmt, act), packed, out)
    if hasattr(act_fmt, "offset_residual"):  # Q8_1: ggml rounds s = d*sum to f16
        offsets = fmt.packed_block_offsets(*packed)[:out.shape[1]]
        out += act_fmt.offset_residual(*act) @ offsets.T
    return out


def _int8_prefill(fmt) -> bool:
    """Whether a batch runs fmt's packed_matmul (integer sums, ggml's vec_dot order)
    rather than dequantized tiles through BLAS sgemm: where it loads each weight once
    for several tokens and the CPU has VNNI, measured 1.7-2x faster than the tiles."""
    return getattr(fmt, "INT8_PREFILL", False) and simd.host_has("avx512vnni")


def _activations(x, qtype, act_fmt, act):
    """act, or x quantized to the vec_dot format where the kernels need it: a few
    tokens, or a format without rounded() (Q8_1: its offset term reads act). None
    leaves prefill to round x in one pass (_rounded_activations)."""
    if act is None and (x.shape[0] < PREFILL_MIN_TOKENS or not hasattr(act_fmt, "rounded")):
        return quantize_activations(x, qtype)
    return act


def _rounded_activations(x, act_fmt, act):
    """x as the activation format holds it, f32: from act (quantized already, shared
    by matrices of one input) or, the prefill case, in one pass (act_fmt.rounded)."""
    if act is None:
        return act_fmt.rounded(np.ascontiguousarray(x, np.float32))
    return act_fmt.dequantize(*act)


def _matmul_tiled(fmt, x_rounded, w, out):
    tile_rows = max(16, _TILE_BYTES // (4 * x_rounded.shape[1]))
    tile = np.empty((min(tile_rows, w.shape[0]), x_rounded.shape[1]), np.float32)
    for r0 in range(0, w.shape[0], tile_rows):
        r1 = min(r0 + tile_rows, w.shape[0])
        fmt.dequantize_rows(w[r0:r1], tile[: r1 - r0])
        np.matmul(x_rounded, tile[: r1 - r0].T, out=out[:, r0:r1])


def _matmul_tiled_packed(fmt, x_rounded, packed, out):
    """_matmul_tiled over whole groups of the interleaved layout, dequantized into a
    transposed tile [n_in, rows] (the layout's row loop stays innermost)."""
    n_out, n_groups = out.shape[1], packed[0].shape[0]
    group_bytes = 4 * interleave.ROWS * x_rounded.shape[1]
    tile_groups = max(1, _TILE_BYTES // group_bytes)
    tile_t = np.empty((x_rounded.shape[1], min(tile_groups, n_groups) * interleave.ROWS),
                      np.float32)
    for g0 in range(0, n_groups, tile_groups):
        g1 = min(g0 + tile_groups, n_groups)
        r0, r1 = g0 * interleave.ROWS, min(g1 * interleave.ROWS, n_out)
        cols = (g1 - g0) * interleave.ROWS
        if cols != tile_t.shape[1]:  # the last, narrower tile
            tile_t = np.empty((x_rounded.shape[1], cols), np.float32)
        fmt.packed_dequantize(*packed, g0, tile_t)
        np.matmul(x_rounded, tile_t[:, :r1 - r0], out=out[:, r0:r1])
