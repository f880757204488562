"""Tests for nsm.data.dvsgesture: AEDAT 3.1 reading, labels, frame samples, loading/cache."""

from __future__ import annotations

import os
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from nsm.data import dvsgesture as dg
from nsm.data.dvsgesture import gesture_samples, load_dvs_gesture, read_aedat31, read_labels_csv
from nsm.data.idx import DataError

HEADER = (
    b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n"
    b"#Start-Time: 2017-01-01 00:00:00 (TZ+0000)\r\n#!END-HEADER\r\n"
)


def packet(etype: int, size: int, payload: bytes, *, overflow: int = 0, number: int | None = None) -> bytes:
    """One AEDAT 3.1 packet: 28-byte little-endian header + payload."""
    capacity = len(payload) // size
    number = capacity if number is None else number
    head = struct.pack("<hhiiiiii", etype, 1, size, 4, overflow, capacity, number, number)
    return head + payload


def polarity_packet(x, y, p, ts, valid=None, *, overflow: int = 0, number: int | None = None) -> bytes:
    """Polarity events (uint32 data word + int32 timestamp) packed as the format says."""
    x, y, p, ts = (np.asarray(a, dtype=np.int64) for a in (x, y, p, ts))
    valid = np.ones_like(x) if valid is None else np.asarray(valid, dtype=np.int64)
    data = (x << 17) | (y << 2) | (p << 1) | valid
    ev = np.zeros(len(x), dtype=[("data", "<u4"), ("ts", "<i4")])
    ev["data"], ev["ts"] = data.astype(np.uint32), ts.astype(np.int32)
    return packet(1, 8, ev.tobytes(), overflow=overflow, number=number)


def write_aedat(path: Path, packets: list[bytes], header: bytes = HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + b"".join(packets))
    return path


def write_labels(path: Path, rows: list[tuple[int, int, int]]) -> Path:
    lines = ["class,startTime_usec,endTime_usec"] + [f"{c},{s},{e}" for c, s, e in rows]
    path.write_text("\r\n".join(lines) + "\r\n")
    return path


def events_packets(ev: dict) -> list[bytes]:
    """Split a dict of events (x, y, p, t < 2**31) into two polarity packets."""
    half = len(ev["t"]) // 2
    return [
        polarity_packet(ev["x"][s], ev["y"][s], ev["p"][s], ev["t"][s]) for s in (slice(0, half), slice(half, None))
    ]


# ------------------------------------------------------------------ read_aedat31


def test_read_aedat31_returns_exactly_the_valid_polarity_events(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    x, y = rng.integers(0, 128, n), rng.integers(0, 128, n)
    p, valid = rng.integers(0, 2, n), rng.integers(0, 2, n)
    x[0], y[0], valid[0] = 0x7FFF, 0x7FFF, 1  # full 15-bit addresses (x uses bit 31)
    ts = np.sort(rng.integers(0, 2**31, n))
    packets = [
        polarity_packet(x[:15], y[:15], p[:15], ts[:15], valid[:15]),
        packet(0, 8, rng.bytes(8 * 3)),  # special events: skipped
        packet(2, 13, rng.bytes(13 * 2)),  # odd-sized other type: skipped
        polarity_packet(x[15:30], y[15:30], p[15:30], ts[15:30], valid[15:30], overflow=3),
        # capacity 10, eventNumber 8: the 2 trailing slots are unused (valid bit set on purpose)
        polarity_packet(x[30:], y[30:], p[30:], ts[30:], np.r_[valid[30:38], 1, 1], number=8),
        packet(1, 8, b""),  # empty polarity packet
    ]
    path = write_aedat(tmp_path / "rec.aedat", packets)
    ev = read_aedat31(path)
    overflow = np.r_[np.zeros(15), np.full(15, 3), np.zeros(10)].astype(np.int64)
    keep = valid.astype(bool) & (np.arange(n) < 38)
    np.testing.assert_array_equal(ev["x"], x[keep])
    np.testing.assert_array_equal(ev["y"], y[keep])
    np.testing.assert_array_equal(ev["p"], p[keep].astype(bool))
    np.testing.assert_array_equal(ev["t"], ((overflow << 31) | ts)[keep])
    assert ev["p"].dtype == bool and ev["t"].dtype == np.int64
    assert ev["t"][keep[:15].sum()] >= 3 << 31  # first event of the overflow packet


def test_read_aedat31_no_events(tmp_path):
    ev = read_aedat31(write_aedat(tmp_path / "empty.aedat", []))
    assert all(len(a) == 0 for a in ev.values())


@pytest.mark.parametrize("cut", [3, 28 + 5])
def test_truncated_packet_raises_data_error_with_file_and_offset(tmp_path, cut):
    body = polarity_packet([1, 2], [3, 4], [1, 0], [10, 20]) + polarity_packet([5], [6], [1], [30])
    path = write_aedat(tmp_path / "trunc.aedat", [body[:-cut]])
    with pytest.raises(DataError, match="trunc.aedat.*byte offset") as info:
        read_aedat31(path)
    assert f"byte offset {len(HEADER) + 28 + 16}" in str(info.value)  # the second packet


def test_trailing_partial_header_raises(tmp_path):
    path = write_aedat(tmp_path / "tail.aedat", [polarity_packet([1], [1], [1], [1]), b"\0" * 10])
    with pytest.raises(DataError, match="tail.aedat: truncated packet header at byte offset"):
        read_aedat31(path)


@pytest.mark.parametrize(
    "header",
    [
        b"#!AER-DAT3.1\r\n#Format: RAW\r\n",  # no '#!END-HEADER' (and no packets)
        b"#!AER-DAT3.1\r\n#Format: RAW\r\nxx\r\n",  # a non-'#' line before the end
        b"#!AER-DAT2.0\r\n#!END-HEADER\r\n",  # other format version
    ],
)
def test_bad_header_raises_data_error_naming_file(tmp_path, header):
    path = write_aedat(tmp_path / "bad.aedat", [], header=header)
    with pytest.raises(DataError, match="bad.aedat"):
        read_aedat31(path)


# --------------------------------------------------------------- read_labels_csv


def test_read_labels_csv_zero_based(tmp_path):
    path = write_labels(tmp_path / "u_labels.csv", [(1, 100, 200), (11, 300, 450)])
    assert read_labels_csv(path) == [(0, 100, 200), (10, 300, 450)]


@pytest.mark.parametrize("bad", ["x,5,6", "1,5", "12,5,6", "0,5,6", "3,9,5", "1,2.5,6", "1,5,5", "1,-1,6", "1,1_0,60"])
def test_read_labels_csv_malformed_row(tmp_path, bad):
    path = tmp_path / "u_labels.csv"
    path.write_text(f"class,startTime_usec,endTime_usec\n1,0,100\n{bad}\n")
    with pytest.raises(DataError, match=r"u_labels.csv: line 3"):
        read_labels_csv(path)


def test_read_labels_csv_checks_end_against_the_recording(tmp_path):
    path = write_labels(tmp_path / "u_labels.csv", [(1, 0, 100), (2, 200, 1000 + dg.DVS_END_TOLERANCE_US + 1)])
    assert len(read_labels_csv(path)) == 2  # no recording given: only the rows' own checks
    assert read_labels_csv(path, 1001) == [(0, 0, 100), (1, 200, 1001 + dg.DVS_END_TOLERANCE_US)]
    with pytest.raises(DataError, match=r"u_labels.csv: line 3: .*past the recording's last event at 1000 us"):
        read_labels_csv(path, 1000)


def test_read_labels_csv_labelled_time_is_bounded(tmp_path):
    cap = 20 * 60 * 10**6
    path = write_labels(tmp_path / "u_labels.csv", [(1, 0, cap // 2), (2, cap // 2, cap), (3, cap, cap + 1)])
    with pytest.raises(DataError, match=r"u_labels.csv: line 4: .*DVS_MAX_LABELLED_US"):
        read_labels_csv(path)
    assert dg.DVS_MAX_LABELLED_US == cap


def test_read_labels_csv_bad_header(tmp_path):
    path = tmp_path / "u_labels.csv"
    path.write_text("1,0,100\n")
    with pytest.raises(DataError, match=r"u_labels.csv: line 1"):
        read_labels_csv(path)


# --------------------------------------------------------------- gesture_samples


def test_gesture_samples_hand_computed():
    # n_frames=2, frame_us=10 -> chunks of 20 us; size=2 -> pixel (x, y) -> (x // 64, y // 64)
    labels = [
        (3, 100, 145),  # chunks [100, 120) and [120, 140); [140, 145) is dropped
        (0, 200, 215),
    ]  # shorter than one chunk: no sample
    ev = {  # (x, y, p, t)
        "x": np.array([10, 10, 100, 70, 127, 5, 64, 0, 0]),
        "y": np.array([20, 20, 5, 10, 127, 100, 64, 0, 0]),
        "p": np.array([1, 1, 0, 1, 1, 1, 1, 1, 1], dtype=bool),
        "t": np.array([99, 100, 105, 109, 110, 125, 139, 140, 205]),
    }
    # t=99 before the trial; t=105 is OFF; t=140 in the partial chunk; t=205 in trial 2
    expected = np.array(
        [
            [
                [
                    [1, 1],  # sample 0, frame 0 (t 100-109): (10,20)->[0,0], (70,10)->[0,1]
                    [0, 0],
                ],
                [
                    [0, 0],  # sample 0, frame 1 (t 110-119): (127,127)->[1,1]
                    [0, 1],
                ],
            ],
            [
                [
                    [0, 0],  # sample 1, frame 0 (t 120-129): (5,100)->[1,0]
                    [1, 0],
                ],
                [
                    [0, 0],  # sample 1, frame 1 (t 130-139): (64,64)->[1,1]
                    [0, 1],
                ],
            ],
        ],
        dtype=np.uint8,
    )
    frames, classes = gesture_samples(ev, labels, n_frames=2, frame_us=10, size=2)
    assert frames.dtype == np.uint8 and classes.dtype == np.int64
    np.testing.assert_array_equal(frames, expected)
    np.testing.assert_array_equal(classes, [3, 3])

    # default size 64: x // 2, y // 2, indexed [y, x]
    frames, _ = gesture_samples(ev, labels, n_frames=2, frame_us=10)
    assert frames.shape == (2, 2, 64, 64) and frames.sum() == 5
    assert frames[0, 0, 10, 5] == 1 and frames[0, 0, 5, 35] == 1  # (10,20) and (70,10)
    assert frames[0, 1, 63, 63] == 1  # (127,127)
    assert frames[1, 0, 50, 2] == 1 and frames[1, 1, 32, 32] == 1  # (5,100) and (64,64)


@pytest.mark.parametrize(
    ("trial", "why"),
    [
        ((0, 0, 10**12), "past the recording's last event"),
        ((0, 0, 10**23), "past the recording's last event"),
        ((0, 5, 5), "not after start"),
        ((0, -96, 96), "negative"),
        ((11, 0, 96), "class 11"),
        ((0, 0.5, 96), "integers"),
    ],
)
def test_gesture_samples_checks_trials_before_allocating(trial, why):
    ev = {"x": np.array([1]), "y": np.array([2]), "p": np.array([True]), "t": np.array([5000])}
    with pytest.raises(ValueError, match=why):
        gesture_samples(ev, [(0, 0, 96), trial], n_frames=6, frame_us=16)


def test_gesture_samples_labelled_time_is_bounded():
    """Even when one event says the recording lasts 11 days: at most DVS_MAX_LABELLED_US."""
    ev = {"x": np.array([1]), "y": np.array([2]), "p": np.array([True]), "t": np.array([10**12])}
    with pytest.raises(ValueError, match="DVS_MAX_LABELLED_US"):
        gesture_samples(ev, [(0, 0, 10**12)])


def test_gesture_samples_empty_and_bad_args():
    ev = {k: np.zeros(0, dtype=np.int64) for k in "xyt"} | {"p": np.zeros(0, bool)}
    frames, classes = gesture_samples(ev, [(0, 0, 5)], n_frames=6, frame_us=1)
    assert frames.shape == (0, 6, 64, 64) and classes.shape == (0,)
    with pytest.raises(ValueError):
        gesture_samples(ev, [], size=48)
    bad = {"x": np.array([128]), "y": np.array([0]), "p": np.array([True]), "t": np.array([0])}
    with pytest.raises(ValueError, match="sensor"):
        gesture_samples(bad, [(0, 0, 100)], n_frames=1, frame_us=10)


# -------------------------------------------------------------- load_dvs_gesture

N_FRAMES, FRAME_US = 2, 1000
RECORDINGS = {  # name -> trials (class 1..11, start, end); each trial gives 2 samples of 2 ms
    "user01_fluorescent": [(1, 1000, 5500), (5, 7000, 11000)],
    "user02_led": [(11, 500, 4600)],
    "user24_led": [(2, 0, 4999)],
}


def make_tree(root: Path, seed: int = 0) -> dict[str, dict]:
    folder = root / "dvs-gesture" / "DvsGesture"
    rng = np.random.default_rng(seed)
    events = {}
    for name, trials in RECORDINGS.items():
        n = 300
        ev = {
            "x": rng.integers(0, 128, n),
            "y": rng.integers(0, 128, n),
            "p": rng.integers(0, 2, n).astype(bool),
            "t": np.sort(rng.integers(0, 12000, n)),
        }
        write_aedat(folder / f"{name}.aedat", events_packets(ev))
        write_labels(folder / f"{name}_labels.csv", trials)
        events[name] = ev
    (folder / "trials_to_train.txt").write_text("user01_fluorescent.aedat\nuser02_led.aedat\n")
    (folder / "trials_to_test.txt").write_text("user24_led.aedat\n")
    return events


def test_load_dvs_gesture_fake_tree_and_cache(tmp_path, monkeypatch):
    events = make_tree(tmp_path)
    x, y = load_dvs_gesture(tmp_path, train=True, n_frames=N_FRAMES, frame_us=FRAME_US, progress=False)
    assert x.dtype == torch.uint8 and y.dtype == torch.int64
    assert x.shape == (6, N_FRAMES, 64, 64)
    assert y.tolist() == [0, 0, 4, 4, 10, 10]
    parts = [
        gesture_samples(events[n], [(c - 1, s, e) for c, s, e in RECORDINGS[n]], n_frames=N_FRAMES, frame_us=FRAME_US)[
            0
        ]
        for n in ("user01_fluorescent", "user02_led")
    ]
    np.testing.assert_array_equal(x.numpy(), np.concatenate(parts))
    assert x.sum() > 0

    vx, vy = load_dvs_gesture(tmp_path, train=False, n_frames=N_FRAMES, frame_us=FRAME_US, progress=False)
    assert vx.shape == (2, N_FRAMES, 64, 64) and vy.tolist() == [1, 1]

    cache = tmp_path / "dvs-gesture" / "cache" / f"train-{N_FRAMES}x{FRAME_US}-v1.npz"
    assert cache.is_file()
    # both splits cached, no temporary files or extra suffixes left behind
    assert sorted(p.name for p in cache.parent.iterdir()) == [f"test-{N_FRAMES}x{FRAME_US}-v1.npz", cache.name]

    def boom(path):
        raise AssertionError(f"reader called for {path}")

    monkeypatch.setattr(dg, "read_aedat31", boom)
    x2, y2 = load_dvs_gesture(tmp_path, train=True, n_frames=N_FRAMES, frame_us=FRAME_US, progress=False)
    assert torch.equal(x2, x) and torch.equal(y2, y)

    # a labels file edited to the same size (its modification time changes) invalidates the cache
    labels = tmp_path / "dvs-gesture" / "DvsGesture" / "user02_led_labels.csv"
    raw = labels.read_bytes()
    labels.write_bytes(raw)  # the same bytes: stands for an edit that keeps the size
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="reader called"):
        load_dvs_gesture(tmp_path, train=True, n_frames=N_FRAMES, frame_us=FRAME_US, progress=False)
    monkeypatch.undo()
    load_dvs_gesture(tmp_path, train=True, n_frames=N_FRAMES, frame_us=FRAME_US, progress=False)  # cache again
    monkeypatch.setattr(dg, "read_aedat31", boom)
    # a changed file (size) invalidates the cache
    rec = tmp_path / "dvs-gesture" / "DvsGesture" / "user02_led.aedat"
    rec.write_bytes(rec.read_bytes() + polarity_packet([3], [3], [1], [600]))
    with pytest.raises(AssertionError, match="reader called"):
        load_dvs_gesture(tmp_path, train=True, n_frames=N_FRAMES, frame_us=FRAME_US, progress=False)


def test_load_dvs_gesture_missing_tree_says_what_and_where(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_dvs_gesture(tmp_path, train=True, progress=False)
    msg = str(info.value)
    assert "DvsGesture.tar.gz" in msg and dg.DVS_GESTURE_URL in msg
    assert str(tmp_path / "dvs-gesture") in msg
    assert str(tmp_path / "dvs-gesture" / "DvsGesture" / "trials_to_train.txt") in msg


def test_load_dvs_gesture_missing_recording_named(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "dvs-gesture" / "DvsGesture" / "user02_led_labels.csv").unlink()
    with pytest.raises(FileNotFoundError, match="user02_led_labels.csv"):
        load_dvs_gesture(tmp_path, train=True, progress=False)


def test_load_dvs_gesture_default_dir(tmp_path, monkeypatch):
    make_tree(tmp_path)
    monkeypatch.setenv("NSM_DATA_DIR", str(tmp_path))
    _, y = load_dvs_gesture(train=False, n_frames=N_FRAMES, frame_us=FRAME_US, progress=False)
    assert y.tolist() == [1, 1]


def test_load_dvs_gesture_rebuilds_unreadable_cache(tmp_path):
    make_tree(tmp_path)
    kw = dict(train=False, n_frames=N_FRAMES, frame_us=FRAME_US, progress=False)
    x, y = load_dvs_gesture(tmp_path, **kw)
    cache = tmp_path / "dvs-gesture" / "cache" / f"test-{N_FRAMES}x{FRAME_US}-v1.npz"
    cache.write_bytes(b"not a zip")
    x2, y2 = load_dvs_gesture(tmp_path, **kw)
    assert torch.equal(x2, x) and torch.equal(y2, y)
    assert cache.read_bytes()[:2] == b"PK"  # rewritten as a valid npz


@pytest.mark.parametrize(
    ("end", "t_last", "why"),
    [
        (100_000_000, 11_000, "past the recording's last event at"),
        (3_840_000_000, 11_000, "DVS_MAX_LABELLED_US"),  # 49 bytes: 1.3 GB of frames before
        (10**23, 11_000, "DVS_MAX_LABELLED_US"),
        (10**12, 10**12, "DVS_MAX_LABELLED_US"),  # one event 11 days in: 238 GiB before
    ],
)
def test_load_dvs_gesture_trial_times_checked_against_the_recording(tmp_path, end, t_last, why):
    make_tree(tmp_path)
    folder = tmp_path / "dvs-gesture" / "DvsGesture"
    rec = folder / "user02_led.aedat"
    rec.write_bytes(rec.read_bytes() + polarity_packet([3], [3], [1], [t_last & 0x7FFFFFFF], overflow=t_last >> 31))
    csv = folder / "user02_led_labels.csv"
    csv.write_text(f"class,startTime_usec,endTime_usec\n1,0,{end}\n")
    with pytest.raises(DataError, match=why) as info:
        load_dvs_gesture(tmp_path, train=True, n_frames=1, frame_us=1_000_000, progress=False)
    assert f"{csv}: line 2:" in str(info.value)
    assert not (tmp_path / "dvs-gesture" / "cache").exists()


@pytest.mark.parametrize("entry", ["../outside.aedat", "{outside}", "sub/../../outside.aedat", "bad\0name.aedat"])
def test_split_list_entries_outside_the_folder_refused(tmp_path, entry):
    make_tree(tmp_path)
    outside = tmp_path / "dvs-gesture" / "outside.aedat"  # a readable recording, outside DvsGesture/
    write_aedat(outside, [polarity_packet([1], [1], [1], [10])])
    write_labels(tmp_path / "dvs-gesture" / "outside_labels.csv", [(1, 0, 10)])
    entry = entry.format(outside=outside)
    lst = tmp_path / "dvs-gesture" / "DvsGesture" / "trials_to_train.txt"
    lst.write_text(f"user01_fluorescent.aedat\n{entry}\n")
    with pytest.raises(DataError) as info:
        load_dvs_gesture(tmp_path, train=True, progress=False)
    msg = str(info.value)
    assert f"{lst}: line 2: entry {entry!r}" in msg and "refused" in msg, msg


def test_oversized_recording_refused_before_reading(tmp_path):
    path = write_aedat(tmp_path / "big.aedat", [])
    with open(path, "r+b") as fh:  # sparse: nothing is written
        fh.truncate((1 << 30) + 1)
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as info:
            read_aedat31(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    msg = str(info.value)
    assert str(path) in msg and f"more than {1 << 30} bytes" in msg and "tens of MB" in msg, msg
    assert peak < 1 << 20
    assert dg.DVS_MAX_FILE_BYTES == 1 << 30
