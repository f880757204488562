"""EMNIST (Cohen, Afshar, Tapson & van Schaik, 2017): locate, fetch and load its splits.

Format: MNIST's IDX format, 28x28 uint8 images and uint8 labels, six splits
(:data:`EMNIST_SPLITS`: classes and train/test sizes).  Labels run 0..C-1, except
``letters``, whose files label the 26 letters 1..26; they are mapped to 0..25.

Orientation: EMNIST stores every image transposed with respect to MNIST (row-major
reading gives the character mirrored along its diagonal).  :func:`load_emnist`
transposes each image back, so that characters are upright like MNIST digits.

Layout: the official archive ``gzip.zip`` (:data:`EMNIST_URL`, md5 :data:`EMNIST_MD5`,
:data:`EMNIST_BYTES` bytes, about 536 MiB) unpacks to
``gzip/emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte.gz``; nsm uses
``<data_dir>/emnist/gzip/`` (decompressed files, without ``.gz``, win when both exist).  No
md5 is published per file; each file's image count is checked against the official size,
and a disagreement raises :class:`DataError`.

Download: :func:`fetch_emnist` takes ``<data_dir>/emnist/gzip.zip`` if it is there (put it
there yourself to work offline), else downloads it (a server sending more than
:data:`EMNIST_BYTES` is cut off there, naming the URL and the size); the archive is
md5-verified, then only the requested split's files are extracted, each through a temporary
file moved atomically into place.  Present files are never overwritten; the archive is kept
(``keep_archive``) so that other splits need no second download.  The temporary files of a
fetch that was killed are removed by the next one.

Sizes: every file's size follows from the split's official image count (images
``16 + 784 n`` bytes, labels ``8 + n``); a file, an archive member or a decompressed
stream past that is refused with :class:`DataError` naming it and the bound, before more
is read.  An entry that is not a regular file in place of a file (or of ``gzip.zip``) is
an error, left alone (see :mod:`nsm.data.files`).
"""

from __future__ import annotations

import http.client
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from .files import check_file, copy_bounded, fetch_folder, gz_bound, new_part, place_new, remove_leftovers, too_big
from .idx import DataError, idx_size, md5_file, read_idx
from .mnist import _download, _find, _place, _say, default_data_dir

__all__ = ["EMNIST_BYTES", "EMNIST_MD5", "EMNIST_SPLITS", "EMNIST_URL", "emnist_files", "fetch_emnist", "load_emnist"]

EMNIST_URL = "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip"
EMNIST_MD5 = "58c8d27c78d21e728a6bc7b3cc06412e"
#: The size of the official ``gzip.zip`` in bytes: a download is cut off past it.
EMNIST_BYTES = 561753746
ARCHIVE_NAME = "gzip.zip"
MEMBER_DIR = "gzip"

#: split -> number of classes and official (train, test) sizes.
EMNIST_SPLITS: dict[str, dict] = {
    "byclass": {"classes": 62, "sizes": (697932, 116323)},
    "bymerge": {"classes": 47, "sizes": (697932, 116323)},
    "balanced": {"classes": 47, "sizes": (112800, 18800)},
    "letters": {"classes": 26, "sizes": (124800, 20800)},
    "digits": {"classes": 10, "sizes": (240000, 40000)},
    "mnist": {"classes": 10, "sizes": (60000, 10000)},
}
_FIRST_LABEL = {"letters": 1}  # files' label of class 0


def _check_split(split: str) -> None:
    if split not in EMNIST_SPLITS:
        raise ValueError(f"unknown EMNIST split {split!r}; expected one of {', '.join(EMNIST_SPLITS)}")


def emnist_files(split: str, train: bool) -> dict[str, str]:
    """``{"images": name, "labels": name}``: the split's decompressed file names."""
    _check_split(split)
    part = "train" if train else "test"
    return {"images": f"emnist-{split}-{part}-images-idx3-ubyte", "labels": f"emnist-{split}-{part}-labels-idx1-ubyte"}


def _raw_sizes(split: str, train: bool) -> dict[str, int]:
    """``{file name: bytes decompressed}`` from the split's official image count."""
    n = EMNIST_SPLITS[split]["sizes"][0 if train else 1]
    names = emnist_files(split, train)
    return {names["images"]: idx_size((n, 28, 28)), names["labels"]: idx_size((n,))}


def _root(data_dir: str | os.PathLike | None) -> Path:
    base = data_dir if data_dir is not None else default_data_dir()
    return Path(base).expanduser() / "emnist"


def _check_archive(path: Path, source: str) -> None:
    found = md5_file(path)
    if found != EMNIST_MD5:
        raise DataError(
            f"{source}: md5 mismatch: expected {EMNIST_MD5}, found {found} "
            f"(a corrupt or different {ARCHIVE_NAME}; delete it and fetch again)"
        )


def _download_archive(root: Path, timeout: float, progress: bool) -> Path:
    """Download the archive into a verified temp file in ``root``; return its path."""
    fd, tmp = new_part(root, f".{ARCHIVE_NAME}.", ".part")
    try:
        with os.fdopen(fd, "wb") as out:
            _download(EMNIST_URL, out, timeout, progress, max_bytes=EMNIST_BYTES)
        _check_archive(tmp, EMNIST_URL)
    except (OSError, ValueError, http.client.HTTPException) as exc:  # DataError too
        tmp.unlink(missing_ok=True)
        _say(progress, f"nsm: {EMNIST_URL}: failed ({getattr(exc, 'reason', None) or exc})")
        if isinstance(exc, DataError):
            raise
        raise FileNotFoundError(
            _missing_message(root, None, f"downloading it failed: {getattr(exc, 'reason', None) or exc}")
        ) from exc
    except BaseException:  # Ctrl-C too: no partial 536 MB file left behind
        tmp.unlink(missing_ok=True)
        raise
    _say(progress, f"nsm: {EMNIST_URL}: ok")
    return tmp


def _extract(archive: Path, folder: Path, names: dict[str, int]) -> None:
    """Copy the members ``gzip/<name>.gz`` of ``archive`` into ``folder``, one by one.

    ``names`` maps each name to its decompressed size: a member whose declared or actual
    (compressed) size exceeds what a gzip stream of that size can take is refused.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            for name, raw_size in names.items():
                member = f"{MEMBER_DIR}/{name}.gz"
                try:
                    info = zf.getinfo(member)
                except KeyError:
                    raise DataError(f"{archive}: expected a member {member!r}, found none") from None
                shown, bound = f"{archive}:{member}", gz_bound(raw_size)
                if info.file_size > bound:
                    raise too_big(shown, bound, f"declares {info.file_size} bytes:")
                fd, tmp = new_part(folder, f".{name}.", ".gz.part")
                try:
                    with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                        copy_bounded(src, out, bound, shown)  # zipfile checks the CRC
                    _place(tmp, folder, folder / f"{name}.gz", name)
                finally:
                    tmp.unlink(missing_ok=True)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise DataError(f"{archive}: expected a readable zip archive, found: {exc}") from exc


def fetch_emnist(
    data_dir: str | os.PathLike | None = None,
    split: str | Iterable[str] = "letters",
    *,
    timeout: float = 60.0,
    progress: bool = True,
    keep_archive: bool = True,
) -> Path:
    """Make sure ``split``'s (or each of the splits') four files are present; return their folder.

    Uses ``<data_dir>/emnist/gzip.zip`` when present, else downloads it from
    :data:`EMNIST_URL`; a wrong md5, or a server sending more than :data:`EMNIST_BYTES`,
    raises :class:`DataError`, an unreachable server :class:`FileNotFoundError` saying what
    to download and where.  Temporary files that a killed fetch left are removed first.
    """
    splits = [split] if isinstance(split, str) else list(split)
    for s in splits:
        _check_split(s)
    root = _root(data_dir)
    folder = root / MEMBER_DIR
    for where in (root, folder):
        for path in remove_leftovers(where):
            _say(progress, f"nsm: removed {path}, left by a fetch that was killed")
    missing = {
        name: size
        for s in splits
        for train in (True, False)
        for name, size in _raw_sizes(s, train).items()
        if _find(folder, name) is None
    }
    if not missing:
        return folder
    with fetch_folder(folder):
        archive = root / ARCHIVE_NAME
        downloaded = None
        if check_file(archive) is not None:
            _check_archive(archive, str(archive))
        else:
            archive = downloaded = _download_archive(root, timeout, progress)
        try:
            _extract(archive, folder, missing)
            if downloaded is not None and keep_archive and check_file(root / ARCHIVE_NAME) is None:
                place_new(downloaded, root / ARCHIVE_NAME)
        finally:
            if downloaded is not None:
                downloaded.unlink(missing_ok=True)
    return folder


def _missing_message(root: Path, names: list[str] | None, why: str) -> str:
    what = (
        f"EMNIST files missing in {root / MEMBER_DIR}: {', '.join(n + '.gz' for n in names)}"
        if names
        else "EMNIST is missing"
    )
    return (
        f"{what} ({why}). Download {EMNIST_URL} (md5 {EMNIST_MD5}) and either put it "
        f"at {root / ARCHIVE_NAME} and call nsm.data.emnist.fetch_emnist() or "
        f"load_emnist(download=True), or unpack it in {root} so that the files lie in "
        f"{root / MEMBER_DIR}"
    )


def load_emnist(
    data_dir: str | os.PathLike | None = None, train: bool = True, *, split: str = "letters", download: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one EMNIST split: upright images uint8 ``(N, 28, 28)``, labels int64 ``(N,)``.

    Labels run 0..C-1 (``letters``: the files' 1..26 become 0..25).  Missing files
    are fetched with :func:`fetch_emnist` when ``download`` is true; otherwise
    :class:`FileNotFoundError` says what to download and where.
    """
    _check_split(split)
    root = _root(data_dir)
    folder = root / MEMBER_DIR
    names = emnist_files(split, train)
    missing = [name for name in names.values() if _find(folder, name) is None]
    if missing:
        if not download:
            raise FileNotFoundError(_missing_message(root, missing, "download=False"))
        fetch_emnist(data_dir, split)
    info = EMNIST_SPLITS[split]
    n = info["sizes"][0 if train else 1]
    sizes = _raw_sizes(split, train)
    images = read_idx(_find(folder, names["images"]), expected_shape=(n, 28, 28), max_bytes=sizes[names["images"]])
    label_path = _find(folder, names["labels"])
    labels = read_idx(label_path, expected_shape=(n,), max_bytes=sizes[names["labels"]]).astype(np.int64)
    first = _FIRST_LABEL.get(split, 0)
    if labels.size and (labels.min() < first or labels.max() >= first + info["classes"]):
        raise DataError(
            f"{label_path}: expected labels in {first}..{first + info['classes'] - 1}"
            f" for EMNIST {split}, found {labels.min()}..{labels.max()}"
        )
    images = np.ascontiguousarray(images.transpose(0, 2, 1))  # stored transposed: make upright
    return torch.from_numpy(images), torch.from_numpy(labels - first)
