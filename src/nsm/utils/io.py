"""Atomic file writes: write to a temporary file in the same folder, then rename.

A reader never sees a half-written file, and a failure (full disk, a kill) leaves the
previous version of the file intact.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["atomic_write", "write_json", "save_torch", "save_figure", "DiskFull", "read_text", "read_json"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then move the temporary file onto ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(path) from None
        raise
    return path


class DiskFull(OSError):
    """No space left (or over quota) while writing ``path``; the previous version of ``path``,
    if any, is intact (the write went to a temporary file)."""

    def __init__(self, path, advice: str = "") -> None:
        super().__init__(
            errno.ENOSPC, f"no space left on the device while writing {path}" + (f"; {advice}" if advice else "")
        )
        self.path, self.advice = Path(path), advice

    def __str__(self) -> str:
        return self.strerror


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")

    return atomic_write(path, write)


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` atomically. The object is serialized in memory first and written with
    plain file I/O, so a full disk is an ``OSError`` (:class:`DiskFull`), not an error from
    inside torch's zip writer."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write)


def save_figure(path: str | os.PathLike, fig) -> Path:
    suffix = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=suffix, dpi=120, bbox_inches="tight"))


def read_text(path: str | os.PathLike, what: str = "a text file") -> str:
    """The UTF-8 text of ``path``; a file that is not text is a ``ValueError`` naming it."""
    try:
        return Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}); expected {what}") from None


def read_json(path: str | os.PathLike, what: str = "JSON") -> Any:
    """The JSON value in ``path``; unreadable text or invalid JSON is a ``ValueError`` naming it."""
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); expected {what}") from None
