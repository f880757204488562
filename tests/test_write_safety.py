"""What nsm writes never replaces, or writes through, what a user has.

- a result checked to be new before the work (``nsm evaluate``, ``analyze``, ``online``) is not
  placed over a file that appeared while nsm worked (``atomic_write(new=True)``);
- a file nsm rewrites keeps its permissions;
- a run's ``record/`` that is a symbolic link is refused, its target left alone;
- a FIFO where a run's text file should be is refused at once instead of blocking forever."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading

import pytest

import nsm.studies.evaluate
import nsm.studies.figures.analysis
import nsm.studies.online
from nsm.training.config import TrainConfig
from nsm.training.loop import fit
from nsm.utils.io import atomic_write, read_json, read_text, write_json
from toys import toy_dataset

QUIET = {"log": lambda *a, **k: None}


def test_a_new_result_is_not_placed_over_a_file_that_appeared_meanwhile(tmp_path):
    path = tmp_path / "result.json"

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("nsm's result")
        path.write_text("the user's file")  # appears while nsm works

    with pytest.raises(FileExistsError, match="appeared while nsm was working; nsm does not overwrite it") as err:
        atomic_write(path, write, new=True)
    assert err.value.errno == errno.EEXIST and err.value.filename == str(path)
    assert path.read_text() == "the user's file"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary left behind
    # a dangling symbolic link is something too: neither replaced nor written through
    link = tmp_path / "link.json"
    os.symlink(tmp_path / "nowhere", link)
    with pytest.raises(FileExistsError):
        write_json(link, {"a": 1}, new=True)
    assert os.path.islink(link) and not (tmp_path / "nowhere").exists()
    # and where nothing is in the way, the result is placed
    assert read_json(write_json(tmp_path / "fresh.json", {"a": 1}, new=True)) == {"a": 1}


def test_a_rewritten_file_keeps_its_permissions(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"a": 1})
    os.chmod(path, 0o600)
    write_json(path, {"a": 2})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and read_json(path) == {"a": 2}
    os.chmod(path, 0o640)
    write_json(path, {"a": 3})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    umask = os.umask(0o022)
    try:
        write_json(tmp_path / "new.json", {})
        assert stat.S_IMODE(os.stat(tmp_path / "new.json").st_mode) == 0o644  # a new file: 0666 & ~umask
    finally:
        os.umask(umask)


def _appears(monkeypatch, module, name: str, path) -> None:
    """``module.name`` does its work, then ``path`` appears (a user's file, written meanwhile)."""
    original = getattr(module, name)

    def work(*args, **kwargs):
        result = original(*args, **kwargs)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("the user's file")
        return result

    monkeypatch.setattr(module, name, work)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("toy")
    config = TrainConfig(
        model="dcnn", epochs=1, batch_size=30, samples=1, out=str(tmp), run_name="r", progress=False, record=True
    )
    return fit(config, dataset=toy_dataset(), **QUIET)["run_dir"]


def test_analyze_does_not_replace_a_file_that_appeared_meanwhile(tmp_path, monkeypatch, toy_run):
    out = tmp_path / "out"
    _appears(monkeypatch, nsm.studies.figures.analysis, "load_run", out / "analysis.json")
    with pytest.raises(FileExistsError, match="analysis.json appeared while nsm was working"):
        nsm.studies.figures.analysis.analyze([toy_run], out)
    assert (out / "analysis.json").read_text() == "the user's file"


def test_online_does_not_replace_a_file_that_appeared_meanwhile(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _appears(monkeypatch, nsm.studies.online, "online_comparison", out / "online.png")
    with pytest.raises(FileExistsError, match="online.png appeared while nsm was working"):
        nsm.studies.online.run_online(
            ["dcnn"], dataset=toy_dataset(), examples=20, eval_at=[0, 20], samples=1, out=out, progress=False, **QUIET
        )
    assert (out / "online.png").read_text() == "the user's file"
    assert json.loads((out / "online.json").read_text())["config"]["examples"] == 20  # written before it


def test_evaluate_does_not_replace_a_file_that_appeared_meanwhile(tmp_path, monkeypatch, mnist_dir):
    config = TrainConfig(
        model="dcnn",
        epochs=1,
        train_subset=600,
        test_subset=50,
        data_dir=str(mnist_dir),
        out=str(tmp_path / "runs"),
        progress=False,
    )
    run = fit(config, **QUIET)["run_dir"]
    out = tmp_path / "out"
    _appears(monkeypatch, nsm.studies.evaluate, "evaluate_run", out / "evaluation.md")
    options = dict(samples=2, shift_subset=20, angles=(0, 90), ood="none", devices=False, test_subset=50)
    with pytest.raises(FileExistsError, match="evaluation.md appeared while nsm was working"):
        nsm.studies.evaluate.evaluate_runs([run], out, data_dir=str(mnist_dir), **options, **QUIET)
    assert (out / "evaluation.md").read_text() == "the user's file"


def test_a_linked_record_folder_is_refused_and_its_target_left_alone(tmp_path):
    """An interrupted run handed over with its ``record/`` replaced by a link: the resume refuses
    it (before, it wrote the five record files into the link's target, over the user's)."""
    import shutil

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "stats.csv").write_text("the user's data\n")
    config = TrainConfig(
        model="bnsm", epochs=2, batch_size=30, samples=2, out=str(tmp_path / "runs"), run_name="r", progress=False
    )
    config = TrainConfig(**{**config.to_dict(), "record": True})
    run = fit(config, dataset=toy_dataset(), **QUIET)["run_dir"]
    os.remove(os.path.join(run, "summary.json"))  # interrupted, as far as a resume can tell
    shutil.rmtree(os.path.join(run, "record"))
    os.symlink(victim, os.path.join(run, "record"))
    with pytest.raises(ValueError, match="record is a symbolic link; nsm writes a run's record only into a folder"):
        fit(config, dataset=toy_dataset(), resume=run, **QUIET)
    assert sorted(p.name for p in victim.iterdir()) == ["stats.csv"]
    assert (victim / "stats.csv").read_text() == "the user's data\n"


def test_a_fifo_for_a_text_file_is_refused_at_once(tmp_path):
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    outcome = {}

    def read() -> None:
        try:
            read_text(fifo, "a run's configuration")
        except Exception as exc:  # noqa: BLE001 - the outcome is what is checked
            outcome["error"] = exc

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # unblock the reader (a writer opens the FIFO, then closes it)
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(10)
        pytest.fail("read_text blocked on a FIFO")
    assert isinstance(outcome.get("error"), ValueError)
    assert str(fifo) in str(outcome["error"]) and "regular file" in str(outcome["error"])


def test_releasing_a_run_lock_leaves_a_file_put_in_its_place(tmp_path):
    """A run's ``.lock`` is removed on release only if it is still the file the lock holds: a
    user's file moved over it meanwhile (or any other) was removed by name."""
    from nsm.training.checkpoint import RunLock

    run = tmp_path / "run"
    run.mkdir()
    lock = RunLock(run)
    (tmp_path / "notes").write_text("the user's notes\n")
    os.replace(tmp_path / "notes", run / ".lock")
    lock.release()
    assert (run / ".lock").read_text() == "the user's notes\n"
    other = tmp_path / "other"
    other.mkdir()
    with RunLock(other):
        assert (other / ".lock").exists()
    assert not (other / ".lock").exists()  # its own file: removed


def test_a_read_only_file_is_rewritten_and_stays_read_only(tmp_path):
    """The mode a rewrite keeps is given to the new file after it is written: copied before, a
    read-only mode (0444) made the temporary file unwritable to its own writer (not root)."""
    path = tmp_path / "summary.json"
    write_json(path, {"a": 1})
    os.chmod(path, 0o444)
    modes = []

    def write(tmp: str) -> None:
        modes.append(stat.S_IMODE(os.stat(tmp).st_mode))
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("{}\n")

    atomic_write(path, write)
    assert modes[0] & 0o200, f"the temporary file was {oct(modes[0])} while being written"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444 and read_json(path) == {}


def test_text_files_are_written_as_utf8_whatever_the_locale(tmp_path):
    """table.md holds ±, – and ∞, the record's CSVs whatever names its layers have: written with
    the locale's encoding they failed, or could not be read back as UTF-8, under another locale.
    Python's EncodingWarning flags every text open() without an encoding."""
    import subprocess
    import sys

    script = f"""
import math, warnings
from pathlib import Path
from nsm.studies.tables import compare_to_reference, write_table
from nsm.training.recorder import _write_csv
from nsm.utils.io import write_json
row = dict(dataset="d", model="dcnn", description="", seeds=[0, 1], pending_seeds=[], epochs=1, samples=1, n_last=1,
           error_pct=[1.0, 2.0], error_mean_pct=1.5, error_std_pct=0.7, final_error_mean_pct=1.5,
           best_error_mean_pct=math.nan, paper_error_pct=math.nan, wall_seconds=1.0)
rows = compare_to_reference([row, {{**row, "model": "bnsm"}}])
write_table(rows, Path({str(tmp_path)!r}), "nsm reproduce t: ±", "nsm reproduce t")
_write_csv(Path({str(tmp_path)!r}) / "stats.csv", ["layer"], [{{"layer": "Wé"}}])
write_json(Path({str(tmp_path)!r}) / "x.json", {{"a": "é"}})
"""
    done = subprocess.run(
        [sys.executable, "-X", "warn_default_encoding", "-W", "error::EncodingWarning", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "±" in (tmp_path / "table.md").read_text(encoding="utf-8")
