"""Resumable runs (nsm.training.checkpoint): a run interrupted anywhere and resumed ends bit for bit as
the uninterrupted run; the run directory's lock; bad states, bad checkpoints and a full disk."""

from __future__ import annotations

import errno
import importlib
import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import torch

import nsm.training.epoch
import nsm.training.loop
import nsm.utils.io
from nsm.cli import _resume_config, main
from nsm.studies.evaluate import load_trained
from nsm.training.checkpoint import RunLock, load_run_config
from nsm.training.config import TrainConfig
from nsm.training.loop import fit
from toys import assert_same_run, freeze_at_step_checkpoint, run_metrics, run_weights, toy_dataset

QUIET = {"log": lambda *a: None}


def _config(tmp_path, name, **fields):
    """bnsm on the toy data: 90 images in batches of 20, so 5 steps per epoch (the last of 10)."""
    fields = {
        "model": "bnsm",
        "epochs": 3,
        "batch_size": 20,
        "samples": 2,
        "progress": False,
        "threads": 1,
        "checkpoint_every": 2,
        "out": str(tmp_path),
        "run_name": name,
        **fields,
    }
    return TrainConfig(**fields)


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    """fit sets torch's thread count (threads=1: fast and steady on a busy machine); put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted toy run every interrupted one is compared with."""
    tmp = tmp_path_factory.mktemp("reference")
    fit(_config(tmp, "ref"), dataset=toy_dataset(), **QUIET)
    return tmp / "ref"


class Crash(Exception):
    """Stands for a kill: raised from inside the run, it leaves the files as a kill would."""


def _crash_on(monkeypatch, owner, name, call):
    """Make ``owner.name`` raise Crash on its ``call``-th call (1-based)."""
    original, calls = getattr(owner, name), [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == call:
            raise Crash(f"{name} call {call}")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


@pytest.mark.parametrize(
    "where, call",
    [  # a function, as the module that calls it looks it up
        ("epoch.train_step", 1),  # before any checkpoint: resumes from the start
        ("epoch.train_step", 4),  # mid-epoch, after the step-2 checkpoint
        ("epoch.train_step", 8),  # epoch 2, after the checkpoint taken at the epoch's first step
        ("run.evaluate", 2),  # during epoch 2's evaluation (last checkpoint: its last step, 5)
        ("run.write_metrics", 3),  # between epoch 2's checkpoint and its metrics.jsonl
        ("run.plot_curves", 1),  # after the final checkpoint, before summary.json
    ],
)
def test_an_interrupted_run_resumes_bit_for_bit(tmp_path, monkeypatch, reference, where, call):
    config = _config(tmp_path, "run")
    module, name = where.split(".")
    with monkeypatch.context() as m:
        _crash_on(m, importlib.import_module(f"nsm.training.{module}"), name, call)
        with pytest.raises(Crash):
            fit(config, dataset=toy_dataset(), **QUIET)
    run = tmp_path / "run"
    assert not (run / "summary.json").exists() and not (run / ".lock").exists()
    torch.manual_seed(12345)  # whatever this process did since: the checkpoint's state wins
    summary = fit(config, dataset=toy_dataset(), resume=run, **QUIET)
    assert_same_run(reference, run)
    assert summary["final_test_error"] == run_metrics(reference)[-1]["test_error"]
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint.pt",
        "config.json",
        "curves.png",
        "metrics.jsonl",
        "summary.json",
    ]
    model, _ = load_trained(run)  # the final checkpoint is what nsm evaluate reads
    assert torch.equal(model.state_dict()["1.magnitude"], run_weights(reference)["1.magnitude"])


def test_a_recorded_run_resumes_with_the_same_record(tmp_path, monkeypatch):
    kw = {"record": True, "record_every": 3, "record_probe": 20, "record_compare": ["sigmoid"], "record_draws": 1}
    fit(_config(tmp_path, "ref", **kw), dataset=toy_dataset(), **QUIET)
    config = _config(tmp_path, "run", **kw)
    with monkeypatch.context() as m:
        _crash_on(m, nsm.training.epoch, "train_step", 9)
        with pytest.raises(Crash):
            fit(config, dataset=toy_dataset(), **QUIET)
    fit(config, dataset=toy_dataset(), resume=tmp_path / "run", **QUIET)
    assert_same_run(tmp_path / "ref", tmp_path / "run")
    for name in ("stats.csv", "percentiles.csv", "grad_cosine.csv", "histograms.npz"):
        assert (tmp_path / "ref" / "record" / name).read_bytes() == (tmp_path / "run" / "record" / name).read_bytes()


@pytest.mark.slow
def test_nsm_train_killed_with_sigkill_and_resumed_ends_as_the_uninterrupted_run(tmp_path, mnist_dir):
    """`nsm train` on 1000 MNIST images (20 steps per epoch, a checkpoint every 3 steps) killed
    with SIGKILL in epoch 2 or later, then `nsm train --resume`: the same metrics.jsonl numbers
    and the same final weights as the same command run without interruption."""
    args = [
        "train",
        "--model",
        "bnsm",
        "--epochs",
        "3",
        "--train-subset",
        "1000",
        "--test-subset",
        "200",
        "--batch-size",
        "50",
        "--samples",
        "2",
        "--seed",
        "5",
        "--threads",
        "1",
        "--checkpoint-every",
        "3",
        "--data-dir",
        str(mnist_dir),
        "--no-progress",
        "--run-name",
        "run",
    ]
    killed = tmp_path / "killed" / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nsm", *args, "--out", str(killed.parent)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        freeze_at_step_checkpoint(proc, killed)  # at a step checkpoint of epoch 2 or later
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert (killed / ".lock").exists()  # left behind by the kill: stale, the resume takes it
    ckpt = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert not ckpt["finished"] and not (killed / "summary.json").exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "nsm", "train", "--resume", str(killed), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {killed / 'checkpoint.pt'}" in resumed.stdout
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0  # the uninterrupted run, in this process
    assert_same_run(tmp_path / "whole" / "run", killed)
    assert not list(killed.glob(".*.tmp")) and not (killed / ".lock").exists()


def _interrupted(tmp_path, monkeypatch, call=8, name="run", **fields):
    """A toy run in ``tmp_path/name`` stopped at its ``call``-th step (by default in epoch 2,
    after the checkpoint of its step 1); returns its config."""
    config = _config(tmp_path, name, **fields)
    with monkeypatch.context() as m:
        _crash_on(m, nsm.training.epoch, "train_step", call)
        with pytest.raises(Crash):
            fit(config, dataset=toy_dataset(), **QUIET)
    return config


def test_a_second_writer_is_refused_and_a_dead_holders_lock_is_stale(tmp_path, monkeypatch, capsys, reference):
    config = _interrupted(tmp_path, monkeypatch)
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from nsm.training.checkpoint import RunLock; "
            "lock = RunLock(sys.argv[1]); print('locked', flush=True); time.sleep(60)",
            str(run),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["train", "--resume", str(run)]) == 2
        err = capsys.readouterr().err
        assert f"run directory {run} is being written by pid {holder.pid} on host {socket.gethostname()}" in err
        with pytest.raises(RuntimeError, match="is being written by pid"):
            fit(config, dataset=toy_dataset(), resume=run, **QUIET)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run / ".lock").exists()  # the killed holder's file: stale, taken by the next writer
    fit(config, dataset=toy_dataset(), resume=run, **QUIET)
    assert_same_run(reference, run)
    with RunLock(run):  # within one process too, a second lock on the directory is refused
        with pytest.raises(RuntimeError, match=f"is being written by pid {os.getpid()} on host"):
            RunLock(run)
    assert not (run / ".lock").exists()


def test_a_loss_that_is_not_finite_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, reference):
    config = _config(tmp_path, "run", checkpoint_every=0)  # epoch-end checkpoints only
    original, calls = nsm.training.epoch.F.cross_entropy, [0]

    def nan_on_seventh(*args, **kwargs):
        calls[0] += 1
        loss = original(*args, **kwargs)
        return loss * float("nan") if calls[0] == 7 else loss

    with monkeypatch.context() as m:
        m.setattr(nsm.training.epoch.F, "cross_entropy", nan_on_seventh)
        with pytest.raises(
            FloatingPointError,
            match=r"epoch 2/3, step 2 of 5: the training loss became nan; "
            r"lower the learning rate; the run stopped, .*checkpoint.pt "
            r"\(after epoch 1\) is kept",
        ):
            fit(config, dataset=toy_dataset(), **QUIET)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["in_epoch"], ckpt["finished"]) == (1, None, False)
    fit(config, dataset=toy_dataset(), resume=tmp_path / "run", **QUIET)
    assert run_metrics(reference) == run_metrics(tmp_path / "run")


def test_weights_that_are_not_finite_are_never_checkpointed(tmp_path, monkeypatch):
    config = _config(tmp_path, "run", checkpoint_every=1)
    original, calls = nsm.training.epoch.after_step, [0]

    def poison_fourth(model):
        original(model)
        calls[0] += 1
        if calls[0] == 4:
            with torch.no_grad():
                model[1].weight.fill_(float("inf"))

    monkeypatch.setattr(nsm.training.epoch, "after_step", poison_fourth)
    with pytest.raises(
        FloatingPointError,
        match=r"epoch 1, after step 4: parameter '1.weight' is no longer "
        r"finite; the run stopped, .* \(epoch 1, after step 3\) is kept",
    ):
        fit(config, dataset=toy_dataset(), **QUIET)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["in_epoch"]["batch"] == 3 and torch.isfinite(ckpt["model_state"]["1.weight"]).all()


def test_a_full_disk_while_checkpointing_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch, reference):
    config = _config(tmp_path, "run")
    path = tmp_path / "run" / "checkpoint.pt"
    original, calls, before = os.fsync, [0], {}

    def full_disk_on_fourth(fd):  # the checkpoint's bytes are in the temporary file: the disk fills there
        calls[0] += 1
        if calls[0] != 4:
            return original(fd)
        before["bytes"] = path.read_bytes()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(nsm.utils.io.os, "fsync", full_disk_on_fourth)
        with pytest.raises(
            OSError,
            match=r"no space left on the device while writing .*checkpoint.pt; the "
            r"previous checkpoint \(after epoch 1\) is kept; free space "
            r"and resume with: nsm train --resume",
        ) as info:
            fit(config, dataset=toy_dataset(), **QUIET)
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before["bytes"]  # untouched, and no temporary file left
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl"]
    fit(config, dataset=toy_dataset(), resume=tmp_path / "run", **QUIET)
    assert_same_run(reference, tmp_path / "run")


def test_corrupt_truncated_and_foreign_checkpoints_are_refused(tmp_path, monkeypatch):
    config = _interrupted(tmp_path, monkeypatch)
    run, ckpt_path = tmp_path / "run", tmp_path / "run" / "checkpoint.pt"
    good = ckpt_path.read_bytes()

    def refused(match):
        with pytest.raises(ValueError, match=match):
            fit(config, dataset=toy_dataset(), resume=run, **QUIET)
        assert not (run / ".lock").exists() and not (run / "summary.json").exists()

    ckpt_path.write_bytes(good[: len(good) // 2])
    refused(r"cannot read checkpoint .* \(truncated or corrupt\?\)")
    ckpt_path.write_bytes(b"\x00" * 1000)
    refused(r"cannot read checkpoint .* \(truncated or corrupt\?\)")
    torch.save({"model": "bnsm"}, ckpt_path)
    refused(r"is not a resumable nsm checkpoint \(missing \[")

    # another run's checkpoint: another model, or the same settings and another network's weights
    _interrupted(tmp_path, monkeypatch, name="other", model="dcnn")
    ckpt_path.write_bytes((tmp_path / "other" / "checkpoint.pt").read_bytes())
    refused(r"belongs to another run \(model: 'dcnn' there, 'bnsm' here; run_name: 'other' there")
    ckpt = torch.load(tmp_path / "other" / "checkpoint.pt", weights_only=True)
    ckpt["config"] = config.to_dict()
    torch.save(ckpt, ckpt_path)
    refused(r"\(network 'dcnn'\) does not fit this run's network 'bnsm': .*size mismatch")
    # the right checkpoint on other data
    ckpt_path.write_bytes(good)
    with pytest.raises(ValueError, match="was trained on other data"):
        fit(config, dataset=toy_dataset(n=150), resume=run, **QUIET)
    fit(config, dataset=toy_dataset(), resume=run, **QUIET)  # the good one still resumes


def test_resume_command_refuses_conflicting_options_and_finished_runs(tmp_path, monkeypatch, capsys, reference):
    _interrupted(tmp_path, monkeypatch)
    run = tmp_path / "run"
    for args, message in [
        (["--epochs", "5"], "conflicting option(s): epochs=5 (the run has 3)"),
        (["--model", "dcnn", "--record"], "model='dcnn' (the run has 'bnsm'), record=True (the run has False)"),
        (["--sampler", "synapse"], "model_options={'sampler': 'synapse'} (the run has {})"),
    ]:
        assert main(["train", "--resume", str(run), *args]) == 2
        assert message in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "nowhere/config.json not found: " in capsys.readouterr().err
    # options equal to the run's are no conflict; --no-progress and --data-dir may change
    resumed = _resume_config(str(run), {"epochs": 3, "model": "bnsm", "data_dir": "elsewhere"}, True)
    assert resumed == load_run_config(run).replace(data_dir="elsewhere", progress=False)
    assert main(["train", "--resume", str(reference)]) == 2
    assert "is a finished run (it has summary.json): nothing to resume" in capsys.readouterr().err


def test_nsm_evaluate_refuses_the_checkpoint_of_an_unfinished_run(tmp_path, monkeypatch):
    _interrupted(tmp_path, monkeypatch)
    with pytest.raises(
        ValueError,
        match=r"is from an unfinished run \(stopped in epoch 2 of 3\); finish it with "
        r"`nsm train --resume ",
    ):
        load_trained(tmp_path / "run")


@pytest.mark.parametrize(
    "fields, error, message",
    [
        ({"checkpoint_every": -1}, ValueError, "'checkpoint_every' must be >= 0"),
        ({"checkpoint_every": 2.0}, TypeError, "'checkpoint_every' must be int, got float"),
        ({"epochs": 2.5}, TypeError, "'epochs' must be int, got float"),
        ({"epochs": None}, TypeError, "'epochs' must be int, got NoneType"),
        ({"batch_size": 0}, ValueError, "'batch_size' must be >= 1"),
        ({"train_subset": -5}, ValueError, "'train_subset' must be >= 1"),
        ({"lr_gamma": float("inf")}, ValueError, "'lr_gamma' must be a finite number > 0"),
        ({"lr": float("nan")}, ValueError, "'lr' must be a finite number > 0"),
        ({"weight_decay": -1e-6}, ValueError, "'weight_decay' must be a finite number >= 0"),
        ({"lr_schedule": "cosine"}, ValueError, "'lr_schedule' must be one of"),
        ({"seed": -1}, ValueError, "'seed' must be an int in"),
        ({"model_options": ["sampler"]}, TypeError, "'model_options' must be dict, got list"),
        ({"progress": "no"}, TypeError, "'progress' must be bool, got str"),
        ({"data_dir": 3}, TypeError, "'data_dir' must be str or None, got int"),
    ],
)
def test_config_json_with_a_bad_value_is_refused_on_resume(tmp_path, capsys, fields, error, message):
    """config.json is validated like any configuration before anything is resumed."""
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**fields)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({**TrainConfig().to_dict(), **fields}))
    assert main(["train", "--resume", str(run)]) == 2
    assert message in capsys.readouterr().err


def test_resuming_with_another_thread_count_says_it_is_not_bit_for_bit(tmp_path, monkeypatch):
    """Float sums split over another number of threads round differently: the resumed run
    goes on correctly but is not the uninterrupted one bit for bit, and now says so."""
    # threads=None: torch's count, whatever it is (OMP_NUM_THREADS, another machine), is used
    torch.set_num_threads(1)
    with monkeypatch.context() as m:
        _crash_on(m, nsm.training.epoch, "train_step", 4)
        with pytest.raises(Crash):
            fit(_config(tmp_path, "run", threads=None), dataset=toy_dataset(), **QUIET)
    torch.set_num_threads(2)
    lines = []
    fit(_config(tmp_path, "run", threads=None), dataset=toy_dataset(), resume=tmp_path / "run", log=lines.append)
    assert any(
        "trained with 1 thread(s) and resumes with 2" in line and "--threads 1 resumes it exactly" in line
        for line in lines
    ), lines
    lines.clear()
    with monkeypatch.context() as m:
        _crash_on(m, nsm.training.epoch, "train_step", 4)
        with pytest.raises(Crash):
            fit(_config(tmp_path, "same", threads=1), dataset=toy_dataset(), **QUIET)
    fit(_config(tmp_path, "same", threads=1), dataset=toy_dataset(), resume=tmp_path / "same", log=lines.append)
    assert not any("thread(s) and resumes" in line for line in lines)


def test_an_mps_run_saves_and_restores_its_generator(monkeypatch):
    """The noise of a run on Apple's MPS is drawn by the MPS generator, which checkpoints did
    not save (CPU and CUDA only): a resumed MPS run drew other noise. No MPS here: torch.mps's
    two functions are stood in for, to check what is saved, restored and refused."""
    from nsm.training.checkpoint import rng_state, set_rng_state

    calls = []
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda: torch.tensor([7, 8], dtype=torch.uint8))
    monkeypatch.setattr(torch.mps, "set_rng_state", lambda s: calls.append(s.tolist()))
    gen = torch.Generator().manual_seed(0)
    mps = torch.device("mps")
    state = rng_state(mps, gen)
    assert state["mps"].tolist() == [7, 8]
    set_rng_state(state, mps, gen)
    assert calls == [[7, 8]]
    with pytest.raises(ValueError, match="not written by an MPS run"):
        set_rng_state(rng_state(torch.device("cpu"), gen), mps, gen)
    assert "mps" not in rng_state(torch.device("cpu"), gen)


def test_a_resumed_runs_recorded_data_folder_is_only_read(tmp_path, monkeypatch, mnist_dir, capsys):
    """`nsm train --resume RUN` takes the data folder from the run's config.json, a file that
    may be someone else's: it is read, never downloaded into (it was), and when it lacks the
    data the default folder is used; --data-dir is the user's own and downloads as ever."""
    from nsm.training.loop import _load_data

    elsewhere = tmp_path / "someone-elses-folder"
    elsewhere.mkdir()
    monkeypatch.setenv("NSM_DATA_DIR", str(mnist_dir))
    config = TrainConfig(dataset="mnist", data_dir=str(elsewhere), train_subset=50, test_subset=20)
    said = []
    ds = _load_data(config, True, said.append)
    assert ds.train_x.shape[0] == 50 and list(elsewhere.iterdir()) == []
    assert any("could not be read from the run's data folder" in s for s in said), said
    # the command passes the rule to fit for a resumed run without --data-dir, and only then
    _interrupted(tmp_path, monkeypatch)
    calls = []
    summary = dict(samples=2, final_test_error=0.1, epochs=3, wall_seconds=1.0, run_dir="run")
    monkeypatch.setattr(nsm.training.loop, "fit", lambda config, **kw: calls.append(kw) or summary)
    for extra, read_only in (([], True), (["--data-dir", str(mnist_dir)], False)):
        assert main(["train", "--resume", str(tmp_path / "run"), *extra]) == 0
        assert calls.pop()["read_only_data"] is read_only
