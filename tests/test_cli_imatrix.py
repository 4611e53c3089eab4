"""gguf-imatrix: files gguf-quantize (and llama-quantize) read, progress, -q, bad
input, Ctrl-C. The values themselves are checked against llama-imatrix's in
tests/gguf_runtime/test_imatrix.py."""
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader

from gguf_runtime.imatrix import load_imatrix, read_imatrix
from interrupt import interrupt_after
from tools import run_tool

DATA = Path(__file__).parent / "data"
TEXT = DATA / "imatrix_text.txt"


def gguf_imatrix(*args):
    return run_tool("imatrix", *args)


@pytest.fixture(scope="module")
def two_chunks(smollm2_path, tmp_path_factory):
    """One run in each format: -c 128 --chunks 2 on SmolLM2."""
    out = tmp_path_factory.mktemp("imatrix")
    runs = {fmt: gguf_imatrix("-m", smollm2_path, "-f", TEXT, "-c", 128, "--chunks", 2,
                              "--output-format", fmt, "-o", out / f"m.{fmt}",
                              *(["-q"] if fmt == "dat" else []))
            for fmt in ("gguf", "dat")}
    return out, runs


def test_gguf_output_as_llama_imatrix_writes_it(two_chunks):
    out, runs = two_chunks
    assert runs["gguf"].returncode == 0, runs["gguf"].stderr
    reader = GGUFReader(str(out / "m.gguf"))
    reference = GGUFReader(str(DATA / "imatrix_smollm2.gguf"))
    assert [t.name for t in reader.tensors] == [t.name for t in reference.tensors]
    assert [list(t.shape) for t in reader.tensors] == [list(t.shape) for t in reference.tensors]
    assert list(reader.fields)[-4:] == list(reference.fields)[-4:]
    assert reader.get_field("imatrix.chunk_count").contents() == 2
    assert reader.get_field("imatrix.chunk_size").contents() == 128
    assert reader.get_field("imatrix.datasets").contents() == [str(TEXT)]
    counts = {t.name: int(t.data[0]) for t in reader.tensors if t.name.endswith(".counts")}
    assert set(counts.values()) == {256}
    assert len(load_imatrix(out / "m.gguf").values) == 210


def test_dat_output_reads_back(two_chunks):
    out, runs = two_chunks
    assert runs["dat"].returncode == 0, runs["dat"].stderr
    stats = read_imatrix(out / "m.dat")
    gguf = read_imatrix(out / "m.gguf")
    assert stats.legacy and stats.chunk_count == 2 and stats.datasets == [str(TEXT)]
    assert sorted(stats.sums) == sorted(gguf.sums)
    for name, sums in stats.sums.items():
        assert int(stats.counts[name][0]) == 2  # ncall = ceil(256 / 128)
        np.testing.assert_allclose(sums[0] / 2, gguf.sums[name][0] / 256, rtol=1e-6)


def test_progress_per_chunk_and_quiet(two_chunks):
    _, runs = two_chunks
    lines = runs["gguf"].stderr.splitlines()
    assert [line for line in lines if "chunk 1/2" in line or "chunk 2/2" in line][-1]
    assert any("ETA" in line for line in lines)
    assert runs["dat"].stderr == ""


@pytest.mark.parametrize("args,message", [
    (["-f", DATA / "no-such.txt"], "no-such.txt"),
    (["-f", TEXT, "-c", 4000], "tokens for a context of 4000"),
    (["-f", TEXT, "-c", 128, "--chunks", 0], "nothing to compute"),
])
def test_bad_input_is_one_line(smollm2_path, tmp_path, args, message):
    result = gguf_imatrix("-m", smollm2_path, "-o", tmp_path / "out.gguf", *args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child needs POSIX")
def test_ctrl_c_exits_130_and_leaves_no_file(smollm2_path, tmp_path):
    out = tmp_path / "out.gguf"
    args = ["-m", smollm2_path, "-f", DATA / "english_text.txt", "-c", 512, "-o", out]
    code, err, _ = interrupt_after("imatrix", [str(a) for a in args], "stderr")
    assert code == 130
    assert "Traceback" not in err
    assert err.rstrip().splitlines()[-1] == "interrupted"
    assert list(tmp_path.iterdir()) == []
