"""Atomic writes: a temp file in the target's folder, fsync, then ``os.replace``; readable by others (0644).

Every file the harness writes (records, tables, plots, predictions, checkpoints) goes through
:func:`atomic_write`, so a crash or a concurrent reader never sees half a file.
"""
import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Union

__all__ = ["atomic_write", "atomic_write_text", "atomic_torch_save", "atomic_savez", "sha256_file"]

FILE_MODE = 0o644


def sha256_file(path: Union[str, os.PathLike]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (checkpoints can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: Union[str, os.PathLike], write: Callable[[IO[bytes]], Any], mode: int = FILE_MODE) -> Path:
    """Call ``write(fh)`` on a binary temp file beside ``path``, then move it into place with ``mode``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: Union[str, os.PathLike], text: str) -> Path:
    """``text`` to ``path`` atomically, UTF-8 (records, tables, references)."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_torch_save(obj: Any, path: Union[str, os.PathLike]) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (checkpoints and weights: a crash never leaves half a file)."""
    import torch  # here, not above: this module needs neither torch nor numpy for its other writers

    return atomic_write(path, lambda fh: torch.save(obj, fh))


def atomic_savez(path: Union[str, os.PathLike], **arrays: Any) -> Path:
    """``numpy.savez_compressed`` to ``path`` atomically (the name is kept exactly, no ``.npz`` added)."""
    import numpy as np

    return atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))
