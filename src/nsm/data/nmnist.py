"""N-MNIST (Orchard et al., 2015): read the event files, bin them into frames, load a split.

**File format.**  Each ``.bin`` file is one recording: a flat sequence of
5-byte events.  Byte 0 is x, byte 1 is y (sensor 34x34), bit 7 of byte 2 is
the polarity (1 = ON), and bits 6..0 of byte 2 with bytes 3 and 4 form a
23-bit big-endian timestamp in microseconds,
``ts = ((b2 & 0x7F) << 16) | (b3 << 8) | b4``.  A record with ``y == 240`` is
a timestamp-overflow marker, not an event: every later timestamp in the file
gets ``+2**23`` (once per marker, cumulatively).  A file whose size is not a
multiple of 5, or an event with x or y >= 34, raises :class:`DataError`.

**Preprocessing** (:func:`events_to_frames`).  Only ON events are kept.  The
recording is cut into ``n_frames`` equal windows of ``t_max / n_frames``
microseconds, ``t_max`` being the largest timestamp among *all* events of the
recording (ON and OFF); an event at time ``t`` goes to frame
``min(floor(t / window), n_frames - 1)`` (computed exactly in integers as
``t * n_frames // t_max``), so the event at ``t_max`` lands in the last frame;
if ``t_max == 0`` everything goes to frame 0.  A pixel is 1 when at least one
ON event fell on it in that window (binary, not counts); frames are indexed
``[frame, y, x]``.

**Layout.**  ``<data_dir>/nmnist/Train/<digit>/*.bin`` and ``.../Test/<digit>/*.bin``,
as the official Train.zip / Test.zip unpack.  :func:`load_nmnist` converts a
split once and caches the frames in ``<data_dir>/nmnist/cache/<split>-frames-v1.npz``;
the cache is rebuilt whenever the file list or any file size changes, and whenever it is
not exactly what nsm writes (uncompressed members of known dtypes and shapes, the
recordings' digits as labels: checked before anything in it is read or allocated).

**Safety.**  A recording larger than :data:`NMNIST_MAX_FILE_BYTES` (about 200 times a
typical one, e.g. 21625 bytes) is refused, on disk and as an archive member, and a split's
archive unpacking to more than :data:`NMNIST_MAX_SPLIT_BYTES` is refused, naming the file
and the bound.  Anything but a regular file among the recordings (a FIFO, a directory named
``*.bin``, a dangling symlink...) is an error naming it; nothing existing is replaced (see
:mod:`nsm.data.files`).  A download sending more than :data:`NMNIST_ARCHIVE_BYTES` is cut off
there, naming the archive and the bound; the temporary files and extraction folders of a
fetch that was killed are removed by the next one.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import stat
import sys
import urllib.error
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from tqdm.auto import tqdm

from ..utils.io import atomic_write
from .files import (
    check_file,
    check_folder,
    check_replaceable,
    copy_bounded,
    fetch_folder,
    make_folder,
    new_part,
    new_part_folder,
    read_bytes,
    read_npz,
    remove_leftovers,
    too_big,
)
from .idx import DataError
from .mnist import _download, default_data_dir

__all__ = [
    "NMNIST_ARCHIVES",
    "NMNIST_ARCHIVE_BYTES",
    "NMNIST_MAX_FILE_BYTES",
    "NMNIST_MAX_SPLIT_BYTES",
    "NMNIST_SIZE",
    "events_to_frames",
    "fetch_nmnist",
    "load_nmnist",
    "read_nmnist_events",
]

NMNIST_SIZE = 34
N_FRAMES = 10
_OVERFLOW_Y = 240
_TS_WRAP = 1 << 23
_CACHE_VERSION = 1
_SPLITS = {True: "Train", False: "Test"}

#: The most bytes one recording may hold (a 300 ms recording holds a few thousand events).
NMNIST_MAX_FILE_BYTES = 4 << 20
#: The most bytes a split's archive may unpack to (60000 / 10000 recordings of ~20 KB).
NMNIST_MAX_SPLIT_BYTES = {"Train": 4 << 30, "Test": 1 << 30}

NMNIST_PAGE = "https://www.garrickorchard.com/datasets/n-mnist"
NMNIST_MENDELEY = "https://data.mendeley.com/datasets/468j46mzdv/1 (doi:10.17632/468j46mzdv.1)"
_MENDELEY_FILES = "https://data.mendeley.com/public-files/datasets/468j46mzdv/files/"
#: Split folder -> (download URL of its zip, md5 of the zip).
NMNIST_ARCHIVES: dict[str, tuple[str, str]] = {
    "Train": (
        _MENDELEY_FILES + "39c25547-014b-4137-a934-9d29fa53c7a0/file_downloaded",
        "20959b8e626244a1b502305a9e6e2031",
    ),
    "Test": (
        _MENDELEY_FILES + "05a4d654-7e03-4c15-bdfa-9bb2bcbea494/file_downloaded",
        "69ca8762b2fe404d9b9bad1103e97832",
    ),
}
#: Split folder -> the most bytes its zip may take when downloaded.  Upper bounds, not exact
#: sizes (nsm does not record those): Train.zip is about 1.0 GB and Test.zip about 170 MB; a
#: server sending more is cut off there (a stream that never ends would fill the disk).
NMNIST_ARCHIVE_BYTES: dict[str, int] = {"Train": 1200 << 20, "Test": 200 << 20}


def _nmnist_folder(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir if data_dir is not None else default_data_dir()).expanduser() / "nmnist"


def _manual(folder: Path) -> str:
    return (
        f"Download the official N-MNIST Train.zip and Test.zip ({NMNIST_PAGE}; files on "
        f"Mendeley Data: {NMNIST_MENDELEY}) and unzip both into {folder}, so that the "
        f"recordings are {folder}/Train/0/*.bin ... {folder}/Train/9/*.bin and "
        f"{folder}/Test/0/*.bin ... {folder}/Test/9/*.bin; or call "
        f"nsm.data.nmnist.fetch_nmnist() / load_nmnist(download=True)"
    )


# ------------------------------------------------------------------ one recording


def read_nmnist_events(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read one N-MNIST ``.bin`` file into arrays ``x``, ``y`` (uint8), ``p`` (bool, True = ON)
    and ``t`` (int64 microseconds, overflow markers applied and removed)."""
    name = os.fspath(path)
    raw = np.frombuffer(read_bytes(path, NMNIST_MAX_FILE_BYTES), dtype=np.uint8)
    if raw.size % 5:
        raise DataError(
            f"{name}: size {raw.size} bytes is not a multiple of 5 (5 bytes per "
            f"event): the file is truncated or not an N-MNIST .bin file"
        )
    rec = raw.reshape(-1, 5)
    b2 = rec[:, 2]
    ts = ((b2 & 0x7F).astype(np.int64) << 16) | (rec[:, 3].astype(np.int64) << 8) | rec[:, 4].astype(np.int64)
    marker = rec[:, 1] == _OVERFLOW_Y
    ts += np.cumsum(marker, dtype=np.int64) * _TS_WRAP  # markers seen so far, this one included
    keep = np.flatnonzero(~marker)
    x, y = rec[keep, 0], rec[keep, 1]
    bad = (x >= NMNIST_SIZE) | (y >= NMNIST_SIZE)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{name}: event {keep[i]} (byte offset {5 * keep[i]}) has x={x[i]}, "
            f"y={y[i]}; expected coordinates in 0..{NMNIST_SIZE - 1} (corrupt file)"
        )
    return {"x": x, "y": y, "p": (b2[keep] & 0x80) != 0, "t": ts[keep]}


def events_to_frames(
    x: np.ndarray, y: np.ndarray, p: np.ndarray, t: np.ndarray, n_frames: int = N_FRAMES, size: int = NMNIST_SIZE
) -> np.ndarray:
    """Bin one recording into a binary uint8 stack ``(n_frames, size, size)`` indexed ``[k, y, x]``.

    Rule: ``t_max = max(t)`` over all events (ON and OFF); ``window = t_max / n_frames``;
    each ON event (``p`` true) goes to frame ``k = min(floor(t / window), n_frames - 1)``,
    evaluated exactly as ``min(t * n_frames // t_max, n_frames - 1)`` so the event at
    ``t_max`` lands in the last frame; when ``t_max == 0`` (window 0) every event goes to
    frame 0.  ``frame[k, y, x] = 1`` if at least one ON event fell there, else 0.
    OFF events only matter through ``t_max``.
    """
    x, y = np.asarray(x, dtype=np.int64), np.asarray(y, dtype=np.int64)
    p, t = np.asarray(p, dtype=bool), np.asarray(t, dtype=np.int64)
    if not (x.shape == y.shape == p.shape == t.shape and x.ndim == 1):
        raise ValueError(
            f"x, y, p, t must be 1-D of equal length, got shapes {x.shape}, {y.shape}, {p.shape}, {t.shape}"
        )
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    frames = np.zeros((n_frames, size, size), dtype=np.uint8)
    if t.size == 0:
        return frames
    if t.min() < 0 or x.min() < 0 or y.min() < 0 or x.max() >= size or y.max() >= size:
        raise ValueError(f"events out of range: need t >= 0 and x, y in 0..{size - 1}")
    t_max = int(t.max())
    on = np.flatnonzero(p)
    k = np.zeros(on.size, dtype=np.int64) if t_max == 0 else np.minimum(t[on] * n_frames // t_max, n_frames - 1)
    frames[k, y[on], x[on]] = 1
    return frames


# ------------------------------------------------------------------ a split on disk


def _split_files(folder: Path, split: str) -> list[tuple[int, Path]]:
    """(digit, path) of every recording of ``split``, sorted by (digit, file name)."""
    root = folder / split
    files, empty = [], []
    present = check_folder(folder) and check_folder(root)
    for digit in range(10):
        found = (
            sorted((root / str(digit)).glob("*.bin"), key=lambda q: q.name)
            if present and check_folder(root / str(digit))
            else []
        )
        for q in found:
            check_file(q)  # a FIFO, folder or broken link named *.bin: an error naming it
        if not found:
            empty.append(str(digit))
        files += [(digit, q) for q in found]
    if empty:
        what = (
            f"{root} does not exist"
            if not present
            else f"no .bin files in {root}/<digit>/ for digit(s) {', '.join(empty)}"
        )
        raise FileNotFoundError(f"N-MNIST {split} data missing: {what}. {_manual(folder)}")
    return files


def _fingerprint(root: Path, files: list[tuple[int, Path]]) -> str:
    """sha256 of the sorted relative names and sizes: cheap, changes when a file does."""
    lines = sorted(f"{q.relative_to(root).as_posix()}\t{q.stat().st_size}" for _, q in files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _read_cache(path: Path, labels: np.ndarray, fingerprint: str) -> tuple[tuple[np.ndarray, np.ndarray] | None, str]:
    """``((frames, labels), "")`` from the cache; ``(None, why)`` when it is absent (``why``
    empty), stale or malformed (``why`` names it).  Only what :func:`load_nmnist` writes is
    read: uncompressed members of the exact dtypes and shapes ``len(labels)`` recordings give,
    checked before anything is read (see :func:`~nsm.data.files.read_npz`)."""
    if check_file(path) is None:  # anything but a regular file there: an error naming it
        return None, ""
    n = len(labels)
    try:
        z = read_npz(
            path,
            {
                "version": (np.int64, ()),
                "n_files": (np.int64, ()),
                "fingerprint": (np.dtype(f"U{len(fingerprint)}"), ()),
                "labels": (np.int64, (n,)),
                "frames_packed": (np.uint8, (n, N_FRAMES, NMNIST_SIZE, (NMNIST_SIZE + 7) // 8)),
            },
        )
    except DataError as exc:
        return None, " ".join(str(exc).split())
    if int(z["version"]) != _CACHE_VERSION or int(z["n_files"]) != n or str(z["fingerprint"]) != fingerprint:
        return None, f"{path}: stale (made from other recordings)"
    if not np.array_equal(z["labels"], labels):
        return None, f"{path}: its labels are not the recordings' digits"
    return (np.unpackbits(z["frames_packed"], axis=-1, count=NMNIST_SIZE), labels), ""


def load_nmnist(
    data_dir: str | os.PathLike | None = None,
    train: bool = True,
    *,
    download: bool = False,
    progress: bool = True,
    write_cache: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one N-MNIST split: frames uint8 ``(N, 10, 34, 34)`` and labels int64 ``(N,)``.

    Files are ordered by (digit, file name).  The first call converts every file with
    :func:`read_nmnist_events` + :func:`events_to_frames` and caches the result (bit-packed)
    in ``<data_dir>/nmnist/cache/<split>-frames-v1.npz``; later calls reuse the cache only
    while its file count and fingerprint (relative names + sizes) match the folder.
    Missing data raises :class:`FileNotFoundError` (or is fetched if ``download``).
    ``write_cache=False`` reads a valid cache but writes none: the folder is only read.
    """
    folder = _nmnist_folder(data_dir)
    split = _SPLITS[bool(train)]
    try:
        files = _split_files(folder, split)
    except FileNotFoundError:
        if not download:
            raise
        fetch_nmnist(data_dir, progress=progress)
        files = _split_files(folder, split)
    fingerprint = _fingerprint(folder / split, files)
    cache = folder / "cache" / f"{split.lower()}-frames-v{_CACHE_VERSION}.npz"
    labels = np.array([digit for digit, _ in files], dtype=np.int64)
    cached, why = _read_cache(cache, labels, fingerprint)
    if cached is None:
        if why and progress:
            print(f"nsm: {why}; rebuilding it", file=sys.stderr)
        frames = np.zeros((len(files), N_FRAMES, NMNIST_SIZE, NMNIST_SIZE), dtype=np.uint8)
        for i, (_, q) in enumerate(
            tqdm(files, desc=f"N-MNIST {split}", unit="file", disable=not progress, leave=False)
        ):
            frames[i] = events_to_frames(**read_nmnist_events(q))

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    version=np.int64(_CACHE_VERSION),
                    n_files=np.int64(len(files)),
                    fingerprint=np.str_(fingerprint),
                    labels=labels,
                    frames_packed=np.packbits(frames, axis=-1),
                )

        if write_cache:
            make_folder(cache.parent)
            check_replaceable(cache)  # a symlink there is never written through or replaced
            atomic_write(cache, write)
        cached = frames, labels
    return torch.from_numpy(cached[0]), torch.from_numpy(cached[1])


def _unzip(zip_path: Path, work: Path, split: str) -> None:
    """Unpack the regular-file members under ``split/`` (or ``<digit>/``) into ``work``, each
    within :data:`NMNIST_MAX_FILE_BYTES` and all within the split's total bound; members with
    unsafe names (absolute, ``..``) and links are skipped."""
    total_bound, total = NMNIST_MAX_SPLIT_BYTES.get(split, 4 << 30), 0
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip gives none
            if (
                info.is_dir()
                or not parts
                or info.filename.startswith("/")
                or any(p in ("", ".", "..") for p in parts)
                or parts[0] not in (split, *map(str, range(10)))
                or kind not in (0, stat.S_IFREG)
            ):
                continue
            shown = f"{zip_path}:{info.filename}"
            if info.file_size > NMNIST_MAX_FILE_BYTES:
                raise too_big(shown, NMNIST_MAX_FILE_BYTES, f"declares {info.file_size} bytes:")
            dest = work.joinpath(*parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(dest, "wb") as out:
                total += copy_bounded(src, out, NMNIST_MAX_FILE_BYTES, shown)
            if total > total_bound:
                raise too_big(str(zip_path), total_bound, "unpacks to")


def _extract(zip_path: Path, folder: Path, split: str) -> None:
    """Unzip into a temp dir inside ``folder``, then rename its ``split`` folder into place."""
    work = new_part_folder(folder, split)  # removed by the next fetch if this process is killed
    try:
        try:
            _unzip(zip_path, work, split)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
            raise DataError(f"{zip_path}: not a readable zip archive ({exc}). {_manual(folder)}") from exc
        src = work / split
        if not src.is_dir() and (work / "0").is_dir():  # digit folders at the top level
            src = work
        if not src.is_dir():
            raise DataError(
                f"{zip_path}: expected a folder {split}/ (or digit folders) in "
                f"the archive, found {sorted(p.name for p in work.iterdir())}"
            )
        if not os.path.lexists(folder / split):  # never replace what appeared meanwhile
            os.rename(src, folder / split)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fetch_nmnist(data_dir: str | os.PathLike | None = None, *, timeout: float = 10.0, progress: bool = True) -> Path:
    """Download and unzip Train.zip / Test.zip into ``<data_dir>/nmnist``; return that folder.

    A split whose folder already exists is left alone (never overwritten).  Archives come
    from :data:`NMNIST_ARCHIVES` and are md5-checked; a failed download raises
    :class:`RuntimeError` with instructions for doing it by hand, one sending more than
    :data:`NMNIST_ARCHIVE_BYTES` a :class:`DataError`.  Temporary files and extraction folders
    that a killed fetch left are removed first.
    """
    folder = _nmnist_folder(data_dir)
    for path in remove_leftovers(folder):
        if progress:
            print(f"nsm: removed {path}, left by a fetch that was killed", file=sys.stderr)
    with fetch_folder(folder):
        for split, (url, md5) in NMNIST_ARCHIVES.items():
            if check_folder(folder) and check_folder(folder / split):  # else a DataError naming it
                continue
            fd, tmp = new_part(folder, f".{split}.", ".zip.part")
            try:
                try:
                    with os.fdopen(fd, "wb") as out:
                        _download(url, out, timeout, progress, max_bytes=NMNIST_ARCHIVE_BYTES[split])
                except (OSError, http.client.HTTPException, urllib.error.URLError) as exc:
                    reason = getattr(exc, "reason", None) or exc
                    raise RuntimeError(
                        f"cannot fetch N-MNIST {split}.zip from {url}: {reason}. {_manual(folder)}"
                    ) from exc
                except DataError as exc:  # more than the archive can hold
                    raise DataError(f"N-MNIST {split}.zip: {exc}. {_manual(folder)}") from exc
                h = hashlib.md5()
                with open(tmp, "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        h.update(chunk)
                if h.hexdigest() != md5:
                    raise DataError(
                        f"{url}: md5 mismatch for {split}.zip: expected {md5}, found {h.hexdigest()}. {_manual(folder)}"
                    )
                _extract(tmp, folder, split)
            finally:
                tmp.unlink(missing_ok=True)
    return folder
