"""gguf_runtime/imatrix.py and imatrix_collect.py against llama.cpp's own files.

References (tests/data/make_imatrix_refs.py): imatrix_smollm2.gguf is llama-imatrix's
output on SmolLM2 (imatrix_text.txt, -c 128, 6 chunks), imatrix_smollm2_subset.dat
the same run in the legacy format (layers 0 and 29), imatrix_refs.json holds
llama-imatrix's per-tensor means on gemma3 and what llama-quantize made of both files.
"""
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T, GGUFReader, GGUFValueType

import quant_formats as qf
from gguf_runtime.errors import GGUFError
from gguf_runtime.imatrix import load_imatrix, read_imatrix, write_dat, write_gguf
from gguf_runtime.reader import GGUFFile

ROOT = Path(__file__).parents[2]
GGUF_REF = "tests/data/imatrix_smollm2.gguf"
DAT_REF = "tests/data/imatrix_smollm2_subset.dat"
TEXT = "tests/data/imatrix_text.txt"
REFS = json.loads((ROOT / "tests/data/imatrix_refs.json").read_text())


@pytest.fixture
def in_root(monkeypatch):
    """Paths as llama-quantize was given them (relative to the repository root)."""
    monkeypatch.chdir(ROOT)


# --- reading: the values llama-quantize uses ---------------------------------------

@pytest.mark.parametrize("ref", [GGUF_REF, DAT_REF])
def test_values_quantize_as_llama_quantize(in_root, smollm2_path, ref):
    """Q4_0 rows quantized with our values equal llama-quantize's with the same file."""
    values = load_imatrix(ref).values
    expected = REFS["quantize"][ref]["rows"]
    with GGUFFile(smollm2_path) as model:
        for name, rows in expected.items():
            t = model.tensor(name)
            x = qf.dequantize(t.data[:len(rows)], t.type)
            ours = qf.quantize(x, T.Q4_0, values[name])
            assert [bytes(r).hex() for r in ours] == rows, name


@pytest.mark.parametrize("ref", [GGUF_REF, DAT_REF])
def test_quantize_metadata_as_llama_quantize(in_root, ref):
    meta = load_imatrix(ref).quantize_metadata()
    expected = REFS["quantize"][ref]["keys"]
    assert {k: [v, t.name] for k, (v, t) in meta.items()} == expected


def test_gguf_values_are_sums_over_counts(in_root):
    """Every entry, against gguf-py's reading of the same file."""
    imatrix = load_imatrix(GGUF_REF)
    tensors = {t.name: np.asarray(t.data) for t in GGUFReader(GGUF_REF).tensors}
    assert len(imatrix.values) == len(tensors) // 2 == 210
    for name, values in imatrix.values.items():
        expected = tensors[name + ".in_sum2"] / tensors[name + ".counts"].reshape(-1, 1)
        assert values.dtype == np.float32
        np.testing.assert_array_equal(values, expected.astype(np.float32).reshape(-1))
    assert imatrix.datasets == [TEXT] and imatrix.chunks == 6


def test_dat_values_match_gguf_within_rounding(in_root):
    """The legacy file stores (sum / count) * ncall; divided back it is the GGUF value
    up to f32 rounding."""
    dat, gguf = load_imatrix(DAT_REF).values, load_imatrix(GGUF_REF).values
    assert len(dat) == 14
    for name, values in dat.items():
        np.testing.assert_allclose(values, gguf[name], rtol=3e-7)


# --- writing -----------------------------------------------------------------------

def test_gguf_writer_byte_identical_to_llama_imatrix(in_root, tmp_path):
    write_gguf(read_imatrix(GGUF_REF), tmp_path / "out.gguf")
    assert (tmp_path / "out.gguf").read_bytes() == (ROOT / GGUF_REF).read_bytes()


def test_dat_writer_byte_identical_to_llama_imatrix(in_root, tmp_path):
    stats = read_imatrix(GGUF_REF)
    for name in [n for n in stats.sums if not n.startswith(("blk.0.", "blk.29."))]:
        del stats.sums[name], stats.counts[name]
    write_dat(stats, tmp_path / "out.dat")
    assert (tmp_path / "out.dat").read_bytes() == (ROOT / DAT_REF).read_bytes()


def test_gguf_round_trip_through_gguf_py(tmp_path):
    rng = np.random.default_rng(0)
    stats = read_imatrix(ROOT / GGUF_REF)
    stats.sums = {"blk.0.a.weight": rng.random((1, 64), np.float32),
                  "blk.0.experts.weight": rng.random((3, 32), np.float32)}
    stats.counts = {"blk.0.a.weight": np.array([300]), "blk.0.experts.weight": np.array([5, 0, 7])}
    stats.datasets, stats.chunk_count = ["a.txt", "b.txt"], 3
    write_gguf(stats, tmp_path / "m.gguf")
    reader = GGUFReader(str(tmp_path / "m.gguf"))
    assert reader.get_field("general.type").contents() == "imatrix"
    assert reader.get_field("imatrix.datasets").contents() == ["a.txt", "b.txt"]
    for key, value in (("imatrix.chunk_count", 3), ("imatrix.chunk_size", 128)):
        field = reader.get_field(key)
        assert field.types == [GGUFValueType.UINT32] and field.contents() == value
    tensors = {t.name: t for t in reader.tensors}
    np.testing.assert_array_equal(tensors["blk.0.experts.weight.in_sum2"].data,
                                  stats.sums["blk.0.experts.weight"])
    assert list(tensors["blk.0.experts.weight.counts"].shape) == [1, 3]
    values = load_imatrix(tmp_path / "m.gguf").values
    np.testing.assert_array_equal(values["blk.0.a.weight"], stats.sums["blk.0.a.weight"][0] / 300)
    experts = values["blk.0.experts.weight"].reshape(3, 32)
    np.testing.assert_array_equal(experts[1], 1)  # no rows: importance 1
    np.testing.assert_array_equal(experts[2], stats.sums["blk.0.experts.weight"][2] / np.float32(7))


def test_dat_round_trip(tmp_path):
    stats = read_imatrix(ROOT / GGUF_REF)
    write_dat(stats, tmp_path / "m.dat")
    back = read_imatrix(tmp_path / "m.dat")
    assert back.legacy and back.datasets == stats.datasets and back.chunk_count == 6
    assert sorted(back.sums) == sorted(stats.sums)
    assert all(int(back.counts[n][0]) == 6 for n in back.sums)  # ncall = ceil(768 / 128)


def test_writer_leaves_nothing_on_error(tmp_path):
    stats = read_imatrix(ROOT / GGUF_REF)
    stats.sums["blk.9.bad.weight"] = np.ones((1, 3), np.float32)  # no counts: KeyError
    with pytest.raises(KeyError):
        write_gguf(stats, tmp_path / "out.gguf")
    assert list(tmp_path.iterdir()) == []


# --- malformed files: one line, never a crash ----------------------------------------

def _dat(entries, trailer=b""):
    out = struct.pack("<i", len(entries))
    for name, ncall, values in entries:
        out += struct.pack("<i", len(name)) + name + struct.pack("<ii", ncall, len(values))
        out += np.asarray(values, "<f4").tobytes()
    return out + trailer


def _gguf_file(tmp_path, sums, counts, kv=True, sum_type=None):
    from gguf import GGUFWriter
    writer = GGUFWriter(str(tmp_path / "bad.gguf"), arch="x")
    if kv:
        writer.add_array("imatrix.datasets", ["t.txt"])
        writer.add_uint32("imatrix.chunk_count", 1)
        writer.add_uint32("imatrix.chunk_size", 4)
    if sums is not None:
        writer.add_tensor("w.in_sum2", np.asarray(sums, sum_type or np.float32))
    if counts is not None:
        writer.add_tensor("w.counts", np.asarray(counts, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tmp_path / "bad.gguf"


BAD_DAT = {
    "empty": b"",
    "short count": b"\x01\x00",
    "zero entries": _dat([]),
    "huge entry count": struct.pack("<i", 1 << 30) + bytes(32),
    "negative name length": struct.pack("<ii", 1, -5) + bytes(32),
    "name past the end": struct.pack("<ii", 1, 1000) + b"abc" + bytes(16),
    "no values": _dat([(b"w", 1, [])]),
    "values past the end": _dat([(b"w", 1, [1.0, 2.0])])[:-3],
    "bad utf-8 name": _dat([(b"\xff\xfe", 1, [1.0])]),
}


@pytest.mark.parametrize("case", sorted(BAD_DAT))
def test_bad_dat_is_one_line(tmp_path, case):
    path = tmp_path / "bad.dat"
    path.write_bytes(BAD_DAT[case])
    with pytest.raises(GGUFError) as err:
        load_imatrix(path)
    assert "\n" not in str(err.value)


BAD_GGUF = {
    "no metadata": dict(sums=[[1.0, 2.0]], counts=[2.0], kv=False),
    "sums without counts": dict(sums=[[1.0, 2.0]], counts=None),
    "counts without sums": dict(sums=None, counts=[2.0]),
    "f16 sums": dict(sums=[[1.0, 2.0]], counts=[2.0], sum_type=np.float16),
    "sums not a multiple of counts": dict(sums=[[1.0, 2.0, 3.0]], counts=[1.0, 2.0]),
    "infinite count": dict(sums=[[1.0, 2.0]], counts=[np.inf]),
}


@pytest.mark.parametrize("case", sorted(BAD_GGUF))
def test_bad_gguf_is_one_line(tmp_path, case):
    path = _gguf_file(tmp_path, **BAD_GGUF[case])
    with pytest.raises(GGUFError) as err:
        load_imatrix(path)
    assert "\n" not in str(err.value)


def test_truncated_files_fail_cleanly(tmp_path):
    """Every cut of the legacy file either parses (the trailer is optional, as in
    llama.cpp) or raises GGUFError; cuts of the GGUF file raise GGUFError unless only
    the padding after the last tensor (4 bytes of counts) is gone."""
    optional = {DAT_REF: 8 + len(TEXT), GGUF_REF: 28}
    for ref, step in ((DAT_REF, 97), (GGUF_REF, 4099)):
        data = (ROOT / ref).read_bytes()
        for cut in list(range(0, len(data), step)) + [len(data) - 1]:
            path = tmp_path / "cut"
            path.write_bytes(data[:cut])
            try:
                load_imatrix(path)
            except GGUFError as e:
                assert "\n" not in str(e)
            else:
                assert cut >= len(data) - optional[ref], (ref, cut)


# --- computing ---------------------------------------------------------------------

def _relative_mean_differences(ours, expected_means, expected_counts):
    assert sorted(ours.sums) == sorted(expected_means)
    diffs = {}
    for name, sums in ours.sums.items():
        assert int(ours.counts[name][0]) == expected_counts[name], name
        mean = float((sums.astype(np.float64) / ours.counts[name][0]).mean())
        diffs[name] = abs(mean - expected_means[name]) / expected_means[name]
    return diffs


def _compute(model_name, n_chunks):
    from gguf_runtime import threads
    from gguf_runtime.imatrix_collect import compute_imatrix, read_text
    from gguf_runtime.model import Model
    with Model.load(model_name, n_ctx=128) as model:
        threads.apply(model.n_threads)
        return compute_imatrix(model, read_text(ROOT / TEXT), 128, n_chunks,
                               dataset=TEXT, progress=None)


def test_smollm2_means_within_1_percent_of_llama_imatrix(smollm2_path):
    ours = _compute(smollm2_path, -1)
    ref = read_imatrix(ROOT / GGUF_REF)
    means = {n: float((s.astype(np.float64) / ref.counts[n][0]).mean())
             for n, s in ref.sums.items()}
    counts = {n: int(c[0]) for n, c in ref.counts.items()}
    diffs = _relative_mean_differences(ours, means, counts)
    assert max(diffs.values()) < 0.01, max(diffs.items(), key=lambda kv: kv[1])
    assert (ours.chunk_count, ours.chunk_size, ours.datasets) == (6, 128, [TEXT])


def test_gemma3_means_within_1_percent_of_llama_imatrix(gemma3_path):
    ref = REFS["gemma3-270m"]
    ours = _compute(gemma3_path, ref["chunk_count"])
    diffs = _relative_mean_differences(
        ours, {n: t["mean"] for n, t in ref["tensors"].items()},
        {n: t["count"] for n, t in ref["tensors"].items()})
    assert max(diffs.values()) < 0.01, max(diffs.items(), key=lambda kv: kv[1])
