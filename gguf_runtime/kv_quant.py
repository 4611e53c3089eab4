"""Q8_0 key/value caches as llama.cpp's CPU backend runs them (-ctk/-ctv q8_0).

A q8_0 cache row is ggml's own block layout: per 32 values an f16 scale and 32
int8 quants (34 bytes), so the cache takes 34/32 bytes a value like llama.cpp's.
llama.cpp (llama-kv-cache.cpp attn_rot_k / attn_rot_v) rotates a quantized cache
by an orthonormal Walsh-Hadamard matrix when the head size is a multiple of 64:
Q and K by the largest power of two >= 64 dividing the head size, V by 64 (and
the attention output back by the same, self-inverse, matrix): outliers spread
over the block, so the per-32 scale wastes fewer levels.
"""
import numpy as np
from numba import njit, prange

from quant_formats.common import as_int8, f16_at, f16_round
from quant_formats.quantize_common import store_f16

from .flash_attention import dot_f16_lanes, softmax_step

CACHE_TYPES = ("f16", "q8_0")
Q8_BLOCK, Q8_BYTES = 32, 34


def k_rotation(cache_type: str, head_dim: int) -> int:
    """Size of the Hadamard rotation of Q and K (0: none). llama-kv-cache.cpp
    build_input_k_rot: 64 doubled while it divides the head size."""
    if cache_type == "f16" or head_dim % 64:
        return 0
    n = 64
    while head_dim % (2 * n) == 0:
        n *= 2
    return n


def v_rotation(cache_type: str, head_dim_v: int) -> int:
    """build_input_v_rot: always 64 (smaller matrices suit V better)."""
    return 0 if cache_type == "f16" or head_dim_v % 64 else 64


@njit(cache=True, nogil=True, parallel=True)
def hadamard_rows(x, n):
    """Each n-wide piece of each row of x, in place, times the orthonormal
    Sylvester-Hadamard matrix H_n / sqrt(n) (its own inverse). ggml-cpu ops.cpp
    ggml_compute_forward_fwht (the mul_mat of a GGML_HINT_SRC0_IS_HADAMARD
    matrix): scale first, then butterflies of span 1, 2, 4.. (u + v, u - v)."""
    scale = np.float32(1.0) / np.sqrt(np.float32(n))
    for r in prange(x.shape[0]):
        for o in range(0, x.shape[1], n):
            for j in range(n):
                x[r, o + j] *= scale
            span = 1
            while span < n:
                for i in range(o, o + n, 2 * span):
                    for j in range(i, i + span):
                        u, v = x[r, j], x[r, j + span]
                        x[r, j] = u + v
                        x[r, j + span] = u - v
                span *= 2


@njit(cache=True, nogil=True)
def store_q8_0(src, cache, pos0, n_cells):
    """Row t of src (position pos0 + t) into cache row (pos0 + t) % n_cells as
    q8_0 blocks. llama.cpp stores K/V rows with ggml_set_rows, which quantizes
    by ggml-cpu's from_float: the AVX2 quantize_row_q8_0 (arch/x86/quants.c),
    id = 127/amax and round half to even (not the _ref's roundf and 1/d)."""
    for t in range(src.shape[0]):
        row = cache[(pos0 + t) % n_cells]
        for b in range(src.shape[1] // Q8_BLOCK):
            x0, o = b * Q8_BLOCK, b * Q8_BYTES
            amax = np.float32(0.0)
            for j in range(Q8_BLOCK):
                amax = max(amax, abs(src[t, x0 + j]))
            store_f16(row, o, amax / np.float32(127.0))
            inv = np.float32(127.0) / amax if amax != 0 else np.float32(0.0)
            for j in range(Q8_BLOCK):
                row[o + 2 + j] = np.uint8(np.int32(np.rint(src[t, x0 + j] * inv)) & 0xFF)


@njit(cache=True, nogil=True)
def store_rows(src, cache, pos0, n_cells):
    """Raw rows (already in the cache's format) to their ring rows."""
    for t in range(src.shape[0]):
        cache[(pos0 + t) % n_cells, :] = src[t]


@njit(cache=True, nogil=True)
def dequantize_q8_0(rows, out):
    """ggml-quants.c dequantize_row_q8_0: d * q, exact in float32."""
    for t in range(rows.shape[0]):
        for b in range(out.shape[1] // Q8_BLOCK):
            d = f16_at(rows[t], b * Q8_BYTES)
            for j in range(Q8_BLOCK):
                out[t, b * Q8_BLOCK + j] = d * np.float32(as_int8(rows[t, b * Q8_BYTES + 2 + j]))


@njit(cache=True, nogil=True, inline="always")
def _fma(a, b, c):
    """float32 a*b + c rounded once (AVX2's fmadd): a*b is exact in float64
    for the operands used here, so only a rare double rounding could differ."""
    return np.float32(np.float64(a) * np.float64(b) + np.float64(c))


@njit(cache=True, nogil=True, inline="always")
def _lane(krow, ko, q_qs, t, qo, lane):
    """int sum of the 4 products in bytes 4*lane.. of a block (maddubs + madd)."""
    s = 0
    for j in range(4 * lane, 4 * lane + 4):
        s += as_int8(krow[ko + 2 + j]) * np.int32(q_qs[t, qo + j])
    return np.float32(s)


@njit(cache=True, nogil=True)
def dot_q8_0(krow, ko, q_qs, q_d, t, qo, n_blocks):
    """ggml_vec_dot_q8_0_q8_0 (arch/x86/quants.c, AVX2): 8 float lanes, lane l
    += d_k*d_q * (int products of bytes 4l..4l+3) by fma; then hsum_float_8
    (high half + low half, then pairs 0+2 / 1+3, then the two)."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.float32(0.0)
    for b in range(n_blocks):
        o, qb = ko + b * Q8_BYTES, qo + b * Q8_BLOCK
        d = f16_at(krow, o) * q_d[t, qb // Q8_BLOCK]
        a0 = _fma(d, _lane(krow, o, q_qs, t, qb, 0), a0)
        a1 = _fma(d, _lane(krow, o, q_qs, t, qb, 1), a1)
        a2 = _fma(d, _lane(krow, o, q_qs, t, qb, 2), a2)
        a3 = _fma(d, _lane(krow, o, q_qs, t, qb, 3), a3)
        a4 = _fma(d, _lane(krow, o, q_qs, t, qb, 4), a4)
        a5 = _fma(d, _lane(krow, o, q_qs, t, qb, 5), a5)
        a6 = _fma(d, _lane(krow, o, q_qs, t, qb, 6), a6)
        a7 = _fma(d, _lane(krow, o, q_qs, t, qb, 7), a7)
    s0, s1, s2, s3 = a4 + a0, a5 + a1, a6 + a2, a7 + a3
    return (s0 + s2) + (s1 + s3)


@njit(cache=True, nogil=True, inline="always")
def _score(q_heads, q_qs, q_d, k_heads, k_q8, c, t, h, kh, head_dim_k):
    """Q.K of query head h of token t against cached key row c (kv head kh):
    ggml_vec_dot_q8_0_q8_0 or, for an f16 K, ggml_vec_dot_f16 (q_heads: Q rounded
    to f16, [tokens, heads, head_dim]; empty with a q8_0 K)."""
    if k_q8.shape[0] > 0:
        return dot_q8_0(k_q8[c], kh * (head_dim_k // Q8_BLOCK) * Q8_BYTES, q_qs, q_d, t,
                        h * head_dim_k, head_dim_k // Q8_BLOCK)
    return dot_f16_lanes(k_heads[c, kh], q_heads[t, h])


@njit(cache=True, nogil=True, inline="always")
def _accumulate(acc, v_f16, v_q8, c, kh, ms, vs):
    """acc = acc*ms + v*vs: ggml_vec_scale/mad_f16 for an f16 V (f16 accumulator);
    for a q8_0 V, dequantize_row_q8_0 then ggml_vec_scale/mad_f32 (fma)."""
    dv = acc.shape[0]
    if v_q8.shape[0] > 0:
        if ms != 1:
            for j in range(dv):
                acc[j] *= ms
        vrow, vo = v_q8[c], kh * (dv // Q8_BLOCK) * Q8_BYTES
        for b in range(dv // Q8_BLOCK):
            d = f16_at(vrow, vo + b * Q8_BYTES)
            for j in range(Q8_BLOCK):
                v = d * np.float32(as_int8(vrow[vo + b * Q8_BYTES + 2 + j]))
                acc[b * Q8_BLOCK + j] = _fma(v, vs, acc[b * Q8_BLOCK + j])
    else:
        for j in range(dv):
            acc[j] = f16_round(f16_round(acc[j] * ms) + v_f16[c, kh * dv + j] * vs)


@njit(cache=True, nogil=True, parallel=True)
def attention_quantized(q, q_qs, q_d, k_f16, k_q8, v_f16, v_q8, pos0, n_cells, window,
                        n_kv_heads, head_dim_k, head_dim_v, kq_scale, out):
    """flash_attention.attention when K or V is q8_0 (the empty one of each pair of caches
    marks the type). ggml-cpu ops.cpp flash_attn_ext_f16 takes its one-chunk path
    for every batch size then (the tiled one needs f16/f32 K and V of one type):
    with a q8_0 K, Q arrives quantized (q_qs, q_d) and scores are
    ggml_vec_dot_q8_0_q8_0; with an f16 K, Q is rounded to f16 into a copy here, C
    by heads, and scores are ggml_vec_dot_f16 (flash_attention.dot_f16_lanes).
    The output row of each head is the accumulator; online softmax as ggml's."""
    n_tokens = q.shape[0]
    n_heads = q.shape[1] // head_dim_k
    group = n_heads // n_kv_heads
    k_heads = k_f16.reshape(k_f16.shape[0], k_f16.shape[1] // head_dim_k, head_dim_k)
    q_heads = np.empty((n_tokens if k_q8.shape[0] == 0 else 0, n_heads, head_dim_k),
                       np.float32)
    for t in prange(q_heads.shape[0]):
        for h in range(n_heads):
            for j in range(head_dim_k):
                q_heads[t, h, j] = f16_round(q[t, h * head_dim_k + j])
    for i in prange(n_tokens * n_heads):
        t, h = i // n_heads, i % n_heads
        kh = h // group
        acc = out[t, h * head_dim_v:(h + 1) * head_dim_v]
        acc[:] = 0
        p = pos0 + t
        m = -np.inf
        total = np.float32(0.0)
        for kp in range(max(0, p - window + 1) if window > 0 else 0, p + 1):
            c = kp % n_cells
            s = _score(q_heads, q_qs, q_d, k_heads, k_q8, c, t, h, kh, head_dim_k) * kq_scale
            ms, vs, m = softmax_step(s, m)
            _accumulate(acc, v_f16, v_q8, c, kh, ms, vs)
            total = total * ms + vs
        inv = np.float32(1.0) / total if total != 0 else np.float32(0.0)
        for j in range(head_dim_v):
            acc[j] *= inv
