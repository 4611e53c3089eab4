"""Numba kernels of the transformer layers: norms, RoPE, attention, gated FFN.

Each kernel handles a whole batch (all tokens, all heads) in one call, so the
forward pass makes a few calls per layer and no Python runs per head or element.
Numerics follow ggml-cpu where they decide near-ties (sources cited per kernel).
"""
import math

import numpy as np
from numba import njit, prange

import quant_formats  # noqa: F401  (installs the project-wide Numba cache stamp first)

# ggml-cpu/ops.cpp flash_attn_ext: batches of at least this many queries take the
# tiled path (f32 Q and accumulators); smaller ones round Q to f16 and accumulate
# V in f16 (ggml-cpu/common.h GGML_FA_TILE_Q).
FA_TILE_Q = 64


@njit(cache=True, nogil=True, inline="always")
def f16_round(x):
    """Round a float32 to the nearest f16 value (GGML_FP32_TO_FP16 then back).

    Normal range: Veltkamp split keeps the top 11 significant bits in f32
    arithmetic; below 2^-14 f16 spacing is the fixed 2^-24. All three cases are
    computed and one selected, without branches, so loops over it can vectorize
    (checked equal to numpy's float16 rounding on 2*10^7 random bit patterns)."""
    ax = abs(x)
    c = x * np.float32(8193.0)
    normal = np.float32(c - (c - x))
    tiny = np.float32(np.rint(x * np.float32(16777216.0)) / np.float32(16777216.0))
    r = tiny if ax < np.float32(6.103515625e-05) else normal
    return np.float32(math.copysign(math.inf, x)) if ax >= np.float32(65520.0) else r


# One token runs these serially: a parallel region costs ~3-4 us to launch, more
# than their work; batches split their rows across threads. The row functions
# are not inlined: inside a parallel=True function Numba would turn their array
# expressions into parallel regions of their own.
@njit(cache=True, nogil=True)
def _rms_norm_row(x, weight, eps, out):
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


@njit(cache=True, nogil=True, parallel=True)
def rms_norm(x, weight, eps, out):
    """out[t] = rms-normed x[t] times weight, per len(weight) group of a row
    (width len(weight): the whole row; head_dim: per head)."""
    if x.shape[0] == 1:
        _rms_norm_row(x[0], weight, eps, out[0])
        return
    for t in prange(x.shape[0]):
        _rms_norm_row(x[t], weight, eps, out[t])


NO_WEIGHT = np.zeros(0, np.float32)  # residual_norm's post_weight where a model has none


@njit(cache=True, nogil=True)
def _residual_norm_row(x, out, post_weight, eps, weight, xb):
    if post_weight.shape[0]:
        _rms_norm_row(out, post_weight, eps, out)
    for j in range(x.shape[0]):
        x[j] += out[j]
    _rms_norm_row(x, weight, eps, xb)


@njit(cache=True, nogil=True, parallel=True)
def residual_norm(x, out, post_weight, eps, weight, xb):
    """A sub-layer's end and the next one's start in one call: out is post-normed
    (gemma3; skipped for an empty post_weight), added to the residual x, and
    xb = rms_norm(x) * weight, the input of what follows."""
    if x.shape[0] == 1:
        _residual_norm_row(x[0], out[0], post_weight, eps, weight, xb[0])
        return
    for t in prange(x.shape[0]):
        _residual_norm_row(x[t], out[t], post_weight, eps, weight, xb[t])


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


@njit(cache=True, nogil=True, parallel=True)
def rope(x, positions, head_dim, n_rot, freq_base, freq_scale, neox):
    """Rotate each head of x [n_tokens, n_heads*head_dim] in place by its token's
    position (may be a negative delta, for the context shift). ggml-cpu/ops.cpp
    rope_f32 and ggml_rope_cache_init: theta = p * base^(-2i/n_rot), multiplied
    up in float; 'normal' rotates pairs (2i, 2i+1), 'neox' (i, i + n_rot/2)."""
    theta_scale = np.float32(freq_base) ** np.float32(-2.0 / n_rot)
    half = n_rot // 2
    if x.shape[0] == 1:
        cos, sin = np.empty(half, np.float32), np.empty(half, np.float32)
        _rope_row(x[0], positions[0], head_dim, n_rot, theta_scale, freq_scale, neox, cos, sin)
        return
    for t in prange(x.shape[0]):
        cos, sin = np.empty(half, np.float32), np.empty(half, np.float32)
        _rope_row(x[t], positions[t], head_dim, n_rot, theta_scale, freq_scale, neox, cos, sin)


@njit(cache=True, nogil=True)
def store_f16(src, cache, pos0, n_cells):
    """Write row t of src, position pos0 + t, into cache row (pos0 + t) % n_cells,
    rounded to f16."""
    for t in range(src.shape[0]):
        c = (pos0 + t) % n_cells
        for j in range(src.shape[1]):
            cache[c, j] = f16_round(src[t, j])


@njit(cache=True, nogil=True, inline="always")
def dot_f16_lanes(a, b, lanes):
    """sum(a * b) of two f16-valued f32 rows, summed in the order of ggml_vec_dot_f16
    as built with AVX-512 (ggml-cpu/vec.cpp; simd-mappings.h: GGML_F16_STEP 64,
    EPR 16; this machine's llama.cpp): 64 lanes accumulate every 64th product
    (f16 products are exact in f32, so FMA and multiply-add agree), then
    GGML_F32Cx16_REDUCE halves 64 -> 16 and _mm512_reduce_add_ps (GCC) 16 -> 1;
    leftovers add in double. Equal scores, not just close ones: a sequential sum
    let the qwen2-derived test model's greedy text drift from llama.cpp's (checked
    equal to libggml-cpu's ggml_vec_dot_f16 on 6000 random rows of 64-256). The
    lane loops vectorize: decode attention at 128 positions, 9 heads, 69 -> 54 us
    per layer against one serial chain. lanes: f32 scratch of 64."""
    n = a.shape[0]
    n_main = n - n % 64
    if n_main:  # the first 64 products set the lanes (no zeroing pass: 10% faster)
        for j in range(64):
            lanes[j] = a[j] * b[j]
        for i in range(64, n_main, 64):
            for j in range(64):
                lanes[j] += a[i + j] * b[i + j]
    else:
        lanes[:] = 0
    for j in range(32):  # constant trip counts: a loop over the widths ran 20% slower
        lanes[j] += lanes[j + 32]
    for j in range(16):
        lanes[j] += lanes[j + 16]
    for j in range(8):
        lanes[j] += lanes[j + 8]
    for j in range(4):
        lanes[j] += lanes[j + 4]
    total = np.float64((lanes[0] + lanes[2]) + (lanes[1] + lanes[3]))
    for i in range(n_main, n):
        total += np.float64(a[i] * b[i])
    return np.float32(total)


@njit(cache=True, nogil=True, inline="always")
def _dot_serial(a, b):
    s = np.float32(0.0)
    for j in range(a.shape[0]):
        s += a[j] * b[j]
    return s


@njit(cache=True, nogil=True, inline="always")
def softmax_step(s, m):
    """One key of the online softmax (ggml-cpu flash attention): the factor the running
    sums are rescaled by, the new key's weight, and the new running max."""
    if s > m:
        return np.float32(np.exp(m - s)), np.float32(1.0), s
    return np.float32(1.0), np.float32(np.exp(s - m)), m


@njit(cache=True, nogil=True, parallel=True)
def attention(q, k_cache, v_cache, pos0, n_cells, window, n_kv_heads, head_dim_k, head_dim_v,
              kq_scale, out):
    """Causal attention of every query row (positions pos0..) and head over the
    cached keys; keys live at cache row pos % n_cells. A window > 0 limits a
    query at p to keys with p - key < window (llama-hparams.h is_masked_swa).
    Small batches follow ggml's flash-attention one-chunk path: Q rounded to f16,
    online softmax, V accumulated in f16; large ones its tiled path, all f32."""
    n_tokens = q.shape[0]
    n_heads = q.shape[1] // head_dim_k
    group = n_heads // n_kv_heads
    half_precision = n_tokens < FA_TILE_Q
    # rows per KV head as C-contiguous views: k_cache[c, a:b] is typed as a strided
    # ('A') array, whose dot product did not vectorize (4x slower, measured)
    k_heads = k_cache.reshape(k_cache.shape[0], n_kv_heads, head_dim_k)
    v_heads = v_cache.reshape(v_cache.shape[0], n_kv_heads, head_dim_v)
    for i in prange(n_tokens * n_heads):
        t, h = i // n_heads, i % n_heads
        kh = h // group
        qh = q[t, h * head_dim_k:(h + 1) * head_dim_k].copy()
        if half_precision:
            for j in range(head_dim_k):
                qh[j] = f16_round(qh[j])
        acc = np.zeros(head_dim_v, np.float32)
        lanes = np.empty(64, np.float32)
        p = pos0 + t
        first = max(0, p - window + 1) if window > 0 else 0
        m = np.float32(-np.inf)  # float, as ggml: Mold - M and expf in float
        total = np.float32(0.0)
        for kp in range(first, p + 1):
            c = kp % n_cells
            krow = k_heads[c, kh]
            if half_precision:
                s = dot_f16_lanes(krow, qh, lanes) * kq_scale
            else:
                s = _dot_serial(krow, qh) * kq_scale
            ms, vs, m = softmax_step(s, m)
            vrow = v_heads[c, kh]
            if half_precision:  # acc holds f16 values: times ms == 1 it needs no rounding
                if ms != np.float32(1.0):
                    for j in range(head_dim_v):
                        acc[j] = f16_round(acc[j] * ms)
                for j in range(head_dim_v):
                    acc[j] = f16_round(acc[j] + vrow[j] * vs)
            else:
                for j in range(head_dim_v):
                    acc[j] = acc[j] * ms + vrow[j] * vs
            total = total * ms + vs
        inv = np.float32(1.0) / total if total != 0 else np.float32(0.0)
        for j in range(head_dim_v):
            out[t, h * head_dim_v + j] = acc[j] * inv


# exp as Cephes expf: x = n ln2 + r, |r| <= ln2/2, a polynomial for e^r and n
# added to its exponent bits, so loops over it vectorize (Numba's np.exp is a
# scalar libm call per element; ggml's softmax uses a SIMD approximation too,
# ggml_v_expf). Relative error < 5e-7 (tests/gguf_runtime/test_layers.py);
# x is clamped to [-87, 88], the range where 2^n has a normal exponent.
LOG2E, LN2_HI, LN2_LO = np.float32(1.4426950408889634), np.float32(0.693359375), np.float32(-2.12194440e-4)
_P0, _P1, _P2 = np.float32(1.9875691500e-4), np.float32(1.3981999507e-3), np.float32(8.3334519073e-3)
_P3, _P4, _P5 = np.float32(4.1665795894e-2), np.float32(1.6666665459e-1), np.float32(5.0000001201e-1)


@njit(cache=True, nogil=True, inline="always", fastmath={"contract"})
def exp_inplace(x, exponents):
    """x = exp(x), elementwise; exponents: int32 scratch of x's length."""
    for j in range(x.shape[0]):
        v = min(max(x[j], np.float32(-87.0)), np.float32(88.0))
        n = np.rint(v * LOG2E)
        r = v - n * LN2_HI - n * LN2_LO
        p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
        x[j] = p * r * r + r + np.float32(1.0)
        exponents[j] = np.int32(n) << 23
    bits = x.view(np.int32)
    for j in range(x.shape[0]):
        bits[j] += exponents[j]


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})
def _softmax(row, scale, exponents):
    """row = softmax(row * scale); exponents: int32 scratch of row's length."""
    m = np.float32(-np.inf)
    for j in range(row.shape[0]):
        row[j] *= scale
        m = max(m, row[j])
    for j in range(row.shape[0]):
        row[j] -= m
    exp_inplace(row, exponents)
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
        _softmax(row[lo:hi], scale, np.empty(hi - lo, np.int32))
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


@njit(cache=True, nogil=True, inline="always")
def _silu_row(gate, up, out):
    for j in range(gate.shape[0]):
        x = gate[j]
        out[j] = x / (np.float32(1.0) + np.exp(-x)) * up[j]


@njit(cache=True, nogil=True)
def _gated_row(gate, up, gelu, out):
    if gelu:
        _gelu_row(gate, up, out)
    else:
        _silu_row(gate, up, out)


@njit(cache=True, nogil=True, parallel=True)
def gated_activation(gate, up, gelu, out):
    """out = act(gate) * up. SiLU x / (1 + exp(-x)) with libm's expf (exp_inplace
    there turned SmolLM2's greedy answer to the README prompt away from llama.cpp's
    at a near-tie); GELU (tanh form) through
    ggml's f16 lookup table: the table entry of the f16-rounded input
    (ggml-cpu/vec.h ggml_vec_geglu_f32 under GGML_GELU_FP16).
    One token runs outside the parallel region (its launch costs more than it saves)."""
    if gate.shape[0] == 1:
        _gated_row(gate[0], up[0], gelu, out[0])
        return
    for t in prange(gate.shape[0]):
        _gated_row(gate[t], up[t], gelu, out[t])
