"""Tests for nsm.data.nmnist: the 5-byte event format, frame binning, loading/caching, fetching,
and one real N-MNIST recording (fetched from the tonic 1.6.0 sdist, never stored in the repo)."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from nsm.data import nmnist as nmnist_mod
from nsm.data.idx import DataError
from nsm.data.nmnist import events_to_frames, fetch_nmnist, load_nmnist, read_nmnist_events

WRAP = 2**23


def encode(records) -> bytes:
    """Encode ``(x, y, p, ts)`` tuples in the N-MNIST 5-byte format (ts: 23 bits, big-endian).

    A record with ``y == 240`` is written as-is: that is the overflow marker.
    """
    out = bytearray()
    for x, y, p, ts in records:
        assert 0 <= ts < WRAP
        out += bytes([x, y, (int(p) << 7) | (ts >> 16), (ts >> 8) & 0xFF, ts & 0xFF])
    return bytes(out)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def random_records(rng: np.random.Generator, n: int) -> list[tuple[int, int, int, int]]:
    ts = np.sort(rng.integers(0, 300_000, n))
    return [(int(rng.integers(34)), int(rng.integers(34)), int(rng.integers(2)), int(t)) for t in ts]


# ------------------------------------------------------------------ reading one file


def test_read_exact_with_overflow_markers(tmp_path):
    records = [
        (0, 0, 1, 0),
        (33, 5, 0, 0x7FFFFF),  # largest 23-bit timestamp, OFF
        (12, 33, 1, 0x123456),  # exercises all three timestamp bytes
        (7, 240, 0, 0),  # marker 1: later timestamps get +2**23
        (1, 2, 1, 5),
        (3, 4, 0, 0x010203),
        (9, 240, 1, 77),  # marker 2 (its own x/p/ts are ignored): +2 * 2**23
        (33, 33, 1, 0),
    ]
    path = write(tmp_path / "rec.bin", encode(records))
    ev = read_nmnist_events(path)
    assert ev["x"].tolist() == [0, 33, 12, 1, 3, 33]
    assert ev["y"].tolist() == [0, 5, 33, 2, 4, 33]
    assert ev["p"].dtype == bool and ev["p"].tolist() == [True, False, True, True, False, True]
    assert ev["t"].dtype == np.int64
    assert ev["t"].tolist() == [0, 0x7FFFFF, 0x123456, WRAP + 5, WRAP + 0x010203, 2 * WRAP]


def test_read_byte_layout_and_empty_file(tmp_path):
    # x=7, y=15, byte2=0x80|0x01 (ON, ts bits 22..16 = 1), bytes 3,4 = 0x02, 0x8E
    path = write(tmp_path / "one.bin", bytes([7, 15, 0x81, 0x02, 0x8E]))
    ev = read_nmnist_events(str(path))
    assert (ev["x"][0], ev["y"][0], ev["p"][0], ev["t"][0]) == (7, 15, True, 0x1028E)
    empty = read_nmnist_events(write(tmp_path / "empty.bin", b""))
    assert all(len(a) == 0 for a in empty.values())


def test_truncated_file_names_file_and_size(tmp_path):
    path = write(tmp_path / "trunc.bin", encode([(1, 1, 1, 10), (2, 2, 0, 20)])[:-2])
    with pytest.raises(DataError, match="not a multiple of 5") as err:
        read_nmnist_events(path)
    assert str(path) in str(err.value) and "8 bytes" in str(err.value)


@pytest.mark.parametrize("xy", [(34, 0), (0, 34), (200, 3), (5, 239)])
def test_out_of_range_coordinates(tmp_path, xy):
    path = write(tmp_path / "bad.bin", encode([(1, 1, 1, 10), (*xy, 1, 20)]))
    with pytest.raises(DataError, match="corrupt") as err:
        read_nmnist_events(path)
    assert str(path) in str(err.value) and "event 1" in str(err.value)


# ------------------------------------------------------------------ binning


def E(*events):
    """(x, y, p, t) tuples -> the four arrays of events_to_frames."""
    x, y, p, t = (np.array(col) for col in zip(*events))
    return dict(x=x, y=y, p=p.astype(bool), t=t)


def test_events_to_frames_hand_computed():
    # t_max = 90, n_frames = 3 -> window = 30 us: [0, 30) -> 0, [30, 60) -> 1, [60, 90] -> 2.
    ev = E(
        (1, 0, 1, 0),  # frame 0, row y=0, col x=1
        (1, 0, 1, 10),  # same pixel again: still 1 (binary, not a count)
        (3, 2, 1, 29),  # 29 // 30 = 0 -> frame 0, [2, 3]
        (0, 3, 1, 30),  # exactly on the boundary -> frame 1, [3, 0]
        (2, 2, 0, 45),  # OFF: dropped
        (2, 1, 1, 60),  # frame 2, [1, 2]
        (3, 0, 1, 90),
    )  # t == t_max: floor(90/30) = 3 -> clipped to the last frame 2, [0, 3]
    expected = np.array(
        [
            [[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]],
            [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]],
            [[0, 0, 0, 1], [0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
        ],
        dtype=np.uint8,
    )
    out = events_to_frames(**ev, n_frames=3, size=4)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_events_to_frames_off_events_set_t_max():
    # An OFF event at t=120 makes t_max = 120 -> window = 40: t=0 -> 0, t=30 -> 0,
    # t=60 -> 1, t=90 -> 2; nothing lands in frame 2's upper half except t=90.
    ev = E((0, 0, 1, 0), (1, 1, 1, 30), (2, 2, 1, 60), (3, 3, 1, 90), (0, 3, 0, 120))
    expected = np.zeros((3, 4, 4), dtype=np.uint8)
    expected[0, 0, 0] = 1  # t=0
    expected[0, 1, 1] = 1  # t=30: 30 // 40 = 0
    expected[1, 2, 2] = 1  # t=60: 60 // 40 = 1
    expected[2, 3, 3] = 1  # t=90: 90 // 40 = 2
    np.testing.assert_array_equal(events_to_frames(**ev, n_frames=3, size=4), expected)


def test_events_to_frames_default_shape_and_row_is_y():
    # Default 10 frames of 34x34; t_max = 1000 -> window = 100. Pixel (x=30, y=2) is
    # frame[k, 2, 30], never frame[k, 30, 2].
    ev = E((30, 2, 1, 150), (0, 33, 1, 999), (33, 0, 1, 1000))
    out = events_to_frames(**ev)
    assert out.shape == (10, 34, 34) and out.sum() == 3
    assert out[1, 2, 30] == 1 and out[1, 30, 2] == 0  # 150 // 100 = 1
    assert out[9, 33, 0] == 1  # 999 // 100 = 9
    assert out[9, 0, 33] == 1  # t_max -> last frame


def test_events_to_frames_zero_window_and_empty():
    # All timestamps 0 -> window 0 -> everything in frame 0.
    out = events_to_frames(**E((1, 2, 1, 0), (3, 4, 1, 0), (5, 6, 0, 0)), n_frames=4, size=8)
    expected = np.zeros((4, 8, 8), dtype=np.uint8)
    expected[0, 2, 1] = expected[0, 4, 3] = 1
    np.testing.assert_array_equal(out, expected)
    empty = events_to_frames(np.array([]), np.array([]), np.array([], bool), np.array([]))
    assert empty.shape == (10, 34, 34) and not empty.any()


def test_events_to_frames_rejects_bad_input():
    with pytest.raises(ValueError, match="equal length"):
        events_to_frames(np.array([1]), np.array([1, 2]), np.array([True]), np.array([0]))
    with pytest.raises(ValueError, match="out of range"):
        events_to_frames(**E((34, 0, 1, 5)))


# ------------------------------------------------------------------ load_nmnist


def make_tree(data_dir: Path, split: str = "Train", per_digit: int = 2, seed: int = 0) -> list:
    """Random recordings in data_dir/nmnist/<split>/<digit>/NNNNN.bin; returns [(digit, path)]."""
    rng = np.random.default_rng(seed)
    files = []
    for digit in range(10):
        for j in range(per_digit):
            path = data_dir / "nmnist" / split / str(digit) / f"{100 * digit + j:05d}.bin"
            files.append((digit, write(path, encode(random_records(rng, 40)))))
    return files


def expected_frames(files) -> np.ndarray:
    return np.stack([events_to_frames(**read_nmnist_events(p)) for _, p in files])


def test_load_nmnist_converts_and_caches(tmp_path, monkeypatch):
    files = make_tree(tmp_path, "Train")
    frames, labels = load_nmnist(tmp_path, train=True, progress=False)
    assert frames.shape == (20, 10, 34, 34)
    assert str(frames.dtype) == "torch.uint8" and str(labels.dtype) == "torch.int64"
    assert labels.tolist() == [d for d in range(10) for _ in range(2)]
    np.testing.assert_array_equal(frames.numpy(), expected_frames(files))
    cache = tmp_path / "nmnist" / "cache" / "train-frames-v1.npz"
    assert cache.is_file()
    assert not [p for p in cache.parent.iterdir() if p.name.endswith(".tmp")]

    # Second load comes from the cache: the reader is never called.
    def boom(path):
        raise AssertionError(f"reader called for {path}")

    monkeypatch.setattr(nmnist_mod, "read_nmnist_events", boom)
    frames2, labels2 = load_nmnist(tmp_path, train=True, progress=False)
    assert frames2.equal(frames) and labels2.equal(labels)

    # A new file invalidates the cache: conversion runs again (and hits the patched reader).
    write(tmp_path / "nmnist" / "Train" / "3" / "99999.bin", encode([(1, 1, 1, 5)]))
    with pytest.raises(AssertionError, match="reader called"):
        load_nmnist(tmp_path, train=True, progress=False)
    monkeypatch.undo()
    frames3, labels3 = load_nmnist(tmp_path, train=True, progress=False)
    assert frames3.shape[0] == 21 and labels3.tolist().count(3) == 3
    assert labels3.tolist() == sorted(labels3.tolist())
    assert frames3[8].sum() == 1 and frames3[8, 9, 1, 1] == 1  # 3/00300, 3/00301, 3/99999

    # A changed size (same names) also invalidates it.
    write(files[0][1], encode([(2, 3, 1, 0)]))
    frames4, _ = load_nmnist(tmp_path, train=True, progress=False)
    assert frames4[0].sum() == 1 and frames4[0, 0, 3, 2] == 1


def test_load_nmnist_test_split_and_corrupt_cache(tmp_path):
    files = make_tree(tmp_path, "Test", per_digit=1, seed=1)
    cache = tmp_path / "nmnist" / "cache" / "test-frames-v1.npz"
    write(cache, b"not an npz")  # an unreadable cache is rebuilt, not trusted
    frames, labels = load_nmnist(tmp_path, train=False, progress=False)
    assert frames.shape == (10, 10, 34, 34) and labels.tolist() == list(range(10))
    np.testing.assert_array_equal(frames.numpy(), expected_frames(files))
    with np.load(cache) as z:
        assert int(z["n_files"]) == 10


def test_load_nmnist_missing_data(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_nmnist(tmp_path, train=True, progress=False)
    msg = str(err.value)
    folder = tmp_path / "nmnist"
    for needle in (
        "Train.zip",
        "Test.zip",
        "https://www.garrickorchard.com/datasets/n-mnist",
        f"{folder}/Train/0/",
        f"{folder}/Test/9/",
        "download=True",
    ):
        assert needle in msg, needle
    # One digit folder missing is also reported, naming the digit.
    files = make_tree(tmp_path, "Train", per_digit=1)
    os.remove(files[-1][1])
    with pytest.raises(FileNotFoundError, match="digit\\(s\\) 9"):
        load_nmnist(tmp_path, train=True, progress=False)


def test_load_nmnist_default_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NSM_DATA_DIR", str(tmp_path))
    make_tree(tmp_path, "Test", per_digit=1)
    frames, _ = load_nmnist(train=False, progress=False)
    assert frames.shape == (10, 10, 34, 34)


# ------------------------------------------------------------------ fetch_nmnist


def build_zip(split: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for digit in range(10):
            zf.writestr(f"{split}/{digit}/{digit:05d}.bin", encode(random_records(rng, 30)))
    return buf.getvalue()


@pytest.fixture
def fake_server(monkeypatch):
    """Serve fake Train.zip / Test.zip through a patched ``_download``; records the URLs."""
    blobs = {f"https://example.invalid/{s}.zip": build_zip(s, seed) for seed, s in enumerate(("Train", "Test"))}
    monkeypatch.setattr(
        nmnist_mod,
        "NMNIST_ARCHIVES",
        {
            s: (f"https://example.invalid/{s}.zip", hashlib.md5(blobs[f"https://example.invalid/{s}.zip"]).hexdigest())
            for s in ("Train", "Test")
        },
    )
    calls: list[str] = []

    def download(url, dest, timeout, progress, max_bytes=None):
        calls.append(url)
        dest.write(blobs[url])

    monkeypatch.setattr(nmnist_mod, "_download", download)
    return calls


def test_fetch_nmnist_extracts_and_loads(tmp_path, fake_server):
    folder = fetch_nmnist(tmp_path, progress=False)
    assert folder == tmp_path / "nmnist"
    assert sorted(p.name for p in folder.iterdir()) == ["Test", "Train"]  # no temp leftovers
    assert (folder / "Train" / "4" / "00004.bin").is_file()
    frames, labels = load_nmnist(tmp_path, train=False, progress=False)
    assert frames.shape == (10, 10, 34, 34) and labels.tolist() == list(range(10))
    # Everything present: nothing downloaded again, nothing overwritten.
    fake_server.clear()
    fetch_nmnist(tmp_path, progress=False)
    assert fake_server == []


def test_fetch_nmnist_keeps_existing_split(tmp_path, fake_server):
    mine = write(tmp_path / "nmnist" / "Train" / "0" / "mine.bin", encode([(1, 1, 1, 1)]))
    fetch_nmnist(tmp_path, progress=False)
    assert fake_server == ["https://example.invalid/Test.zip"]
    assert sorted(p.name for p in (tmp_path / "nmnist" / "Train" / "0").iterdir()) == ["mine.bin"]
    assert mine.read_bytes() == encode([(1, 1, 1, 1)])


def test_load_nmnist_download_true(tmp_path, fake_server):
    frames, labels = load_nmnist(tmp_path, train=True, download=True, progress=False)
    assert frames.shape == (10, 10, 34, 34) and len(fake_server) == 2


def test_fetch_nmnist_failures(tmp_path, monkeypatch, fake_server):
    def offline(url, dest, timeout, progress, max_bytes=None):
        raise OSError("network unreachable")

    monkeypatch.setattr(nmnist_mod, "_download", offline)
    with pytest.raises(RuntimeError, match="network unreachable") as err:
        fetch_nmnist(tmp_path, progress=False)
    assert "Train.zip" in str(err.value) and "garrickorchard.com" in str(err.value)
    assert not (tmp_path / "nmnist").exists()  # no partial download left behind, nor the empty folder

    monkeypatch.setattr(nmnist_mod, "_download", lambda url, dest, t, p, max_bytes=None: dest.write(b"junk"))
    with pytest.raises(DataError, match="md5 mismatch"):
        fetch_nmnist(tmp_path, progress=False)
    assert not (tmp_path / "nmnist").exists()


# ------------------------------------------------------------------ the real recording


def test_real_recording(real_nmnist_file):
    ev = read_nmnist_events(real_nmnist_file)
    x, y, p, t = ev["x"], ev["y"], ev["p"], ev["t"]
    print(
        f"events={len(t)} ON={int(p.sum())} OFF={int((~p).sum())} x={x.min()}..{x.max()} "
        f"y={y.min()}..{y.max()} t={t[0]}..{t[-1]} us"
    )
    # All numbers below were measured from this file (21625 bytes, no overflow markers).
    assert len(t) == 4325
    assert int(p.sum()) == 2145 and int((~p).sum()) == 2180
    assert x.min() == 0 and x.max() == 33 and y.min() == 0 and y.max() == 33
    assert bool(np.all(np.diff(t) >= 0))  # holds for this recording: timestamps never decrease
    assert (int(t[0]), int(t[-1])) == (654, 311175)
    # First event: bytes 07 0f 80 02 8e -> x=7, y=15, ON, t=0x028e=654.
    assert (x[0], y[0], bool(p[0]), t[0]) == (7, 15, True, 654)

    frames = events_to_frames(**ev)
    assert frames.shape == (10, 34, 34) and frames.dtype == np.uint8
    assert set(np.unique(frames).tolist()) == {0, 1}
    per_frame = frames.sum(axis=(1, 2)).tolist()
    print(f"ON pixels per frame: {per_frame}")
    assert all(n > 0 for n in per_frame)
    assert per_frame == [58, 150, 104, 73, 133, 95, 72, 97, 154, 84]  # measured from this file
