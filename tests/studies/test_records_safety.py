"""A run's record/ files (nsm analyze, reproduce --status) are read in bounded memory and every
problem is a ValueError naming the file: histograms.npz as the recorder writes it (stored,
checked from its headers before any data is read), stats.csv and layers.json; and
``nsm reproduce``'s check of its table files never waits on a FIFO."""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import zipfile

import numpy as np
import pytest

from nsm.studies.figures.records import load_run
from nsm.studies.table_files import check_table_files
from nsm.training.recorder import STATS_COLUMNS

STEPS = np.array([0, 5], dtype=np.int64)


def arrays() -> dict[str, np.ndarray]:
    """histograms.npz's arrays as the recorder writes them: one layer W1, 2 record points, 3 bins."""
    return {
        "steps": STEPS,
        "epochs": STEPS / 5.0,
        "W1_edges": np.linspace(-1.0, 1.0, 4),
        "W1_counts": np.array([[1, 2, 1], [0, 3, 1]], dtype=np.int64),
    }


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=True)
    return buf.getvalue()


def npz(members: dict[str, bytes], compressed: tuple[str, ...] = ()) -> bytes:
    """A zip of ``members`` (name -> .npy bytes), stored but for the ``compressed`` ones."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(f"{name}.npy", data, zipfile.ZIP_DEFLATED if name in compressed else zipfile.ZIP_STORED)
    return buf.getvalue()


def make_run(path, hist: bytes | None = None, stats: bytes | None = None, layers: list | None = None):
    """A run directory with a record/ of one layer W1, or the given histograms/stats/layers."""
    rec = path / "record"
    rec.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model": "bnsm", "dataset": "mnist"}))
    (path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "test_error": 0.1}) + "\n")
    layers = layers or [{"name": "W1", "init_mean": 0.0, "init_std": 0.5}]
    (rec / "layers.json").write_text(json.dumps({"version": 1, "layers": layers}))
    row = ",".join("W1" if c == "layer" else "0" for c in STATS_COLUMNS)
    (rec / "stats.csv").write_bytes(stats or f"{','.join(STATS_COLUMNS)}\n{row}\n".encode())
    if hist is None:
        with open(rec / "histograms.npz", "wb") as f:
            np.savez(f, **arrays())  # as nsm.training.recorder.Recorder.save writes it
    else:
        (rec / "histograms.npz").write_bytes(hist)
    return path


def test_the_recorders_histograms_load(tmp_path):
    """A file written as the recorder writes it loads with its numbers, writable as before."""
    rec = load_run(make_run(tmp_path / "run")).record
    assert rec.steps.tolist() == [0, 5] and rec.epochs.tolist() == [0.0, 1.0]
    edges, counts = rec.hist["W1"]
    assert edges.tolist() == pytest.approx([-1.0, -1 / 3, 1 / 3, 1.0]) and counts.tolist() == [[1, 2, 1], [0, 3, 1]]
    assert counts.dtype == np.int64 and counts.flags.writeable


def test_a_header_declaring_a_huge_array_is_refused_before_allocating(tmp_path):
    """A .npy header declaring 2**40 float64 (8 TiB) in a tiny file: a ValueError naming the file."""
    members = {k: npy(v) for k, v in arrays().items()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (2**40,)})
    members["epochs"] = header.getvalue()
    path = make_run(tmp_path / "run", hist=npz(members))
    with pytest.raises(ValueError, match=r"histograms.npz: array 'epochs' declares shape \(1099511627776,\)"):
        load_run(path)


def test_a_compressed_member_is_refused_unread(tmp_path, monkeypatch):
    """A deflated member (the recorder stores them; deflate can expand ~1000x) is refused
    before anything is decompressed."""

    stored_only = zipfile._get_decompressor

    def must_not_decompress(compress_type):
        assert compress_type == zipfile.ZIP_STORED, "a member was decompressed"
        return stored_only(compress_type)

    monkeypatch.setattr(zipfile, "_get_decompressor", must_not_decompress)
    members = {k: npy(v) for k, v in arrays().items()}
    path = make_run(tmp_path / "run", hist=npz(members, compressed=("W1_counts",)))
    with pytest.raises(ValueError, match="histograms.npz: array 'W1_counts' is compressed"):
        load_run(path)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"W1_counts": np.zeros((3, 3), np.int64)}, r"layer 'W1' has edges \(4,\) and counts \(3, 3\)"),
        ({"W1_counts": np.asfortranarray(np.ones((2, 3)))}, "'W1_counts': dtype float64, in Fortran order"),
        ({"W1_counts": np.array([None] * 6, dtype=object).reshape(2, 3)}, "'W1_counts': dtype object;"),
        ({"epochs": np.zeros(3)}, r"'steps' \(2,\) and 'epochs' \(3,\) must be equal"),
        ({"W1_edges": None, "other": np.zeros(1)}, "no array 'W1_edges'; the histogram of layer 'W1' needs one"),
        ({"extra": np.zeros(1)}, "declares 5 entries.*nsm writes 4 entries"),
    ],
)
def test_a_histograms_file_nsm_did_not_write_is_refused_naming_it(tmp_path, change, match):
    """Wrong shapes, dtypes, order or members: a ValueError naming histograms.npz and the problem."""
    hist = npz({k: npy(v) for k, v in {**arrays(), **change}.items() if v is not None})  # None: left out
    with pytest.raises(ValueError, match=f"histograms.npz.*{match}"):
        load_run(make_run(tmp_path / "run", hist=hist))


def test_stats_csv_with_a_huge_field_or_bad_bytes_is_refused_naming_it(tmp_path):
    """A field past csv's limit, or bytes that are not UTF-8: a ValueError naming stats.csv."""
    header = ",".join(STATS_COLUMNS).encode()
    long = make_run(tmp_path / "long", stats=header + b"\n" + b"x" * 200_000 + b"\n")
    with pytest.raises(ValueError, match=r"stats.csv, line 2: not a CSV file nsm wrote \(field larger"):
        load_run(long)
    binary = make_run(tmp_path / "binary", stats=header + b"\n\xff\xfe\n")
    with pytest.raises(ValueError, match=r"stats.csv: not UTF-8 text"):
        load_run(binary)


@pytest.mark.parametrize(
    "entry, match",
    [
        ({"name": ["W1"], "init_mean": 0.0, "init_std": 0.5}, r"layers\[0\]\['name'\] is \['W1'\]"),
        ({"name": "W1", "init_mean": 0.0, "init_std": "wide"}, r"layers\[0\]\['init_std'\] is 'wide'"),
    ],
)
def test_a_layer_entry_of_the_wrong_type_is_refused_naming_layers_json(tmp_path, entry, match):
    """A layer name that is a list (unhashable) or an initial std that is text: a ValueError naming layers.json."""
    with pytest.raises(ValueError, match=f"layers.json: {match}"):
        load_run(make_run(tmp_path / "run", layers=[entry]))


def test_the_table_check_refuses_a_fifo_without_waiting_on_it(tmp_path):
    """`nsm reproduce --out X` with a FIFO at X/table.md: refused at once, saying what it is."""
    os.mkfifo(tmp_path / "table.md")
    result = {}
    thread = threading.Thread(target=lambda: result.update(error=_raised(check_table_files, tmp_path)), daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        for _ in range(50):  # let the waiting reader go on
            with contextlib.suppress(OSError):
                os.close(os.open(tmp_path / "table.md", os.O_WRONLY | os.O_NONBLOCK))
            thread.join(0.1)
        pytest.fail("the table check waited on the FIFO table.md")
    assert isinstance(result["error"], ValueError)
    assert f"{tmp_path} holds table.md (a FIFO (named pipe)), which nsm did not write" in str(result["error"])
    assert (tmp_path / "table.md").exists()


def _raised(fn, *args):
    """The exception ``fn(*args)`` raises, or None."""
    try:
        fn(*args)
    except Exception as exc:
        return exc
    return None
