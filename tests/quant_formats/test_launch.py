"""quant_formats/launch.py: parallel loops calling a function through its address, and
values passed by address."""
import numba
import numpy as np
from numba import njit, prange

from quant_formats import launch


@njit(cache=True, nogil=True)
def _count_item(counts, scale, out, i):
    counts[i] += 1
    out[i] = scale * i


def test_run_items_calls_the_function_once_per_item():
    for n_items in (0, 1, 7, 1000):
        counts, out = np.zeros(n_items, np.int64), np.full(n_items, np.nan, np.float32)
        launch.run_items(_count_item, (counts, np.float32(0.5), out), n_items)
        assert (counts == 1).all()
        assert np.array_equal(out, np.float32(0.5) * np.arange(n_items, dtype=np.float32))


def test_address_for_compiles_once_per_argument_types():
    counts, out = np.zeros(4, np.int64), np.zeros(4, np.float32)
    first = launch.address_for(_count_item, (counts, np.float32(1), out))
    assert launch.address_for(_count_item, (counts.copy(), np.float32(2), out)) == first
    # other types (a float64 scale, a non-contiguous output): other machine code
    assert launch.address_for(_count_item, (counts, 1.0, out)) != first
    strided = np.zeros(8, np.float32)[::2]
    assert launch.address_for(_count_item, (counts, np.float32(1), strided)) != first
    launch.run_items(_count_item, (counts, np.float32(3), strided), 4)
    assert strided.tolist() == [0, 3, 6, 9] and (counts == 1).all()


@njit(cache=True, nogil=True)
def _store_part(arrays, part):
    out, scale = arrays
    out[part] = (part + 1) * scale


@njit(cache=True, nogil=True, parallel=True)
def _run_at(address, n_threads, out, scale):
    boxed = launch.box((out, scale))
    for part in prange(n_threads):
        launch.call_at(address, (launch.unbox(boxed), np.int64(part)))


def test_call_at_runs_the_function_compiled_for_the_types():
    out = np.zeros(4, np.float32)
    arg_types = (numba.typeof((out, np.float32(1.5))), numba.types.int64)
    address = launch.address_of(_store_part, arg_types)
    assert address == launch.address_of(_store_part, arg_types)  # compiled once
    _run_at(address, 4, out, np.float32(1.5))
    assert out.tolist() == [1.5, 3.0, 4.5, 6.0]


_PAIR = numba.types.Tuple((numba.types.Array(numba.types.float32, 2, "C"), numba.types.int64))


@njit(cache=True, nogil=True)
def _through_address(address):
    values, k = launch.deref(address, _PAIR)
    values[1, 2] = k  # writes the caller's array: its data, not a copy
    return values.sum(), values.shape[0], values.shape[1]


def test_deref_gives_back_what_to_bytes_stored():
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    pair = (values, 1000)
    assert numba.typeof(pair) == _PAIR
    stored = launch.to_bytes(pair)
    total, rows, cols = _through_address(stored.ctypes.data)
    assert values[1, 2] == 1000
    assert (rows, cols) == (3, 4) and total == values.sum()


@njit(cache=True, nogil=True)
def _add_through_address(address, pair_type, out, part):
    values, k = launch.deref(address, pair_type)
    out[part] = values.sum() + k


@njit(cache=True, nogil=True, parallel=True)
def _run_typed_at(function, address, out):
    for part in prange(out.shape[0]):
        launch.call_at(function, (address, launch.no_value(), out, np.int64(part)))


def test_a_type_arg_compiles_a_function_for_a_type_its_caller_never_names():
    """_run_typed_at passes only addresses and a null: the callee, compiled for
    TypeArg(_PAIR), loads the pair itself."""
    out = np.zeros(3, np.float64)
    function = launch.address_of(_add_through_address, (
        numba.types.int64, launch.TypeArg(_PAIR), numba.typeof(out), numba.types.int64))
    pair = (np.full((2, 2), 0.5, np.float32), 7)
    stored = launch.to_bytes(pair)
    _run_typed_at(function, stored.ctypes.data, out)
    assert out.tolist() == [9.0, 9.0, 9.0]
