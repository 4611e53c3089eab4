"""The IQ3 search tables against llama.cpp's source (the kgrid arrays of
ggml-quants.c iq3xs_init_impl) and a numpy transcription of its neighbour rule;
nearest_int against its C definition; the tables are built on first use only."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numba import njit

from quant_formats import iq3_quantize_tables as tables, iq3_s, iq3_xxs

_SOURCE = Path.home() / ".cache/llama.cpp-ref/src/ggml/src/ggml-quants.c"
# grid size -> (format's gguf-py grid, kgrid array in iq3xs_init_impl, nwant there)
_KGRIDS = {256: (iq3_xxs.GRID, "kgrid_256", 2), 512: (iq3_s.GRID, "kgrid_512", 3)}


def c_kgrid(name):
    text = _SOURCE.read_text()
    body = re.search(r"uint16_t %s\[[^\]]*\] = \{(.*?)\};" % name, text, re.S).group(1)
    return np.array([int(v, 0) for v in body.split(",") if v.strip()], np.int64)


def positions(keys):
    """2 l + 1 of each key's four 3-bit levels, as iq3xs_init_impl unpacks them."""
    return 2 * ((np.asarray(keys)[..., None] >> (3 * np.arange(4))) & 7) + 1


@pytest.mark.skipif(not _SOURCE.exists(), reason="llama.cpp source not found")
@pytest.mark.parametrize("grid_size", list(_KGRIDS))
def test_tables_match_iq3xs_init_impl(grid_size):
    grid, name, nwant = _KGRIDS[grid_size]
    points, kmap, neighbours, values = tables.build_tables(grid)
    c_grid = positions(c_kgrid(name))
    assert np.array_equal(points, c_grid)
    for key in range(4096):
        entry = kmap[key]
        if entry >= 0:
            assert np.array_equal(c_grid[entry], positions(key))
            continue
        dist2 = ((c_grid - positions(key)) ** 2).sum(axis=1)
        by_distance = np.lexsort((np.arange(len(c_grid)), dist2))  # the qsort's (d2, index) order
        kept = np.unique(dist2)[:nwant]
        start = -entry - 1
        got = neighbours[start + 1:start + 1 + neighbours[start]]
        assert np.array_equal(got, by_distance[np.isin(dist2[by_distance], kept)]), key
        assert np.array_equal(values[start + 1:start + 1 + len(got)], c_grid[got])


@njit
def _nearest_ints(values, out):
    for i in range(values.size):
        out[i] = tables.nearest_int(values[i])


def test_nearest_int_as_c():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.standard_normal(200_000) * 10.0 ** rng.integers(-9, 10, 200_000),
                             np.arange(-50, 50, 0.5), [0.0, -0.0, 4194303.5, -4194304, 1e30]])
    values = values.astype(np.float32)
    out = np.empty(values.size, np.int64)
    _nearest_ints(values, out)  # ggml-quants.c nearest_int: the bits of x + 1.5 * 2^23
    summed = (values + np.float32(12582912.0)).view(np.int32)
    assert np.array_equal(out, (summed & 0x7FFFFF) - 0x400000)


def test_tables_built_on_first_quantize_not_at_import():
    script = ("import numpy as np, quant_formats as qf\n"
              "from gguf import GGMLQuantizationType as T\n"
              "from quant_formats import iq3_quantize_tables as t, iq3_xxs, iq3_s\n"
              "assert not t._tables\n"
              "qf.quantize(np.ones((1, 256), np.float32), T.IQ3_XXS)\n"
              "assert sorted(t._tables) == [256]\n"
              "first = t._tables[256]\n"
              "qf.quantize(np.ones((1, 256), np.float32), T.IQ3_XXS)\n"
              "assert t._tables[256] is first\n")
    subprocess.run([sys.executable, "-c", script], check=True)
