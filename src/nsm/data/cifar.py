"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009), python versions: locate, fetch and load.

Format: each batch file is a pickle (protocol 2, written by Python 2) of a dict; loaded
with ``encoding="bytes"`` its keys are bytes.  ``b"data"`` is a uint8 numpy array
(N, 3072): each row is a 32x32 colour image, its 1024 red values first, then green, then
blue, each channel row-major (CHW order).  CIFAR-10 labels are the list ``b"labels"``
(0..9); CIFAR-100 has ``b"fine_labels"`` (0..99) and ``b"coarse_labels"`` (0..19).

Layout (the official archives' own)::

    <data_dir>/cifar10/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch, batches.meta
    <data_dir>/cifar100/cifar-100-python/train, test, meta

Download: :func:`fetch_cifar` takes the archive (:data:`CIFAR`: URL, md5 and size) from the
dataset folder if you put it there, else downloads it (a server sending more than the
archive's size is cut off there, naming the URL and the size); the md5 is checked, then only
the files above are extracted, each by its exact member name into a path nsm builds (never a
path from the archive), through a temporary file moved atomically into place.  Present
files are never overwritten; an entry that is not a regular file in place of one is an
error, left alone (see :mod:`nsm.data.files`).  The temporary files of a fetch that was killed
are removed by the next one.

Sizes: a batch file holds its images (3072 bytes each) plus labels and file names (about 33
bytes per image in the official files). A batch pickled by Python 3 under protocol 2 stores
its bytes as latin-1 text, where every byte from 0x80 up takes two: up to 6144 bytes per
image. :func:`file_bound` allows 2 x 3072 + 512 bytes per image and 1 MiB more.  A file or
archive member past that is refused, naming it and the bound.

Safety: pickles can run code.  Files are read with a restricted unpickler that allows only
the globals a pickled numpy array needs and refuses any other with :class:`DataError`; and
those only as numpy's own pickles use them: ``numpy.ndarray`` only as the class handed to
``_reconstruct`` (never called), ``numpy.dtype`` only for plain numbers (bool, integers,
floats: never objects, strings or records), and every array's state is checked before numpy
builds it: a plain dtype, at most :data:`CIFAR_MAX_ELEMENTS` elements, its bytes all there.
"""

from __future__ import annotations

import gzip
import http.client
import io
import math
import os
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from .files import check_file, fetch_folder, new_part, place_new, read_bytes, remove_leftovers
from .idx import DataError, md5_file
from .mnist import _copy_member, _download, _say, default_data_dir

try:  # numpy >= 2 (numpy 1.x pickles name numpy.core.multiarray: same function)
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

__all__ = ["CIFAR", "CIFAR_MAX_ELEMENTS", "fetch_cifar", "file_bound", "load_cifar", "read_batch"]

#: The most elements an array in a CIFAR file may have: 60000 images of 3072 bytes (the
#: largest official batch, CIFAR-100's train, holds 50000).
CIFAR_MAX_ELEMENTS = 60000 * 3072

#: num_classes -> archive, its md5 and size in bytes, folders, files per split, label keys, split sizes.
CIFAR: dict[int, dict] = {
    10: {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "bytes": 170498071,
        "folder": "cifar10",
        "subdir": "cifar-10-batches-py",
        "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test": ("test_batch",),
        "meta": "batches.meta",
        "labels": {"fine": (b"labels", 10)},
        "sizes": {"train": 50000, "test": 10000},
    },
    100: {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "bytes": 169001437,
        "folder": "cifar100",
        "subdir": "cifar-100-python",
        "train": ("train",),
        "test": ("test",),
        "meta": "meta",
        "labels": {"fine": (b"fine_labels", 100), "coarse": (b"coarse_labels", 20)},
        "sizes": {"train": 50000, "test": 10000},
    },
}


# Python 3 pickles bytes under protocol 2 as _codecs.encode(text, "latin1"), b"" as bytes().
def _latin1_bytes(text: str, encoding: str) -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed")
    return text.encode("latin-1")


def _empty_bytes(*args) -> bytes:
    if args:
        raise pickle.UnpicklingError("bytes() with arguments is not allowed")
    return b""


class _Refused(pickle.UnpicklingError):
    """An allowed global used in a way no CIFAR file uses it."""


def _plain(dtype: np.dtype) -> bool:
    """A dtype of plain numbers: bool, integers, floats (no objects, strings, records)."""
    return dtype.kind in "biuf" and dtype.fields is None and dtype.subdtype is None and not dtype.hasobject


class _NdarrayClass:
    """What ``numpy.ndarray`` unpickles to: a token for :func:`_safe_reconstruct`, not callable."""

    def __call__(self, *args, **kwargs):
        raise _Refused("a call of numpy.ndarray (numpy's pickles only hand it to _reconstruct)")


_NDARRAY = _NdarrayClass()


class _Array(np.ndarray):
    """An array being unpickled: its state is checked before numpy builds it."""

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused(f"an array state that is not numpy's ({type(state).__name__})")
        shape, dtype, raw = state[-4], state[-3], state[-1]
        if not isinstance(dtype, np.dtype) or not _plain(dtype):
            raise _Refused(f"an array of dtype {dtype!r} (only plain numbers are allowed)")
        if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise _Refused(f"an array of shape {shape!r}")
        count = math.prod(shape)
        if count > CIFAR_MAX_ELEMENTS:
            raise _Refused(f"an array of {count} elements, more than a CIFAR file holds ({CIFAR_MAX_ELEMENTS})")
        if not isinstance(raw, bytes) or len(raw) != count * dtype.itemsize:
            found = f"{len(raw)} bytes" if isinstance(raw, bytes) else type(raw).__name__
            raise _Refused(f"an array of shape {shape} and dtype {dtype} whose data is {found}")
        super().__setstate__(state)


def _safe_reconstruct(cls, shape, typecode) -> np.ndarray:
    """``_reconstruct(ndarray, (0,), b"b")`` as numpy's pickles call it: an empty array whose
    state (the BUILD that follows) :class:`_Array` checks."""
    if cls is not _NDARRAY or shape != (0,) or typecode not in (b"b", "b"):
        raise _Refused(f"_reconstruct({cls!r}, {shape!r}, {typecode!r}) (numpy's pickles only call it for an ndarray)")
    return _reconstruct(_Array, (0,), b"b")


def _safe_dtype(obj, align=False, copy=False) -> np.dtype:
    """``numpy.dtype(code, align, copy)`` for plain number codes only (``"u1"`` in CIFAR);
    always a copy, so that the state set on it never changes numpy's own dtypes."""
    code = obj.decode("latin-1") if isinstance(obj, bytes) else obj
    try:
        dtype = np.dtype(code) if isinstance(code, str) and len(code) <= 8 else None
    except (TypeError, ValueError):
        dtype = None
    if dtype is None or not _plain(dtype):
        raise _Refused(f"numpy.dtype({str(obj)[:40]!r}) (only plain numbers are allowed)")
    return np.dtype(code, align=bool(align), copy=True)


#: The only globals a CIFAR pickle may name (Python 2 writes the first three), each allowing
#: only what numpy's pickles of plain arrays do with it.
_ALLOWED: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _safe_dtype,
    ("_codecs", "encode"): _latin1_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, fh, path: str) -> None:
        super().__init__(fh, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.path}: refusing to unpickle the global {module}.{name}: a "
                f"CIFAR file holds only numpy arrays, lists and strings "
                f"(tampered with, or not a CIFAR file?)"
            ) from None


def read_batch(
    path: str | os.PathLike, labels: dict[bytes, int] | None = None, *, max_bytes: int | None = None
) -> tuple[np.ndarray, dict[bytes, np.ndarray]]:
    """Read one batch file safely: ``data`` as uint8 ``(N, 3, 32, 32)`` and ``{key: int64 (N,)}``.

    ``labels`` maps each label key to read to its number of classes (default
    ``{b"labels": 10}``, CIFAR-10's).

    Any problem (not a pickle, truncated, a forbidden global, a missing key, a wrong
    shape, dtype or label, more than ``max_bytes`` bytes, not a regular file) raises
    :class:`DataError` naming the file (and key).
    """
    name = os.fspath(path)
    raw = read_bytes(path, max_bytes)
    try:
        obj = _RestrictedUnpickler(io.BytesIO(raw), name).load()
    except DataError:
        raise
    except _Refused as exc:
        raise DataError(
            f"{name}: refusing to unpickle {exc}: a CIFAR file holds only uint8 arrays, lists "
            f"and strings (tampered with, or not a CIFAR file?)"
        ) from None
    except Exception as exc:  # with only harmless globals, any failure means a bad file
        raise DataError(
            f"{name}: expected a CIFAR batch pickle, found a corrupt or truncated file ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(obj, dict):
        raise DataError(f"{name}: expected a dict, found {type(obj).__name__}")
    data = obj.get(b"data")
    if isinstance(data, _Array):
        data = data.view(np.ndarray)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = (
            f"{data.dtype} array of shape {data.shape}"
            if isinstance(data, np.ndarray)
            else "nothing"
            if data is None
            else type(data).__name__
        )
        raise DataError(f"{name}: key b'data': expected a uint8 array of shape (N, 3072), found {found}")
    out = {}
    for key, classes in (labels if labels is not None else {b"labels": 10}).items():
        raw = obj.get(key)
        try:
            values = np.asarray(raw, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            values = np.zeros(0)
        if raw is None or values.shape != (len(data),):
            found = "nothing" if raw is None else f"{type(raw).__name__} of shape {values.shape}"
            raise DataError(f"{name}: key {key!r}: expected {len(data)} integer labels, found {found}")
        if values.size and (values.min() < 0 or values.max() >= classes):
            raise DataError(
                f"{name}: key {key!r}: expected labels in 0..{classes - 1}, found {values.min()}..{values.max()}"
            )
        out[key] = values
    return data.reshape(len(data), 3, 32, 32), out


def _spec(num_classes: int) -> dict:
    if num_classes not in CIFAR:
        raise ValueError(f"num_classes must be 10 or 100 (CIFAR-10, CIFAR-100), got {num_classes}")
    return CIFAR[num_classes]


def file_bound(spec: dict, name: str) -> int:
    """The most bytes the file ``name`` of CIFAR ``spec`` may hold (see the module docstring)."""
    if name == spec["meta"]:
        return 1 << 20
    split = "train" if name in spec["train"] else "test"
    n = math.ceil(spec["sizes"][split] / len(spec[split]))
    return n * (2 * 3072 + 512) + (1 << 20)  # 2 x: latin-1 text of a Python 3 protocol-2 pickle


def _paths(spec: dict, data_dir: str | os.PathLike | None) -> tuple[Path, Path]:
    base = Path(data_dir if data_dir is not None else default_data_dir()).expanduser()
    return base / spec["folder"], base / spec["folder"] / spec["subdir"]


def _missing_message(spec: dict, root: Path, folder: Path, names: list[str], why: str) -> str:
    archive = spec["url"].rsplit("/", 1)[-1]
    return (
        f"CIFAR files missing in {folder}: {', '.join(names)} ({why}). Download "
        f"{spec['url']} (md5 {spec['md5']}) and either put it at {root / archive} and "
        f"call nsm.data.cifar.fetch_cifar() or load_cifar(download=True), or unpack it "
        f"in {root}"
    )


def _extract(tgz: Path, spec: dict, folder: Path, names: list[str]) -> None:
    """Copy the members ``<subdir>/<name>`` (regular files only) into ``folder``."""
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            for name in names:
                tmp = _copy_member(tar, tgz, f"{spec['subdir']}/{name}", folder, name, max_bytes=file_bound(spec, name))
                try:
                    if check_file(folder / name) is None:  # never overwrite
                        place_new(tmp, folder / name)
                finally:
                    tmp.unlink(missing_ok=True)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{tgz}: expected a readable tar.gz archive, found: {exc}") from exc


def fetch_cifar(
    num_classes: int = 10, data_dir: str | os.PathLike | None = None, *, timeout: float = 60.0, progress: bool = True
) -> Path:
    """Make sure CIFAR-``num_classes``'s files are present; return the folder holding them.

    Uses the archive when it lies in ``<data_dir>/cifar10`` (``cifar100``), else
    downloads it (and deletes it after extraction).  A wrong md5, or a server sending more
    than the archive's size, raises :class:`DataError`; an unreachable server
    :class:`FileNotFoundError`.  Temporary files that a killed fetch left are removed first.
    """
    spec = _spec(num_classes)
    root, folder = _paths(spec, data_dir)
    for where in (root, folder):
        for path in remove_leftovers(where):
            _say(progress, f"nsm: removed {path}, left by a fetch that was killed")
    missing = [n for n in (*spec["train"], *spec["test"], spec["meta"]) if check_file(folder / n) is None]
    if not missing:
        return folder
    with fetch_folder(folder):
        url, archive = spec["url"], root / spec["url"].rsplit("/", 1)[-1]
        downloaded = check_file(archive) is None
        if downloaded:
            fd, archive = new_part(root, f".{archive.name}.", ".part")
            try:
                with os.fdopen(fd, "wb") as out:
                    _download(url, out, timeout, progress, max_bytes=spec["bytes"])
            except (OSError, ValueError, http.client.HTTPException) as exc:  # DataError too
                archive.unlink(missing_ok=True)
                reason = getattr(exc, "reason", None) or exc
                _say(progress, f"nsm: {url}: failed ({reason})")
                if isinstance(exc, DataError):  # more than the archive holds: not a missing file
                    raise
                raise FileNotFoundError(
                    _missing_message(spec, root, folder, missing, f"downloading failed: {reason}")
                ) from exc
            except BaseException:  # Ctrl-C too: no partial file left behind
                archive.unlink(missing_ok=True)
                raise
        try:
            found = md5_file(archive)
            if found != spec["md5"]:
                raise DataError(
                    f"{url if downloaded else archive}: md5 mismatch: expected "
                    f"{spec['md5']}, found {found} (a corrupt or different archive)"
                )
            _say(progress and downloaded, f"nsm: {url}: ok")
            _extract(archive, spec, folder, missing)
        finally:
            if downloaded:
                archive.unlink(missing_ok=True)
    return folder


def load_cifar(
    data_dir: str | os.PathLike | None = None,
    train: bool = True,
    *,
    num_classes: int = 10,
    label: str = "fine",
    download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split: images uint8 ``(N, 3, 32, 32)`` (RGB planes), labels int64 ``(N,)``.

    ``label`` picks CIFAR-100's ``"fine"`` (100 classes) or ``"coarse"`` (20
    superclasses) labels; CIFAR-10 has only ``"fine"``.  Missing files are fetched
    with :func:`fetch_cifar` when ``download`` is true; otherwise
    :class:`FileNotFoundError` says what to download and where.
    """
    spec = _spec(num_classes)
    if label not in spec["labels"]:
        raise ValueError(
            f"label must be one of {', '.join(map(repr, spec['labels']))} for CIFAR-{num_classes}, got {label!r}"
        )
    root, folder = _paths(spec, data_dir)
    split = "train" if train else "test"
    missing = [n for n in spec[split] if check_file(folder / n) is None]
    if missing:
        if not download:
            raise FileNotFoundError(_missing_message(spec, root, folder, missing, "download=False"))
        fetch_cifar(num_classes, data_dir)
    key, classes = spec["labels"][label]
    parts = [read_batch(folder / n, {key: classes}, max_bytes=file_bound(spec, n)) for n in spec[split]]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1][key] for p in parts])
    if len(images) != spec["sizes"][split]:
        raise DataError(
            f"{folder}: expected {spec['sizes'][split]} {split} images for "
            f"CIFAR-{num_classes}, found {len(images)} in {', '.join(spec[split])}"
        )
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)
