"""Tests for nsm.data.fashion: Fashion-MNIST fetching (offline, fakes) and the real files."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from nsm.data import fashion as fashion_mod
from nsm.data.fashion import FASHION_FILES, fetch_fashion_mnist, load_fashion_mnist
from nsm.data.idx import DataError, read_raw_bytes

#: md5 of the decompressed official files, as measured on them (see the module docstring).
REAL_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX."""
    arr = np.asarray(arr, dtype=np.uint8)
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


# ------------------------------------------------------------- fakes, offline


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """Tiny stand-in files; table, URLs and the Debian folder patched to never hit the net."""
    rng = np.random.default_rng(1)
    raws, table = {}, {}
    for name, info in FASHION_FILES.items():
        n = 3 if info["split"] == "train" else 2
        shape = (n, 28, 28) if info["kind"] == "images" else (n,)
        raws[name] = idx_bytes(rng.integers(0, 256 if len(shape) > 1 else 10, shape))
        table[name] = dict(info, md5=hashlib.md5(raws[name]).hexdigest(), shape=shape)
    monkeypatch.setattr(fashion_mod, "FASHION_FILES", table)
    monkeypatch.setattr(fashion_mod, "FASHION_URLS", ((tmp_path / "nowhere").as_uri() + "/{name}.gz",))
    monkeypatch.setattr(fashion_mod, "LOCAL_DIRS", (tmp_path / "no-debian",))
    return raws


def test_missing_no_download(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_fashion_mnist(tmp_path, train=False, download=False)
    msg = str(err.value)
    assert str(tmp_path / "fashion-mnist") in msg
    assert "t10k-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert "fashion-mnist.s3-website.eu-central-1.amazonaws.com" in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert not (tmp_path / "fashion-mnist").exists()


def test_fetch_impossible(fake, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_fashion_mnist(tmp_path / "data", download=True)
    msg = str(err.value)
    assert str(tmp_path / "data" / "fashion-mnist") in msg and "dataset-fashion-mnist" in msg
    assert all(f"{name}.gz" in msg for name in fake)
    assert not (tmp_path / "data").exists()  # no temp files left, nor the empty folders it made


def test_fetch_http_then_debian(fake, monkeypatch, tmp_path, capsys):
    mirror, debian = tmp_path / "mirror", tmp_path / "debian"
    for name, raw in fake.items():
        write(debian / f"{name}.gz", raw)
    write(mirror / "train-images-idx3-ubyte.gz", fake["train-images-idx3-ubyte"])
    write(mirror / "train-labels-idx1-ubyte.gz", fake["train-labels-idx1-ubyte"][:-1])  # bad
    monkeypatch.setattr(fashion_mod, "FASHION_URLS", (mirror.as_uri() + "/{name}.gz",))
    monkeypatch.setattr(fashion_mod, "LOCAL_DIRS", (tmp_path / "empty", debian))
    folder = fetch_fashion_mnist(tmp_path / "data")
    assert folder == tmp_path / "data" / "fashion-mnist"
    assert sorted(os.listdir(folder)) == sorted(f"{n}.gz" for n in fake)
    for name, raw in fake.items():
        assert read_raw_bytes(folder / f"{name}.gz") == raw
    err = capsys.readouterr().err
    assert err.count("md5 mismatch") == 1 and f"{mirror.as_uri()}/train-images" in err
    assert err.count(f"{debian}") == 3  # the three files the mirror could not give
    x, y = load_fashion_mnist(tmp_path / "data", train=True, download=False)
    assert x.shape == (3, 28, 28) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert x.numpy().tobytes() == fake["train-images-idx3-ubyte"][16:]


def test_fetch_skips_corrupt_debian_copy(fake, monkeypatch, tmp_path):
    debian = tmp_path / "debian"
    for name, raw in fake.items():
        write(debian / f"{name}.gz", raw)
    (debian / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not gzip")
    monkeypatch.setattr(fashion_mod, "LOCAL_DIRS", (debian,))
    with pytest.raises(FileNotFoundError) as err:
        fetch_fashion_mnist(tmp_path / "data", progress=False)
    assert "t10k-labels-idx1-ubyte.gz" in str(err.value)
    assert "train-images-idx3-ubyte.gz" not in str(err.value)
    folder = tmp_path / "data" / "fashion-mnist"
    want = [f"{n}.gz" for n in fake if n != "t10k-labels-idx1-ubyte"]
    assert sorted(os.listdir(folder)) == sorted(want)


def test_present_corrupt_not_overwritten(fake, monkeypatch, tmp_path):
    debian = tmp_path / "debian"
    for name, raw in fake.items():
        write(debian / f"{name}.gz", raw)
    monkeypatch.setattr(fashion_mod, "LOCAL_DIRS", (debian,))
    bad = write(tmp_path / "data" / "fashion-mnist" / "train-labels-idx1-ubyte", b"\0\0\x08\x01x")
    with pytest.raises(DataError) as err:
        fetch_fashion_mnist(tmp_path / "data", progress=False)
    assert str(bad) in str(err.value) and "md5 mismatch" in str(err.value)
    assert bad.read_bytes() == b"\0\0\x08\x01x" and os.listdir(bad.parent) == [bad.name]


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_truncated_file_names_it(tmp_path, suffix):
    """A format-exact file cut short fails its md5 check, whose message names the file."""
    folder = tmp_path / "fashion-mnist"
    labels = idx_bytes(np.arange(10000) % 10)
    write(folder / f"t10k-labels-idx1-ubyte{suffix}", labels)
    cut = write(folder / f"t10k-images-idx3-ubyte{suffix}", idx_bytes(np.zeros((10000, 28, 28)))[:-100])
    with pytest.raises(DataError) as err:
        load_fashion_mnist(tmp_path, train=False, download=False)
    assert str(cut) in str(err.value) and "md5 mismatch" in str(err.value)


def test_truncated_file_with_own_table(fake, tmp_path):
    """With the md5 out of the way, the IDX reader names the file and says it is truncated."""
    name = "t10k-images-idx3-ubyte"
    raw = fake[name][:-5]
    fashion_mod.FASHION_FILES[name]["md5"] = hashlib.md5(raw).hexdigest()
    write(tmp_path / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz", fake["t10k-labels-idx1-ubyte"])
    cut = write(tmp_path / "fashion-mnist" / f"{name}.gz", raw)
    with pytest.raises(DataError, match="truncated") as err:
        load_fashion_mnist(tmp_path, train=False, download=False)
    assert str(cut) in str(err.value)
    (tmp_path / "fashion-mnist" / f"{name}.gz").write_bytes(gzip.compress(raw)[:-9])
    with pytest.raises(DataError, match="gzip") as err:
        load_fashion_mnist(tmp_path, train=False, download=False)
    assert str(cut) in str(err.value)


# ------------------------------------------------------------- the real files


def test_real_md5(fashion_dir):
    folder = fashion_dir / "fashion-mnist"
    assert {name: info["md5"] for name, info in FASHION_FILES.items()} == REAL_MD5
    for name, md5 in REAL_MD5.items():
        path = folder / name if (folder / name).is_file() else folder / f"{name}.gz"
        assert hashlib.md5(read_raw_bytes(path)).hexdigest() == md5, path


@pytest.mark.parametrize("train,n,first", [(True, 60000, 9), (False, 10000, 9)])
def test_real_split(fashion_dir, train, n, first):
    x, y = load_fashion_mnist(fashion_dir, train=train, download=False)
    assert x.shape == (n, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (n,) and y.dtype == torch.int64
    assert torch.bincount(y, minlength=10).tolist() == [n // 10] * 10
    assert int(y[0]) == first  # ankle boot, in both splits
    assert int(x.min()) == 0 and int(x.max()) == 255
