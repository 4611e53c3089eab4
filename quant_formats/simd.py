"""Integer dot-product instructions LLVM does not form from portable IR, for the
decode layouts' kernels (interleave.py), each with a portable-IR fallback.

pair_madd (x86 vpmaddubsw) and quad_dot (vpdpbusd, AVX-512 VNNI) are emitted where
the target Numba compiles for has them: its feature string, which honours
NUMBA_CPU_NAME / NUMBA_CPU_FEATURES, so a cache built for a generic CPU holds no
instruction that CPU lacks. Elsewhere (ARM, older x86) the same values come from
portable IR that LLVM lowers as it can. Tests put features in DISABLED to check
the other paths on any machine.
"""
from llvmlite import ir as llvm_ir
from numba.core.registry import cpu_target

I8, I16, I32, I64 = (llvm_ir.IntType(w) for w in (8, 16, 32, 64))
DISABLED: set = set()  # features not to use even where the target has them
X86_FEATURES = ("avx512vnni", "avx512bw", "avx2")


def target_has(context, feature: str) -> bool:
    """Whether code compiled by context may use the x86 feature (e.g. "avx512vnni")."""
    features = getattr(context.codegen(), "_tm_features", "").split(",")
    return feature not in DISABLED and "+" + feature in features


def host_has(feature: str) -> bool:
    """target_has for Numba's CPU target (Python-side choices between kernels)."""
    return target_has(cpu_target.target_context, feature)


def _call(builder, name, return_type, args):
    fn = builder.module.globals.get(name)
    if fn is None:
        fn = llvm_ir.Function(builder.module, llvm_ir.FunctionType(
            return_type, [a.type for a in args]), name)
    return builder.call(fn, args)


def _parts(builder, v, width):
    """v split into consecutive vectors of width lanes."""
    undefined = llvm_ir.Constant(v.type, llvm_ir.Undefined)
    return [builder.shuffle_vector(v, undefined, llvm_ir.Constant(
        llvm_ir.VectorType(I32, width), list(range(first, first + width))))
        for first in range(0, v.type.count, width)]


def _concat(builder, parts):
    while len(parts) > 1:
        joined = []
        for left, right in zip(parts[::2], parts[1::2]):
            count = 2 * left.type.count
            joined.append(builder.shuffle_vector(left, right, llvm_ir.Constant(
                llvm_ir.VectorType(I32, count), list(range(count)))))
        parts = joined
    return parts[0]


def _strided_sum(builder, wide, stride):
    """Lane j: the sum of wide's lanes stride * j + i, i < stride."""
    n = wide.type.count // stride
    undefined = llvm_ir.Constant(wide.type, llvm_ir.Undefined)
    total = None
    for i in range(stride):
        lanes = builder.shuffle_vector(wide, undefined, llvm_ir.Constant(
            llvm_ir.VectorType(I32, n), list(range(i, stride * n, stride))))
        total = lanes if total is None else builder.add(total, lanes)
    return total


def splat(builder, value, n):
    """<n x value's type>: value in every lane."""
    vector = llvm_ir.VectorType(value.type, n)
    first = builder.insert_element(llvm_ir.Constant(vector, llvm_ir.Undefined), value,
                                   llvm_ir.Constant(I32, 0))
    return builder.shuffle_vector(first, llvm_ir.Constant(vector, llvm_ir.Undefined),
                                  llvm_ir.Constant(llvm_ir.VectorType(I32, n), None))


def chunk_rows(context, rows: int) -> int:
    """Rows of a group whose quads one pass of interleave.quads_dot's loop takes: all of
    them with AVX-512's 32 registers (TOKENS tokens' sums of 64 rows fit: the layout's
    design, measured on a Zen 4), one register's worth (8) on AVX2 and elsewhere (with
    16 registers the 64-row body spilled most of its operands)."""
    return rows if target_has(context, "avx512bw") else 8


def _has_pmaddubsw(context) -> bool:
    return target_has(context, "avx512bw") or target_has(context, "avx2")


def pair_madd(context, builder, u, s):
    """u[2i] * s[2i] + u[2i + 1] * s[2i + 1] as <n x i16>, for <2n x i8> u unsigned and
    s signed whose pair sums fit int16 (vpmaddubsw saturates, the portable IR wraps;
    callers keep to u <= 128, where neither happens). One instruction per 64
    products: LLVM did not form it from the portable IR (it emitted vpmullw and byte
    permutes, measured 32 -> 117 G products/s on one core in L1)."""
    if _has_pmaddubsw(context):
        name, width = (("llvm.x86.avx512.pmaddubs.w.512", 64) if target_has(context, "avx512bw")
                       else ("llvm.x86.avx2.pmadd.ub.sw", 32))
        result_type = llvm_ir.VectorType(I16, width // 2)
        return _concat(builder, [_call(builder, name, result_type, [a, b]) for a, b in
                                 zip(_parts(builder, u, width), _parts(builder, s, width))])
    n = u.type.count // 2
    products = builder.mul(builder.zext(u, llvm_ir.VectorType(I16, 2 * n)),
                           builder.sext(s, llvm_ir.VectorType(I16, 2 * n)))
    return _strided_sum(builder, products, 2)


def _pair_sums_widened(context, builder, pairs):
    """<n x i32>: sums of adjacent i16 lanes of pairs (vpmaddwd against ones, exact)."""
    name, width = (("llvm.x86.avx512.pmaddw.d.512", 32) if target_has(context, "avx512bw")
                   else ("llvm.x86.avx2.pmadd.wd", 16))
    ones = llvm_ir.Constant(llvm_ir.VectorType(I16, width), [1] * width)
    result_type = llvm_ir.VectorType(I32, width // 2)
    return _concat(builder, [_call(builder, name, result_type, [p, ones])
                             for p in _parts(builder, pairs, width)])


def quad_dot(context, builder, acc, u, s, small=False):
    """acc[i] + sum over j < 4 of u[4i + j] * s[4i + j], for <n x i32> acc and <4n x i8>
    u unsigned, s signed, exact. vpdpbusd where the target has AVX-512 VNNI: 64
    products and their sums in one instruction. Other x86 (AVX2 laptops): vpmaddubsw
    and vpmaddwd (pairs of pairs) as ggml's mul_sum_us8_pairs_float; its pair sums
    saturate past 32767, so a full-range u is split into u & 0x7f and u & 0x80, each
    pair sum then within +-32768 (small, u <= 127: one pass). Elsewhere
    portable IR."""
    if target_has(context, "avx512vnni"):
        return _concat(builder, [
            _call(builder, "llvm.x86.avx512.vpdpbusd.512", a.type, [a, b, c])
            for a, b, c in zip(_parts(builder, acc, 16), _parts(builder, u, 64),
                               _parts(builder, s, 64))])
    if _has_pmaddubsw(context):
        parts = [u] if small else [
            builder.and_(u, llvm_ir.Constant(u.type, [mask] * u.type.count))
            for mask in (0x7F, 0x80)]
        for part in parts:
            acc = builder.add(acc, _pair_sums_widened(
                context, builder, pair_madd(context, builder, part, s)))
        return acc
    wide = llvm_ir.VectorType(I32, u.type.count)
    products = builder.mul(builder.zext(u, wide), builder.sext(s, wide))
    return builder.add(acc, _strided_sum(builder, products, 4))


def sign_trick(context) -> bool:
    """Whether signed_quad_dot takes its weights as signed bytes (AVX2 without AVX-512:
    vpsignb has no 512-bit form)."""
    return (target_has(context, "avx2") and not target_has(context, "avx512bw")
            and not target_has(context, "avx512vnni"))


def signed_quad_dot(context, builder, acc, u, s):
    """quad_dot for s within +-127 (Q8_0's activations), where sign_trick: acc plus the
    sums of (u - 128) * s, ggml's AVX2 trick: vpsignb makes |w| and s with w's sign, one
    vpmaddubsw per 32 products where quad_dot's split of u needs two (|w| <= 128, so
    pair sums stay within 2 * 128 * 127; s = -128 would wrap). Elsewhere quad_dot's
    sums of u * s: callers take signed_offset(context) * sum(s) off either way."""
    if not sign_trick(context):
        return quad_dot(context, builder, acc, u, s)
    w = builder.xor(u, llvm_ir.Constant(u.type, [0x80] * u.type.count))
    magnitude, signed = (
        _concat(builder, [_call(builder, "llvm.x86.avx2.psign.b", a.type, [a, b])
                          for a, b in zip(_parts(builder, v, 32), _parts(builder, w, 32))])
        for v in (w, s))
    return builder.add(acc, _pair_sums_widened(
        context, builder, pair_madd(context, builder, magnitude, signed)))


def signed_offset(context) -> int:
    """What signed_quad_dot's sums hold of 128 * sum(s): 0 with the sign trick, else 128."""
    return 0 if sign_trick(context) else 128


def quad_dots(context, builder, acc, pairs, max_u=255, signed=False):
    """acc plus quad_dot (signed_quad_dot where signed) of each (u, s) in pairs, every
    u <= max_u. Small u without VNNI (nibbles, 15; Q5_0's 5 bits, 31): vpmaddubsw's pair
    sums are added in int16 as many at a time as cannot overflow (2 * max_u * 128 each:
    8 for nibbles, 4 for 5 bits) and widened once, one vpmaddwd for several vpmaddubsw
    (ggml's AVX2 Q4_0 kernel widens every product pair: here the multiplies are what the
    loop waits on)."""
    small = max_u < 128
    if small and not target_has(context, "avx512vnni") and _has_pmaddubsw(context):
        at_once = 32767 // (2 * max_u * 128)
        for first in range(0, len(pairs), at_once):
            sums16 = None
            for u, s in pairs[first:first + at_once]:
                pair_sums = pair_madd(context, builder, u, s)
                sums16 = pair_sums if sums16 is None else builder.add(sums16, pair_sums)
            acc = builder.add(acc, _pair_sums_widened(context, builder, sums16))
        return acc
    for u, s in pairs:
        acc = (signed_quad_dot(context, builder, acc, u, s) if signed
               else quad_dot(context, builder, acc, u, s, small))
    return acc


def lookup16(context, builder, table, idx):
    """<n x i8>: table[idx[i]] for idx lanes 0..15 and table 16 constant bytes. vpshufb
    (one per 32 or 64 lanes: it looks up within each 16-byte lane, so the table is
    repeated per lane) where the target has AVX2 / AVX-512BW; elsewhere 16 compares
    and selects (portable IR, the same values)."""
    n = idx.type.count
    for feature, name, width in (("avx512bw", "llvm.x86.avx512.pshuf.b.512", 64),
                                 ("avx2", "llvm.x86.avx2.pshuf.b", 32)):
        if target_has(context, feature) and n % width == 0:
            lanes = llvm_ir.Constant(llvm_ir.VectorType(I8, width), list(table) * (width // 16))
            return _concat(builder, [_call(builder, name, lanes.type, [lanes, part])
                                     for part in _parts(builder, idx, width)])
    result = llvm_ir.Constant(idx.type, [table[0]] * n)
    for value in range(1, 16):
        hit = builder.icmp_unsigned("==", idx, llvm_ir.Constant(idx.type, [value] * n))
        result = builder.select(hit, llvm_ir.Constant(idx.type, [table[value]] * n), result)
    return result
