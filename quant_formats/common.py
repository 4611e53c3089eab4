"""Numba helpers shared by the block formats."""
import math
import platform

import numba
import numpy as np
from llvmlite import binding as llvm_binding, ir as llvm_ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# Parallel kernels may be called from several threads at once (a desktop app's
# workers, two models): the default 'workqueue' layer aborts on that, tbb and
# OpenMP do not. tbb comes as a pip dependency, so it is tried first.
numba.config.THREADING_LAYER_PRIORITY = ["tbb", "omp", "workqueue"]

# f16 bit pattern -> float32, as ggml's ggml_table_f32_f16: one load per scale.
F16_TO_F32 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


def _native_f16() -> bool:
    """Whether LLVM converts f16 in one instruction here: x86's F16C (vcvtph2ps, every
    AVX2 CPU has it) or any non-x86 target (ARM's fcvt); old x86 CPUs would need a
    runtime library call, so they take the bit arithmetic below."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return True
    return bool(llvm_binding.get_host_cpu_features().get("f16c", False))


def _f16_bits_value(bits):
    """f16 bit pattern -> float32 by arithmetic (the fallback of f16_to_f32)."""
    sign = np.float32(-1.0) if bits & 0x8000 else np.float32(1.0)
    exponent, mantissa = (bits >> 10) & 0x1F, np.float32(bits & 0x3FF)
    if exponent == 0:
        return sign * mantissa * np.float32(2.0 ** -24)
    if exponent == 31:
        return sign * np.float32(np.inf) if mantissa == 0 else np.float32(np.nan)
    return sign * (np.float32(1024.0) + mantissa) * np.float32(2.0) ** (np.int32(exponent) - 25)


_NATIVE_F16 = _native_f16()


def is_c_array(numba_type, dtype, ndim) -> bool:
    """Whether an intrinsic's argument type is a C-contiguous array of dtype and ndim
    (the vector IR intrinsics load whole rows through its data pointer)."""
    return (isinstance(numba_type, types.Array) and numba_type.dtype == dtype
            and numba_type.ndim == ndim and numba_type.layout == "C")


def _literal_dims(shape):
    """The dimensions of a shape typed as a literal int or a tuple of them, else None."""
    if isinstance(shape, types.IntegerLiteral):
        return (shape.literal_value,)
    if isinstance(shape, types.BaseTuple) and all(
            isinstance(d, types.IntegerLiteral) for d in shape):
        return tuple(d.literal_value for d in shape)
    return None


@intrinsic
def stack_empty(typingctx, shape, dtype):
    """np.empty(shape, dtype) on the calling function's stack: shape a constant (a
    literal int or tuple of them, e.g. module constants), dtype a NumPy scalar type.
    The row group functions' few small arrays each were a heap allocation a call,
    ~10,900 a decoded SmolLM2 token (counted with NUMBA_NRT_STATS). Not reference
    counted: it must not outlive the call (never return or store it)."""
    dims = _literal_dims(shape)
    if dims is None or not isinstance(dtype, types.NumberClass):
        return None
    array_type = types.Array(dtype.instance_type, len(dims), "C")

    def codegen(context, builder, signature, args):
        element = context.get_data_type(array_type.dtype)
        itemsize = context.get_abi_sizeof(element)
        strides = [itemsize * math.prod(dims[i + 1:]) for i in range(len(dims))]
        intp = context.get_value_type(types.intp)
        array = context.make_array(array_type)(context, builder)
        context.populate_array(
            array, data=cgutils.alloca_once(builder, element, size=math.prod(dims)),
            shape=[intp(d) for d in dims], strides=[intp(s) for s in strides],
            itemsize=intp(itemsize), meminfo=None)
        return array._getvalue()
    return array_type(shape, dtype), codegen


def _f16_intrinsic(name, arg_type, native, fallback):
    """An intrinsic of one arg_type value returning float32: native(builder, value), LLVM
    IR through its half type, where _NATIVE_F16 (read when a caller compiles), else
    the Python function fallback compiled in its place."""
    def typer(typingctx, value):
        if value != arg_type:
            return None
        sig = types.float32(arg_type)

        def codegen(context, builder, signature, args):
            if not _NATIVE_F16:
                return context.compile_internal(builder, fallback, signature, args)
            return native(builder, args[0])
        return sig, codegen
    typer.__name__ = typer.__qualname__ = name  # Numba's messages name it
    return intrinsic(typer)


def _f16_round_arithmetic(x):
    """f16_round's fallback, in float32 arithmetic. Normal range: Veltkamp's split keeps
    the top 11 significant bits; below 2^-14 the f16 spacing is the fixed 2^-24. All
    three cases are computed and one selected, without branches, so loops over it
    vectorize."""
    ax = abs(x)
    c = x * np.float32(8193.0)
    normal = np.float32(c - (c - x))
    tiny = np.float32(np.rint(x * np.float32(16777216.0)) / np.float32(16777216.0))
    r = tiny if ax < np.float32(6.103515625e-05) else normal
    return np.float32(math.copysign(math.inf, x)) if ax >= np.float32(65520.0) else r


# The f16 whose bits are a uint16, as float32: LLVM's fpext of half, so a loop over
# lanes becomes vcvtph2ps (0.2 ns a value here; F16_TO_F32[...] per lane is a gather).
f16_to_f32 = _f16_intrinsic(
    "f16_to_f32", types.uint16, lambda builder, bits: builder.fpext(
        builder.bitcast(bits, llvm_ir.HalfType()), llvm_ir.FloatType()), _f16_bits_value)

# A float32 rounded to the nearest f16 value (ties to even, overflow to inf), as
# float32: GGML_FP32_TO_FP16 then back. LLVM's fptrunc to half and fpext back, so a
# loop over lanes becomes vcvtps2ph + vcvtph2ps with F16C (decode attention's f16
# accumulator: 2x faster than the arithmetic, the same values).
f16_round = _f16_intrinsic(
    "f16_round", types.float32, lambda builder, x: builder.fpext(
        builder.fptrunc(x, llvm_ir.HalfType()), llvm_ir.FloatType()), _f16_round_arithmetic)


@intrinsic
def fma32(typingctx, a, b, c):
    """a * b + c in float32 with one rounding (LLVM's llvm.fma: one instruction where
    the CPU has FMA, libm's fmaf elsewhere; the same value either way)."""
    if not (a == b == c == types.float32):
        return None
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        return builder.fma(*args)
    return sig, codegen


@intrinsic
def round_even(typingctx, x):
    """np.rint of a float32 (to nearest, ties to even) as LLVM's llvm.rint, which it
    folds into the conversion that follows (vcvtss2si), where Numba's np.rint called
    libm's rintf once a value (the Q8_0 activation quantizer: within noise of it,
    0.46 / 0.50 us for 576 values; the same values)."""
    if x != types.float32:
        return None
    sig = types.float32(types.float32)

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.rint", [llvm_ir.FloatType()])
        return builder.call(fn, args)
    return sig, codegen


@intrinsic
def f32_from_bits(typingctx, bits):
    """The float32 whose IEEE bits are an int32."""
    if bits != types.int32:
        return None
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.FloatType())
    return sig, codegen


@njit(cache=True, nogil=True, inline="always")
def f16_at(buf, offset):
    """The little-endian f16 at buf[offset], as float32."""
    return F16_TO_F32[buf[offset] | (np.int32(buf[offset + 1]) << 8)]


@njit(cache=True, nogil=True, inline="always")
def to_f16(x):
    """Round a float32 to the nearest f16 value, ties to even (GGML_FP32_TO_FP16).

    Numba has no float16 on the CPU: scale by the f16 spacing at x's binade
    (never below the subnormal spacing 2^-24), round, scale back; all exact in f64."""
    ax = abs(x)
    if ax >= 65520.0:
        return np.float32(math.copysign(math.inf, x))
    _, e = math.frexp(ax)
    ulp = math.ldexp(1.0, max(e - 11, -24))
    return np.float32(np.rint(x / ulp) * ulp)


@njit(cache=True, nogil=True, inline="always")
def as_int8(byte):
    """Reinterpret a uint8 as int8."""
    return np.int32(byte) - 256 * (np.int32(byte) >> 7)


@njit(cache=True, nogil=True, inline="always")
def u32_at(buf, offset):
    """The little-endian uint32 at buf[offset], as int64."""
    return (np.int64(buf[offset]) | (np.int64(buf[offset + 1]) << 8)
            | (np.int64(buf[offset + 2]) << 16) | (np.int64(buf[offset + 3]) << 24))


# Row-flat matmuls (Q4_0, Q4_1, Q8_0): LLVM leaves a 16- or 32-byte per-block dot
# loop scalar (inspect_asm shows no wide registers), but vectorizes one flat pass
# over a whole row's bytes. So the activations are first laid out like the row's
# bytes (zero under each block's scales); one flat pass makes int16 products, and
# a short loop sums each block's. Measured 1.4-1.5x over the per-block loop on
# Q4_1 (8192 x 4096, best of 15 alternating runs, 1 and 2 threads).
ROWS_PER_TASK = 16


@njit(cache=True, nogil=True)
def spread_activations(qs, row_bytes, block_bytes, first, src, width):
    """int8 [n_tokens, row_bytes]: for each block b, qs[t, 32b+src : 32b+src+width]
    placed at bytes b*block_bytes+first.., zero elsewhere."""
    out = np.zeros((qs.shape[0], row_bytes), np.int8)
    for t in range(qs.shape[0]):
        for b in range(row_bytes // block_bytes):
            o = b * block_bytes + first
            out[t, o:o + width] = qs[t, 32 * b + src:32 * b + src + width]
    return out


@njit(cache=True, nogil=True, inline="always")
def nibble_products(row, x_lo, x_hi, prod):
    """prod[j] = low nibble * x_lo[j] + high nibble * x_hi[j] over the whole row
    (Q4_0, Q4_1); the high nibble masked in place, its product shifted: exact."""
    for j in range(row.shape[0]):
        q = row[j]
        prod[j] = np.int16((q & 0x0F) * x_lo[j]) + (np.int16((q & 0xF0) * x_hi[j]) >> 4)

