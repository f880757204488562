"""Careful file access for the data folder: what every dataset reader shares.

Rules (the README's promise that nothing in the data folder is ever replaced):

- A path where a data file belongs holds nothing, or a regular file, or a symbolic link to a
  regular file (read through, never written through or replaced).  Anything else there -- a
  directory, a FIFO, a device, a socket, a dangling or looping symlink, a symlink to any of
  those -- raises :class:`DataError` naming it, and is left as it is: :func:`check_file`.
- A folder nsm reads from or creates is a directory (or a symlink to one); a file in its
  place raises :class:`DataError` naming it: :func:`check_folder`, :func:`make_folder`.
- A fetch that fails leaves no folder behind that it made and that is still empty (a failed
  download does not leave ``~/.cache/nsm/data/<dataset>/`` looking as if it were there):
  :func:`fetch_folder`.
- Files are opened without blocking (a FIFO never hangs the reader) and checked to be
  regular on the open descriptor: :func:`open_regular`.
- Every file has a known largest size; a file (or its decompressed content, streamed) that
  goes past it is refused with :class:`DataError` (a ``ValueError``) naming the file and the
  bound, in bounded memory: :func:`read_bytes`, :func:`copy_bounded`.
- A finished temporary file is moved into place only where nothing is (a hard link, which
  fails when the name exists): :func:`place_new`.
- A temporary file (``.NAME.<owner>-XXXXXXXX.part``) or extraction folder
  (``.NAME.extract-<owner>-XXXXXXXX``) names the process that writes it: host, boot, pid and
  the pid's start time (:func:`new_part`, :func:`new_part_folder`).  What a process that is gone
  left (killed, e.g. by ``kill -9``, before it could remove it) is removed by the next fetch in
  that folder, and nothing else: :func:`remove_leftovers`.
- nsm's own ``.npz`` caches are read back only as :func:`numpy.savez` wrote them: the
  expected members, stored uncompressed, with the expected dtypes and shapes, checked before
  anything is read or allocated: :func:`read_npz`.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import math
import os
import re
import shutil
import socket
import stat
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..utils.io import open_if_regular, place_new
from ..utils.process import boot_id, start_time

__all__ = [
    "DataError",
    "check_file",
    "check_zip_directory",
    "npy_header",
    "check_folder",
    "check_replaceable",
    "copy_bounded",
    "gz_bound",
    "fetch_folder",
    "make_folder",
    "new_part",
    "new_part_folder",
    "open_regular",
    "place_new",
    "read_bytes",
    "read_npz",
    "remove_leftovers",
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


@contextlib.contextmanager
def fetch_folder(path: str | os.PathLike):
    """:func:`make_folder` ``path`` for the block; when the block raises (Ctrl-C too), remove
    again the folders this call created, deepest first, as long as they are empty (what anyone
    put in them meanwhile, and every folder that was there before, stays)."""
    p = Path(path)
    created, q = [], p
    while not os.path.lexists(q) and q != q.parent:
        created.append(q)
        q = q.parent
    make_folder(p)
    try:
        yield p
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()
            except OSError:  # not empty (or gone): it and everything above it stay
                break
        raise


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
    try:
        f, st = open_if_regular(p)
    except OSError as exc:
        raise DataError(f"{p}: cannot open it for reading ({exc.strerror})") from exc
    if f is None:  # swapped since check_file looked
        raise DataError(f"{p}: expected a regular file, found {describe(st)}; {_LEAVE}")
    return f


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
            data = fh.read(size + 1)  # never a buffer of max_bytes for a small file
            if len(data) > size:  # grew since fstat: read on in chunks, within the bound
                out = bytearray(data)
                while len(out) <= max_bytes and (block := fh.read(min(CHUNK, max_bytes + 1 - len(out)))):
                    out += block
                data = bytes(out)
            if len(data) > max_bytes:
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


def _boot() -> str | None:
    """The first 8 hex digits of this boot's id; None where /proc does not tell it."""
    boot = (boot_id() or "").replace("-", "")
    return boot[:8] if re.fullmatch(r"[0-9a-f]{32}", boot) else None


def _machine() -> str:
    """8 hex digits for this machine (its /etc/machine-id, which cloned hosts of one name do not
    share), host name and pid namespace: only a process that shares all three may judge whether
    the pid a temporary file names still runs (a container's pids are its own)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    try:
        with open("/etc/machine-id", "rb") as f:
            machine = f.read(64).strip().decode("ascii", "replace")
    except OSError:
        machine = ""
    return hashlib.sha256(f"{machine}\0{socket.gethostname()}\0{namespace}".encode()).hexdigest()[:8]


def _owner() -> str | None:
    """``nsm-MACHINE-BOOT-PID-START`` for this process, put in the names of its temporary files
    and folders; None where /proc cannot tell the boot and start time (not Linux): such names
    carry no owner and are never removed as leftovers."""
    boot, start = _boot(), start_time(os.getpid())
    return f"nsm-{_machine()}-{boot}-{os.getpid()}-{start}" if boot and start else None


#: The names :func:`new_part` (``.part`` files) and :func:`new_part_folder` (``extract-``
#: folders) give, with an owner; ``XXXXXXXX`` as :mod:`tempfile` makes it.
_LEFTOVER = re.compile(
    r"\.(?P<name>.+)\.(?P<folder>extract-)?nsm-(?P<machine>[0-9a-f]{8})-(?P<boot>[0-9a-f]{8})-"
    r"(?P<pid>[1-9][0-9]{0,9})-(?P<start>[0-9]{1,20})-[a-z0-9_]{8}(?P<suffix>(?:\.[a-z]{1,4})*\.part)?"
)
_PID_MAX = 1 << 22  # the largest pid Linux hands out


def _gone(m: re.Match) -> bool:
    """Whether the process a leftover's name ``m`` names is known to be gone: it ran on this
    host (and pid namespace) and the machine has restarted since, or its pid no longer runs, or
    runs another process (another start time).  Where that cannot be told: False (kept)."""
    if m["machine"] != _machine() or int(m["pid"]) > _PID_MAX:
        return False
    boot = _boot()
    if boot is None:
        return False
    if m["boot"] != boot:
        return True
    pid = int(m["pid"])
    start = start_time(pid)
    if start is not None:
        return start != m["start"]
    try:  # /proc hides it (hidepid) or it is gone
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it runs, as another user
        return False
    return False


def remove_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Remove, from ``folder``, the temporary files and extraction folders that a process which
    is gone left there (one killed by ``kill -9`` cannot remove them); return what was removed.

    Only entries named exactly as :func:`new_part` (a regular file) or :func:`new_part_folder`
    (a folder) name them are removed, and only when the process the name records is known to
    be gone: it ran on this host and pid namespace, and the machine has restarted since, or its
    pid runs no process, or another one (another start time).  Another host's, or where that
    cannot be told: kept.  A symbolic link, or an entry of another kind, is never followed nor
    removed; what cannot be removed (another user's file) is left.  Never raises.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _LEFTOVER.fullmatch(entry.name)
        if m is None or bool(m["folder"]) == bool(m["suffix"]) or not _gone(m):
            continue
        path = Path(entry.path)
        try:
            st = os.lstat(path)
            if m["suffix"] and stat.S_ISREG(st.st_mode):
                path.unlink()
            elif m["folder"] and stat.S_ISDIR(st.st_mode) and shutil.rmtree.avoids_symlink_attacks:
                shutil.rmtree(path)  # refuses a symlink; never follows one inside
            else:
                continue
        except OSError:
            continue
        removed.append(path)
    return removed


def new_part(folder: str | os.PathLike, prefix: str, suffix: str) -> tuple[int, Path]:
    """A new temporary file in ``folder`` for a download or an extraction: (fd, path), with the
    mode an ordinary new file gets (``mkstemp`` makes 0600, which :func:`place_new` would keep:
    a shared data folder's files were unreadable to its other users).

    With ``prefix`` ``.NAME.`` and ``suffix`` ending in ``.part`` (as every caller passes), the
    name also says which process writes it, so that once that process is gone the file is
    removed by :func:`remove_leftovers`, which is first run on ``folder``."""
    from ..utils.io import _umask

    remove_leftovers(folder)
    owner = _owner()
    fd, name = tempfile.mkstemp(prefix=f"{prefix}{owner}-" if owner else prefix, suffix=suffix, dir=folder)
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, Path(name)


def new_part_folder(folder: str | os.PathLike, name: str) -> Path:
    """A new temporary folder ``.NAME.extract-<owner>-XXXXXXXX`` in ``folder`` to unpack an
    archive into; once the process that made it is gone it is removed (with what it holds) by
    :func:`remove_leftovers`, which is first run on ``folder``."""
    remove_leftovers(folder)
    owner = _owner()
    return Path(tempfile.mkdtemp(prefix=f".{name}.extract-{owner}-" if owner else f".{name}.extract-", dir=folder))


#: The largest ``.npy`` header :func:`read_npz` parses (numpy's own default bound).
NPY_MAX_HEADER = 10000
_EOCD = struct.Struct("<4s4H2LH")  # zip end of central directory record (22 bytes)
_ZIP64_LOCATOR_SIZE = 20
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")  # zip64 end of central directory record (56 bytes)


def read_npz(
    path: str | os.PathLike, members: dict[str, tuple[np.dtype | type, tuple[int, ...]]], *, name: str | None = None
) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file as :func:`numpy.savez` writes it, read in bounded memory.

    ``members`` maps each array's name to its ``(dtype, shape)``; a unicode dtype ``U<n>``
    admits any unicode dtype of at most ``n`` characters.  The file must be no larger than
    those arrays (plus headers) need, hold exactly those members, each stored uncompressed
    (nothing is ever decompressed), each a C-order ``.npy`` (format 1.0 or 2.0) whose header
    declares that dtype and shape and whose data has exactly that many bytes.  All of this is
    checked before any data is read, so nothing larger than ``members`` allows is allocated.
    Anything else raises :class:`DataError` naming the file (``name``, default ``path``),
    the member and what was wrong; the arrays come back read-only.
    """
    shown = name or os.fspath(path)
    want = {}
    for key, (dtype, shape) in members.items():
        dtype, shape = np.dtype(dtype), tuple(int(n) for n in shape)
        want[f"{key}.npy"] = (key, dtype, shape, math.prod(shape) * dtype.itemsize)
    bound = sum(nbytes for *_, nbytes in want.values()) + len(want) * (NPY_MAX_HEADER + 1024) + 4096
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > bound:
            raise too_big(shown, bound, f"is {size} bytes:")
        check_zip_directory(fh, size, len(want), shown)
        try:
            with zipfile.ZipFile(fh) as zf:
                infos = zf.infolist()
                found = [info.filename for info in infos]
                if sorted(found) != sorted(want):
                    raise DataError(f"{shown}: expected the members {sorted(want)}, found {sorted(found)[:10]}")
                return {want[i.filename][0]: _npz_member(zf, i, want[i.filename], size, shown) for i in infos}
        except DataError:
            raise
        except (
            zipfile.BadZipFile,
            zipfile.LargeZipFile,
            EOFError,
            OSError,
            ValueError,
            KeyError,
            RuntimeError,
            NotImplementedError,
            SyntaxError,
            struct.error,
        ) as exc:
            raise DataError(f"{shown}: expected an .npz file, found a bad one ({type(exc).__name__}: {exc})") from exc


def check_zip_directory(fh: BinaryIO, size: int, n: int, shown: str) -> None:
    """Before :mod:`zipfile` parses it (one object per entry): the zip's central directory, as
    its end record (and a zip64 one, where :mod:`zipfile` looks for it) declares it, holds
    ``n`` entries in at most 1 KiB each, as :func:`numpy.savez` writes it."""
    if size < _EOCD.size:
        raise DataError(f"{shown}: expected an .npz (zip) file, found {size} bytes")
    fh.seek(size - _EOCD.size)
    sig, _, _, _, count, cd_size, _, comment = _EOCD.unpack(fh.read(_EOCD.size))
    if sig != b"PK\x05\x06" or comment:
        raise DataError(f"{shown}: expected an .npz file ending in a zip end record, as numpy writes it")
    at = size - _EOCD.size - _ZIP64_LOCATOR_SIZE - _ZIP64_EOCD.size
    if at >= 0:
        fh.seek(at + _ZIP64_EOCD.size)
        if fh.read(4) == b"PK\x06\x07":  # a zip64 locator: zipfile reads the record before it
            fh.seek(at)
            rec = _ZIP64_EOCD.unpack(fh.read(_ZIP64_EOCD.size))
            if rec[0] != b"PK\x06\x06":
                raise DataError(f"{shown}: a zip64 locator without its zip64 end record")
            count, cd_size = rec[7], rec[8]
    if count != n or cd_size > n * 1024:
        raise DataError(
            f"{shown}: its zip directory declares {count} entries in {cd_size} bytes; nsm writes {n} entries"
        )
    fh.seek(0)


def npy_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, size: int, where: str, writer: str = "nsm writes it"):
    """Open the ``.npy`` member ``info`` of an ``.npz`` of ``size`` bytes and read its header
    alone: (the open member, positioned at its data; shape; Fortran order; dtype). A member that
    is compressed or encrypted, declares more bytes than the file holds, or has another format
    version is refused unread (:class:`DataError` beginning with ``where``)."""
    if info.compress_type != zipfile.ZIP_STORED:
        raise DataError(
            f"{where} is compressed (zip method {info.compress_type}); {writer} uncompressed, "
            f"so it is refused unread (not nsm's file, or a decompression bomb)"
        )
    if info.flag_bits & 0x1:
        raise DataError(f"{where} is encrypted; nsm never writes that")
    if max(info.file_size, info.compress_size) > size:
        raise DataError(f"{where} declares {info.file_size} bytes, more than the whole file ({size} bytes)")
    fp = zf.open(info)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp, max_header_size=NPY_MAX_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp, max_header_size=NPY_MAX_HEADER)
        else:
            raise DataError(f"{where}: .npy format version {version}, expected 1.0 or 2.0")
    except BaseException:
        fp.close()
        raise
    return fp, tuple(shape), fortran, dtype


def _npz_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, want: tuple, size: int, shown: str) -> np.ndarray:
    """One member of :func:`read_npz`, checked against ``want`` = (key, dtype, shape, nbytes)."""
    key, dtype, shape, nbytes = want
    where = f"{shown}: member {info.filename}"
    fp, found_shape, fortran, found = npy_header(zf, info, size, where)
    with fp:
        text = dtype.kind == "U" and found.kind == "U" and found.itemsize <= dtype.itemsize
        if (found != dtype and not (text and found == np.dtype(f"U{found.itemsize // 4}"))) or fortran:
            order = " in Fortran order" if fortran else ""
            raise DataError(f"{where}: expected a {dtype} array, found {found}{order}")
        if tuple(found_shape) != shape:
            raise DataError(f"{where}: expected shape {shape}, found {tuple(found_shape)}")
        nbytes = nbytes // dtype.itemsize * found.itemsize
        data = fp.read(nbytes + 1)  # at most what the file holds: the member is stored
    if len(data) != nbytes:
        raise DataError(f"{where}: expected {nbytes} bytes of data, found {len(data)}")
    return np.frombuffer(data, dtype=found).reshape(shape)
