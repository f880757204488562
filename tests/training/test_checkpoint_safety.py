"""nsm.training.checkpoint.read_checkpoint opens a checkpoint once, without blocking: a FIFO,
a directory or a missing file is a ValueError naming it, never a hang; real files still load."""

from __future__ import annotations

import contextlib
import os
import threading

import pytest
import torch

from nsm.training.checkpoint import read_checkpoint
from nsm.training.config import TrainConfig
from nsm.training.loop import fit
from toys import toy_dataset

QUIET = {"log": lambda *a: None}


def within(seconds: float, fn, *fifos):
    """``fn()`` in a thread; the test fails if it has not returned after ``seconds`` (the
    ``fifos`` are then opened for writing, so that a reader waiting on one goes on)."""
    out = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed to the test's thread
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for _ in range(50):
            for fifo in fifos:
                with contextlib.suppress(OSError):
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            thread.join(0.1)
            if not thread.is_alive():
                break
        pytest.fail(f"still waiting after {seconds} s: it blocked on a FIFO")
    if "error" in out:
        raise out["error"]
    return out.get("value")


def test_a_fifo_checkpoint_is_refused_not_waited_on(tmp_path):
    """A FIFO named checkpoint.pt: a ValueError naming it and what it is, at once."""
    path = tmp_path / "checkpoint.pt"
    os.mkfifo(path)
    with pytest.raises(ValueError, match=f"cannot read checkpoint {path}: expected a regular file, found a FIFO"):
        within(10, lambda: read_checkpoint(path), path)
    assert path.exists()  # left as it is


def test_a_directory_or_nothing_is_refused_naming_it(tmp_path):
    """A directory in the checkpoint's place, or no file at all: a ValueError naming the path."""
    (tmp_path / "checkpoint.pt").mkdir()
    with pytest.raises(ValueError, match="checkpoint.pt: expected a regular file, found a directory"):
        read_checkpoint(tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="cannot read checkpoint .*missing.pt: there is no such file"):
        read_checkpoint(tmp_path / "missing.pt")


def test_regular_files_and_links_to_them_still_load(tmp_path):
    """torch.save's files load through the open file: zip and legacy formats, and through a symlink."""
    torch.save({"a": torch.arange(3)}, tmp_path / "zip.pt")
    torch.save({"a": torch.arange(3)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    (tmp_path / "link.pt").symlink_to(tmp_path / "zip.pt")
    for name in ("zip.pt", "legacy.pt", "link.pt"):
        assert torch.equal(read_checkpoint(tmp_path / name)["a"], torch.arange(3))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint .*bad.pt \\(truncated or corrupt\\?\\)"):
        read_checkpoint(tmp_path / "bad.pt")


def test_resuming_a_run_whose_checkpoint_is_a_fifo_is_refused(tmp_path, one_thread):
    """fit(resume=...) of a run whose checkpoint.pt is a FIFO says so instead of hanging."""
    config = TrainConfig(
        model="bnsm", epochs=1, batch_size=30, samples=2, progress=False, threads=1, out=str(tmp_path), run_name="r"
    )
    fit(config, dataset=toy_dataset(), **QUIET)
    run = tmp_path / "r"
    (run / "summary.json").unlink()  # an interrupted run, as far as resuming goes
    (run / "checkpoint.pt").unlink()
    os.mkfifo(run / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"checkpoint.pt: expected a regular file, found a FIFO.*Remove it"):
        within(10, lambda: fit(config, dataset=toy_dataset(), resume=run, **QUIET), run / "checkpoint.pt")
    assert not (run / ".lock").exists()


@pytest.mark.parametrize(
    "change, said",
    [
        ({"config": {"dataset_options": [1, 2]}}, "config dataset_options is a list, not an object"),
        ({"config": {"data_dir": 5}}, "config data_dir is a int, not a path or null"),
        ({"config": {"dataset": ["mnist"]}}, "config dataset is a list, not a name"),
        ({"epoch": "x"}, "epoch x is not an epoch number"),
    ],
)
def test_evaluate_names_a_checkpoint_whose_config_has_the_wrong_types(tmp_path, change, said):
    """`nsm evaluate` builds the dataset from the checkpoint's config: a field of the wrong type
    ("argument after ** must be a mapping", "expected str, bytes or os.PathLike") is named with
    the file before anything is built or read."""
    from nsm.studies.evaluate import load_trained

    config = TrainConfig(model="dcnn", epochs=1, batch_size=30, out=str(tmp_path), run_name="r", progress=False)
    run = fit(config, dataset=toy_dataset(), **QUIET)["run_dir"]
    path = os.path.join(run, "checkpoint.pt")
    ckpt = torch.load(path, weights_only=True)
    for key, value in change.items():
        ckpt[key] = {**ckpt[key], **value} if isinstance(value, dict) else value
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=f"is not an nsm checkpoint .*{said}"):
        load_trained(run)


def test_a_checkpoint_whose_members_overlap_is_refused_before_loading(tmp_path):
    """Stored members each no larger than the file can still point at the same bytes: K entries
    of the central directory naming one member's data make torch allocate K times the file. A
    real checkpoint's members fit in it side by side; one whose members declare more is refused."""
    import struct
    import zipfile

    path = tmp_path / "checkpoint.pt"
    torch.save({"w": torch.zeros(50_000)}, path)
    data = path.read_bytes()
    with zipfile.ZipFile(path) as z:
        big = max(z.infolist(), key=lambda m: m.file_size)
    # the central directory entry of the largest member, copied 20 times under new names
    eocd = data.rindex(b"PK\x05\x06")
    n, cd_size, cd_offset = struct.unpack("<HII", data[eocd + 10 : eocd + 20])
    cd = data[cd_offset : cd_offset + cd_size]
    entries, i = [], 0  # the entries follow one another from its start
    while i < len(cd):
        name_len, extra_len, comment_len = struct.unpack("<HHH", cd[i + 28 : i + 34])
        end = i + 46 + name_len + extra_len + comment_len
        entries.append(cd[i:end])
        i = end
    [entry] = [e for e in entries if e[46 : 46 + struct.unpack("<H", e[28:30])[0]] == big.filename.encode()]
    name_len = struct.unpack("<H", entry[28:30])[0]
    copies = []
    for k in range(20):
        name = f"{big.filename.split('/')[0]}/data/extra{k}".encode()  # in the archive's folder, as torch wants
        copy = entry[:28] + struct.pack("<H", len(name)) + entry[30:46] + name + entry[46 + name_len :]
        copies.append(copy)
    new_cd = cd + b"".join(copies)
    tail = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n + 20, n + 20, len(new_cd), cd_offset, 0)
    path.write_bytes(data[:cd_offset] + new_cd + tail)
    with zipfile.ZipFile(path) as z:  # a zip that reads
        assert len(z.infolist()) == n + 20 and sum(m.file_size for m in z.infolist()) > path.stat().st_size
    with pytest.raises(ValueError, match="members declare .* bytes in all, more than the file's"):
        read_checkpoint(path)
