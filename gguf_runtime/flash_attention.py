"""ggml-cpu's flash attention as llama.cpp runs it on CPU (ggml-cpu/ops.cpp
ggml_compute_forward_flash_attn_ext_f16): f16 rounding of Q and of the V
accumulator, the online softmax's order, and the split-KV path one query takes
over a view of 512+ cells. layers.attention_blas is the f32 tiled path of batches.
"""

import numba
import numpy as np
from llvmlite import ir as llvm_ir
from numba import get_thread_id, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

import quant_formats  # noqa: F401  (installs the project-wide Numba cache stamp first)
from quant_formats import launch
from quant_formats.common import f16_round, is_c_array
from quant_formats.simd import target_has

# ggml-cpu/ops.cpp flash_attn_ext: batches of at least this many queries take the
# tiled path (f32 Q and accumulators); smaller ones round Q to f16 and accumulate
# V in f16 (ggml-cpu/common.h GGML_FA_TILE_Q).
FA_TILE_Q = 64


@njit(cache=True, nogil=True)
def store_f16(src, cache, pos0, n_cells):
    """Write row t of src, position pos0 + t, into cache row (pos0 + t) % n_cells,
    rounded to f16."""
    for t in range(src.shape[0]):
        c = (pos0 + t) % n_cells
        for j in range(src.shape[1]):
            cache[c, j] = f16_round(src[t, j])


def _f16_dot_lanes(context) -> int:
    """Lanes of ggml_vec_dot_f16 as llama.cpp is built for a CPU like the target
    (ggml-cpu/simd-mappings.h GGML_F16_STEP): 64 with AVX-512F, else AVX's 32."""
    return 64 if target_has(context, "avx512f") else 32


@intrinsic
def _dot_lanes(typingctx):
    """_f16_dot_lanes of the target being compiled for, as a constant."""
    def codegen(context, builder, signature, args):
        return context.get_constant(types.intp, _f16_dot_lanes(context))
    return types.intp(), codegen


@intrinsic
def _lanes_sum(typingctx, a, b, n_main):
    """sum(a[:n_main] * b[:n_main]) of contiguous float32 rows (n_main a positive
    multiple of _dot_lanes) in ggml_vec_dot_f16's order (dot_f16_lanes), as float64.
    Written as LLVM vector IR, the lanes held in registers: the same sums through a
    scratch array stored and reloaded at each halving (wider stores than loads, which
    the CPU does not forward) took 1.2-1.4x as long."""
    if not (is_c_array(a, types.float32, 1) and is_c_array(b, types.float32, 1)
            and isinstance(n_main, types.Integer)):
        return None
    sig = types.float64(a, b, types.intp)

    def codegen(context, builder, signature, args):
        f32, i32, i64 = llvm_ir.FloatType(), llvm_ir.IntType(32), llvm_ir.IntType(64)
        n_lanes = _f16_dot_lanes(context)
        row = llvm_ir.VectorType(f32, n_lanes)
        a_ptr, b_ptr = (builder.bitcast(context.make_array(t)(context, builder, v).data,
                                        f32.as_pointer())
                        for t, v in zip(signature.args[:2], args[:2]))

        def products(i):
            va, vb = (builder.load(builder.bitcast(builder.gep(p, [i]), row.as_pointer()),
                                   align=4) for p in (a_ptr, b_ptr))
            return builder.fmul(va, vb)
        lanes = cgutils.alloca_once_value(builder, products(llvm_ir.Constant(i64, 0)))
        step = llvm_ir.Constant(i64, n_lanes)
        with cgutils.for_range_slice(builder, step, args[2], step) as (i, _):
            builder.store(builder.fadd(builder.load(lanes), products(i)), lanes)
        v, width = builder.load(lanes), n_lanes
        while width > 4:  # halvings to 4 lanes: lane j += lane j + width / 2
            half = width // 2
            low, high = (builder.shuffle_vector(v, v, llvm_ir.Constant(
                llvm_ir.VectorType(i32, half), list(range(o, o + half)))) for o in (0, half))
            v, width = builder.fadd(low, high), half
        lane = [builder.extract_element(v, llvm_ir.Constant(i32, j)) for j in range(4)]
        if n_lanes == 64:  # _mm512_reduce_add_ps (GCC): (l0 + l2) + (l1 + l3)
            total = builder.fadd(builder.fadd(lane[0], lane[2]), builder.fadd(lane[1], lane[3]))
        else:  # GGML_F32x8_REDUCE's two _mm_hadd_ps: (l0 + l1) + (l2 + l3)
            total = builder.fadd(builder.fadd(lane[0], lane[1]), builder.fadd(lane[2], lane[3]))
        return builder.fpext(total, llvm_ir.DoubleType())
    return sig, codegen


@njit(cache=True, nogil=True, inline="always")
def dot_f16_lanes(a, b):
    """sum(a * b) of two f16-valued f32 rows, summed in the order of ggml_vec_dot_f16
    (ggml-cpu/vec.cpp) as llama.cpp is built for this CPU: with AVX-512 (GGML_F16_STEP
    64, EPR 16) 64 lanes accumulate every 64th product, GGML_F32Cx16_REDUCE halves
    64 -> 16 and _mm512_reduce_add_ps 16 -> 1; with AVX2 (STEP 32, EPR 8) 32 lanes,
    GGML_F32x8_REDUCE halves 32 -> 4 and two hadds end it. f16 products are exact in
    f32, so FMA and multiply-add agree; leftovers add in double. Equal scores, not
    just close ones: a sequential sum let the qwen2-derived test model's greedy text
    drift from llama.cpp's, and gemma3's -c 2048 perplexity over an f16 K and a q8_0
    V was 0.8% off with one. a and b: C-contiguous (k_cache[c, a:b] is typed
    strided: reshape to heads)."""
    n = a.shape[0]
    n_main = n - n % _dot_lanes()
    total = _lanes_sum(a, b, n_main) if n_main else np.float64(0.0)
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


@njit(cache=True, nogil=True, inline="always")
def add_value_f16(acc, vrow, ms, vs):
    """acc = acc * ms + vrow * vs in f16, as ggml_vec_scale_f16 then ggml_vec_mad_f16:
    acc holds f16 values, so times ms == 1 it needs no rounding."""
    if ms != np.float32(1.0):
        for j in range(acc.shape[0]):
            acc[j] = f16_round(acc[j] * ms)
    for j in range(acc.shape[0]):
        acc[j] = f16_round(acc[j] + vrow[j] * vs)


@njit(cache=True, nogil=True)
def attend_query_head(q, k_heads, v_heads, pos0, n_cells, window, group, kq_scale,
                      half_precision, scratch, out, i):
    """attention's work item i: query row i // n_heads, head i % n_heads, over k_heads,
    v_heads [cells, n_kv_heads, head_dim] into out; scratch: new_scratch's."""
    head_dim_k, head_dim_v = k_heads.shape[2], v_heads.shape[2]
    n_heads = q.shape[1] // head_dim_k
    t, h = i // n_heads, i % n_heads
    kh = h // group
    p = pos0 + t
    first = max(0, p - window + 1) if window > 0 else 0
    qs, accs, _, _, scores = _item_buffers(scratch, 1, head_dim_k, head_dim_v, p + 1 - first)
    qh, acc = qs[0], accs[0]
    for j in range(head_dim_k):
        qh[j] = f16_round(q[t, h * head_dim_k + j]) if half_precision else q[t, h * head_dim_k + j]
    # every key's score first, then the online softmax over them in order: the same
    # values, but the dot products (independent of each other) are out of the chain of
    # dependent accumulator updates (a decode head 47 -> 31 ns per key, 1 thread)
    for kp in range(first, p + 1):
        krow = k_heads[kp % n_cells, kh]
        if half_precision:
            scores[kp - first, 0] = dot_f16_lanes(krow, qh) * kq_scale
        else:
            scores[kp - first, 0] = _dot_serial(krow, qh) * kq_scale
    m = np.float32(-np.inf)  # float, as ggml: Mold - M and expf in float
    total = np.float32(0.0)
    for kp in range(first, p + 1):
        ms, vs, m = softmax_step(scores[kp - first, 0], m)
        vrow = v_heads[kp % n_cells, kh]
        if half_precision:
            add_value_f16(acc, vrow, ms, vs)
        else:
            for j in range(head_dim_v):
                acc[j] = acc[j] * ms + vrow[j] * vs
        total = total * ms + vs
    inv = np.float32(1.0) / total if total != 0 else np.float32(0.0)
    for j in range(head_dim_v):
        out[t, h * head_dim_v + j] = acc[j] * inv


def new_scratch(n_cells, group, head_dim_k, head_dim_v):
    """The attention items' working memory, float32 [threads, width]: a row for each
    thread Numba may run (numba.get_thread_id's), each holding a KV head's queries,
    accumulators, running maxima and sums, and scores for every cell of a cache of
    n_cells (llama_cells of it: the split-KV path's view). Allocated once per model,
    not per item: decoding SmolLM2 allocated ~800 arrays a token."""
    return np.zeros((numba.config.NUMBA_NUM_THREADS,
                     _scratch_width(n_cells, group, head_dim_k, head_dim_v)), np.float32)


def _scratch_width(n_cells, group, head_dim_k, head_dim_v):
    return group * (head_dim_k + head_dim_v + 2 + llama_cells(n_cells))


def check_scratch(scratch, n_cells, group, head_dim_k, head_dim_v):
    """Whether scratch (new_scratch's) holds a row for each of the caller's threads, as
    wide as the items read and write: the kernels check no bounds."""
    return (scratch.dtype == np.float32 and scratch.ndim == 2 and scratch.flags.c_contiguous
            and scratch.shape[0] >= numba.get_num_threads()
            and scratch.shape[1] >= _scratch_width(n_cells, group, head_dim_k, head_dim_v))


def attention(q, k_cache, v_cache, pos0, n_cells, window, n_kv_heads, head_dim_k, head_dim_v,
              kq_scale, n_threads, out, scratch=None):
    """Causal attention of every query row (positions pos0..) and head over the
    cached keys; keys live at cache row pos % n_cells. A window > 0 limits a
    query at p to keys with p - key < window (llama-hparams.h is_masked_swa).
    Small batches follow ggml's flash-attention one-chunk path: Q rounded to f16,
    online softmax, V accumulated in f16; large ones its tiled path, all f32. One
    query over a view of SPLIT_KV_MIN+ cells takes the split-KV path, one chunk of
    cells for each of n_threads (llama.cpp decoding past position 255 of a cache of
    512+; its chunks follow its thread count, so do ours). One parallel loop over
    the (query, head) items (launch.run_items). scratch: new_scratch's for these
    sizes (a new one if None)."""
    n_tokens = q.shape[0]
    group = q.shape[1] // head_dim_k // n_kv_heads
    if scratch is None:
        scratch = new_scratch(n_cells, group, head_dim_k, head_dim_v)
    if not check_scratch(scratch, n_cells, group, head_dim_k, head_dim_v):
        raise ValueError(f"attention: scratch {scratch.shape} too small for its items")
    # rows per KV head as C-contiguous views: k_cache[c, a:b] is typed as a strided
    # ('A') array, whose dot product did not vectorize (4x slower, measured)
    k_heads = k_cache.reshape(k_cache.shape[0], n_kv_heads, head_dim_k)
    v_heads = v_cache.reshape(v_cache.shape[0], n_kv_heads, head_dim_v)
    n_view = split_kv_view(pos0, n_tokens, n_cells)
    if n_view:
        partials = new_partials(q.shape[1] // head_dim_k, n_threads, head_dim_v)
        launch.run_items(attend_kv_chunk, (q, k_heads, v_heads, pos0, n_cells, window, kq_scale,
                                           n_view, n_threads, scratch, partials),
                         n_kv_heads * n_threads)
        reduce_partials(partials, out)
        return
    n_heads = q.shape[1] // head_dim_k
    launch.run_items(attend_query_head, (q, k_heads, v_heads, pos0, n_cells, window, group,
                                         kq_scale, n_tokens < FA_TILE_Q, scratch, out),
                     n_tokens * n_heads)


# ggml-cpu/ops.cpp ggml_compute_forward_flash_attn_ext_f16: one query row over a K/V
# view of at least this many cells is split into one chunk of cells per thread, each
# chunk's (max, sum, f16 accumulator) combined afterwards (use_split_kv_path,
# ggml_flash_attn_ext_reduce_partials).
SPLIT_KV_MIN = 512


@njit(cache=True, nogil=True)
def llama_cells(n_cells):
    """The size of llama.cpp's cache where ours has n_cells rows: both hold n_ctx,
    or a sliding layer's window + batch, which llama.cpp pads to 256
    (llama-context.cpp n_ctx, llama-kv-cache-iswa.cpp size_swa)."""
    return (n_cells + 255) // 256 * 256


@njit(cache=True, nogil=True)
def kv_view(pos, n_cells):
    """The number of cells llama.cpp's attention views when it decodes position pos
    (llama-kv-cache.cpp get_n_kv): the cells used so far, padded to 256, at least
    256, at most the cache's size. Cells fill in order from 0, so pos + 1 are used
    (all of a ring that has wrapped)."""
    size = llama_cells(n_cells)
    return min(size, max(256, (min(pos + 1, size) + 255) // 256 * 256))


@njit(cache=True, nogil=True)
def attend_kv_chunk(q, k_heads, v_heads, pos, n_cells, window, kq_scale, n_view, n_chunks,
                    scratch, partials, i):
    """The split-KV path's work item i (one query at position pos over cells 0..n_view-1
    in n_chunks chunks of cells, as ggml's: each chunk runs the one-chunk online softmax,
    Q and the V accumulator in f16, over its unmasked cells in cell order; then
    reduce_partials): KV head i // n_chunks over chunk i % n_chunks of the cells (cell
    c of llama.cpp's cache (llama_cells) holds the latest position <= pos congruent to
    c, found in our row position % n_cells; masked if unused or outside the window), its
    query heads' (M, S, V) into partials [n_heads, n_chunks, 2 + head_dim_v]; scratch:
    new_scratch's.
    A KV head's query heads together: one pass over its rows, and their f16 accumulators'
    updates (a chain of dependent rounding steps per position, latency-bound one head at a
    time) overlap (per pair 55 -> ~35 ns, measured)."""
    n_kv_heads, head_dim_k, head_dim_v = k_heads.shape[1], k_heads.shape[2], v_heads.shape[2]
    group = q.shape[1] // head_dim_k // n_kv_heads
    chunk = (n_view + n_chunks - 1) // n_chunks
    kh, ci = i // n_chunks, i % n_chunks
    c0, c1 = ci * chunk, min(ci * chunk + chunk, n_view)
    qg, acc, m, total, scores = _item_buffers(scratch, group, head_dim_k, head_dim_v,
                                              max(c1 - c0, 0))
    for g in range(group):
        for j in range(head_dim_k):
            qg[g, j] = f16_round(q[0, (kh * group + g) * head_dim_k + j])
    n_rows = 0  # the unmasked cells, in cell order: every key's score first
    for c in range(c0, c1):
        row = _chunk_row(pos, c, n_cells, window)
        if row >= 0:
            for g in range(group):
                scores[n_rows, g] = dot_f16_lanes(k_heads[row, kh], qg[g]) * kq_scale
            n_rows += 1
    k = 0
    for c in range(c0, c1):
        row = _chunk_row(pos, c, n_cells, window)
        if row < 0:
            continue
        vrow = v_heads[row, kh]
        for g in range(group):
            ms, vs, m[g] = softmax_step(scores[k, g], m[g])
            add_value_f16(acc[g], vrow, ms, vs)
            total[g] = total[g] * ms + vs
        k += 1
    for g in range(group):
        h = kh * group + g
        partials[h, ci, 0] = m[g]
        partials[h, ci, 1] = total[g]
        for j in range(head_dim_v):  # a loop: the slice assignment compiled in ~4 s
            partials[h, ci, 2 + j] = acc[g, j]


@njit(cache=True, nogil=True, inline="always")
def _chunk_row(pos, c, n_cells, window):
    """Our cache row of the position in llama.cpp's cell c when decoding pos, -1 where
    that cell is masked (unused, or outside the window)."""
    kp = pos - (pos - c) % llama_cells(n_cells)
    if kp < 0 or (window > 0 and pos - kp >= window):
        return -1
    return kp % n_cells


@njit(cache=True, nogil=True, inline="always")
def _item_buffers(scratch, group, head_dim_k, head_dim_v, n_cells):
    """An attention item's queries [group, head_dim_k], zeroed accumulators [group,
    head_dim_v], running maxima (-inf) and sums (0) [group], and scores [n_cells,
    group] (attend_query_head: group 1): views of this thread's row of scratch, laid
    out as _scratch_width counts them."""
    row = scratch[get_thread_id()]
    n_q, n_acc = group * head_dim_k, group * head_dim_v
    for j in range(n_q, n_q + n_acc + 2 * group):
        row[j] = 0
    m = row[n_q + n_acc:n_q + n_acc + group]
    for g in range(group):
        m[g] = -np.inf
    scores_at = n_q + n_acc + 2 * group
    return (row[:n_q].reshape(group, head_dim_k), row[n_q:n_q + n_acc].reshape(group, head_dim_v),
            m, row[n_q + n_acc + group:scores_at],
            row[scores_at:scores_at + n_cells * group].reshape(n_cells, group))


@njit(cache=True, nogil=True)
def split_kv_view(pos, n_tokens, n_cells):
    """The cells a batch at pos views where it takes the split-KV path (one token over
    SPLIT_KV_MIN+ cells of kv_view), else 0 (attention's choice, and decode's)."""
    n_view = kv_view(pos, n_cells) if n_tokens == 1 else 0
    return n_view if n_view >= SPLIT_KV_MIN else 0


@njit(cache=True, nogil=True)
def new_partials(n_heads, n_chunks, head_dim_v):
    """attend_kv_chunk's output: (M, S, V) per head and chunk."""
    return np.empty((n_heads, n_chunks, 2 + head_dim_v), np.float32)


@njit(cache=True, nogil=True)
def reduce_partials(partials, out):
    """Every head's chunks [n_heads, n_chunks, 2 + head_dim_v] into out [1, n_heads *
    head_dim_v] (_reduce_partials)."""
    head_dim_v = partials.shape[2] - 2
    for h in range(partials.shape[0]):
        _reduce_partials(partials[h], out[0, h * head_dim_v:(h + 1) * head_dim_v])


@njit(cache=True, nogil=True)
def _reduce_partials(partials, out):
    """ggml_flash_attn_ext_reduce_partials for one head: chunks [M, S, V...] combined
    in order (empty ones skipped), then V / S."""
    m_final, s_final = np.float32(-np.inf), np.float32(0.0)
    out[:] = 0
    for ci in range(partials.shape[0]):
        m_chunk, s_chunk = partials[ci, 0], partials[ci, 1]
        if s_chunk == 0:
            continue
        m_new = max(m_final, m_chunk)
        scale_old = np.float32(np.exp(m_final - m_new))
        scale_new = np.float32(np.exp(m_chunk - m_new))
        for j in range(out.shape[0]):
            out[j] = out[j] * scale_old + partials[ci, 2 + j] * scale_new
        s_final = s_final * scale_old + s_chunk * scale_new
        m_final = m_new
    if s_final != 0:
        inv = np.float32(1.0) / s_final
        for j in range(out.shape[0]):
            out[j] *= inv
