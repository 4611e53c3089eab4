"""The IQ2/IQ1 search tables against llama.cpp's source (the kgrid arrays of
ggml-quants.c iq2xs_init_impl) and a numpy transcription of its neighbour rule;
the shared scalar helpers against their C definitions."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from numba import njit

from quant_formats import iq_quantize_tables as tables

_SOURCE = Path.home() / ".cache/llama.cpp-ref/src/ggml/src/ggml-quants.c"
# type -> (kgrid array in iq2xs_init_impl, nwant there)
_KGRIDS = {T.IQ2_XXS: ("kgrid_2bit_256", 2), T.IQ2_XS: ("kgrid_2bit_512", 2),
           T.IQ2_S: ("kgrid_2bit_1024", 1), T.IQ1_S: ("kgrid_1bit_2048", 3),
           T.IQ1_M: ("kgrid_1bit_2048", 3)}


def c_kgrid(name):
    text = _SOURCE.read_text()
    body = re.search(r"uint16_t %s\[[^\]]*\] = \{(.*?)\};" % name, text, re.S).group(1)
    return np.array([int(v, 0) for v in body.split(",") if v.strip()], np.int64)


def positions(keys):
    """2 code + 1 of each key's 8 two-bit codes, as iq2xs_init_impl unpacks them."""
    return 2 * ((np.asarray(keys)[..., None] >> (2 * np.arange(8))) & 3) + 1


@pytest.mark.skipif(not _SOURCE.exists(), reason="llama.cpp source not found")
@pytest.mark.parametrize("qtype", list(_KGRIDS))
def test_tables_match_iq2xs_init_impl(qtype):
    name, nwant = _KGRIDS[qtype]
    grid, key_map, neighbours = tables.search_tables(qtype)
    c_grid = positions(c_kgrid(name))
    assert np.array_equal(grid, c_grid)
    rng = np.random.default_rng(int(qtype))
    for key in np.concatenate([rng.integers(0, tables.KEY_COUNT, 400), [0, 3, tables.KEY_COUNT - 1]]):
        entry = key_map[key]
        if entry >= 0:
            assert np.array_equal(c_grid[entry], positions(key))
            continue
        dist2 = ((c_grid - positions(key)) ** 2).sum(axis=1)
        by_distance = np.lexsort((np.arange(len(c_grid)), dist2))  # the qsort's (d2, index) order
        kept = np.unique(dist2)[:nwant]
        start = -entry - 1
        got = neighbours[start + 1:start + 1 + neighbours[start]]
        assert np.array_equal(got, by_distance[np.isin(dist2[by_distance], kept)]), key


@njit
def _apply(fn_index, values, out):
    for i in range(values.size):
        out[i] = tables.nearest_int(values[i]) if fn_index == 0 else tables.f16_bits(values[i])


def test_nearest_int_and_f16_bits_as_c():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.standard_normal(200_000) * 10.0 ** rng.integers(-9, 10, 200_000),
                             np.arange(-50, 50, 0.5), [0.0, -0.0, 65504, 65520, 3e-8, 1e30]])
    values = values.astype(np.float32)
    out = np.empty(values.size, np.int64)
    _apply(0, values, out)  # ggml-quants.c nearest_int: the bits of x + 1.5 * 2^23
    summed = (values + np.float32(12582912.0)).view(np.int32)
    assert np.array_equal(out, (summed & 0x7FFFFF) - 0x400000)
    _apply(1, values, out)
    with np.errstate(over="ignore"):
        assert np.array_equal(out, values.astype(np.float16).view(np.uint16))


def test_stable_order_keeps_ties_in_index_order():
    values = np.random.default_rng(2).integers(-3, 4, 32).astype(np.float32)
    order = np.empty(32, np.int32)
    tables.stable_order(values, order)
    assert np.array_equal(order, np.argsort(values, kind="stable"))


def test_tables_are_not_built_on_import():
    code = ("import quant_formats as qf; from gguf import GGMLQuantizationType as T; "
            "import numpy as np; qf.dequantize(np.zeros((1, 66), np.uint8), T.IQ2_XXS); "
            "from quant_formats import iq_quantize_tables as t; print(len(t._tables))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "0"
