"""Parallel loops whose body is a function called through its address.

Numba links a callee's machine code into each caller and optimizes it again there,
and a parallel loop's body sits under four such levels (the body, two gufunc
wrappers, the function): a kernel called from a prange paid LLVM's passes over its
code four more times. Called through its address, it is compiled once, on its own:
nibble_matmul's first compile 10.5 -> 4.6 s, the loop itself 0.6 s of that (measured,
empty cache). run_items is such a loop for any function and arguments; decode's
region (gguf_runtime/region.py) calls a layer's steps the same way.
"""
import numba
import numpy as np
from numba import njit, prange, types
from numba._dispatcher import compute_fingerprint
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model


def run_items(fn, args, n_items):
    """fn(*args, i) for i in range(n_items), in parallel (Numba's threads, one loop).
    fn: an njit function returning nothing; args: arrays and scalars (address_for)."""
    _run_at(address_for(fn, args), args, n_items)


def address_for(fn, args):
    """The address of fn's machine code for (*args, an int64 item), as run_items calls
    it: looked up by the arguments' fingerprint (a C call, ~1 us; numba.typeof is ~10
    us an array), compiled or loaded from Numba's cache on first use."""
    key = (fn, compute_fingerprint(args))
    address = _addresses.get(key)
    if address is None:
        arg_types = tuple(numba.typeof(a) for a in args) + (types.int64,)
        address = _addresses[key] = address_of(fn, arg_types)
    return address


_addresses = {}


@njit(cache=True, nogil=True, parallel=True)
def _run_at(address, args, n_items):
    boxed = box(args)
    for i in prange(n_items):
        call_at(address, unbox(boxed) + (np.int64(i),))


def address_of(dispatcher, arg_types):
    """The address of dispatcher's machine code for arg_types (compiled, or loaded from
    Numba's cache, if not yet), for call_at."""
    arg_types = tuple(arg_types)
    dispatcher.compile(arg_types)
    compiled = dispatcher.overloads[arg_types]
    return compiled.library.get_pointer_to_function(compiled.fndesc.llvm_func_name)


@intrinsic
def call_at(typingctx, address, args):
    """Call the compiled Numba function at address (returning None; address_of) with
    the items of the tuple args, in Numba's calling convention. The types must be
    those address_of was given: nothing checks them here."""
    def codegen(context, builder, sig, llargs):
        arg_types = list(sig.args[1])
        values = [builder.extract_value(llargs[1], i) for i in range(len(arg_types))]
        fn_type = context.call_conv.get_function_type(types.none, arg_types)
        fn = builder.inttoptr(llargs[0], fn_type.as_pointer())
        context.call_conv.call_function(builder, fn, types.none, arg_types, values)
        return context.get_dummy_value()
    return types.none(address, args), codegen


# A tuple of arrays cannot be a parallel loop's argument (Numba's parfors pass only
# arrays, scalars and tuples of one type). Boxed holds one as a single opaque scalar:
# its bytes as the tuple's data (memory) form, the form the loop's launch stores
# (booleans as i8, where a value is i1). Not reference counted: a Boxed must not
# outlive the value it was made from (the arguments of the call that boxed it).

class Boxed(types.Type):
    def __init__(self, inner):
        self.inner = inner
        super().__init__(name=f"Boxed({inner})")


@register_model(Boxed)
class _BoxedModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, dmm.lookup(fe_type.inner).get_data_type())


@intrinsic
def box(typingctx, value):
    """value (e.g. a tuple of arrays) as a Boxed, for a parallel loop to use."""
    def codegen(context, builder, sig, args):
        return context.data_model_manager[sig.args[0]].as_data(builder, args[0])
    return Boxed(value)(value), codegen


@intrinsic
def unbox(typingctx, boxed):
    """The value box() was given, its arrays borrowed: their reference counts left
    alone (the boxed value outlives the region). Counting them cost more than the
    layer's serial steps: every thread in and out of the region touched each
    array's count, ~40 atomic updates of lines the other thread also updates."""
    def codegen(context, builder, sig, args):
        value = context.data_model_manager[sig.return_type].from_data(builder, args[0])
        return _borrowed(context, builder, sig.return_type, value)
    return boxed.inner(boxed), codegen


def _borrowed(context, builder, typ, value):
    """value with each array's meminfo null (reference counting skips null ones)."""
    if isinstance(typ, types.Array):
        array = context.make_array(typ)(context, builder, value)
        array.meminfo = cgutils.get_null_value(array.meminfo.type)
        return array._getvalue()
    if isinstance(typ, types.BaseTuple):
        return context.make_tuple(builder, typ, [
            _borrowed(context, builder, t, builder.extract_value(value, i))
            for i, t in enumerate(typ)])
    return value


# A value passed by address: its data form stored in bytes (to_bytes) and loaded back,
# typed, where it is used (deref). A function then takes one int64 where the value
# would be its arguments: Numba's compile time grows with the arrays in a function's
# tuple arguments (each unpacked, its reference counted, in every function it
# reaches), and the type of a value passed by address does not enter the signature.

@njit(cache=True, nogil=True)
def to_bytes(value):
    """value's data form, uint8 [size] (its arrays' data not copied: they must outlive
    it; deref(bytes.ctypes.data, type of value) gives them back)."""
    out = np.empty(_data_size(value), np.uint8)
    _store_data(value, out)
    return out


@intrinsic
def _data_size(typingctx, value):
    def codegen(context, builder, sig, args):
        data_type = context.data_model_manager[sig.args[0]].get_data_type()
        return context.get_constant(types.intp, context.get_abi_sizeof(data_type))
    return types.intp(value), codegen


@intrinsic
def _store_data(typingctx, value, out):
    def codegen(context, builder, sig, args):
        data = context.data_model_manager[sig.args[0]].as_data(builder, args[0])
        array = context.make_array(sig.args[1])(context, builder, args[1])
        builder.store(data, builder.bitcast(array.data, data.type.as_pointer()))
        return context.get_dummy_value()
    return types.none(value, out), codegen


@intrinsic
def deref(typingctx, address, typeref):
    """The value of type typeref (a Numba type as a global constant, or a TypeArg
    argument: its instance_type) stored at address by to_bytes, its arrays borrowed (unbox). Nothing checks the type: the caller's."""
    value_type = typeref.instance_type

    def codegen(context, builder, sig, args):
        model = context.data_model_manager[value_type]
        pointer = builder.inttoptr(args[0], model.get_data_type().as_pointer())
        value = model.from_data(builder, builder.load(pointer))
        return _borrowed(context, builder, value_type, value)
    return value_type(address, typeref), codegen


class TypeArg(types.Type):
    """A type as an argument of a function called by address (address_of): the
    function is compiled for it (deref(address, type_arg) loads a value of
    instance_type), its value is nothing (a null pointer: call_at passes no_value())."""

    def __init__(self, instance_type):
        self.instance_type = instance_type
        super().__init__(name=f"TypeArg({instance_type})")


register_model(TypeArg)(models.OpaqueModel)


@intrinsic
def no_value(typingctx):
    """A null pointer, passed where a function takes a TypeArg (of OpaqueModel's
    machine type, a pointer)."""
    def codegen(context, builder, sig, args):
        return context.get_constant_null(types.voidptr)
    return types.voidptr(), codegen
