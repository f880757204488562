"""Fashion-MNIST (Zalando Research, 2017): where it lives, how to fetch and load it.

Format: exactly MNIST's -- four IDX files with MNIST's names and shapes, 28x28
uint8 grayscale images (60000 train, 10000 test) and uint8 labels 0..9 (T-shirt/top,
Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot), 6000
train and 1000 test images per class.

Layout: ``<data_dir>/fashion-mnist/<name>`` or ``<name>.gz`` (the raw file wins
when both exist), ``data_dir`` defaulting to :func:`~nsm.data.mnist.default_data_dir`.

Checksums: each file is checked against the md5 of its *decompressed* bytes.
The gzip streams are not canonical: Zalando publishes md5s for its ``.gz`` files
(:data:`FASHION_GZ_MD5`), but the Debian package ``dataset-fashion-mnist``
ships the same four arrays re-compressed when the package was built (gzip header
time 2020-06-05, no file name), so its ``.gz`` md5s differ while the decompressed
bytes are identical.  Checking the decompressed bytes accepts both.

Download: :func:`fetch_fashion_mnist` tries :data:`FASHION_URLS`, then, offline,
copies the files from the Debian package (:data:`LOCAL_DIRS`; install it with
``apt-get install dataset-fashion-mnist``).  Each copy is md5-verified in a
temporary file before it is moved atomically into place; present files are
verified and never overwritten.  Every file is read (decompressed) only up to its known
size (MNIST's: 47040016, 60008, 7840016 and 10008 bytes), and an entry that is not a
regular file in place of one is an error, left alone (see :mod:`nsm.data.files`).
"""

from __future__ import annotations

import http.client
import os
import urllib.error
from pathlib import Path

import torch

from .files import check_file, copy_bounded, fetch_folder, gz_bound, new_part, open_regular
from .idx import DataError, read_idx, read_raw_bytes, verify_md5
from .mnist import _download, _find, _missing_after_check, _place, _raw_size, _say, default_data_dir

__all__ = [
    "DEBIAN_PACKAGE",
    "FASHION_FILES",
    "FASHION_GZ_MD5",
    "FASHION_URLS",
    "LOCAL_DIRS",
    "fetch_fashion_mnist",
    "load_fashion_mnist",
]

#: Raw (decompressed) file name -> split, kind, md5 of the decompressed bytes, shape.
FASHION_FILES: dict[str, dict] = {
    "train-images-idx3-ubyte": {
        "split": "train",
        "kind": "images",
        "md5": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "shape": (60000, 28, 28),
    },
    "train-labels-idx1-ubyte": {
        "split": "train",
        "kind": "labels",
        "md5": "9018921c3c673c538a1fc5bad174d6f9",
        "shape": (60000,),
    },
    "t10k-images-idx3-ubyte": {
        "split": "test",
        "kind": "images",
        "md5": "8181f5470baa50b63fa0f6fddb340f0a",
        "shape": (10000, 28, 28),
    },
    "t10k-labels-idx1-ubyte": {
        "split": "test",
        "kind": "labels",
        "md5": "15d484375f8d13e6eb1aabb0c3f46965",
        "shape": (10000,),
    },
}

#: md5s Zalando publishes for its ``.gz`` files (for reference: see the module docstring).
FASHION_GZ_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

#: Official download locations, tried in order; ``{name}`` is the raw file name.
FASHION_URLS: tuple[str, ...] = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{name}.gz",)

#: Offline source: the Debian/Ubuntu package and the folder it installs ``<name>.gz`` into.
DEBIAN_PACKAGE = "dataset-fashion-mnist"
LOCAL_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)


def _folder(data_dir: str | os.PathLike | None) -> Path:
    base = data_dir if data_dir is not None else default_data_dir()
    return Path(base).expanduser() / "fashion-mnist"


def _verified_copy(folder: Path, name: str, source: str, fill) -> None:
    """Write ``<name>.gz`` to a temp file with ``fill(out)``, verify it, move it into place."""
    fd, tmp = new_part(folder, f".{name}.", ".gz.part")
    try:
        with os.fdopen(fd, "wb") as out:
            fill(out)
        info = FASHION_FILES[name]
        raw = read_raw_bytes(tmp, gzipped=True, max_bytes=_raw_size(info), name=source)
        verify_md5(source, raw, info["md5"])
        _place(tmp, folder, folder / f"{name}.gz", name)
    finally:
        tmp.unlink(missing_ok=True)


def _fetch_http(folder: Path, name: str, dead: set[str], timeout: float, progress: bool) -> bool:
    """Try each URL in :data:`FASHION_URLS` for one file; True once it is in place."""
    for template in FASHION_URLS:
        if template in dead:
            continue
        url = template.format(name=name)
        try:
            bound = gz_bound(_raw_size(FASHION_FILES[name]))
            _verified_copy(
                folder, name, url, lambda out, url=url: _download(url, out, timeout, progress, max_bytes=bound)
            )
        except (OSError, ValueError, http.client.HTTPException) as exc:  # DataError too
            if isinstance(exc, TimeoutError) or (
                isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError)
            ):
                dead.add(template)  # host unreachable: skip it for the other files
            _say(progress, f"nsm: {url}: failed ({getattr(exc, 'reason', None) or exc})")
            continue
        _say(progress, f"nsm: {url}: ok")
        return True
    return False


def _fetch_local(folder: Path, name: str, progress: bool) -> bool:
    """Copy ``<name>.gz`` from the first of :data:`LOCAL_DIRS` that holds a good copy."""
    for local in LOCAL_DIRS:
        src = Path(local) / f"{name}.gz"
        bound = gz_bound(_raw_size(FASHION_FILES[name]))
        try:
            if check_file(src) is None:
                continue
            with open_regular(src) as fh:
                _verified_copy(folder, name, str(src), lambda out, fh=fh: copy_bounded(fh, out, bound, str(src)))
        except (OSError, DataError) as exc:
            _say(progress, f"nsm: {src}: failed ({exc})")
            continue
        _say(progress, f"nsm: {src}: ok")
        return True
    return False


def _missing_message(folder: Path, names: list[str], why: str) -> str:
    urls = ", ".join(t.format(name="<name>") for t in FASHION_URLS)
    local = ", ".join(str(d) for d in LOCAL_DIRS)
    return (
        f"Fashion-MNIST files missing in {folder}: {', '.join(n + '.gz' for n in names)} "
        f"({why}). Download them from {urls} and put them (gzipped or decompressed) in "
        f"{folder}; or, offline, install the Debian package (`apt-get install "
        f"{DEBIAN_PACKAGE}`, files in {local}) and call "
        f"nsm.data.fashion.fetch_fashion_mnist() or load_fashion_mnist(download=True)"
    )


def fetch_fashion_mnist(
    data_dir: str | os.PathLike | None = None, *, timeout: float = 10.0, progress: bool = True
) -> Path:
    """Make sure the four Fashion-MNIST files are in ``<data_dir>/fashion-mnist``; return it.

    Present files are md5-verified (a corrupt one raises :class:`DataError` and is
    left alone); missing ones come from :data:`FASHION_URLS`, else from the Debian
    package's folder (:data:`LOCAL_DIRS`).  Raises :class:`FileNotFoundError`
    saying what to get and where when neither source has them.
    """
    folder = _folder(data_dir)
    missing = _missing_after_check(folder, FASHION_FILES)
    if not missing:
        return folder
    with fetch_folder(folder):
        dead: set[str] = set()
        missing = [
            name
            for name in missing
            if not _fetch_http(folder, name, dead, timeout, progress) and not _fetch_local(folder, name, progress)
        ]
        if missing:
            raise FileNotFoundError(
                _missing_message(
                    folder, missing, "the download failed and no good copy of the Debian package's files was found"
                )
            )
    return folder


def load_fashion_mnist(
    data_dir: str | os.PathLike | None = None, train: bool = True, *, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one Fashion-MNIST split: images uint8 ``(N, 28, 28)``, labels int64 ``(N,)``.

    Missing files are fetched with :func:`fetch_fashion_mnist` when ``download`` is
    true; otherwise (or when fetching is impossible) :class:`FileNotFoundError`
    says what to download and where.  Files are checked against their md5 and shape.
    """
    folder = _folder(data_dir)
    split = "train" if train else "test"
    names = {info["kind"]: name for name, info in FASHION_FILES.items() if info["split"] == split}
    missing = [name for name in names.values() if _find(folder, name) is None]
    if missing:
        if not download:
            raise FileNotFoundError(_missing_message(folder, missing, "download=False"))
        fetch_fashion_mnist(data_dir)
    arrays = {}
    for kind, name in names.items():
        info = FASHION_FILES[name]
        arrays[kind] = read_idx(
            _find(folder, name), expected_md5=info["md5"], expected_shape=info["shape"], max_bytes=_raw_size(info)
        )
    return torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["labels"]).to(torch.int64)
