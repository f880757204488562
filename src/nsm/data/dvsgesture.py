"""DVS128 Gesture (IBM, Amir et al. 2017): AEDAT 3.1 reading and frame samples.

Data set layout.  The archive ``DvsGesture.tar.gz`` unpacks to ``DvsGesture/``
with one recording ``userNN_<lighting>.aedat`` per user and lighting condition,
its trials in ``userNN_<lighting>_labels.csv`` (header
``class,startTime_usec,endTime_usec``, one row per gesture trial, classes 1..11,
times in µs on the recording's clock) and the split lists ``trials_to_train.txt``
(users 1-23) and ``trials_to_test.txt`` (users 24-29) naming the ``.aedat`` files.

AEDAT 3.1.  ASCII header lines, each starting with ``#`` (the first one
``#!AER-DAT3.1``, the last one ``#!END-HEADER\\r\\n``), then binary packets.  A
packet is a 28-byte little-endian header (int16 eventType, int16 eventSource,
int32 eventSize, eventTSOffset, eventTSOverflow, eventCapacity, eventNumber,
eventValid) followed by ``eventCapacity * eventSize`` bytes of events, of which
the first ``eventNumber`` are used.  Polarity events (eventType 1, eventSize 8)
are a uint32 data word and an int32 timestamp (µs): data bit 0 is the valid
mark, bit 1 the polarity (1 = ON), bits 2-16 the y address and bits 17-31 the x
address (15 bits each).  The full timestamp is ``(eventTSOverflow << 31) |
timestamp``.  Packets of other types are skipped by their size; invalid events
(bit 0 clear) are dropped.

Preprocessing (the paper: "ON events, 128x128 downsampled to 64x64; 6
consecutive frames per sample", 16 ms frames in the code).  For each labelled
trial ``[start, end)``: keep the ON events, map pixel (x, y) to
``(x // 2, y // 2)``, cut the trial into consecutive, non-overlapping chunks of
``n_frames * frame_us`` µs starting at ``start`` (only full chunks that end by
``end``; the remainder is dropped).  Each chunk is one sample of ``n_frames``
binary frames: ``frame[k, y, x] = 1`` iff some ON event of the chunk's k-th
``frame_us`` window fell on downsampled pixel (x, y).

There is no automatic download: the archive sits behind IBM's click-through
pages, so :func:`load_dvs_gesture` raises :class:`FileNotFoundError` saying what
to download, from where and where to unpack it.  Anything but a regular file (or a
symlink to one) in place of a listed file is an error naming it (a FIFO never blocks the
reader), and the cache is never written through a symlink (see :mod:`nsm.data.files`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..utils.io import atomic_write
from .files import check_file, check_folder, check_replaceable, make_folder, open_regular, read_bytes
from .idx import DataError
from .mnist import default_data_dir

__all__ = [
    "DVS_GESTURE_URL",
    "NUM_CLASSES",
    "SENSOR_SIZE",
    "gesture_samples",
    "load_dvs_gesture",
    "read_aedat31",
    "read_labels_csv",
]

DVS_GESTURE_URL = "https://research.ibm.com/interactive/dvsgesture/"
NUM_CLASSES = 11
SENSOR_SIZE = 128
POLARITY_EVENT = 1
CACHE_VERSION = 1

_PACKET_HEADER = struct.Struct("<hhiiiiii")  # 28 bytes
_POLARITY_DTYPE = np.dtype([("data", "<u4"), ("ts", "<i4")])


def read_aedat31(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Valid polarity events of an AEDAT 3.1 file: ``x``, ``y`` (int32), ``p`` (bool, True = ON)
    and ``t`` (int64 µs), in file order.  Malformed files raise :class:`DataError`."""
    name = os.fspath(path)
    buf = read_bytes(path)
    if not buf.startswith(b"#!AER-DAT3"):
        raise DataError(f"{name}: expected an AEDAT 3.x file starting with '#!AER-DAT3.1', found {buf[:16]!r}")
    pos = 0
    while True:  # header: '#' lines up to '#!END-HEADER'
        nl = buf.find(b"\n", pos)
        if buf[pos : pos + 1] != b"#" or nl < 0:
            raise DataError(f"{name}: AEDAT header has no '#!END-HEADER' line (header ends at byte offset {pos})")
        line, pos = buf[pos : nl + 1], nl + 1
        if line.rstrip(b"\r\n") == b"#!END-HEADER":
            break
    words, stamps = [], []
    while pos < len(buf):
        if pos + _PACKET_HEADER.size > len(buf):
            raise DataError(
                f"{name}: truncated packet header at byte offset {pos} "
                f"({len(buf) - pos} of {_PACKET_HEADER.size} bytes)"
            )
        etype, _src, esize, _tsoff, overflow, capacity, number, _valid = _PACKET_HEADER.unpack_from(buf, pos)
        if esize < 0 or capacity < 0 or not 0 <= number <= capacity:
            raise DataError(
                f"{name}: bad packet header at byte offset {pos}: eventSize={esize}, "
                f"eventCapacity={capacity}, eventNumber={number}"
            )
        start = pos + _PACKET_HEADER.size
        end = start + capacity * esize
        if end > len(buf):
            raise DataError(
                f"{name}: truncated packet at byte offset {pos}: payload needs "
                f"{end - start} bytes, file has {len(buf) - start} left"
            )
        if etype == POLARITY_EVENT and number > 0:
            if esize != _POLARITY_DTYPE.itemsize:
                raise DataError(
                    f"{name}: polarity packet at byte offset {pos} has eventSize "
                    f"{esize}, expected {_POLARITY_DTYPE.itemsize}"
                )
            ev = np.frombuffer(buf, dtype=_POLARITY_DTYPE, count=number, offset=start)
            words.append(ev["data"])
            stamps.append((np.int64(overflow) << 31) | ev["ts"].astype(np.int64))
        pos = end
    data = np.concatenate(words) if words else np.zeros(0, np.uint32)
    t = np.concatenate(stamps) if stamps else np.zeros(0, np.int64)
    keep = (data & 1).astype(bool)
    data, t = data[keep], t[keep]
    return {
        "x": ((data >> 17) & 0x7FFF).astype(np.int32),
        "y": ((data >> 2) & 0x7FFF).astype(np.int32),
        "p": ((data >> 1) & 1).astype(bool),
        "t": t,
    }


def read_labels_csv(path: str | os.PathLike) -> list[tuple[int, int, int]]:
    """Trials of a ``*_labels.csv`` file as ``(class 0..10, start_us, end_us)``."""
    name = os.fspath(path)
    trials = []
    with open_regular(path) as raw, io.TextIOWrapper(raw, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header][:1] != ["class"]:
            raise DataError(
                f"{name}: line 1: expected header 'class,startTime_usec,endTime_usec', found {','.join(header or [])!r}"
            )
        for row in reader:
            if not any(field.strip() for field in row):
                continue  # blank line
            try:
                if len(row) != 3:
                    raise ValueError(f"{len(row)} fields instead of 3")
                cls, start, end = (int(field) for field in row)
                if not 1 <= cls <= NUM_CLASSES:
                    raise ValueError(f"class {cls} outside 1..{NUM_CLASSES}")
                if end < start:
                    raise ValueError(f"end {end} before start {start}")
            except ValueError as exc:
                raise DataError(
                    f"{name}: line {reader.line_num}: expected 'class,start_us,end_us' "
                    f"with integer fields, found {','.join(row)!r} ({exc})"
                ) from None
            trials.append((cls - 1, start, end))
    return trials


def gesture_samples(
    events: dict[str, np.ndarray],
    labels: list[tuple[int, int, int]],
    *,
    n_frames: int = 6,
    frame_us: int = 16_000,
    size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Binary frame samples of a recording's trials (rule in the module docstring).

    Returns frames uint8 ``(M, n_frames, size, size)`` indexed ``[sample, k, y, x]`` and
    labels int64 ``(M,)``, samples in trial order then time order.  The 128x128 sensor is
    downsampled by ``128 // size`` (2 for the default 64).
    """
    if n_frames < 1 or frame_us < 1:
        raise ValueError(f"n_frames and frame_us must be positive, got {n_frames}, {frame_us}")
    if size < 1 or SENSOR_SIZE % size:
        raise ValueError(f"size must divide {SENSOR_SIZE}, got {size}")
    on = np.asarray(events["p"], dtype=bool)
    x, y = np.asarray(events["x"])[on], np.asarray(events["y"])[on]
    t = np.asarray(events["t"], dtype=np.int64)[on]
    if x.size and (x.min() < 0 or y.min() < 0 or max(x.max(), y.max()) >= SENSOR_SIZE):
        raise ValueError(f"event coordinates outside the {SENSOR_SIZE}x{SENSOR_SIZE} sensor")
    factor, chunk = SENSOR_SIZE // size, n_frames * frame_us
    counts = [max(0, (end - start) // chunk) for _, start, end in labels]
    frames = np.zeros((sum(counts), n_frames, size, size), dtype=np.uint8)
    classes = np.repeat(np.array([c for c, _, _ in labels], dtype=np.int64), np.array(counts, dtype=np.int64))
    first = 0
    for (_, start, _), n in zip(labels, counts):
        sel = (t >= start) & (t < start + n * chunk)
        rel = t[sel] - start
        frames[first + rel // chunk, (rel % chunk) // frame_us, y[sel] // factor, x[sel] // factor] = 1
        first += n
    return frames, classes


def _labels_name(aedat: str) -> str:
    return (aedat[: -len(".aedat")] if aedat.endswith(".aedat") else aedat) + "_labels.csv"


def _split_files(folder: Path, split: str) -> list[str]:
    lst = folder / f"trials_to_{split}.txt"
    if not check_folder(folder) or check_file(lst) is None:
        raise FileNotFoundError(_missing_message(folder, [lst.name]))
    with open_regular(lst) as fh:
        names = [line.strip() for line in fh.read().decode().splitlines() if line.strip()]
    missing = [p for n in names for p in (n, _labels_name(n)) if check_file(folder / p) is None]
    if missing:
        raise FileNotFoundError(_missing_message(folder, missing))
    return names


def _missing_message(folder: Path, missing: list[str]) -> str:
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return (
        f"DVS128 Gesture files missing in {folder}: {shown}. Download DvsGesture.tar.gz "
        f"(IBM DVS128 Gesture Dataset, Amir et al. 2017) from {DVS_GESTURE_URL} and unpack "
        f"it in {folder.parent} (e.g. `tar xzf DvsGesture.tar.gz -C {folder.parent}`), so "
        f"that {folder / 'trials_to_train.txt'}, {folder / 'user01_fluorescent.aedat'} and "
        f"{folder / 'user01_fluorescent_labels.csv'} exist; or pass data_dir pointing at the "
        f"folder that holds dvs-gesture/"
    )


def _fingerprint(folder: Path, split: str, names: list[str], n_frames: int, frame_us: int) -> str:
    files = [f"trials_to_{split}.txt"] + [p for n in names for p in (n, _labels_name(n))]
    return json.dumps(
        {
            "version": CACHE_VERSION,
            "split": split,
            "n_frames": n_frames,
            "frame_us": frame_us,
            "size": 64,
            "files": [[f, (folder / f).stat().st_size] for f in files],
        }
    )


def _read_cache(path: Path, fingerprint: str) -> tuple[np.ndarray, np.ndarray] | None:
    if check_file(path) is None:  # anything but a regular file there: an error naming it
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fingerprint:
                return None
            frames = np.unpackbits(z["frames"], axis=-1, count=64)
            return frames, z["labels"].astype(np.int64)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # absent or unreadable: rebuild


def load_dvs_gesture(
    data_dir: str | os.PathLike | None = None,
    train: bool = True,
    *,
    n_frames: int = 6,
    frame_us: int = 16_000,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DVS128 Gesture split: frames uint8 ``(N, n_frames, 64, 64)``, labels int64 ``(N,)``.

    Reads the recordings listed in ``trials_to_{train,test}.txt`` under
    ``<data_dir>/dvs-gesture/DvsGesture/`` (``data_dir`` defaults to
    :func:`~nsm.data.mnist.default_data_dir`) and converts them with
    :func:`gesture_samples`.  The result is cached (bit-packed) in
    ``<data_dir>/dvs-gesture/cache/<split>-<n_frames>x<frame_us>-v1.npz`` and rebuilt when
    the listed files' names or sizes change.  Missing files raise
    :class:`FileNotFoundError` with download instructions: this is the download step
    (no automatic download; see :data:`DVS_GESTURE_URL`).
    """
    root = Path(data_dir if data_dir is not None else default_data_dir()).expanduser()
    folder, split = root / "dvs-gesture" / "DvsGesture", "train" if train else "test"
    check_folder(root / "dvs-gesture")
    names = _split_files(folder, split)
    fingerprint = _fingerprint(folder, split, names, n_frames, frame_us)
    cache = root / "dvs-gesture" / "cache" / f"{split}-{n_frames}x{frame_us}-v{CACHE_VERSION}.npz"
    hit = _read_cache(cache, fingerprint)
    if hit is None:
        if cache.exists() and progress:
            print(f"nsm: {cache} is stale or unreadable; rebuilding it", file=sys.stderr)
        parts, labels = [], []
        for name in tqdm(names, desc=f"DVS Gesture {split}", unit="file", disable=not progress):
            trials = read_labels_csv(folder / _labels_name(name))
            f, lab = gesture_samples(read_aedat31(folder / name), trials, n_frames=n_frames, frame_us=frame_us)
            parts.append(f)
            labels.append(lab)
        frames = np.concatenate(parts) if parts else np.zeros((0, n_frames, 64, 64), np.uint8)
        labs = np.concatenate(labels) if labels else np.zeros(0, np.int64)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, frames=np.packbits(frames, axis=-1), labels=labs, fingerprint=np.array(fingerprint))

        make_folder(cache.parent)
        check_replaceable(cache)  # a symlink there is never written through or replaced
        atomic_write(cache, write)
        hit = frames, labs
    return torch.from_numpy(hit[0]), torch.from_numpy(hit[1])
