"""Careful file access for the data folder: what every dataset reader shares.

Rules (the README's promise that nothing in the data folder is ever replaced):

- A path where a data file belongs holds nothing, or a regular file, or a symbolic link to a
  regular file (read through, never written through or replaced).  Anything else there -- a
  directory, a FIFO, a device, a socket, a dangling or looping symlink, a symlink to any of
  those -- raises :class:`DataError` naming it, and is left as it is: :func:`check_file`.
- A folder nsm reads from or creates is a directory (or a symlink to one); a file in its
  place raises :class:`DataError` naming it: :func:`check_folder`, :func:`make_folder`.
- Files are opened without blocking (a FIFO never hangs the reader) and checked to be
  regular on the open descriptor: :func:`open_regular`.
- Every file has a known largest size; a file (or its decompressed content, streamed) that
  goes past it is refused with :class:`DataError` (a ``ValueError``) naming the file and the
  bound, in bounded memory: :func:`read_bytes`, :func:`copy_bounded`.
- A finished temporary file is moved into place only where nothing is (a hard link, which
  fails when the name exists): :func:`place_new`.
"""

from __future__ import annotations

import errno
import gzip
import os
import stat
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "DataError",
    "check_file",
    "check_folder",
    "check_replaceable",
    "copy_bounded",
    "gz_bound",
    "make_folder",
    "open_regular",
    "place_new",
    "read_bytes",
    "too_big",
]

CHUNK = 1 << 20


class DataError(ValueError):
    """A data file is unreadable, malformed, too large, not a regular file, or does not match
    its checksum."""


def gz_bound(raw_bytes: int) -> int:
    """The most bytes a gzip stream of ``raw_bytes`` bytes of data can take (stored blocks)."""
    return raw_bytes + raw_bytes // 1000 + 4096


def describe(st: os.stat_result) -> str:
    """What kind of entry ``st`` describes, with its article ("a directory", ...)."""
    mode = st.st_mode
    for test, what in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return what
    return f"an entry of unknown kind (mode {oct(mode)})"


_LEAVE = "nsm leaves it as it is (never reads through it nor replaces it): move it away or fix it"


def _blocker(path: str) -> DataError:
    """The error for a ``path`` one of whose parents is not a folder (ENOTDIR)."""
    for parent in reversed(Path(path).parents):
        check_folder(parent)  # raises for the first entry in the way
    return DataError(f"{path}: a parent of this path is not a folder; {_LEAVE}")


def _link_error(path: str, exc: OSError | None, st: os.stat_result | None, expected: str) -> DataError:
    try:
        target = repr(os.readlink(path))
    except OSError:
        target = "?"
    if st is not None:
        found = f"a symbolic link to {describe(st)} ({target})"
    elif isinstance(exc, FileNotFoundError):
        found = f"a dangling symbolic link (to {target}, which does not exist)"
    else:
        found = f"a symbolic link that cannot be followed (to {target}: {exc.strerror if exc else 'unknown error'})"
    return DataError(f"{path}: expected {expected}, found {found}; {_LEAVE}")


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise _blocker(path) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot inspect it ({exc.strerror})") from exc


def check_file(path: str | os.PathLike) -> os.stat_result | None:
    """None when nothing is at ``path``; else the stat of the regular file there (a symlink is
    followed when it leads to one).  Any other entry raises :class:`DataError` naming it."""
    return _entry(path, stat.S_ISREG, "a regular file")


def check_folder(path: str | os.PathLike) -> bool:
    """False when nothing is at ``path``, True when a folder (or a symlink to one) is there;
    anything else raises :class:`DataError` naming it and what was expected."""
    return _entry(path, stat.S_ISDIR, "a folder") is not None


def _entry(path: str | os.PathLike, is_kind, expected: str) -> os.stat_result | None:
    """None when nothing is at ``path``; else the stat of the entry there, or of the one a
    symlink leads to, if ``is_kind`` of it; anything else raises :class:`DataError`."""
    p = os.fspath(path)
    lst = _lstat(p)
    if lst is None:
        return None
    if stat.S_ISLNK(lst.st_mode):
        try:
            st = os.stat(p)
        except OSError as exc:
            raise _link_error(p, exc, None, expected) from None
        if not is_kind(st.st_mode):
            raise _link_error(p, None, st, expected)
        return st
    if not is_kind(lst.st_mode):
        raise DataError(f"{p}: expected {expected}, found {describe(lst)}; {_LEAVE}")
    return lst


def make_folder(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` (and its parents) unless it is there; an entry that is not a
    folder, at ``path`` or above it, raises :class:`DataError` naming it."""
    p = Path(path)
    if check_folder(p):
        return p
    try:
        p.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise _blocker(os.fspath(p / "_")) from None
    return p


def check_replaceable(path: str | os.PathLike) -> None:
    """For files nsm itself rewrites (caches): nothing, or a plain regular file (no symlink),
    may be at ``path``; anything else raises :class:`DataError` and is left alone."""
    p = os.fspath(path)
    lst = _lstat(p)
    if lst is not None and not stat.S_ISREG(lst.st_mode):
        raise DataError(
            f"{p}: expected nsm's own cache file (a regular file), found "
            f"{describe(lst)}; nsm does not replace it: remove it to let nsm "
            f"write the cache there, or leave it to keep it"
        )


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """Open a regular file (or a symlink to one) for binary reading, never blocking on a FIFO.

    Missing file: :class:`FileNotFoundError`; anything that is not a regular file, or a file
    that cannot be opened: :class:`DataError` naming it.
    """
    p = os.fspath(path)
    if check_file(p) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), p)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        raise DataError(f"{p}: cannot open it for reading ({exc.strerror})") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped since check_file looked
            raise DataError(f"{p}: expected a regular file, found {describe(st)}; {_LEAVE}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def too_big(name: str, bound: int, verb: str = "holds", hint: str = "") -> DataError:
    """The error for a file (or archive member, or download) past its known largest size."""
    return DataError(
        f"{name}: {verb} more than {bound} bytes, the most it can hold for this "
        f"dataset; refused (corrupt, not the right file, or a decompression "
        f"bomb){'. ' + hint if hint else ''}"
    )


def copy_bounded(src: BinaryIO, dst: BinaryIO, bound: int, name: str, *, verb: str = "holds", hint: str = "") -> int:
    """Copy ``src`` to ``dst`` in chunks; past ``bound`` bytes raise :class:`DataError` naming
    ``name`` and the bound (after writing at most ``bound`` bytes).  Returns the byte count."""
    total = 0
    while True:
        block = src.read(min(CHUNK, bound + 1 - total))
        if not block:
            return total
        total += len(block)
        if total > bound:
            raise too_big(name, bound, verb, hint)
        dst.write(block)


def read_bytes(
    path: str | os.PathLike,
    max_bytes: int | None = None,
    *,
    gzipped: bool = False,
    name: str | None = None,
    hint: str = "",
) -> bytes:
    """The bytes of the regular file ``path``, gunzipped (streamed) when ``gzipped``.

    With ``max_bytes``, a raw file larger than that is refused before it is read, and a gzip
    stream is decompressed only up to ``max_bytes + 1`` bytes: either way
    :class:`DataError` names the file (``name``, default ``path``) and the bound.  A bad gzip
    stream raises what :mod:`gzip` raises (``OSError``, ``EOFError``, ``zlib.error``).
    """
    shown = name or os.fspath(path)
    with open_regular(path) as fh:
        if not gzipped:
            if max_bytes is None:
                return fh.read()
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise too_big(shown, max_bytes, f"is {size} bytes:", hint)
            data = fh.read(max_bytes + 1)
            if len(data) > max_bytes:  # grew since fstat
                raise too_big(shown, max_bytes, "holds", hint)
            return data
        out = bytearray()
        with gzip.GzipFile(fileobj=fh, mode="rb") as gz:
            while True:
                want = CHUNK if max_bytes is None else min(CHUNK, max_bytes + 1 - len(out))
                block = gz.read(want)  # GzipFile decompresses at most `want` bytes
                if not block:
                    return bytes(out)
                out += block
                if max_bytes is not None and len(out) > max_bytes:
                    raise too_big(shown, max_bytes, "decompresses to", hint)


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
