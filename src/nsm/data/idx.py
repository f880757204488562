"""Reading IDX files, the simple binary array format that MNIST ships in.

An IDX file is a 4-byte magic number (two zero bytes, a dtype code and the
number of dimensions), one big-endian uint32 per dimension, then the array
payload in big-endian C order.  Files whose name ends in ``.gz`` are
decompressed in memory, streamed and, given ``max_bytes``, never past that bound.
Every problem with a file's content raises :class:`DataError`, whose message names
the file, what was expected and what was found; files are opened as
:mod:`nsm.data.files` says (regular files only, a FIFO never blocks).
"""

from __future__ import annotations

import hashlib
import math
import os
import zlib
from collections.abc import Sequence

import numpy as np

from .files import DataError, open_regular, read_bytes

__all__ = ["DataError", "IDX_DTYPES", "idx_size", "read_idx", "read_raw_bytes", "verify_md5", "md5_file"]

#: IDX dtype code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _fetch_hint(path) -> str:
    """What to do about a bad file, naming the dataset by its folder (mnist/, emnist/gzip/...)."""
    parts = os.path.normpath(os.fspath(path)).split(os.sep)
    known = ("mnist", "fashion-mnist", "emnist", "cifar10", "cifar100", "nmnist")
    dataset = next((p for p in reversed(parts[:-1]) if p in known), "DATASET")
    return (
        f"The file is corrupt or truncated; delete it and run `nsm fetch {dataset}` "
        "again (nsm never overwrites your files)"
    )


def idx_size(shape: Sequence[int], itemsize: int = 1) -> int:
    """Bytes of an IDX file holding an array of ``shape`` (``itemsize`` bytes per element)."""
    return 4 + 4 * len(shape) + math.prod(shape) * itemsize


def _is_gzip_name(path: str | os.PathLike) -> bool:
    return os.fspath(path).endswith(".gz")


def read_raw_bytes(
    path: str | os.PathLike, *, gzipped: bool | None = None, max_bytes: int | None = None, name: str | None = None
) -> bytes:
    """Return the file's bytes, decompressed (streamed) if it is gzipped.

    ``gzipped=None`` decides by the name (``.gz`` suffix).  With ``max_bytes``, a raw
    file larger than that, or a gzip stream decompressing past it, is refused with
    :class:`DataError` naming the file (``name``, default ``path``) and the bound, before
    more than ``max_bytes`` bytes are held.  A bad gzip stream, or a path that is not a
    regular file, raises :class:`DataError`.
    """
    if gzipped is None:
        gzipped = _is_gzip_name(path)
    shown = name or os.fspath(path)
    try:
        return read_bytes(path, max_bytes, gzipped=gzipped, name=shown)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        if not gzipped or isinstance(exc, FileNotFoundError):
            raise
        raise DataError(
            f"{shown}: expected a valid gzip stream, found a corrupt or truncated one ({exc}). {_fetch_hint(path)}"
        ) from exc


def md5_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """md5 hex digest of a file, read in chunks (for archives too large to hold in memory)."""
    digest = hashlib.md5()
    with open_regular(path) as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_md5(path: str | os.PathLike, raw: bytes, expected_md5: str) -> None:
    """Raise :class:`DataError` unless ``md5(raw)`` equals ``expected_md5``."""
    found = hashlib.md5(raw).hexdigest()
    if found != expected_md5.lower():
        raise DataError(f"{os.fspath(path)}: md5 mismatch: expected {expected_md5}, found {found}. {_fetch_hint(path)}")


def _fmt_shape(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("*" if d is None else str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def read_idx(
    path: str | os.PathLike,
    *,
    expected_md5: str | None = None,
    expected_shape: Sequence[int | None] | None = None,
    max_bytes: int | None = None,
) -> np.ndarray:
    """Read an IDX file (raw or ``.gz``) into a native-endian numpy array.

    ``expected_md5`` is checked against the raw (decompressed) bytes;
    ``expected_shape`` may use ``None`` as a wildcard for any dimension;
    ``max_bytes`` bounds the raw (decompressed) size, checked before it is reached.
    """
    name = os.fspath(path)
    raw = read_raw_bytes(path, max_bytes=max_bytes)
    what = "decompressed bytes" if _is_gzip_name(path) else "bytes"
    if expected_md5 is not None:
        verify_md5(name, raw, expected_md5)

    if len(raw) < 4:
        raise DataError(f"{name}: expected an IDX header of at least 4 bytes, found {len(raw)} {what}")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"{name}: expected IDX magic starting with two zero bytes, "
            f"found 0x{raw[0]:02x} 0x{raw[1]:02x} (not an IDX file?)"
        )
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise DataError(f"{name}: expected an IDX dtype code in ({known}), found 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"{name}: expected a {header}-byte IDX header for {ndim} dimensions, found only {len(raw)} {what}"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    count = math.prod(dims)
    expected_len = header + count * dtype.itemsize
    if len(raw) != expected_len:
        kind = "truncated" if len(raw) < expected_len else "too long"
        raise DataError(
            f"{name}: file is {kind}: expected {expected_len} {what} "
            f"({header}-byte header + {count * dtype.itemsize}-byte payload for shape "
            f"{_fmt_shape(dims)} of {dtype.newbyteorder('=').name}), "
            f"found {len(raw)} {what}"
        )
    if expected_shape is not None:
        expected_shape = tuple(expected_shape)
        if len(expected_shape) != len(dims) or any(e is not None and e != d for e, d in zip(expected_shape, dims)):
            raise DataError(f"{name}: expected shape {_fmt_shape(expected_shape)}, found {_fmt_shape(dims)}")
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    # astype copies into native byte order and gives a writable array.
    return arr.astype(dtype.newbyteorder("="))
