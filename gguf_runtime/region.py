"""One parallel region for many steps: threads claim work items from atomic counters.

Numba's TBB layer opens a task arena for every parallel region, and a short region
ends before the second thread has joined it (README, "what bounds decode": a 576 x
576 matmul in cache took 13.5 us with 1 thread and with 2). decode.decode_layers
runs a token's layers in one region instead: each of its n_threads iterations walks
each layer's steps in order, takes the work items of a step (a matmul's row groups,
attention's heads), does a serial step (norms, RoPE) if it claims it first, and
waits until a step's items are done before using its output. Each thread first takes
the items of its own contiguous share in order (a matmul's rows streamed as a static
split streams them: interleaving groups between threads ran 3-5% slower, measured),
then what is left of the others' shares.

No deadlock however TBB schedules the iterations: a thread only waits for items
another thread has claimed and is working on. One thread running every iteration in
turn claims everything in the first and finds it all done in the others.

A step's counters are a row of `sync` (new_sync: zeroed before the region), each on a
cache line of its own: finished items, then the claims of each thread's share.
"""
import numpy as np
from llvmlite import ir as llvm_ir
from numba import njit, types
from numba.extending import intrinsic


# int64s per counter: 64 bytes, so threads spinning on one step's done-count do not
# slow the claims of another
_LINE = 8


def _element_ptr(context, builder, sig, args):
    """Pointer to the array args[0]'s element at flat index args[1]."""
    array = context.make_array(sig.args[0])(context, builder, args[0])
    return builder.gep(array.data, [args[1]])


def _is_counters(array):
    return isinstance(array, types.Array) and array.dtype == types.int64 and array.layout == "C"


@intrinsic
def atomic_add(typingctx, array, index, value):
    """The int64 C-contiguous array's element at flat index += value (int64) as one
    atomic step (sequentially consistent, so writes made before it are seen by a
    thread that reads the new count); the old value."""
    if not (_is_counters(array) and value == types.int64):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig, args)
        return builder.atomic_rmw("add", ptr, args[2], "seq_cst")
    return types.int64(array, index, value), codegen


@intrinsic
def atomic_load(typingctx, array, index):
    """The element at flat index, read atomically (acquire: later reads see what
    preceded its store)."""
    if not _is_counters(array):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig, args)
        return builder.load_atomic(ptr, "acquire", 8)
    return types.int64(array, index), codegen


@njit(cache=True, nogil=True, inline="always")
def claim(sync, step, n_items, part):
    """The next of step's n_items for the thread of share `part`: from its own share
    while it lasts, then from the others'; n_items when none is left."""
    parts = n_parts(sync)
    for k in range(parts):
        p = (part + k) % parts
        item = p * n_items // parts + atomic_add(sync, step * sync.shape[1] + (1 + p) * _LINE,
                                                   np.int64(1))
        if item < (p + 1) * n_items // parts:
            return item
    return n_items


@njit(cache=True, nogil=True, inline="always")
def finish(sync, step):
    """One item of step done (its output written)."""
    atomic_add(sync, step * sync.shape[1], np.int64(1))


@njit(cache=True, nogil=True, inline="always")
def wait(sync, step, n_items):
    """Until n_items of step are done."""
    while atomic_load(sync, step * sync.shape[1]) < n_items:
        pass


@intrinsic
def prefetch(typingctx, address):
    """A hint to bring the 64-byte line at address (int64) toward this core's caches
    (llvm.prefetch: a read, locality 2, data); it never faults, whatever the address."""
    if address != types.int64:
        return None

    def codegen(context, builder, sig, args):
        pointer = builder.inttoptr(args[0], llvm_ir.IntType(8).as_pointer())
        i32 = llvm_ir.IntType(32)
        fn_type = llvm_ir.FunctionType(llvm_ir.VoidType(), [pointer.type, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [pointer.type], fn_type)
        builder.call(fn, [pointer, i32(0), i32(2), i32(1)])
        return context.get_dummy_value()
    return types.void(types.int64), codegen


@njit(cache=True, nogil=True, inline="always")
def wait_prefetching(sync, step, n_items, span, cursor):
    """wait, meanwhile bringing span = (address, n_bytes), the weights this thread reads
    next, toward its caches: one line a check, from byte `cursor` on; the new cursor.
    A thread waits for another to finish a serial step or its last row group (17-21%
    of each thread's time in SmolLM2 Q4_0's layers, counted per step with the cycle
    counter); the memory bus is idle meanwhile. Against no prefetching, in one process
    alternating per token, 2 threads, a slow phase: SmolLM2 Q4_0 layers 9.22 -> 8.60 and
    8.53 -> 8.43 ms, Q8_0 15.48 -> 14.72, gemma3 10.88 -> 10.73 (README, session 16)."""
    address, n_bytes = span
    while atomic_load(sync, step * sync.shape[1]) < n_items:
        if cursor < n_bytes:
            prefetch(address + cursor)
            cursor += 64
    return cursor


@njit(cache=True, nogil=True, inline="always")
def n_parts(sync):
    """The number of threads sharing sync's steps (claim's shares)."""
    return sync.shape[1] // _LINE - 1


@njit(cache=True, nogil=True)
def new_sync(n_steps, n_threads):
    """Zeroed counters for n_steps steps shared by n_threads (an array expression in the
    parallel function would be a region of its own)."""
    return np.zeros((n_steps, (1 + n_threads) * _LINE), np.int64)
