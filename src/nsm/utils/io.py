"""Atomic file writes: write to a temporary file in the same folder, then rename.

A reader never sees a half-written file, and a failure (full disk, a kill) leaves the
previous version of the file intact.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Optional

__all__ = [
    "atomic_write",
    "write_json",
    "save_torch",
    "save_figure",
    "DiskFull",
    "read_text",
    "read_json",
    "read_json_object",
    "stale_temporaries",
    "check_new_outputs",
    "place_new",
    "open_if_regular",
    "MAX_TEXT_BYTES",
]

# the largest text file nsm reads (a run's config, summary or metrics are kilobytes)
MAX_TEXT_BYTES = 16 * 2**20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, new: bool = False) -> Path:
    """Call ``write(tmp_path)`` then move the temporary file onto ``path`` in one rename.

    A file replaced keeps its permissions (a new one gets ``0666 & ~umask``). With ``new=True``
    the file is a result that must not replace anything: if something is at ``path`` by the time
    it is placed (a user's file that appeared while nsm worked), ``FileExistsError`` names it and
    that file is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)  # while the file is mkstemp's 0600: the mode a rewrite keeps may be read-only
        os.chmod(tmp, _mode_for(path, new))
        if not new:
            os.replace(tmp, path)
        elif not _place_new(tmp, path):
            raise FileExistsError(
                errno.EEXIST,
                f"{path} appeared while nsm was working; nsm does not overwrite it, so this result was not "
                "written: move it away and run again",
                str(path),
            )
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(path) from None
        raise
    return path


def _mode_for(path: Path, new: bool) -> int:
    """The permissions of the regular file at ``path`` that a rewrite replaces, else the usual."""
    if not new:
        try:
            st = os.lstat(path)
        except OSError:
            st = None
        if st is not None and stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    return 0o666 & ~_umask()


def _place_new(tmp: str, path: Path) -> bool:
    placed = place_new(tmp, path)
    if not placed:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return placed


def place_new(tmp: str | os.PathLike, final: str | os.PathLike) -> bool:
    """Move the finished temporary file ``tmp`` to ``final`` unless something (anything, even a
    dangling symlink) is at ``final``: True when placed, False when ``final`` was taken (then
    ``tmp`` is left for the caller to remove).  Never replaces an entry."""
    tmp, final = os.fspath(tmp), os.fspath(final)
    try:
        os.link(tmp, final, follow_symlinks=False)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
        # a file system without hard links: check, then rename (a narrow race remains)
        if os.path.lexists(final):
            return False
        os.rename(tmp, final)
        return True
    os.unlink(tmp)
    return True


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


def write_json(path: str | os.PathLike, obj: Any, *, new: bool = False) -> Path:
    """``obj`` as indented JSON, atomically (``new``: as :func:`atomic_write`)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")

    return atomic_write(path, write, new=new)


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


def save_figure(path: str | os.PathLike, fig, *, new: bool = False, metadata: dict | None = None) -> Path:
    """``fig`` saved atomically, its format from the suffix (``new``: as :func:`atomic_write`);
    ``metadata``: text entries stored in the file (a PNG's ``tEXt`` chunks), as matplotlib's
    ``savefig`` takes them."""
    suffix = Path(path).suffix.lstrip(".") or "png"

    def save(tmp):
        fig.savefig(tmp, format=suffix, dpi=120, bbox_inches="tight", metadata=metadata)

    return atomic_write(path, save, new=new)


_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp")  # atomic_write's mkstemp names


def stale_temporaries(folder: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """The temporary files that :func:`atomic_write` left in ``folder`` for one of ``names``
    when it was killed: regular files named ``.NAME.XXXXXXXX.tmp``. Nothing else, and nothing in a
    folder that is a symbolic link: the caller may remove them without touching a user's file."""
    folder, names = Path(folder), set(names)
    if folder.is_symlink() or not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _TEMPORARY.fullmatch(p.name)
        if m and m["name"] in names and not p.is_symlink() and p.is_file():
            found.append(p)
    return sorted(found)


def check_new_outputs(out: str | os.PathLike, names: Iterable[str], option: str = "--out") -> Path:
    """``out`` as a folder that holds none of ``names`` yet (it may not exist): a result is never
    overwritten. Otherwise a ``ValueError`` naming what is in the way; call it before the work,
    and write the results with ``new=True`` (a file that appears meanwhile is not replaced)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{option} {out} exists and is not a folder")
    taken = [n for n in names if os.path.lexists(out / n)]
    if taken:
        shown = ", ".join(taken[:4]) + (f" and {len(taken) - 4} more" if len(taken) > 4 else "")
        raise ValueError(
            f"{out} already holds {shown}: nsm does not overwrite a result; choose another {option} or move them away"
        )
    return out


def read_text(path: str | os.PathLike, what: str = "a text file", *, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of ``path``, read up to ``max_bytes``; a larger file, one that is not text,
    or something that is not a regular file (a FIFO would block the read forever) is a
    ``ValueError`` naming it."""
    with _open_regular(path, what) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{path} is larger than {max_bytes:,} bytes; expected {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}); expected {what}") from None


def open_if_regular(path: str | os.PathLike) -> tuple[Optional[BinaryIO], os.stat_result]:
    """``(file, stat)``: ``path`` opened for binary reading if it is a regular file (or a link to
    one), else ``(None, stat)`` with the file closed again, checked on the descriptor and never
    blocking (opening a FIFO for reading waits for a writer). ``os.open``'s ``OSError`` (a
    missing file, no permission) is the caller's to report."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None, st
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st
    except BaseException:
        os.close(fd)
        raise


def _open_regular(path: str | os.PathLike, what: str) -> BinaryIO:
    """``path`` opened for binary reading if it is a regular file (:func:`open_if_regular`);
    else a ``ValueError`` naming it and ``what`` was expected."""
    f, st = open_if_regular(path)
    if f is None:
        mode = st.st_mode
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise ValueError(f"{path} is {kind}, not a regular file; expected {what}")
    return f


def read_json(path: str | os.PathLike, what: str = "JSON", *, max_bytes: int = MAX_TEXT_BYTES) -> Any:
    """The JSON value in ``path`` (at most ``max_bytes``); unreadable text, invalid JSON or
    nesting too deep to parse is a ``ValueError`` naming it."""
    text = read_text(path, what, max_bytes=max_bytes)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); expected {what}") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply to read; expected {what}") from None


def read_json_object(path: str | os.PathLike, what: str, keys: Iterable[str] = ()) -> dict:
    """:func:`read_json` of a file that must hold an object with (at least) ``keys``; anything
    else is a ``ValueError`` naming the file and what is missing."""
    value = read_json(path, what)
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a JSON {type(value).__name__}, not an object; expected {what}")
    missing = [k for k in keys if k not in value]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}; expected {what}")
    return value
