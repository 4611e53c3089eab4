"""Mutated model files through Model.load and a forward pass: success, GGUFError or
ModelError with one line, nothing else (no other exception, crash or hang).
Seeds: the tiny llama and gemma3 models with a vocabulary, Q8_0 weights."""
import os
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType as T
from hypothesis import HealthCheck, given, settings, strategies as st

from fuzz_harness import HUGE, flip_bytes, load_and_run, put_huge
from tiny_models import write_gguf

CORPUS = Path(__file__).parent / "corpus"


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def seed_bytes(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("seed") / "seed.gguf"
    write_gguf(request.param, path, vocab=True, qtype=T.Q8_0)
    assert load_and_run(path) == "ok"
    return path.read_bytes()


def run_case(tmp_path, raw):
    path = tmp_path / "case.gguf"
    path.write_bytes(raw)
    return load_and_run(path)


_SETTINGS = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 500)), deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


@_SETTINGS
@given(st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), min_size=1, max_size=8))
def test_byte_flips(tmp_path, seed_bytes, flips):
    run_case(tmp_path, flip_bytes(seed_bytes, flips))


@_SETTINGS
@given(st.integers(0, 2**20), st.sampled_from(HUGE), st.booleans())
def test_huge_fields(tmp_path, seed_bytes, offset, value, wide):
    run_case(tmp_path, put_huge(seed_bytes, offset, value, wide))


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 2**20))
def test_truncation(tmp_path, seed_bytes, cut):
    run_case(tmp_path, seed_bytes[:cut % len(seed_bytes)])


def test_regression_corpus():
    """Every input that once failed (bench/fuzz.py saves them here)."""
    cases = sorted(CORPUS.glob("*.gguf"))
    assert cases
    for case in cases:
        load_and_run(case)


@pytest.fixture(scope="module")
def real_header(smollm2_path):
    """SmolLM2's header region (metadata with its 49,152-token vocabulary and the
    tensor table), and the file's size."""
    from gguf_runtime import GGUFFile
    with GGUFFile(smollm2_path) as f:
        data_start = min(t.offset for t in f.tensors)
    with open(smollm2_path, "rb") as f:
        return f.read(data_start), smollm2_path.stat().st_size


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 2**22), st.integers(0, 255)), min_size=1, max_size=4))
def test_real_header_flips(tmp_path, real_header, flips):
    """The real model's header mutated; its tensor data left as zeros in a sparse
    file of the original size (cheap to write, same offsets)."""
    header, size = real_header
    path = tmp_path / "case.gguf"
    with open(path, "wb") as f:
        f.write(flip_bytes(header, flips))
        f.truncate(size)
    load_and_run(path)
