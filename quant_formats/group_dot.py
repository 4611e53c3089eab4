"""One token's products with a whole row group, its float sums kept in registers.

The group functions (q8_0.packed_group, interleave_nibbles.nibble_group) take up to
TOKENS tokens a pass: per block, the integer sums of every row go to memory
(quads_dot), then a float loop converts the block's f16 scales and adds each row's
scaled sum into an accumulator array. group_dot_intrinsic makes the same integer sums
and the same float operations in the same order (results bit-identical to the general
path), each chunk's accumulator a register from the first block to the last.
q8_0.packed_group takes it for one token: in one process alternating, 2 threads,
gemma3's 178 MB Q8_0 output matrix 23.8 -> 21.3 ms and SmolLM2's 30 MB 3.7 -> 3.3
(measured). The nibble layouts' layers gained 1-2% from it (also measured), less than
its compile time cost them (three more variants in nibble_group, 2.7 -> 5.0 s: gemma3's
first run took 63 s against its 60), so they keep the general path.
"""
from llvmlite import ir as llvm_ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from . import simd
from .common import _NATIVE_F16, is_c_array
from .interleave import ROWS, QuadReader

from .simd import I8 as _I8, I16 as _I16

# Where the CPU converts f16 in one instruction (common._native_f16): the fused path
# converts a chunk of scales as a vector; elsewhere the group functions' loop does it.
FUSED = _NATIVE_F16
BLOCK = 32  # weights a Q8_0 block


def group_dot_intrinsic(name, doc):
    """An intrinsic (acc, q_w, d_w, g, x, d_x, x_offsets, t) on the Q8_0 layout's quads
    (their bytes as operands, x within +-127: simd.signed_quad_dot's sums, as
    q8_0_quads_dot): acc[r] = the sum over blocks b of row group g's scaled integer sums
    with token t of x, d_w[g, b, r] * d_x[t, b] * (isum - x_offsets[t, b]) in
    add_offset_sums' order. acc float32 [ROWS]; q_w uint8 [groups, blocks, 8, 4 * ROWS];
    d_w uint16 (f16 bits) [groups, blocks, ROWS]; x int8 [tokens, n_in]; d_x float32 and
    x_offsets int32 [tokens, blocks], of any layout."""
    n_quads = BLOCK // 4

    def typer(typingctx, acc, q_w, d_w, g, x, d_x, x_offsets, t):
        if not (is_c_array(acc, types.float32, 1) and is_c_array(q_w, types.uint8, 4)
                and is_c_array(d_w, types.uint16, 3) and is_c_array(x, types.int8, 2)
                and _is_matrix(d_x, types.float32) and _is_matrix(x_offsets, types.int32)):
            return None
        return types.void(acc, q_w, d_w, types.intp, x, d_x, x_offsets, types.intp), codegen

    def codegen(context, builder, signature, args):
        acc_a, q_a, d_a, _, x_a, dx_a, xo_a, _ = [
            context.make_array(signature.args[i])(context, builder, args[i])
            if i not in (3, 7) else None for i in range(8)]
        g, t = args[3], args[7]
        chunk = simd.chunk_rows(context, ROWS)
        const = QuadReader.const
        n_blocks, n_krows = (builder.extract_value(q_a.shape, i) for i in (1, 2))
        q_ptr = builder.gep(builder.bitcast(q_a.data, _I8.as_pointer()), [
            builder.mul(g, builder.mul(n_blocks, builder.mul(n_krows, const(4 * ROWS))))])
        reader = QuadReader(context, builder, q_ptr,
                            builder.bitcast(x_a.data, _I8.as_pointer()),
                            builder.extract_value(x_a.shape, 1), chunk, False, None, False)
        scales = Scales(builder, g, n_blocks, chunk)
        floats = llvm_ir.VectorType(llvm_ir.FloatType(), chunk)
        accs = [cgutils.alloca_once_value(builder, llvm_ir.Constant(floats, None))
                for _ in range(ROWS // chunk)]

        with cgutils.for_range(builder, n_blocks) as loop:
            b = loop.index
            row = builder.mul(b, n_krows)
            x_quads = {k: reader.x_quad(t, builder.add(builder.mul(b, const(BLOCK)), const(k)))
                       for k in range(0, BLOCK, 4)}
            d_x = simd.splat(builder, _element(builder, dx_a, t, b), chunk)
            offset = simd.splat(builder, _element(builder, xo_a, t, b), chunk)
            for c, acc in enumerate(accs):
                parts = [part for k in range(n_quads)
                         for part in reader.operands(row, n_quads, k, const(c))]
                isum = simd.quad_dots(context, builder, llvm_ir.Constant(reader.rows32, None),
                                      [(w, x_quads[k]) for w, k in parts], signed=True)
                scale = builder.fmul(scales.load(d_a, b, c), d_x)
                term = builder.fmul(scale, builder.sitofp(builder.sub(isum, offset), floats))
                builder.store(builder.fadd(builder.load(acc), term), acc)
        acc_ptr = builder.bitcast(acc_a.data, llvm_ir.FloatType().as_pointer())
        for c, acc in enumerate(accs):
            builder.store(builder.load(acc), builder.bitcast(
                builder.gep(acc_ptr, [const(c * chunk)]), floats.as_pointer()), align=4)
        return context.get_dummy_value()
    typer.__name__ = typer.__qualname__ = name  # Numba's messages name it
    typer.__doc__ = doc
    return intrinsic(typer)


def _is_matrix(numba_type, dtype) -> bool:
    return (isinstance(numba_type, types.Array) and numba_type.dtype == dtype
            and numba_type.ndim == 2)


def _element(builder, array, i, j):
    """array[i, j] of a 2-D array of any layout (its strides in bytes)."""
    strides = [builder.extract_value(array.strides, k) for k in (0, 1)]
    at = builder.add(builder.mul(i, strides[0]), builder.mul(j, strides[1]))
    byte = builder.gep(builder.bitcast(array.data, _I8.as_pointer()), [at])
    return builder.load(builder.bitcast(byte, array.data.type))


class Scales:
    """A chunk of a row group's f16 scales (d_w [groups, blocks, ROWS]) as floats."""

    def __init__(self, builder, g, n_blocks, chunk):
        self.builder, self.chunk = builder, chunk
        self.group_at = builder.mul(g, builder.mul(n_blocks, QuadReader.const(ROWS)))

    def load(self, array, b, c):
        """array[g, b, c * chunk .. (c + 1) * chunk] as <chunk x float>."""
        builder, const = self.builder, QuadReader.const
        at = builder.add(self.group_at, builder.add(builder.mul(b, const(ROWS)),
                                                    const(c * self.chunk)))
        bits = builder.load(builder.bitcast(
            builder.gep(builder.bitcast(array.data, _I16.as_pointer()), [at]),
            llvm_ir.VectorType(_I16, self.chunk).as_pointer()), align=2)
        halves = builder.bitcast(bits, llvm_ir.VectorType(llvm_ir.HalfType(), self.chunk))
        return builder.fpext(halves, llvm_ir.VectorType(llvm_ir.FloatType(), self.chunk))
