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

Safety (bounded memory on anyone's files).  A recording larger than
:data:`DVS_MAX_FILE_BYTES` (1 GiB; the real ones are tens of MB), a labels CSV or split list
larger than :data:`DVS_MAX_TEXT_BYTES` is refused before it is read.  Each trial row must
hold integers with class 1..11 and ``0 <= start < end <= last event's timestamp +``
:data:`DVS_END_TOLERANCE_US`, and a recording's trials may label at most
:data:`DVS_MAX_LABELLED_US` µs in all (the real ones: 11 gestures of a few seconds): that bounds the
frames built from them.  A split list entry must name a file inside ``DvsGesture/`` (no
absolute path, no ``..``).  Each error names the file and the line.  The cache is read only
as nsm writes it (uncompressed members of the dtypes and shapes the labels CSVs give, the
CSVs' classes as labels, checked before anything is read); any other cache is named, in one
line, and rebuilt.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import struct
import sys
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import torch
from tqdm.auto import tqdm

from ..utils.io import atomic_write
from .files import check_file, check_folder, check_replaceable, make_folder, read_bytes, read_npz
from .idx import DataError
from .mnist import default_data_dir

__all__ = [
    "DVS_END_TOLERANCE_US",
    "DVS_GESTURE_URL",
    "DVS_MAX_FILE_BYTES",
    "DVS_MAX_LABELLED_US",
    "DVS_MAX_TEXT_BYTES",
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

#: The most bytes one ``.aedat`` recording may hold (the real ones are tens of MB).
DVS_MAX_FILE_BYTES = 1 << 30
#: The most bytes a ``*_labels.csv`` or ``trials_to_*.txt`` file may hold (real ones: < 1 KB).
DVS_MAX_TEXT_BYTES = 1 << 20
#: How far past the recording's last event a trial may end (µs).
DVS_END_TOLERANCE_US = 1_000_000
#: The most µs the trials of one recording may label in all (20 minutes; the real ones label
#: about 11 gestures of a few seconds): at most 12500 samples of 6 x 16 ms, 307 MB of frames.
DVS_MAX_LABELLED_US = 20 * 60 * 1_000_000

_PACKET_HEADER = struct.Struct("<hhiiiiii")  # 28 bytes
_POLARITY_DTYPE = np.dtype([("data", "<u4"), ("ts", "<i4")])
_INT = re.compile(r"\s*[+-]?[0-9]+\s*")


def read_aedat31(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Valid polarity events of an AEDAT 3.1 file: ``x``, ``y`` (int32), ``p`` (bool, True = ON)
    and ``t`` (int64 µs), in file order.  Malformed files, and files past
    :data:`DVS_MAX_FILE_BYTES`, raise :class:`DataError`."""
    name = os.fspath(path)
    buf = read_bytes(
        path, DVS_MAX_FILE_BYTES, hint="The real DVS128 Gesture recordings are tens of MB (DVS_MAX_FILE_BYTES is 1 GiB)"
    )
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
    # every event takes 8 file bytes: room for all of them, filled packet by packet
    room = (len(buf) - pos) // _POLARITY_DTYPE.itemsize
    data, t, n = np.empty(room, np.uint32), np.empty(room, np.int64), 0
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
            data[n : n + number] = ev["data"]
            t[n : n + number] = ev["ts"]
            t[n : n + number] |= np.int64(overflow) << 31
            n += number
        pos = end
    keep = (data[:n] & 1).astype(bool)
    data, t = data[:n][keep], t[:n][keep]
    return {
        "x": ((data >> 17) & 0x7FFF).astype(np.int32),
        "y": ((data >> 2) & 0x7FFF).astype(np.int32),
        "p": ((data >> 1) & 1).astype(bool),
        "t": t,
    }


def read_labels_csv(path: str | os.PathLike, span_us: int | None = None) -> list[tuple[int, int, int]]:
    """Trials of a ``*_labels.csv`` file as ``(class 0..10, start_us, end_us)``.

    Each row must hold three integers, class 1..11 and ``0 <= start < end``; with
    ``span_us`` (the recording's last event timestamp) also ``end <= span_us +``
    :data:`DVS_END_TOLERANCE_US`; all trials together may last at most
    :data:`DVS_MAX_LABELLED_US`.  Anything else raises :class:`DataError` naming the file and
    line, as does a file past :data:`DVS_MAX_TEXT_BYTES`.
    """
    name = os.fspath(path)
    text = _read_text(path)
    trials, total = [], 0
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise DataError(f"{name}: line 1: not a CSV line ({exc})") from None
    if header is None or [h.strip() for h in header][:1] != ["class"]:
        raise DataError(
            f"{name}: line 1: expected header 'class,startTime_usec,endTime_usec', found {','.join(header or [])!r}"
        )
    while True:
        try:
            row = next(reader, None)
        except csv.Error as exc:
            raise DataError(f"{name}: line {reader.line_num}: not a CSV line ({exc})") from None
        if row is None:
            return trials
        if not any(field.strip() for field in row):
            continue  # blank line
        try:
            if len(row) != 3:
                raise ValueError(f"{len(row)} fields instead of 3")
            if not all(_INT.fullmatch(field) for field in row):
                raise ValueError("a field that is not an integer")
            cls, start, end = (int(field) for field in row)
            if not 1 <= cls <= NUM_CLASSES:
                raise ValueError(f"class {cls} outside 1..{NUM_CLASSES}")
            _check_trial(start, end, span_us)
            total += end - start
            if total > DVS_MAX_LABELLED_US:
                raise ValueError(
                    f"the trials up to this one last {total} us in all, more than DVS_MAX_LABELLED_US = "
                    f"{DVS_MAX_LABELLED_US} (the real recordings label 11 gestures of a few seconds)"
                )
        except ValueError as exc:
            raise DataError(
                f"{name}: line {reader.line_num}: {exc} in {','.join(row)[:200]!r} (expected "
                f"'class,start_us,end_us': integers, class 1..{NUM_CLASSES}, 0 <= start < end)"
            ) from None
        trials.append((cls - 1, start, end))


def _read_text(path: str | os.PathLike) -> str:
    """The text of a small UTF-8 file (labels CSV, split list), within :data:`DVS_MAX_TEXT_BYTES`."""
    raw = read_bytes(path, DVS_MAX_TEXT_BYTES)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{os.fspath(path)}: expected UTF-8 text, found {exc.reason} at byte {exc.start}") from None


def _check_trial(start: int, end: int, span_us: int | None) -> None:
    """A trial's times: ``0 <= start < end`` and, given the recording's last event timestamp
    ``span_us``, ``end <= span_us + DVS_END_TOLERANCE_US`` (else :class:`ValueError`)."""
    if start < 0:
        raise ValueError(f"start {start} is negative")
    if end <= start:
        raise ValueError(f"end {end} is not after start {start}")
    if span_us is not None and end > span_us + DVS_END_TOLERANCE_US:
        raise ValueError(
            f"end {end} is past the recording's last event at {span_us} us "
            f"(by more than DVS_END_TOLERANCE_US = {DVS_END_TOLERANCE_US})"
        )


def _counts(labels: list[tuple[int, int, int]], chunk: int) -> list[int]:
    """Samples each trial gives: its full chunks of ``chunk`` µs."""
    return [(end - start) // chunk for _, start, end in labels]


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
    _check_args(n_frames, frame_us)
    if size < 1 or SENSOR_SIZE % size:
        raise ValueError(f"size must divide {SENSOR_SIZE}, got {size}")
    t_all = np.asarray(events["t"], dtype=np.int64)
    span = int(t_all.max()) if t_all.size else 0
    total = 0
    for i, trial in enumerate(labels):
        if len(trial) != 3 or not all(isinstance(v, (int, np.integer)) for v in trial):
            raise ValueError(f"trial {i}: expected (class, start_us, end_us) integers, got {trial!r}")
        if not 0 <= trial[0] < NUM_CLASSES:
            raise ValueError(f"trial {i}: class {trial[0]} outside 0..{NUM_CLASSES - 1}")
        try:
            _check_trial(int(trial[1]), int(trial[2]), span)
        except ValueError as exc:
            raise ValueError(f"trial {i}: {exc}") from None
        total += int(trial[2]) - int(trial[1])
        if total > DVS_MAX_LABELLED_US:
            raise ValueError(f"trials 0..{i} last {total} us in all, more than DVS_MAX_LABELLED_US")
    labels = [(int(c), int(s), int(e)) for c, s, e in labels]
    on = np.asarray(events["p"], dtype=bool)
    x, y = np.asarray(events["x"])[on], np.asarray(events["y"])[on]
    t = t_all[on]
    if x.size and (x.min() < 0 or y.min() < 0 or max(x.max(), y.max()) >= SENSOR_SIZE):
        raise ValueError(f"event coordinates outside the {SENSOR_SIZE}x{SENSOR_SIZE} sensor")
    factor, chunk = SENSOR_SIZE // size, n_frames * frame_us
    counts = _counts(labels, chunk)
    frames = np.zeros((sum(counts), n_frames, size, size), dtype=np.uint8)
    classes = np.repeat(np.array([c for c, _, _ in labels], dtype=np.int64), np.array(counts, dtype=np.int64))
    first = 0
    for (_, start, _), n in zip(labels, counts):
        sel = (t >= start) & (t < start + n * chunk)
        rel = t[sel] - start
        frames[first + rel // chunk, (rel % chunk) // frame_us, y[sel] // factor, x[sel] // factor] = 1
        first += n
    return frames, classes


def _check_args(n_frames: int, frame_us: int) -> None:
    if n_frames < 1 or frame_us < 1:
        raise ValueError(f"n_frames and frame_us must be positive, got {n_frames}, {frame_us}")


def _labels_name(aedat: str) -> str:
    return (aedat[: -len(".aedat")] if aedat.endswith(".aedat") else aedat) + "_labels.csv"


def _split_files(folder: Path, split: str) -> list[str]:
    lst = folder / f"trials_to_{split}.txt"
    if not check_folder(folder) or check_file(lst) is None:
        raise FileNotFoundError(_missing_message(folder, [lst.name]))
    names = []
    for i, line in enumerate(_read_text(lst).splitlines(), 1):
        entry = line.strip()
        parts = PurePosixPath(entry.replace("\\", "/")).parts
        if entry and (
            PurePosixPath(entry).is_absolute()
            or PureWindowsPath(entry).drive
            or entry[0] in "/\\"
            or ".." in parts
            or "\0" in entry
        ):
            raise DataError(
                f"{lst}: line {i}: entry {entry[:200]!r} is not a file name inside {folder} "
                f"(an absolute path or '..'): refused"
            )
        if entry:
            names.append(entry)
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
            # size and modification time: a labels file edited to the same size is seen
            "files": [[f, (folder / f).stat().st_size, (folder / f).stat().st_mtime_ns] for f in files],
        }
    )


def _read_cache(path: Path, fingerprint: str, shape: tuple[int, ...], labels: np.ndarray):
    """``((frames, labels), "")`` from the cache; ``(None, why)`` when it is absent (``why``
    empty), stale or malformed (``why`` names it).  Only what :func:`load_dvs_gesture` writes
    is read: uncompressed members of the dtypes and of the shapes the labels CSVs give
    (``shape`` of the unpacked frames), ``labels`` exactly, checked before anything is read."""
    if check_file(path) is None:  # anything but a regular file there: an error naming it
        return None, ""
    try:
        z = read_npz(
            path,
            {
                "frames": (np.uint8, (*shape[:-1], (shape[-1] + 7) // 8)),
                "labels": (np.int64, labels.shape),
                "fingerprint": (np.dtype(f"U{len(fingerprint)}"), ()),
            },
        )
    except DataError as exc:
        return None, " ".join(str(exc).split())
    if str(z["fingerprint"]) != fingerprint:
        return None, f"{path}: stale (made from other files or settings)"
    if not np.array_equal(z["labels"], labels):
        return None, f"{path}: its labels are not the labels CSVs' classes"
    return (np.unpackbits(z["frames"], axis=-1, count=shape[-1]), labels), ""


def load_dvs_gesture(
    data_dir: str | os.PathLike | None = None,
    train: bool = True,
    *,
    n_frames: int = 6,
    frame_us: int = 16_000,
    progress: bool = True,
    write_cache: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DVS128 Gesture split: frames uint8 ``(N, n_frames, 64, 64)``, labels int64 ``(N,)``.

    Reads the recordings listed in ``trials_to_{train,test}.txt`` under
    ``<data_dir>/dvs-gesture/DvsGesture/`` (``data_dir`` defaults to
    :func:`~nsm.data.mnist.default_data_dir`) and converts them with
    :func:`gesture_samples`.  The result is cached (bit-packed) in
    ``<data_dir>/dvs-gesture/cache/<split>-<n_frames>x<frame_us>-v1.npz`` and rebuilt when
    the listed files' names or sizes change, or when it is not exactly what nsm writes.  Missing files raise
    :class:`FileNotFoundError` with download instructions: this is the download step
    (no automatic download; see :data:`DVS_GESTURE_URL`). ``write_cache=False`` reads a valid
    cache but writes none: the folder is only read.
    """
    _check_args(n_frames, frame_us)
    root = Path(data_dir if data_dir is not None else default_data_dir()).expanduser()
    folder, split = root / "dvs-gesture" / "DvsGesture", "train" if train else "test"
    check_folder(root / "dvs-gesture")
    names = _split_files(folder, split)
    fingerprint = _fingerprint(folder, split, names, n_frames, frame_us)
    cache = root / "dvs-gesture" / "cache" / f"{split}-{n_frames}x{frame_us}-v{CACHE_VERSION}.npz"
    # what the cache must hold, from the (small) labels CSVs: its size and its labels
    trials = [read_labels_csv(folder / _labels_name(name)) for name in names]
    counts = [n for rows in trials for n in _counts(rows, n_frames * frame_us)]
    classes = [c for rows in trials for c, _, _ in rows]
    expected = np.repeat(np.array(classes, dtype=np.int64), np.array(counts, dtype=np.int64))
    hit, why = _read_cache(cache, fingerprint, (len(expected), n_frames, 64, 64), expected)
    if hit is None:
        if why and progress:
            print(f"nsm: {why}; rebuilding it", file=sys.stderr)
        parts, labels = [], []
        for name in tqdm(names, desc=f"DVS Gesture {split}", unit="file", disable=not progress):
            events = read_aedat31(folder / name)
            span = int(events["t"].max()) if events["t"].size else 0
            rows = read_labels_csv(folder / _labels_name(name), span)  # trials end within the recording
            f, lab = gesture_samples(events, rows, n_frames=n_frames, frame_us=frame_us)
            parts.append(f)
            labels.append(lab)
        frames = np.concatenate(parts) if parts else np.zeros((0, n_frames, 64, 64), np.uint8)
        labs = np.concatenate(labels) if labels else np.zeros(0, np.int64)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, frames=np.packbits(frames, axis=-1), labels=labs, fingerprint=np.array(fingerprint))

        if write_cache:
            make_folder(cache.parent)
            check_replaceable(cache)  # a symlink there is never written through or replaced
            atomic_write(cache, write)
        hit = frames, labs
    return torch.from_numpy(hit[0]), torch.from_numpy(hit[1])
