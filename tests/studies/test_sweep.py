"""`nsm reproduce` spread over several workers sharing one output folder (nsm.studies.claim): every run
trained once, live claims respected, stale ones taken over, interrupted runs resumed."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import nsm.studies.claim
import nsm.training.run
from nsm.cli import main
from nsm.studies.claim import claim_run, live_holder
from nsm.studies.reproduce import run_table
from toys import toy_dataset

OPTS = {"epochs": 2, "batch_size": 30, "samples": 2, "threads": 1, "progress": False}
TESTS = Path(__file__).resolve().parents[1]  # tests/, where toys.py lives


def _load(name, config):
    return toy_dataset()


def _table(out, logs=None, **kwargs):
    """run_table on the toy data; torch's thread count (fit sets threads=1) is put back after."""
    kwargs = {"seeds": [0, 1], "models": ["bnsm"], "overrides": OPTS, **kwargs}
    threads = torch.get_num_threads()
    try:
        return run_table(
            "mnist",
            out=out,
            load=_load,
            log=(logs.append if logs is not None else lambda s: None),
            command="test",
            **kwargs,
        )
    finally:
        torch.set_num_threads(threads)


def _csv(out):
    return {r["model"]: r for r in csv.DictReader((out / "table.csv").open())}


WORKER = (
    """
import sys, time
from pathlib import Path
import nsm.training.loop
from nsm.studies.reproduce import run_table
from toys import toy_dataset

out, me = Path(sys.argv[1]), sys.argv[2]
real = nsm.training.loop.fit

def fit(config, **kwargs):  # count the runs each worker trains; long enough for the other to look
    with open(out / "fits.txt", "a") as f:
        f.write(f"{config.run_name} {me}\\n")
    time.sleep(1.0)
    return real(config, **kwargs)

nsm.training.loop.fit = fit
(out / f"ready-{me}").touch()
while not ((out / "ready-a").exists() and (out / "ready-b").exists()):  # start together
    time.sleep(0.01)
run_table("mnist", out=out, seeds=[0, 1], models=["bnsm", "dcnn"], load=lambda name, c: toy_dataset(),
          overrides=%r, command="test")
"""
    % OPTS
)


def test_two_workers_share_one_out_dir_and_train_every_run_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent / "src"), str(TESTS)])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WORKER), str(tmp_path), me],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for me in "ab"
    ]
    logs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    fits = [line.split() for line in (tmp_path / "fits.txt").read_text().splitlines()]
    names = sorted(name for name, _ in fits)
    assert names == sorted(f"{m}-mnist-seed{s}" for m in ("bnsm", "dcnn") for s in (0, 1)), logs
    assert {me for _, me in fits} == {"a", "b"}, logs  # both workers trained
    assert "; skipped" in logs[0] + logs[1]
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == names  # no NAME-1, no claims left
    table = _csv(tmp_path)
    assert {m: (r["seeds"], r["pending_seeds"]) for m, r in table.items()} == {"bnsm": ("0;1", ""), "dcnn": ("0;1", "")}
    assert "Incomplete" not in (tmp_path / "table.md").read_text()


def test_a_run_claimed_by_a_live_worker_is_skipped_and_the_table_says_so(tmp_path):
    claim, _ = claim_run(tmp_path / "runs" / "bnsm-mnist-seed0.claim")
    logs = []
    rows = _table(tmp_path, logs)
    assert f"bnsm-mnist-seed0: claimed by pid {os.getpid()} on host {socket.gethostname()}" in "\n".join(logs)
    assert not (tmp_path / "runs" / "bnsm-mnist-seed0").exists()
    assert (tmp_path / "runs" / "bnsm-mnist-seed1" / "summary.json").exists()
    assert "1 still running in other workers (bnsm-mnist-seed0), 0 not started" in logs[-1]
    assert rows[0]["seeds"] == [1] and rows[0]["pending_seeds"] == [0]
    text = (tmp_path / "table.md").read_text()
    assert "**Incomplete**: 1 of 2 runs finished" in text and "| 1/2 |" in text
    assert _csv(tmp_path)["bnsm"]["pending_seeds"] == "0"
    claim.release()
    assert not (tmp_path / "runs" / "bnsm-mnist-seed0.claim").exists()
    logs.clear()
    rows = _table(tmp_path, logs)
    assert rows[0]["seeds"] == [0, 1] and rows[0]["pending_seeds"] == []
    assert "Incomplete" not in (tmp_path / "table.md").read_text()
    assert not any("still running" in line for line in logs)


def _write_claim(path, pid, host, age=0.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"pid {pid} on host {host} since 2026-01-01T00:00:00+0000\n")
    if age:
        t = time.time() - age
        os.utime(path, (t, t))


def test_stale_claims_are_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    runs = tmp_path / "runs"
    _write_claim(runs / "bnsm-mnist-seed0.claim", dead.pid, socket.gethostname())
    _write_claim(runs / "bnsm-mnist-seed1.claim", 4242, "another-host.example", age=1000)
    logs = []
    _table(tmp_path, logs)
    text = "\n".join(logs)
    assert f"took over the stale claim {runs / 'bnsm-mnist-seed0.claim'} (pid {dead.pid}" in text
    assert (runs / "bnsm-mnist-seed0" / "summary.json").exists()
    # another host's pid cannot be checked: its claim stands until it is older than steal_after
    assert "bnsm-mnist-seed1: claimed by pid 4242 on host another-host.example" in text
    assert not (runs / "bnsm-mnist-seed1").exists()
    assert live_holder(runs / "bnsm-mnist-seed1.claim").startswith("pid 4242")
    assert live_holder(runs / "bnsm-mnist-seed1.claim", steal_after=600) == ""
    with pytest.raises(ValueError, match="steal_after must be >= 60 seconds"):
        _table(tmp_path, steal_after=30)
    logs.clear()
    rows = _table(tmp_path, logs, steal_after=600)
    assert any(
        line.startswith(f"took over the stale claim {runs / 'bnsm-mnist-seed1.claim'} (pid 4242") for line in logs
    )
    assert rows[0]["seeds"] == [0, 1] and not list(runs.glob("*.claim"))


def test_a_claim_of_this_host_without_its_lock_is_stale_whatever_its_pid_now_is(tmp_path):
    """After a restart pids are handed out again: a dead worker's claim can name a running
    process, this one even. Its flock is free, so it is stale (it was skipped forever)."""
    for pid in (os.getpid(), 1):
        path = tmp_path / f"r{pid}.claim"
        _write_claim(path, pid, socket.gethostname())
        assert live_holder(path) == ""
        logs = []
        claim, holder = claim_run(path, log=logs.append)
        assert claim is not None and holder == "", holder
        assert logs == [
            f"took over the stale claim {path} (pid {pid} on host {socket.gethostname()} since 2026-01-01T00:00:00+0000)"
        ]
        assert live_holder(path).startswith(f"pid {os.getpid()} ")  # held now: its lock is taken
        claim.release()
        assert not path.exists()


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux's /proc")
def test_a_claim_of_this_host_whose_process_still_runs_keeps_it_without_its_lock(tmp_path):
    """A holder can lose its lock without dying (an expired NFS lease): its claim records the
    boot id and its start time, so while that very process runs the claim stands; the same
    pid with another start time (handed out again after a restart) does not keep it."""
    from nsm.utils.process import identity

    me = identity(os.getpid())
    assert me and ":" in me
    line = f"pid {os.getpid()} on host {socket.gethostname()} since 2026-01-01T00:00:00+0000"
    live = tmp_path / "live.claim"
    live.write_text(f"{line} process {me}\n")  # written by hand: nobody holds its lock
    assert live_holder(live).startswith(f"pid {os.getpid()} ")
    assert claim_run(live, log=print) == (None, f"{line} process {me}")
    boot, start = me.split(":")
    reused = tmp_path / "reused.claim"
    reused.write_text(f"{line} process {boot}:{int(start) + 1}\n")
    assert live_holder(reused) == ""
    claim, _ = claim_run(reused, log=lambda s: None)
    assert claim is not None and f"process {me}" in reused.read_text()  # the new claim records its own
    claim.release()


def test_a_claim_beats_its_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setattr(nsm.studies.claim, "HEARTBEAT_SECONDS", 0.05)
    path = tmp_path / "r.claim"
    with claim_run(path)[0]:
        t = time.time() - 1000
        os.utime(path, (t, t))
        time.sleep(0.5)
        assert time.time() - path.stat().st_mtime < 100
        assert live_holder(path, steal_after=100).startswith(f"pid {os.getpid()} ")
    assert not path.exists()


class Crash(Exception):
    """Stands for a kill in the middle of a run."""


def _metrics(run_dir):
    return [
        {k: v for k, v in json.loads(line).items() if "seconds" not in k}
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]


def test_an_interrupted_run_is_resumed_not_restarted(tmp_path, monkeypatch):
    _table(tmp_path / "ref", seeds=[0])  # the uninterrupted run
    real, calls = nsm.training.run.evaluate, [0]

    def evaluate(*args, **kwargs):  # crash in epoch 2's evaluation, after epoch 1's checkpoint
        calls[0] += 1
        if calls[0] == 2:
            raise Crash
        return real(*args, **kwargs)

    monkeypatch.setattr(nsm.training.run, "evaluate", evaluate)
    out = tmp_path / "sweep"
    with pytest.raises(Crash):
        _table(out, seeds=[0])
    monkeypatch.undo()
    runs = out / "runs"
    assert not (runs / "bnsm-mnist-seed0" / "summary.json").exists() and not list(runs.glob("*.claim"))
    # seed 1: an interrupted run of another configuration cannot be resumed: moved aside
    (runs / "bnsm-mnist-seed1").mkdir()
    saved = json.loads((runs / "bnsm-mnist-seed0" / "config.json").read_text())
    (runs / "bnsm-mnist-seed1" / "config.json").write_text(json.dumps({**saved, "seed": 1, "batch_size": 7}))
    logs = []
    _table(out, logs)
    text = "\n".join(logs)
    assert "bnsm on mnist, seed 0 (resuming the interrupted run)" in text
    assert "resuming from" in text and "after epoch 1" in text
    assert _metrics(runs / "bnsm-mnist-seed0") == _metrics(tmp_path / "ref" / "runs" / "bnsm-mnist-seed0")
    assert "batch_size: 7 there, 30 here" in text
    assert (runs / "bnsm-mnist-seed1.incomplete-1" / "config.json").exists()
    assert sorted(p.name for p in runs.iterdir()) == [
        "bnsm-mnist-seed0",
        "bnsm-mnist-seed1",
        "bnsm-mnist-seed1.incomplete-1",
    ]


KILLED = (
    """
import os, signal, sys
import nsm.training.run
from nsm.studies.reproduce import run_table
from toys import toy_dataset

real, calls = nsm.training.run.evaluate, [0]

def evaluate(*args, **kwargs):  # SIGKILL in epoch 2's evaluation, after epoch 1's checkpoint
    calls[0] += 1
    if calls[0] == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)

nsm.training.run.evaluate = evaluate
run_table("mnist", out=sys.argv[1], seeds=[0], models=["bnsm"], load=lambda name, c: toy_dataset(),
          overrides=%r, command="test")
"""
    % OPTS
)


def test_a_killed_workers_run_is_taken_over_and_resumed(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent / "src"), str(TESTS)])}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED), str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == -9, output
    runs = tmp_path / "runs"
    assert (runs / "bnsm-mnist-seed0.claim").read_text().startswith(f"pid {proc.pid} on host ")
    assert not (runs / "bnsm-mnist-seed0" / "summary.json").exists()
    logs = []
    rows = _table(tmp_path, logs, seeds=[0])
    text = "\n".join(logs)
    assert f"took over the stale claim {runs / 'bnsm-mnist-seed0.claim'}" in text
    assert "(resuming the interrupted run)" in text and "after epoch 1" in text
    assert rows[0]["seeds"] == [0] and sorted(p.name for p in runs.iterdir()) == ["bnsm-mnist-seed0"]
    assert [row["epoch"] for row in _metrics(runs / "bnsm-mnist-seed0")] == [1, 2]


def test_worker_k_of_n_takes_a_fixed_share(tmp_path, capsys):
    logs = []
    rows = _table(tmp_path, logs, seeds=[0, 1, 2], worker=(2, 2))
    assert "worker 2/2 takes 1 of them" in logs[0]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["bnsm-mnist-seed1"]
    assert rows[0]["pending_seeds"] == [0, 2] and "2 not started" in logs[-1]
    with pytest.raises(ValueError, match="worker must be"):
        _table(tmp_path, worker=(3, 2))
    assert main(["reproduce", "mnist", "--worker", "1of2", "--out", str(tmp_path)]) == 2
    assert "--worker must read K/N" in capsys.readouterr().err


def test_two_nsm_reproduce_commands_share_one_out_dir(mnist_dir, tmp_path):
    """The README's recipe: the same command started twice (the second with --steal-after)."""
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent / "src")}
    command = [
        sys.executable,
        "-m",
        "nsm",
        "reproduce",
        "mnist",
        "--models",
        "s2m,bnsm-fc",
        "--seeds",
        "2",
        "--epochs",
        "1",
        "--train-subset",
        "200",
        "--test-subset",
        "40",
        "--samples",
        "2",
        "--threads",
        "1",
        "--data-dir",
        str(mnist_dir),
        "--out",
        str(tmp_path),
        "--no-progress",
    ]
    procs = [
        subprocess.Popen(command + extra, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for extra in ([], ["--steal-after", "600"])
    ]
    logs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    names = sorted(f"{m}-mnist-seed{s}" for m in ("s2m", "bnsm-fc") for s in (0, 1))
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == names, logs  # each run once
    for name in names:
        assert len(_metrics(tmp_path / "runs" / name)) == 1
    assert {m: r["seeds"] for m, r in _csv(tmp_path).items()} == {"s2m": "0;1", "bnsm-fc": "0;1"}
    assert "Incomplete" not in (tmp_path / "table.md").read_text()
