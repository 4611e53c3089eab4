"""Numba kernels of the transformer layers: norms, RoPE, batched f32 attention, gated
FFN (flash_attention.py: the f16 attention of small batches and decode).

Each kernel handles a whole batch (all tokens, all heads) in one call, so the
forward pass makes a few calls per layer and no Python runs per head or element.
Numerics follow ggml-cpu where they decide near-ties (sources cited per kernel).
"""
import numpy as np
from numba import njit, prange

import quant_formats  # noqa: F401  (installs the project-wide Numba cache stamp first)
from quant_formats import launch
from quant_formats.common import f32_from_bits, fma32
from .flash_attention import FA_TILE_Q


# One token runs these serially: a parallel region costs ~3-4 us to launch, more
# than their work; batches split their rows across threads. The row functions
# are not inlined: inside a parallel=True function Numba would turn their array
# expressions into parallel regions of their own.
@njit(cache=True, nogil=True)
def rms_norm_row(x, weight, eps, out):
    """out = x / sqrt(mean(x^2) + eps) * weight, each len(weight) group (head) of
    the row on its own. ggml-cpu/ops.cpp rms_norm_f32: squares summed in double,
    scale in float."""
    width = weight.shape[0]
    for o in range(0, x.shape[0], width):
        acc = 0.0
        for j in range(width):
            v = x[o + j]
            acc += np.float64(v * v)
        mean = np.float32(acc / width)
        scale = np.float32(1.0) / np.sqrt(mean + eps)
        for j in range(width):
            out[o + j] = (x[o + j] * scale) * weight[j]


def rms_norm(x, weight, eps, out):
    """out[t] = rms-normed x[t] times weight, per len(weight) group of a row
    (width len(weight): the whole row; head_dim: per head). Rows in parallel
    (launch.run_items: a parallel loop of its own compiled ~2 s more)."""
    if x.shape[0] == 1:
        rms_norm_row(x[0], weight, eps, out[0])
    else:
        launch.run_items(_rms_norm_item, (x, weight, eps, out), x.shape[0])


@njit(cache=True, nogil=True)
def _rms_norm_item(x, weight, eps, out, t):
    rms_norm_row(x[t], weight, eps, out[t])


NO_WEIGHT = np.zeros(0, np.float32)  # residual_norm's post_weight where a model has none


@njit(cache=True, nogil=True)
def residual_norm_row(x, out, post_weight, eps, weight, xb):
    if post_weight.shape[0]:
        rms_norm_row(out, post_weight, eps, out)
    for j in range(x.shape[0]):
        x[j] += out[j]
    rms_norm_row(x, weight, eps, xb)


def residual_norm(x, out, post_weight, eps, weight, xb):
    """A sub-layer's end and the next one's start in one call: out is post-normed
    (gemma3; skipped for an empty post_weight), added to the residual x, and
    xb = rms_norm(x) * weight, the input of what follows. Rows in parallel."""
    if x.shape[0] == 1:
        residual_norm_row(x[0], out[0], post_weight, eps, weight, xb[0])
    else:
        launch.run_items(_residual_norm_item, (x, out, post_weight, eps, weight, xb), x.shape[0])


@njit(cache=True, nogil=True)
def _residual_norm_item(x, out, post_weight, eps, weight, xb, t):
    residual_norm_row(x[t], out[t], post_weight, eps, weight, xb[t])


@njit(cache=True, nogil=True)
def _rope_row(x, position, head_dim, n_rot, theta_scale, freq_scale, neox, cos, sin):
    half = n_rot // 2
    theta = np.float32(position)
    for i in range(half):
        angle = np.float32(freq_scale) * theta
        cos[i] = np.cos(angle)
        sin[i] = np.sin(angle)
        theta = np.float32(theta * theta_scale)
    for o in range(0, x.shape[0], head_dim):
        for i in range(half):
            a, b = (o + i, o + i + half) if neox else (o + 2 * i, o + 2 * i + 1)
            x0, x1 = x[a], x[b]
            x[a] = x0 * cos[i] - x1 * sin[i]
            x[b] = x0 * sin[i] + x1 * cos[i]


@njit(cache=True, nogil=True)
def rope_token(x, position, head_dim, n_rot, freq_base, freq_scale, neox):
    """rope of one token's row x at position (outside any parallel region: decode's
    steps call it, and rope for one row)."""
    theta_scale = np.float32(freq_base) ** np.float32(-2.0 / n_rot)
    half = n_rot // 2
    cos, sin = np.empty(half, np.float32), np.empty(half, np.float32)
    _rope_row(x, position, head_dim, n_rot, theta_scale, freq_scale, neox, cos, sin)


def rope(x, positions, head_dim, n_rot, freq_base, freq_scale, neox):
    """Rotate each head of x [n_tokens, n_heads*head_dim] in place by its token's
    position (may be a negative delta, for the context shift). ggml-cpu/ops.cpp
    rope_f32 and ggml_rope_cache_init: theta = p * base^(-2i/n_rot), multiplied
    up in float; 'normal' rotates pairs (2i, 2i+1), 'neox' (i, i + n_rot/2)."""
    if x.shape[0] == 1:
        rope_token(x[0], positions[0], head_dim, n_rot, freq_base, freq_scale, neox)
    else:
        launch.run_items(_rope_item, (x, positions, head_dim, n_rot, freq_base, freq_scale,
                                      neox), x.shape[0])


@njit(cache=True, nogil=True)
def _rope_item(x, positions, head_dim, n_rot, freq_base, freq_scale, neox, t):
    rope_token(x[t], positions[t], head_dim, n_rot, freq_base, freq_scale, neox)


@njit(cache=True, nogil=True, error_model="numpy")
def _exp_minus(row, m):
    """row = exp(row - m) as ggml_vec_soft_max_f32 computes it: ggml_v_expf (ggml_expf
    below) over whole 16s, libm's expf for the rest. Not fastmath: contracting its
    multiplies and adds would change ggml_expf's bits."""
    n_simd = row.shape[0] - row.shape[0] % 16
    for j in range(n_simd):
        row[j] = ggml_expf(row[j] - m)
    for j in range(n_simd, row.shape[0]):
        row[j] = np.exp(row[j] - m)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})
def _softmax(row, scale):
    """row = softmax(row * scale)."""
    m = np.float32(-np.inf)
    for j in range(row.shape[0]):
        row[j] *= scale
        m = max(m, row[j])
    _exp_minus(row, m)
    total = np.float32(0.0)
    for j in range(row.shape[0]):
        total += row[j]
    inv = np.float32(1.0) / total
    for j in range(row.shape[0]):
        row[j] *= inv


@njit(cache=True, nogil=True, parallel=True)
def _masked_softmax(scores, group, first_query_pos, first_key_pos, window, scale):
    """Softmax over the keys each query row of scores [n_kv_heads, n_queries * group,
    n_keys] may see, zero for the others: row r is the query at first_query_pos +
    r // group, column c the key at first_key_pos + c; causal, and within the
    window if one is set. Callers keep every row's range inside n_keys."""
    n_rows = scores.shape[1]
    for i in prange(scores.shape[0] * n_rows):
        row = scores[i // n_rows, i % n_rows]
        p = first_query_pos + (i % n_rows) // group
        hi = p - first_key_pos + 1
        lo = max(0, p - window + 1 - first_key_pos) if window > 0 else 0
        _softmax(row[lo:hi], scale)
        row[:lo] = 0
        row[hi:] = 0


def attention_blas(q, k_cache, v_cache, pos0, n_cells, window, n_kv_heads, head_dim_k,
                   head_dim_v, kq_scale, out):
    """attention() for batches of FA_TILE_Q or more queries, where ggml takes its
    tiled all-f32 path: scores and weighted values by batched BLAS matmuls (all
    heads in one call), FA_TILE_Q queries at a time over only the keys they may
    see (causal: ~half the work of one square product at 512 tokens)."""
    n_tokens = q.shape[0]
    n_heads = q.shape[1] // head_dim_k
    group = n_heads // n_kv_heads
    first = max(0, pos0 - window + 1) if window > 0 else 0
    cells = np.arange(first, pos0 + n_tokens) % n_cells
    # heads grouped by the KV head they share; query rows token-major within a group
    keys = np.ascontiguousarray(k_cache[cells].reshape(-1, n_kv_heads, head_dim_k).transpose(1, 0, 2))
    values = np.ascontiguousarray(v_cache[cells].reshape(-1, n_kv_heads, head_dim_v).transpose(1, 0, 2))
    queries = np.ascontiguousarray(q.reshape(n_tokens, n_kv_heads, group, head_dim_k)
                                   .transpose(1, 0, 2, 3)).reshape(n_kv_heads, -1, head_dim_k)
    for t0 in range(0, n_tokens, FA_TILE_Q):
        t1 = min(t0 + FA_TILE_Q, n_tokens)
        key_lo = max(0, pos0 + t0 - window + 1 - first) if window > 0 else 0
        key_hi = pos0 + t1 - first
        scores = np.matmul(queries[:, t0 * group:t1 * group],
                           keys[:, key_lo:key_hi].transpose(0, 2, 1))
        _masked_softmax(scores, group, pos0 + t0, first + key_lo, window, np.float32(kq_scale))
        weighted = np.matmul(scores, values[:, key_lo:key_hi])
        out[t0:t1] = (weighted.reshape(n_kv_heads, t1 - t0, group, head_dim_v)
                      .transpose(1, 0, 2, 3).reshape(t1 - t0, n_heads * head_dim_v))


def _gelu_table():
    """ggml_table_gelu_f16 (ggml-cpu.c ggml_cpu_init): for every f16 value h,
    f16(gelu_tanh(h)) computed in float32, held here as float32."""
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    with np.errstate(all="ignore"):
        g = np.float32(0.5) * h * (np.float32(1.0) + np.tanh(
            np.float32(0.7978845608028654) * h * (np.float32(1.0) + np.float32(0.044715) * h * h)))
    return g.astype(np.float16).astype(np.float32)


GELU_F16 = _gelu_table()


@njit(cache=True, nogil=True, inline="always")
def f16_bits(u):
    """IEEE f16 bit pattern of the float32 whose bits are u, rounded to nearest
    even (GGML_FP32_TO_FP16); f16-normal magnitudes only (2^-14 <= |x| < 65504)."""
    a = u & 0x7FFFFFFF
    a = a + 0xFFF + ((a >> 13) & 1)
    return ((u >> 16) & 0x8000) | ((a >> 13) - (112 << 10))


@njit(cache=True, nogil=True, inline="always")
def _gelu_row(gate, up, out):
    bits = gate.view(np.uint32)
    for j in range(gate.shape[0]):
        x = gate[j]
        if x <= -10.0:
            a = np.float32(0.0)
        elif x >= 10.0:
            a = x
        elif abs(x) < np.float32(6.103515625e-05):  # f16 subnormal: bits by value
            sub = np.uint32(np.rint(abs(x) * np.float32(16777216.0)))
            a = GELU_F16[((bits[j] >> 16) & 0x8000) | sub]
        else:
            a = GELU_F16[f16_bits(bits[j])]
        out[j] = a * up[j]


# ggml-cpu/vec.h ggml_v_expf as built with AVX-512 (this machine's llama.cpp; the AVX2
# build differs in its last step): exp(x) = 2^n * p(b), n = round(x / ln2) by the
# 1.5 * 2^23 shifter, b = x - n ln2 in two parts, p a degree-5 polynomial; |n| > 192
# gives inf or 0. Constants from ARM's optimized routines, as ggml's.
_SHIFTER, _INV_LN2, _LN2_HI, _LN2_LO, _E1, _E2, _E3, _E4, _E5 = (
    np.float32(float.fromhex(h)) for h in (
        "0x1.8p23", "0x1.715476p+0", "0x1.62e4p-1", "0x1.7f7d1cp-20", "0x1.ffffecp-1",
        "0x1.fffdb6p-2", "0x1.555e66p-3", "0x1.573e2ep-5", "0x1.0e4020p-7"))
_ONE = np.float32(1.0)


@njit(cache=True, nogil=True, inline="always")
def _pow2(k):
    """2^k as float32, k an int32 in [-126, 127]."""
    return f32_from_bits(np.int32((k + 127) << 23))


@njit(cache=True, nogil=True, inline="always")
def ggml_expf(x):
    """ggml_v_expf's value for one lane, branch-free so loops over it vectorize.
    _mm512_scalef_ps(j, n) = j * 2^n rounded once: two exact-power multiplies, the
    first exact (its result stays normal for |n| <= 192)."""
    z = fma32(x, _INV_LN2, _SHIFTER)
    n = z - _SHIFTER
    b = fma32(-n, _LN2_LO, fma32(-n, _LN2_HI, x))
    u = b * b
    j = fma32(fma32(fma32(_E5, b, _E4), u, fma32(_E3, b, _E2)), u, fma32(_E1, b, _ONE))
    k = np.int32(n)  # past +-192 (or NaN) res is not used: no clamp
    half = k >> 1
    res = (j * _pow2(half)) * _pow2(k - half)
    big = np.float32(0.0) if n <= np.float32(0.0) else np.float32(np.inf)
    return big if abs(n) > np.float32(192.0) else res


@njit(cache=True, nogil=True, inline="always")
def _silu_row(gate, up, out):
    """ggml_vec_swiglu_f32: whole 16s of the row through ggml_v_silu, x / (1 +
    ggml_v_expf(0 - x)), then times up; the rest through ggml_silu_f32 (libm's expf)."""
    n_simd = gate.shape[0] - gate.shape[0] % 16
    for j in range(n_simd):
        x = gate[j]
        out[j] = x / (_ONE + ggml_expf(np.float32(0.0) - x)) * up[j]
    for j in range(n_simd, gate.shape[0]):
        x = gate[j]
        out[j] = x / (_ONE + np.exp(-x)) * up[j]


# error_model numpy: Python's model tests each divisor for zero (1 + exp(-x) never
# is), a branch that kept the SiLU loop scalar
@njit(cache=True, nogil=True, error_model="numpy")
def gated_row(gate, up, gelu, out):
    if gelu:
        _gelu_row(gate, up, out)
    else:
        _silu_row(gate, up, out)


def gated_activation(gate, up, gelu, out):
    """out = act(gate) * up. SiLU as ggml_vec_swiglu_f32 (_silu_row: ggml_v_expf's
    polynomial, the same bits as llama.cpp's AVX-512 build, tests/data/swiglu_refs.npz);
    GELU (tanh form) through ggml's f16 lookup table: the table entry of the
    f16-rounded input (ggml-cpu/vec.h ggml_vec_geglu_f32 under GGML_GELU_FP16).
    One token runs outside the parallel region (its launch costs more than it saves)."""
    if gate.shape[0] == 1:
        gated_row(gate[0], up[0], gelu, out[0])
    else:
        launch.run_items(_gated_item, (gate, up, gelu, out), gate.shape[0])


@njit(cache=True, nogil=True)
def _gated_item(gate, up, gelu, out, t):
    gated_row(gate[t], up[t], gelu, out[t])
