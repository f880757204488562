"""Tests for nsm.data.emnist on format-exact fake files in the official layout (offline)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from nsm.data import emnist as emnist_mod
from nsm.data.emnist import EMNIST_SPLITS, emnist_files, fetch_emnist, load_emnist
from nsm.data.idx import DataError

N_TRAIN, N_TEST = 4, 3


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX."""
    arr = np.asarray(arr, dtype=np.uint8)
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def asymmetric(k: int) -> np.ndarray:
    """A 28x28 image as EMNIST stores it: stored[r, c] = 0 except a bar in row k."""
    img = np.zeros((28, 28), dtype=np.uint8)
    img[k, :] = np.arange(1, 29)  # upright, this is a bar in column k
    return img


def split_files(split: str, label_base: int = 0) -> dict[str, bytes]:
    """Decompressed IDX bytes of ``split``'s four files (train N_TRAIN, test N_TEST)."""
    out = {}
    for train, n in ((True, N_TRAIN), (False, N_TEST)):
        names = emnist_files(split, train)
        out[names["images"]] = idx_bytes(np.stack([asymmetric(i) for i in range(n)]))
        out[names["labels"]] = idx_bytes(np.arange(n) % EMNIST_SPLITS[split]["classes"] + label_base)
    return out


def write_split(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in files.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(raw))


@pytest.fixture
def small(monkeypatch):
    """Test-only override: the fakes' sizes replace the official ones for every split."""
    for split, info in EMNIST_SPLITS.items():
        monkeypatch.setitem(EMNIST_SPLITS, split, dict(info, sizes=(N_TRAIN, N_TEST)))


def test_unknown_split(tmp_path):
    for call in (lambda: load_emnist(tmp_path, split="bogus"), lambda: fetch_emnist(tmp_path, "bogus")):
        with pytest.raises(ValueError) as err:
            call()
        assert "'bogus'" in str(err.value)
        assert all(s in str(err.value) for s in EMNIST_SPLITS)


def test_official_sizes():
    sizes = {s: info["sizes"] for s, info in EMNIST_SPLITS.items()}
    assert sizes == {
        "byclass": (697932, 116323),
        "bymerge": (697932, 116323),
        "balanced": (112800, 18800),
        "letters": (124800, 20800),
        "digits": (240000, 40000),
        "mnist": (60000, 10000),
    }


def test_missing_names_download(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_emnist(tmp_path, train=True, split="digits")
    msg = str(err.value)
    assert str(tmp_path / "emnist" / "gzip") in msg and str(tmp_path / "emnist" / "gzip.zip") in msg
    assert "emnist-digits-train-images-idx3-ubyte.gz" in msg and emnist_mod.EMNIST_URL in msg
    assert not (tmp_path / "emnist").exists()


@pytest.mark.parametrize("split", ["digits", "balanced", "byclass"])
def test_load_transposes(small, tmp_path, split):
    write_split(tmp_path / "emnist" / "gzip", split_files(split))
    x, y = load_emnist(tmp_path, train=True, split=split)
    assert x.shape == (N_TRAIN, 28, 28) and x.dtype == torch.uint8 and x.is_contiguous()
    assert y.dtype == torch.int64 and y.tolist() == list(range(N_TRAIN))
    for i in range(N_TRAIN):  # the stored row i is the upright column i
        assert x[i, :, i].tolist() == list(range(1, 29))
        assert int(x[i].sum()) == sum(range(1, 29))
    assert int(x[1, 0, 1]) == 1 and int(x[1, 27, 1]) == 28 and int(x[1, 1, 0]) == 0


def test_letters_labels_shifted(small, tmp_path):
    write_split(tmp_path / "emnist" / "gzip", split_files("letters", label_base=1))
    _, y = load_emnist(tmp_path, train=False, split="letters")
    assert y.tolist() == [0, 1, 2]
    write_split(tmp_path / "emnist" / "gzip", split_files("letters", label_base=0))
    with pytest.raises(DataError, match=r"1\.\.26") as err:  # 0 is no letter
        load_emnist(tmp_path, train=False, split="letters")
    assert "emnist-letters-test-labels-idx1-ubyte.gz" in str(err.value)


def test_count_disagrees_with_official(tmp_path):
    write_split(tmp_path / "emnist" / "gzip", split_files("mnist"))
    with pytest.raises(DataError) as err:
        load_emnist(tmp_path, train=True, split="mnist")
    msg = str(err.value)
    assert "emnist-mnist-train-images-idx3-ubyte.gz" in msg and "(60000, 28, 28)" in msg
    assert f"({N_TRAIN}, 28, 28)" in msg


def test_truncated_and_corrupt(small, tmp_path):
    folder = tmp_path / "emnist" / "gzip"
    files = split_files("digits")
    name = emnist_files("digits", True)["images"]
    files[name] = files[name][:-30]
    write_split(folder, files)
    with pytest.raises(DataError, match="truncated") as err:
        load_emnist(tmp_path, split="digits")
    assert str(folder / f"{name}.gz") in str(err.value)
    (folder / f"{name}.gz").write_bytes(gzip.compress(files[name])[:-12])
    with pytest.raises(DataError, match="gzip") as err:
        load_emnist(tmp_path, split="digits")
    assert str(folder / f"{name}.gz") in str(err.value)


# ------------------------------------------------------------- fetch, offline


def make_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, raw in files.items():
            zf.writestr(f"gzip/{name}.gz", gzip.compress(raw))
        zf.writestr("gzip/emnist-letters-mapping.txt", "1 65 97\n")
        zf.writestr("../evil", "evil")
        zf.writestr("/tmp/evil-abs", "evil")
    return buf.getvalue()


@pytest.fixture
def served(small, monkeypatch):
    """Serve a small gzip.zip through a monkeypatched ``_download``; records the calls."""
    files = {**split_files("letters", label_base=1), **split_files("digits")}
    archive = make_zip(files)
    monkeypatch.setattr(emnist_mod, "EMNIST_MD5", hashlib.md5(archive).hexdigest())
    calls = []

    def download(url, dest, timeout, progress, max_bytes=None):
        calls.append(url)
        dest.write(archive)

    monkeypatch.setattr(emnist_mod, "_download", download)
    return files, archive, calls


def test_fetch_extracts_only_needed(served, tmp_path):
    files, archive, calls = served
    x, y = load_emnist(tmp_path, train=True, split="letters", download=True)
    assert calls == [emnist_mod.EMNIST_URL]
    assert x.shape == (N_TRAIN, 28, 28) and y.tolist() == [0, 1, 2, 3]
    root = tmp_path / "emnist"
    assert sorted(os.listdir(root)) == ["gzip", "gzip.zip"]  # archive kept, no temp files
    assert (root / "gzip.zip").read_bytes() == archive
    assert sorted(os.listdir(root / "gzip")) == sorted(f"{n}.gz" for n in files if "letters" in n)
    assert not list(tmp_path.rglob("*evil*"))
    # a second split comes from the kept archive, without downloading again
    keep = root / "gzip" / "emnist-letters-test-labels-idx1-ubyte.gz"
    stamp = keep.stat().st_mtime_ns
    assert fetch_emnist(tmp_path, ["digits", "letters"], progress=False) == root / "gzip"
    assert calls == [emnist_mod.EMNIST_URL] and keep.stat().st_mtime_ns == stamp
    assert len(os.listdir(root / "gzip")) == 8
    _, yd = load_emnist(tmp_path, train=False, split="digits")
    assert yd.tolist() == [0, 1, 2]


def test_fetch_wrong_md5(served, monkeypatch, tmp_path):
    monkeypatch.setattr(emnist_mod, "EMNIST_MD5", "0" * 32)
    with pytest.raises(DataError, match="md5 mismatch") as err:
        fetch_emnist(tmp_path, "letters", progress=False)
    assert emnist_mod.EMNIST_URL in str(err.value)
    assert not (tmp_path / "emnist").exists()  # no archive, temp file or empty folder left


def test_fetch_local_archive_no_keep(served, monkeypatch, tmp_path):
    _, archive, calls = served
    (tmp_path / "emnist").mkdir()
    (tmp_path / "emnist" / "gzip.zip").write_bytes(archive)
    fetch_emnist(tmp_path, "digits", progress=False, keep_archive=False)
    assert calls == []  # the archive put there was used, and left alone
    assert (tmp_path / "emnist" / "gzip.zip").read_bytes() == archive
    assert len(os.listdir(tmp_path / "emnist" / "gzip")) == 4
    (tmp_path / "emnist" / "gzip.zip").write_bytes(archive[:-10])
    with pytest.raises(DataError, match="md5 mismatch") as err:
        fetch_emnist(tmp_path, "letters", progress=False)
    assert str(tmp_path / "emnist" / "gzip.zip") in str(err.value)


def test_fetch_member_missing_and_unreachable(served, monkeypatch, tmp_path):
    archive = make_zip(split_files("digits"))
    monkeypatch.setattr(emnist_mod, "EMNIST_MD5", hashlib.md5(archive).hexdigest())
    monkeypatch.setattr(emnist_mod, "_download", lambda u, d, t, p, max_bytes=None: d.write(archive))
    with pytest.raises(DataError, match="emnist-letters-train-images-idx3-ubyte.gz"):
        fetch_emnist(tmp_path / "a", "letters", progress=False, keep_archive=False)
    assert not (tmp_path / "a").exists()

    def unreachable(url, dest, timeout, progress, max_bytes=None):
        raise OSError("Name or service not known")

    monkeypatch.setattr(emnist_mod, "_download", unreachable)
    with pytest.raises(FileNotFoundError) as err:
        load_emnist(tmp_path / "b", split="letters", download=True)
    assert "Name or service not known" in str(err.value) and emnist_mod.EMNIST_URL in str(err.value)
    assert str(tmp_path / "b" / "emnist" / "gzip.zip") in str(err.value)
    assert not (tmp_path / "b").exists()
