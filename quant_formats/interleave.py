"""The decode layout: weight rows repacked ROWS at a time, side by side.

A matrix-vector product over GGUF's row-major blocks keeps LLVM to scalar code:
each block's dot product is a short fixed loop it unrolls and then fails to
vectorize (inspect the parfor body: no wide registers). Laid out so that the same
byte of the same block of ROWS consecutive rows is contiguous, the innermost loop
runs over rows with one broadcast activation, and LLVM vectorizes it across
AVX2/AVX-512 lanes. Measured on this 2-core machine, Q8_0 576-wide rows: 2 GB/s
(1 thread, per-block loop) -> 15.8 GB/s (1 thread) and 21-23 GB/s (2 threads,
memory-bound) interleaved; the same idea as ggml-cpu's repack.cpp.

A packed matrix is a tuple of arrays, one per block field:
    bytes fields  uint8 [n_groups, n_blocks, width, ROWS]   (pack_bytes)
               or [n_groups, n_blocks, width / 4, 4 * ROWS]  (pack_byte_quads: four
                  bytes of a row side by side, the operand of simd.quad_dot)
    f16 fields    float32 [n_groups, n_blocks, ROWS]        (pack_f16: scales)
               or uint16, the f16 bits (pack_f16_bits: the Q8_0 and nibble layouts' scales,
                  converted in the kernel by common.f16_to_f32)
Rows past n_out (the last group's padding) are zero bytes and never written out.
Packing copies the weights once at load (the file's bytes, plus 2 per float32
scale); the loader then drops the mapped pages, so RSS holds one copy.
"""
import numpy as np
from llvmlite import ir as llvm_ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import launch, simd
from .common import F16_TO_F32, is_c_array

from .simd import I8 as _I8, I32 as _I32, I64 as _I64

ROWS = 64


def n_groups(n_out: int) -> int:
    return -(-n_out // ROWS)


def _pack_runs(w, block_bytes, first, run, flip, out):
    """out[g, b, k, run * r + e] = byte first + run * k + e of row g * ROWS + r's block b,
    XOR flip (run 1: pack_bytes; 4: pack_byte_quads). In parallel over row groups."""
    launch.run_items(_pack_runs_group, (w, block_bytes, first, run, flip, out), out.shape[0])


@njit(cache=True, nogil=True)
def _pack_runs_group(w, block_bytes, first, run, flip, out, g):
    n_out = w.shape[0]
    for r in range(min(ROWS, n_out - g * ROWS)):
        row = w[g * ROWS + r]
        for b in range(out.shape[1]):
            o = b * block_bytes + first
            for k in range(out.shape[2]):
                for e in range(run):
                    out[g, b, k, run * r + e] = row[o + run * k + e] ^ flip


def _pack_u16(w, block_bytes, first, out):
    launch.run_items(_pack_u16_group, (w, block_bytes, first, out), out.shape[0])


@njit(cache=True, nogil=True)
def _pack_u16_group(w, block_bytes, first, out, g):
    n_out = w.shape[0]
    for r in range(min(ROWS, n_out - g * ROWS)):
        row = w[g * ROWS + r]
        for b in range(out.shape[1]):
            o = b * block_bytes + first
            out[g, b, r] = np.uint16(row[o]) | (np.uint16(row[o + 1]) << 8)


def pack_bytes(w, block_bytes: int, first: int, width: int) -> np.ndarray:
    """Bytes first..first+width of every block, interleaved: [groups, blocks, width, ROWS]."""
    n_blocks = w.shape[1] // block_bytes
    out = np.zeros((n_groups(w.shape[0]), n_blocks, width, ROWS), np.uint8)
    _pack_runs(w, block_bytes, first, 1, np.uint8(0), out)
    return out


def pack_byte_quads(w, block_bytes: int, first: int, width: int, flip: int) -> np.ndarray:
    """Bytes first..first+width of every block, four of a row side by side, each XOR
    flip: uint8 [groups, blocks, width / 4, 4 * ROWS], [g, b, k, 4r + e] = byte first +
    4k + e of row g * ROWS + r's block b. One parallel pass (numpy's transposes and
    the XOR as separate passes added ~0.5 s to gemma3's load, measured)."""
    out = np.zeros((n_groups(w.shape[0]), w.shape[1] // block_bytes, width // 4, 4 * ROWS),
                   np.uint8)
    _pack_runs(w, block_bytes, first, 4, np.uint8(flip), out)
    return out


def pack_quads(values, block: int = 32) -> np.ndarray:
    """int8 values [n_out, n_in] (n_in a multiple of block) as quads_dot reads them (the
    Q8_0 layout, block 32; int8_subblocks_matmul's, 256): [g, b, k, 4r + e] =
    values[g * ROWS + r, block * b + 4k + e] + 128 (offset binary: simd.quad_dot
    multiplies unsigned by signed bytes; the kernels take 128 * sum(x) back)."""
    return pack_byte_quads(np.ascontiguousarray(values).view(np.uint8), block, 0, block, 0x80)


def pack_f16(w, block_bytes: int, first: int) -> np.ndarray:
    """The f16 at byte `first` of every block, as float32: [groups, blocks, ROWS].
    Kept as f16 bits, the kernels' table look-up per row and block was a gather
    that took half a Q4_1 matvec's time, and converting them in the kernel by bit
    arithmetic a quarter (measured); float32 costs 2 bytes more per block and
    scale. common.f16_to_f32 (one vcvtph2ps per 16 scales) made bits pay in the
    Q8_0 layout (pack_f16_bits); the others still take float32."""
    return F16_TO_F32[pack_f16_bits(w, block_bytes, first)]


def pack_f16_bits(w, block_bytes: int, first: int) -> np.ndarray:
    """The f16 at byte `first` of every block, its bits: uint16 [groups, blocks, ROWS]."""
    bits = np.zeros((n_groups(w.shape[0]), w.shape[1] // block_bytes, ROWS), np.uint16)
    _pack_u16(w, block_bytes, first, bits)
    return bits


@njit(cache=True, nogil=True, inline="always")
def add_nibble_products(sum_lo, sum_hi, q_block, k, x, o, hi):
    """The int16 sums of a row group over four bytes k..k+3 of a block: sum_lo[r] +=
    low nibble of q_block[k + i, r] times x[o + i], sum_hi[r] += high nibble times
    x[o + hi + i]. Four bytes per pass over the rows: the sums are loaded and stored
    once per four products (one per product was 20-25% slower, measured)."""
    lo0, lo1, lo2, lo3 = x[o], x[o + 1], x[o + 2], x[o + 3]
    hi0, hi1, hi2, hi3 = x[o + hi], x[o + hi + 1], x[o + hi + 2], x[o + hi + 3]
    q0, q1, q2, q3 = q_block[k], q_block[k + 1], q_block[k + 2], q_block[k + 3]
    for r in range(sum_lo.shape[0]):
        sum_lo[r] = np.int16(sum_lo[r] + np.int16(q0[r] & 15) * np.int16(lo0)
                             + np.int16(q1[r] & 15) * np.int16(lo1)
                             + np.int16(q2[r] & 15) * np.int16(lo2)
                             + np.int16(q3[r] & 15) * np.int16(lo3))
        sum_hi[r] = np.int16(sum_hi[r] + np.int16(q0[r] >> 4) * np.int16(hi0)
                             + np.int16(q1[r] >> 4) * np.int16(hi1)
                             + np.int16(q2[r] >> 4) * np.int16(hi2)
                             + np.int16(q3[r] >> 4) * np.int16(hi3))


@intrinsic
def int8_rows_dot(typingctx, out, q_block, k0, n_k, x, o):
    """out[r] = sum over i < n_k of q_block[k0 + i, r] * x[o + i] for the ROWS rows r of
    a group (q_block int8 [block length, ROWS], C-contiguous; n_k even; out int32).
    Written as LLVM vector IR: each pair of products summed in int16 (|q| <= 128,
    |x| <= 127: at most 32512), widened and added in int32, the sums held in
    registers. LLVM made the same loop in Numba int32 multiplies (vpmovsxbd +
    vpmulld per 16 products); this is vpmovsxbw + vpmullw per 32, 1.25x the int8
    products a second in cache (Q8_0 576 x 3072, 1 thread: 22.7 -> 28.4 GB/s)."""
    if not (is_c_array(out, types.int32, 1) and is_c_array(q_block, types.int8, 2)
            and is_c_array(x, types.int8, 1)):
        return None
    sig = types.void(out, q_block, types.intp, types.intp, x, types.intp)

    def codegen(context, builder, signature, args):
        i8, i16, i32, i64 = (llvm_ir.IntType(w) for w in (8, 16, 32, 64))
        rows16, rows32 = llvm_ir.VectorType(i16, ROWS), llvm_ir.VectorType(i32, ROWS)
        out_a, q_a, x_a = (context.make_array(signature.args[i])(context, builder, args[i])
                           for i in (0, 1, 4))
        k0, n_k, o = args[2], args[3], args[5]
        q_ptr = builder.bitcast(q_a.data, i8.as_pointer())
        x_ptr = builder.bitcast(x_a.data, i8.as_pointer())
        x_first = builder.sub(o, k0)  # x[o + i] pairs with q_block[k0 + i]

        def term(k):  # sext(q_block[k, :]) * sext(x[o + k]), <ROWS x i16>
            row = builder.gep(q_ptr, [builder.mul(k, llvm_ir.Constant(i64, ROWS))])
            q = builder.load(builder.bitcast(row, llvm_ir.VectorType(i8, ROWS).as_pointer()),
                             align=1)
            xk = builder.sext(builder.load(builder.gep(x_ptr, [builder.add(x_first, k)])), i16)
            return builder.mul(builder.sext(q, rows16), simd.splat(builder, xk, ROWS))
        total = cgutils.alloca_once_value(builder, llvm_ir.Constant(rows32, None))
        two = llvm_ir.Constant(i64, 2)
        with cgutils.for_range_slice(builder, k0, builder.add(k0, n_k), two) as (k, _):
            pair = builder.add(term(k), term(builder.add(k, llvm_ir.Constant(i64, 1))))
            builder.store(builder.add(builder.load(total), builder.sext(pair, rows32)), total)
        out_ptr = builder.bitcast(out_a.data, rows32.as_pointer())
        builder.store(builder.load(total), out_ptr, align=4)
        return context.get_dummy_value()
    return sig, codegen


@njit(cache=True, nogil=True)
def scaled_block_sums(qs, length, factor):
    """factor * the sum of each `length` consecutive activations of each token: int32
    [tokens, n_in / length] (the offsets the kernels take back from their integer sums:
    128 for offset binary weights, 8 for Q4_0's nibbles)."""
    sums = np.empty((qs.shape[0], qs.shape[1] // length), np.int32)
    for t in range(qs.shape[0]):
        for s in range(sums.shape[1]):
            total = np.int32(0)
            for j in range(s * length, (s + 1) * length):
                total += np.int32(qs[t, j])
            sums[t, s] = factor * total
    return sums


@njit(cache=True, nogil=True, inline="always")
def add_offset_sums(acc, isum, scale_w, d, x_offsets, t0, n_t, b):
    """acc[t] += scale_w * d_x * (isum[t] - x_offset) for the n_t tokens from t0 in
    block b: the float step of the kernels whose integer sums carry an offset term
    (q8_0.packed_matmul, interleave_nibbles.nibble_matmul), in ggml's order."""
    for t in range(n_t):
        scale, x_offset = d[t0 + t, b], x_offsets[t0 + t, b]
        for r in range(acc.shape[1]):
            acc[t, r] += scale_w[r] * scale * np.float32(np.int32(isum[t, r] - x_offset))


@njit(cache=True, nogil=True, inline="always")
def store_group(out, acc, t0, n_t, g):
    """Row group g's sums of the n_t tokens from t0 into out (the group's padding rows
    past out's width left out)."""
    n_rows = acc.shape[1]
    for t in range(n_t):
        for r in range(min(n_rows, out.shape[1] - g * n_rows)):
            out[t0 + t, g * n_rows + r] = acc[t, r]


TOKENS = 4  # tokens per quads_dot: 4 x 4 accumulators + 4 weight registers of 64 bytes


class QuadReader:
    """LLVM IR of a row group's operands in the quads layout (pack_byte_quads): quad row
    `row + k`'s bytes of chunk c (chunk rows, simd.chunk_rows) as unsigned operands (the
    low and the high nibbles two, where nibbles; with table, 16 bytes, the nibbles are
    looked up in it; with high_bits, each gets a fifth bit from quad row `row +
    n_quads`, pack_five_bits'), and x's quads splat to pair with them."""

    def __init__(self, context, builder, q_ptr, x_ptr, x_stride, chunk, nibbles, table,
                 high_bits):
        self.context, self.builder, self.q_ptr, self.x_ptr = context, builder, q_ptr, x_ptr
        self.x_stride, self.chunk = x_stride, chunk
        self.nibbles, self.high_bits = nibbles, high_bits
        self.table = None if table is None else [int(v) - 256 if v > 127 else int(v)
                                                 for v in table]
        self.quads8 = llvm_ir.VectorType(_I8, 4 * chunk)
        self.rows32 = llvm_ir.VectorType(_I32, chunk)

    @staticmethod
    def const(v):
        return llvm_ir.Constant(_I64, v)

    def operands(self, row, n_quads, k, c):
        """[(operand <4 chunk x i8>, x offset in the block)] of quad row row + k, chunk c."""
        builder, const = self.builder, self.const
        at = builder.add(builder.mul(builder.add(row, const(k)), const(4 * ROWS)),
                         builder.mul(c, const(4 * self.chunk)))
        quad = builder.load(builder.bitcast(builder.gep(self.q_ptr, [at]),
                                            self.quads8.as_pointer()), align=1)
        if not self.nibbles:
            return [(quad, 4 * k)]
        low = builder.and_(quad, llvm_ir.Constant(self.quads8, [15] * 4 * self.chunk))
        high = builder.lshr(quad, llvm_ir.Constant(self.quads8, [4] * 4 * self.chunk))
        if self.table is not None:
            low, high = (simd.lookup16(self.context, builder, self.table, v) for v in (low, high))
        if self.high_bits:
            low, high = self._fifth_bits(row, n_quads, k, c, low, high)
        return [(low, 4 * k), (high, 16 + 4 * k)]

    def _fifth_bits(self, row, n_quads, k, c, low, high):  # 16 added where the bit is set
        builder, const, chunk, quads8 = self.builder, self.const, self.chunk, self.quads8
        at = builder.add(builder.mul(builder.add(row, const(n_quads)), const(4 * ROWS)),
                         builder.add(const(k * ROWS), builder.mul(c, const(chunk))))
        bits = builder.load(builder.bitcast(builder.gep(self.q_ptr, [at]), llvm_ir.VectorType(
            _I8, chunk).as_pointer()), align=1)  # a byte per row: 8 fifth bits
        spread = builder.shuffle_vector(bits, llvm_ir.Constant(bits.type, llvm_ir.Undefined),
                                        llvm_ir.Constant(llvm_ir.VectorType(_I32, 4 * chunk),
                                                         [r for r in range(chunk)
                                                          for _ in range(4)]))
        sixteen, zero = (llvm_ir.Constant(quads8, [v] * 4 * chunk) for v in (16, 0))
        out = []
        for part, first_bit in ((low, 0), (high, 4)):
            mask = llvm_ir.Constant(quads8, [1 << (first_bit + e) for _ in range(chunk)
                                             for e in range(4)])
            is_set = builder.icmp_unsigned("!=", builder.and_(spread, mask), zero)
            out.append(builder.or_(part, builder.select(is_set, sixteen, zero)))
        return out

    def x_quad(self, token, at):
        """x[token, at .. at + 3] repeated chunk times (token, at: i64 values)."""
        builder = self.builder
        at = builder.add(builder.mul(token, self.x_stride), at)
        quad = builder.load(builder.bitcast(builder.gep(self.x_ptr, [at]), _I32.as_pointer()),
                            align=1)
        return builder.bitcast(simd.splat(builder, quad, self.chunk), self.quads8)


def quads_dot_intrinsic(name: str, n_quads: int, nibbles: bool, doc: str, table=None,
                         high_bits=False, q8_0_x=False):
    """An intrinsic (out, q_block, k0, x, t0, n_tokens, o) over quads k0 .. k0 + n_quads
    - 1 of q_block (QuadReader's options nibbles, table, high_bits; q8_0_x: x within
    +-127, simd.signed_quad_dot's sums), documented by doc."""
    max_u = 255 if table is not None or not nibbles else 31 if high_bits else 15

    def typer(typingctx, out, q_block, k0, x, t0, n_tokens, o):
        if not (is_c_array(out, types.int32, 2) and is_c_array(q_block, types.uint8, 2)
                and is_c_array(x, types.int8, 2)):
            return None
        return types.void(out, q_block, types.intp, x, types.intp, types.intp,
                          types.intp), codegen

    def codegen(context, builder, signature, args):
        chunk = simd.chunk_rows(context, ROWS)
        out_a, q_a, x_a = (context.make_array(signature.args[i])(context, builder, args[i])
                           for i in (0, 1, 3))
        k0, t0, n_tokens, o = args[2], args[4], args[5], args[6]
        reader = QuadReader(context, builder, builder.bitcast(q_a.data, _I8.as_pointer()),
                            builder.bitcast(x_a.data, _I8.as_pointer()),
                            builder.extract_value(x_a.shape, 1), chunk, nibbles, table, high_bits)
        rows32, const = reader.rows32, reader.const
        out_ptr = builder.bitcast(out_a.data, _I32.as_pointer())
        # the chunk count from the array's shape: a runtime trip count LLVM keeps as a
        # loop (unrolled into one block, its scheduler spilled most of the operands)
        n_chunks = builder.udiv(builder.extract_value(q_a.shape, 1), const(4 * chunk))
        done = builder.append_basic_block("quads_dot.done")
        switch = builder.switch(n_tokens, done)
        for n in range(1, TOKENS + 1):  # one body per token count
            block = builder.append_basic_block(f"quads_dot.tokens{n}")
            switch.add_case(llvm_ir.Constant(_I64, n), block)
            with builder.goto_block(block):
                with cgutils.for_range(builder, n_chunks) as loop:
                    c = loop.index
                    # each quad loaded once, used for every token
                    parts = [part for k in range(n_quads)
                             for part in reader.operands(k0, n_quads, k, c)]
                    totals = [simd.quad_dots(context, builder, llvm_ir.Constant(rows32, None),
                                             [(weights, reader.x_quad(builder.add(t0, const(t)),
                                                                      builder.add(o, const(at))))
                                              for weights, at in parts],
                                             max_u=max_u, signed=q8_0_x)
                              for t in range(n)]
                    for t, total in enumerate(totals):
                        at = builder.add(const(t * ROWS), builder.mul(c, const(chunk)))
                        builder.store(total, builder.bitcast(builder.gep(out_ptr, [at]),
                                                             rows32.as_pointer()), align=4)
                builder.branch(done)
        builder.position_at_end(done)
        return context.get_dummy_value()
    typer.__name__ = typer.__qualname__ = name  # Numba's messages name it
    typer.__doc__ = doc
    return intrinsic(typer)


quads_dot = quads_dot_intrinsic("quads_dot", 8, False, """quads_dot(out, q_block, k0, x,
    t0, n_tokens, o): out[t, r] = sum over k < 32 of q_block[k0 + k // 4, 4r + k % 4] *
    x[t0 + t, o + k] for t < n_tokens <= TOKENS: the integer sums of 32 weights in
    pack_quads' layout (a block of the Q8_0 layout, k0 0; a sub-block of 32 of the
    256-weight formats) for the ROWS rows of a group, its offset binary bytes as stored
    (the caller takes 128 * sum(x) off). out int32 [TOKENS, ROWS]; q_block uint8
    [block / 4, 4 * ROWS]; x int8 [tokens, n_in]. Each weight is loaded once for up to
    TOKENS tokens; with AVX-512 VNNI one vpdpbusd makes 64 products and their sums.""")
quads_dot16 = quads_dot_intrinsic("quads_dot16", 4, False, """quads_dot16(out, q_block, k0,
    x, t0, n_tokens, o): quads_dot over 16 weights (Q6_K's sub-blocks).""")
q8_0_quads_dot = quads_dot_intrinsic("q8_0_quads_dot", 8, False, """q8_0_quads_dot(out, q_block,
    k0, x, t0, n_tokens, o): quads_dot for x within +-127 (Q8_0's activations): its sums
    less q8_0_offset() * sum(x) (simd.signed_quad_dot: ggml's sign trick on AVX2).""",
                                      q8_0_x=True)


@intrinsic
def q8_0_offset(typingctx):
    """What q8_0_quads_dot's and kvalue_quads_dot's sums hold of 128 * sum(x), a
    constant of the target: 0 where they take the weights as signed (AVX2), else 128."""
    def codegen(context, builder, signature, args):
        return llvm_ir.Constant(_I64, simd.signed_offset(context))
    return types.int64(), codegen
