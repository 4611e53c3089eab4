"""Atomic output files: written under a temporary name beside the target, renamed to it
only when complete. An interrupted or killed run never leaves a partial file under the
target's name; on an error or Ctrl-C the temporary file is removed (a kill cannot)."""
import contextlib
import os
import secrets
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a new, empty temporary file's path beside `path` (same file system, so the
    rename is atomic; mode 0o666 less the umask, as any new file gets)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_output(path):
    """Yield a binary file to write; it becomes `path` only if the block completes."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
