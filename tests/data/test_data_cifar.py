"""Tests for nsm.data.cifar on format-exact fake batches (pickle protocol 2), offline."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import stat
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from nsm.data import cifar as cifar_mod
from nsm.data.cifar import CIFAR, fetch_cifar, load_cifar, read_batch
from nsm.data.idx import DataError

N = 3  # images per fake batch


def batch(n: int = N, seed: int = 0, **labels) -> dict:
    """A batch dict as the official files hold it: bytes keys, uint8 (n, 3072) data."""
    rng = np.random.default_rng(seed)
    out = {
        b"batch_label": b"training batch 1 of 5",
        b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
        b"filenames": [b"img_%d.png" % i for i in range(n)],
    }
    out.update({key.encode(): value for key, value in labels.items()})
    return out


def dump(obj) -> bytes:
    return pickle.dumps(obj, protocol=2)


def fake_files(num_classes: int) -> dict[str, bytes]:
    """File name -> pickled bytes for every file of the official layout."""
    spec = CIFAR[num_classes]
    files = {}
    for i, name in enumerate([*spec["train"], *spec["test"]]):
        if num_classes == 10:
            files[name] = dump(batch(seed=i, labels=[(i + k) % 10 for k in range(N)]))
        else:
            files[name] = dump(batch(seed=i, fine_labels=[99, 0, 42][:N], coarse_labels=[19, 0, 7][:N]))
    meta = (
        {b"label_names": [b"airplane"]}
        if num_classes == 10
        else {b"fine_label_names": [b"apple"], b"coarse_label_names": [b"fish"]}
    )
    files[spec["meta"]] = dump(meta)
    return files


def write_files(data_dir: Path, num_classes: int, files: dict[str, bytes]) -> Path:
    spec = CIFAR[num_classes]
    folder = data_dir / spec["folder"] / spec["subdir"]
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    return folder


@pytest.fixture
def small(monkeypatch):
    """Test-only override: the fakes' split sizes replace the official 50000/10000."""
    for k, spec in CIFAR.items():
        sizes = {"train": N * len(spec["train"]), "test": N}
        monkeypatch.setitem(CIFAR, k, dict(spec, sizes=sizes))


def test_cifar10_channel_order(small, tmp_path):
    files = fake_files(10)
    write_files(tmp_path, 10, files)
    x, y = load_cifar(tmp_path, train=True)
    assert x.shape == (5 * N, 3, 32, 32) and x.dtype == torch.uint8 and x.is_contiguous()
    assert y.dtype == torch.int64 and y.tolist()[:N] == [0, 1, 2] and y.tolist()[-N:] == [4, 5, 6]
    rows = [pickle.loads(files[f"data_batch_{i}"], encoding="bytes")[b"data"] for i in range(1, 6)]
    # image 1 of batch 2, pixel (row 5, col 7): red at 5*32+7, green 1024 later, blue 2048 later
    flat = rows[1][1]
    assert [int(v) for v in x[N + 1, :, 5, 7]] == [flat[167], flat[1024 + 167], flat[2048 + 167]]
    assert np.array_equal(x.numpy().reshape(5 * N, 3072), np.concatenate(rows))
    xt, yt = load_cifar(tmp_path, train=False)
    assert xt.shape == (N, 3, 32, 32) and yt.tolist() == [5, 6, 7]


def test_cifar100_fine_and_coarse(small, tmp_path):
    write_files(tmp_path, 100, fake_files(100))
    _, fine = load_cifar(tmp_path, train=True, num_classes=100)
    _, coarse = load_cifar(tmp_path, train=False, num_classes=100, label="coarse")
    assert fine.tolist() == [99, 0, 42] and coarse.tolist() == [19, 0, 7]
    with pytest.raises(ValueError, match="'fine', 'coarse'"):
        load_cifar(tmp_path, num_classes=100, label="medium")
    with pytest.raises(ValueError, match="'fine'"):
        load_cifar(tmp_path, num_classes=10, label="coarse")
    with pytest.raises(ValueError, match="10 or 100"):
        load_cifar(tmp_path, num_classes=20)


def test_official_size_checked(tmp_path):
    write_files(tmp_path, 10, fake_files(10))
    with pytest.raises(DataError, match="expected 10000 test images") as err:
        load_cifar(tmp_path, train=False)
    assert "test_batch" in str(err.value)


def test_missing_names_download(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_cifar(tmp_path, train=True, num_classes=100)
    msg = str(err.value)
    assert str(tmp_path / "cifar100" / "cifar-100-python") in msg and "train" in msg
    assert CIFAR[100]["url"] in msg and CIFAR[100]["md5"] in msg
    assert str(tmp_path / "cifar100" / "cifar-100-python.tar.gz") in msg


# ------------------------------------------------------- safe unpickling


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > evil.txt",))


@pytest.mark.parametrize(
    "case",
    [
        "truncated",
        "garbage",
        "os.system",
        "nested",
        "not dict",
        "no data",
        "wrong shape",
        "float data",
        "labels short",
        "label range",
    ],
)
def test_bad_batches(tmp_path, case):
    good = batch(labels=[1, 2, 3])
    raw = {
        "truncated": dump(good)[:-40],
        "garbage": b"\x80\x02this is not a pickle",
        "os.system": dump(Evil()),
        "nested": dump({**good, b"filenames": [Evil()]}),
        "not dict": dump([1, 2]),
        "no data": dump({b"labels": [1, 2, 3]}),
        "wrong shape": dump({**good, b"data": np.zeros((3, 1024), np.uint8)}),
        "float data": dump({**good, b"data": np.zeros((3, 3072))}),
        "labels short": dump({**good, b"labels": [1, 2]}),
        "label range": dump({**good, b"labels": [1, 2, 10]}),
    }[case]
    path = tmp_path / "data_batch_1"
    path.write_bytes(raw)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(DataError) as err:
            read_batch(path)
    finally:
        os.chdir(cwd)
    msg = str(err.value)
    assert str(path) in msg
    assert not (tmp_path / "evil.txt").exists()
    if case in ("os.system", "nested"):
        assert "refusing" in msg and "system" in msg
    if case in ("no data", "wrong shape", "float data"):
        assert "b'data'" in msg
    if case in ("labels short", "label range"):
        assert "b'labels'" in msg


def test_read_batch_ok_and_empty_bytes(tmp_path):
    path = tmp_path / "b"
    path.write_bytes(dump({**batch(labels=[0, 9, 5]), b"batch_label": b""}))
    data, labels = read_batch(path)
    assert data.shape == (N, 3, 32, 32) and data.dtype == np.uint8
    assert labels[b"labels"].tolist() == [0, 9, 5]


class Py2Pickler(pickle._Pickler):
    """Writes protocol 2 as Python 2's cPickle did for the official files: str as STRING."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        head = (
            pickle.SHORT_BINSTRING + bytes([len(data)])
            if len(data) < 256
            else pickle.BINSTRING + struct.pack("<i", len(data))
        )
        self.write(head + data)
        self.memoize(obj)

    dispatch[str] = dispatch[bytes] = save_py2_str


def test_python2_style_pickle(tmp_path):
    """As the official files: numpy.core.multiarray._reconstruct, strings as py2 str."""
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(batch(n=2, labels=[7, 3]))
    raw = buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"cnumpy.core.multiarray\n_reconstruct" in raw and b"_codecs" not in raw
    (tmp_path / "b").write_bytes(raw)
    data, labels = read_batch(tmp_path / "b")
    want = batch(n=2)[b"data"]
    assert np.array_equal(data.reshape(2, 3072), want) and labels[b"labels"].tolist() == [7, 3]


def op_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_int(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def op_text(text: str) -> bytes:
    return b"X" + struct.pack("<I", len(text)) + text.encode()


def op_bytes(raw: bytes) -> bytes:
    return b"U" + bytes([len(raw)]) + raw  # SHORT_BINSTRING: bytes under encoding="bytes"


def op_dtype(code: str) -> bytes:
    return op_global("numpy", "dtype") + op_text(code) + b"\x89\x88\x87R"  # dtype(code, False, True)


RECONSTRUCT = op_global("numpy._core.multiarray", "_reconstruct")
EMPTY_ARRAY = RECONSTRUCT + op_global("numpy", "ndarray") + op_int(0) + b"\x85" + op_bytes(b"b") + b"\x87R"


def array_state(shape: tuple[int, ...], code: str, raw: bytes) -> bytes:
    """BUILD (1, shape, dtype(code), False, raw) on the array on the stack."""
    return b"(" + op_int(1) + b"".join(map(op_int, shape)) + b"\x86" + op_dtype(code) + b"\x89" + op_bytes(raw) + b"tb"


@pytest.mark.parametrize(
    ("case", "why"),
    [  # tiny pickles naming only allowed globals, each calling one of them as no CIFAR file does
        ("ndarray of objects", "numpy.dtype('O')"),  # 59 bytes allocated 2.1 GB of None
        ("ndarray called", "a call of numpy.ndarray"),
        ("reconstruct args", "_reconstruct("),
        ("too many elements", "more than a CIFAR file holds (184320000)"),
        ("string dtype", "numpy.dtype('S5')"),
        ("data missing", "whose data is 3 bytes"),
    ],
)
def test_allowed_globals_only_as_numpy_uses_them(tmp_path, case, why):
    body = {
        "ndarray of objects": op_global("numpy", "ndarray") + op_int(1000) + b"\x85" + op_dtype("O") + b"\x86R",
        "ndarray called": op_global("numpy", "ndarray") + op_int(1000) + b"\x85" + op_dtype("u1") + b"\x86R",
        "reconstruct args": RECONSTRUCT + op_global("numpy", "ndarray") + op_int(10**6) + b"\x85" + op_bytes(b"b"),
        "too many elements": EMPTY_ARRAY + array_state((10**6, 3072), "u1", b""),
        "string dtype": EMPTY_ARRAY + array_state((2,), "S5", bytes(10)),
        "data missing": EMPTY_ARRAY + array_state((2, 3072), "u1", b"abc"),
    }[case]
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x02" + body + (b"\x87R" if case == "reconstruct args" else b"") + b".")
    with pytest.raises(DataError) as err:
        read_batch(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: refusing to unpickle") and why in msg, msg
    assert cifar_mod.CIFAR_MAX_ELEMENTS == 60000 * 3072


def test_plain_arrays_still_read(tmp_path):
    """The checks let numpy's own pickles of plain arrays through, in any field."""
    path = tmp_path / "b"
    extra = {b"mean": np.arange(4, dtype=np.float32), b"ids": np.arange(3, dtype=np.int64)}
    path.write_bytes(dump({**batch(labels=[0, 1, 2]), **extra}))
    data, labels = read_batch(path)
    assert type(data) is np.ndarray and data.flags.writeable and labels[b"labels"].tolist() == [0, 1, 2]
    assert np.dtype("u1").byteorder == "|"  # numpy's own dtype untouched by the state set on the copy


# ------------------------------------------------------------- fetch, offline


def make_tgz(num_classes: int, files: dict[str, bytes], hostile: bool = True) -> bytes:
    subdir = CIFAR[num_classes]["subdir"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, raw in files.items():
            info = tarfile.TarInfo(f"{subdir}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
        if hostile:
            for bad in ("../evil", "/tmp/evil-abs", f"{subdir}/../../evil2"):
                info = tarfile.TarInfo(bad)
                info.size = 4
                tar.addfile(info, io.BytesIO(b"evil"))
    return buf.getvalue()


@pytest.fixture
def serve(small, monkeypatch):
    """Serve ``archive`` through a monkeypatched ``_download`` for CIFAR-``k``; record URLs."""
    calls = []

    def set_archive(k: int, archive: bytes, md5: str | None = None):
        monkeypatch.setitem(CIFAR, k, dict(CIFAR[k], md5=md5 or hashlib.md5(archive).hexdigest()))
        monkeypatch.setattr(
            cifar_mod, "_download", lambda url, dest, t, p, max_bytes=None: (calls.append(url), dest.write(archive))
        )
        return calls

    return set_archive


@pytest.mark.parametrize("k", [10, 100])
def test_fetch_extracts_safely(serve, tmp_path, k):
    files = fake_files(k)
    calls = serve(k, make_tgz(k, {**files, "readme.html": b"<html>"}))
    x, y = load_cifar(tmp_path / "d", train=False, num_classes=k, download=True)
    assert calls == [CIFAR[k]["url"]] and x.shape == (N, 3, 32, 32)
    root = tmp_path / "d" / CIFAR[k]["folder"]
    assert os.listdir(root) == [CIFAR[k]["subdir"]]  # archive and temp files gone
    assert sorted(os.listdir(root / CIFAR[k]["subdir"])) == sorted(files)
    assert not list(tmp_path.rglob("*evil*"))


def test_fetch_wrong_md5_and_unreachable(serve, monkeypatch, tmp_path):
    serve(10, make_tgz(10, fake_files(10)), md5="0" * 32)
    with pytest.raises(DataError, match="md5 mismatch") as err:
        fetch_cifar(10, tmp_path, progress=False)
    assert CIFAR[10]["url"] in str(err.value) and "0" * 32 in str(err.value)
    assert not (tmp_path / "cifar10").exists()  # no archive, temp file or empty folder left

    def unreachable(url, dest, timeout, progress, max_bytes=None):
        raise OSError("Name or service not known")

    monkeypatch.setattr(cifar_mod, "_download", unreachable)
    with pytest.raises(FileNotFoundError, match="Name or service not known") as err:
        fetch_cifar(10, tmp_path, progress=False)
    assert CIFAR[10]["url"] in str(err.value)


def test_fetch_local_archive_symlink_and_keep(serve, tmp_path):
    files = fake_files(10)
    archive = make_tgz(10, files)
    calls = serve(10, archive)
    root = tmp_path / "cifar10"
    folder = write_files(tmp_path, 10, {"test_batch": b"mine"})  # a user file: left alone
    (root / "cifar-10-python.tar.gz").write_bytes(archive)
    assert fetch_cifar(10, tmp_path, progress=False) == folder
    assert calls == [] and (root / "cifar-10-python.tar.gz").read_bytes() == archive
    assert (folder / "test_batch").read_bytes() == b"mine"
    assert (folder / "data_batch_3").read_bytes() == files["data_batch_3"]
    # a member that is a symlink is refused
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, raw in fake_files(100).items():
            if name != "meta":
                info = tarfile.TarInfo(f"cifar-100-python/{name}")
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
        info = tarfile.TarInfo("cifar-100-python/meta")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    serve(100, buf.getvalue())
    with pytest.raises(DataError, match="regular file"):
        fetch_cifar(100, tmp_path, progress=False)
    assert sorted(os.listdir(tmp_path / "cifar100" / "cifar-100-python")) == ["test", "train"]


def test_a_full_python3_protocol2_batch_is_within_its_bound():
    """Python 3 pickles bytes under protocol 2 as latin-1 text (a byte >= 0x80 takes two), which
    the reader supports: a full 10,000-image batch written so was refused (46 MB > 36.9 MB)."""
    raw = dump(batch(n=10000, seed=3, fine_labels=[0] * 10000, coarse_labels=[0] * 10000))
    assert len(raw) > 10000 * (3072 + 512) + (1 << 20)  # over the old bound
    assert len(raw) <= cifar_mod.file_bound(CIFAR[100], "test")


def test_fetched_files_have_the_usual_mode(serve, tmp_path):
    """mkstemp makes 0600 and placing a file by a hard link keeps it: a shared data folder was
    unreadable to its other users. Files now get 0666 & ~umask, as any new file."""
    serve(10, make_tgz(10, fake_files(10)))
    old = os.umask(0o022)
    try:
        fetch_cifar(10, tmp_path, progress=False)
    finally:
        os.umask(old)
    files = list((tmp_path / "cifar10" / "cifar-10-batches-py").iterdir())
    assert files and {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o644}


def test_an_interrupted_download_leaves_no_partial_file(small, monkeypatch, tmp_path):
    """Ctrl-C in the middle of a download left a hidden .part file (EMNIST's: up to 536 MB)."""
    import nsm.data.emnist as emnist_mod
    import nsm.data.mnist as mnist_mod

    def interrupted(url, dest, *args, **kwargs):
        dest.write(b"x" * 1000)
        raise KeyboardInterrupt

    for mod in (cifar_mod, mnist_mod, emnist_mod):
        monkeypatch.setattr(mod, "_download", interrupted)
    for fetch in (
        lambda: fetch_cifar(10, tmp_path / "c", progress=False),
        lambda: mnist_mod.fetch_mnist(tmp_path / "m", progress=False),
        lambda: emnist_mod.fetch_emnist(tmp_path / "e", progress=False),
    ):
        with pytest.raises(KeyboardInterrupt):
            fetch()
    left = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not left, left
