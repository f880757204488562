"""Other people's files and faults (issue 15): hostile checkpoints run nothing, lock and claim
files are never written through links, run names stay inside --out, Ctrl-C and a full disk end
in one line that says what to do, and bad options are refused before any work."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nsm.studies.evaluate
import nsm.studies.online
import nsm.training.epoch
import nsm.training.loop
from nsm.cli import main
from nsm.studies.claim import claim_run
from nsm.studies.reproduce import run_table
from nsm.training.checkpoint import RunLock
from nsm.training.config import TrainConfig
from nsm.training.loop import fit
from toys import assert_same_run, freeze_at_step_checkpoint, toy_dataset

QUIET = {"log": lambda *a: None}


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _config(tmp_path, name="run", **fields):
    fields = {
        "model": "bnsm",
        "epochs": 2,
        "batch_size": 30,
        "samples": 2,
        "progress": False,
        "threads": 1,
        "out": str(tmp_path),
        "run_name": name,
        **fields,
    }
    return TrainConfig(**fields)


def _ctrl_c_at_step(monkeypatch, step: int) -> None:
    """Make the ``step``-th training step raise KeyboardInterrupt, as Ctrl-C would."""
    real, calls = nsm.training.epoch.train_step, [0]

    def stop(*a, **k):
        calls[0] += 1
        if calls[0] == step:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(nsm.training.epoch, "train_step", stop)


class _Payload:
    """What a hostile checkpoint carries: unpickling it would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(ckpt: Path, marker: Path) -> None:
    torch.save(
        {
            "model": "bnsm",
            "model_state": {},
            "in_shape": (1, 16, 16),
            "num_classes": 3,
            "finished": True,
            "evil": _Payload(marker),
        },
        ckpt,
    )


# ---------------------------------------------------------------- 1. hostile checkpoints


def test_nsm_evaluate_refuses_a_checkpoint_that_carries_code(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "pwned"
    _plant(run / "checkpoint.pt", marker)
    assert main(["evaluate", str(run), "--out", str(tmp_path / "ev"), "--no-devices"]) == 2
    assert not marker.exists()
    err = capsys.readouterr().err
    assert f"refused to load {run / 'checkpoint.pt'}: it holds objects other than tensors" in err
    assert len(err.strip().splitlines()) == 1


def test_resume_and_reproduce_refuse_a_checkpoint_that_carries_code(tmp_path):
    config = _config(tmp_path, epochs=3)
    with pytest.raises(KeyboardInterrupt):  # a run stopped in its second epoch
        with pytest.MonkeyPatch.context() as m:
            _ctrl_c_at_step(m, 5)
            fit(config, dataset=toy_dataset(), **QUIET)
    marker = tmp_path / "pwned"
    _plant(tmp_path / "run" / "checkpoint.pt", marker)
    with pytest.raises(ValueError, match="refused to load .*checkpoint.pt: it holds objects other than tensors"):
        fit(config, dataset=toy_dataset(), resume=tmp_path / "run", **QUIET)
    assert not marker.exists()
    # nsm reproduce resumes interrupted runs from their checkpoints: the same refusal
    out = tmp_path / "table"
    cfg = {"epochs": 3, "batch_size": 30, "samples": 2, "threads": 1, "progress": False}
    (out / "runs" / "bnsm-mnist-seed0").mkdir(parents=True)
    saved = TrainConfig.for_dataset(
        "mnist", model="bnsm", seed=0, out=str(out / "runs"), run_name="bnsm-mnist-seed0", **cfg
    )
    (out / "runs" / "bnsm-mnist-seed0" / "config.json").write_text(json.dumps(saved.to_dict()))
    _plant(out / "runs" / "bnsm-mnist-seed0" / "checkpoint.pt", marker)
    with pytest.raises(ValueError, match="refused to load"):
        run_table(
            "mnist",
            out=out,
            seeds=[0],
            models=["bnsm"],
            overrides=cfg,
            load=lambda name, c: toy_dataset(),
            log=lambda s: None,
        )
    assert not marker.exists()


# ---------------------------------------------------------------- 2. links in place of lock and claim files


def test_a_symlinked_or_hard_linked_lock_is_refused_and_its_target_left_alone(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(victim)
    with pytest.raises(RuntimeError, match=r"lock file .*\.lock is a symbolic link; nsm never writes through"):
        RunLock(run)
    (run / ".lock").unlink()
    (run / ".lock").symlink_to(tmp_path / "nowhere")  # dangling: O_CREAT would create the target
    with pytest.raises(RuntimeError, match="symbolic link"):
        RunLock(run)
    assert not (tmp_path / "nowhere").exists()
    (run / ".lock").unlink()
    os.link(victim, run / ".lock")
    with pytest.raises(RuntimeError, match="a file with 2 names"):
        RunLock(run)
    (run / ".lock").unlink()
    (run / ".lock").write_text("my notes, not a lock\n")
    with pytest.raises(RuntimeError, match="is not a lock file nsm wrote"):
        RunLock(run)
    assert victim.read_text() == "precious\n" and (run / ".lock").read_text() == "my notes, not a lock\n"
    (run / ".lock").write_text("pid 1 on host elsewhere\n")  # a stale lock nsm wrote: taken over
    with RunLock(run):
        assert (run / ".lock").read_text().startswith(f"pid {os.getpid()} on host ")


def test_nsm_train_resume_through_a_symlinked_lock_leaves_the_victim(tmp_path, capsys):
    fit(_config(tmp_path, epochs=1), dataset=toy_dataset(), **QUIET)
    run = tmp_path / "run"
    (run / "summary.json").unlink()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (run / ".lock").symlink_to(victim)
    assert main(["train", "--resume", str(run)]) == 2
    assert victim.read_text() == "precious\n"
    assert "symbolic link" in capsys.readouterr().err


def test_a_symlinked_claim_is_refused_and_its_target_left_alone(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.utime(victim, (0, 0))  # old enough for any steal_after
    claim = tmp_path / "runs" / "x.claim"
    claim.parent.mkdir()
    claim.symlink_to(victim)
    with pytest.raises(RuntimeError, match="claim file .*x.claim is a symbolic link"):
        claim_run(claim, steal_after=60, log=lambda s: None)
    assert victim.read_text() == "precious\n"
    # a claim planted as a hard link to someone's file: taken over by replacing the name, never by writing into it
    claim.unlink()
    os.link(victim, claim)
    held, _ = claim_run(claim, steal_after=60, log=lambda s: None)
    assert held is not None
    held.release()
    assert victim.read_text() == "precious\n"


# ---------------------------------------------------------------- 3. run names


@pytest.mark.parametrize("name", ["../x", "/tmp/abs", "a/b", "..", ".", ""])
def test_run_names_that_leave_out_are_refused(tmp_path, name, capsys):
    with pytest.raises(ValueError, match="run_name' must be a plain folder name"):
        _config(tmp_path, name)
    assert main(["train", "--run-name", name, "--out", str(tmp_path / "o"), "--epochs", "1"]) == 2
    assert "plain folder name" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "o").exists()


# ---------------------------------------------------------------- 6. Ctrl-C


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_to_nsm_train_prints_one_line_exits_130_and_the_run_resumes_bit_for_bit(tmp_path, mnist_dir):
    args = [
        "train",
        "--model",
        "bnsm",
        "--epochs",
        "3",
        "--train-subset",
        "600",
        "--test-subset",
        "100",
        "--batch-size",
        "50",
        "--samples",
        "2",
        "--seed",
        "3",
        "--threads",
        "1",
        "--checkpoint-every",
        "2",
        "--data-dir",
        str(mnist_dir),
        "--no-progress",
        "--run-name",
        "run",
    ]
    run = tmp_path / "stopped" / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nsm", *args, "--out", str(run.parent)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        # as in a terminal's foreground job: a suite started in the background by a shell
        # (`pytest &`) passes SIGINT on ignored, and Python then never raises KeyboardInterrupt
        preexec_fn=_default_sigint,
    )
    try:
        freeze_at_step_checkpoint(proc, run)  # in epoch 2 or later, after a step checkpoint
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole process group
        os.killpg(proc.pid, signal.SIGCONT)  # it wakes up to the pending SIGINT
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 130
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"nsm train: interrupted; {run} keeps its checkpoint (")
    assert lines[0].endswith(f"resume with: nsm train --resume {run}")
    assert not (run / ".lock").exists() and not list(run.glob(".*.tmp"))
    resumed = subprocess.run(
        [sys.executable, "-m", "nsm", "train", "--resume", str(run), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    assert_same_run(tmp_path / "whole" / "run", run)


def test_ctrl_c_in_nsm_reproduce_names_the_run_and_the_command_that_resumes_it(tmp_path, monkeypatch, capsys):
    _ctrl_c_at_step(monkeypatch, 4)
    monkeypatch.setattr("nsm.data.load_dataset", lambda *a, **k: toy_dataset())
    out = tmp_path / "t"
    argv = [
        "reproduce",
        "mnist",
        "--models",
        "bnsm",
        "--seeds",
        "1",
        "--epochs",
        "2",
        "--samples",
        "2",
        "--batch-size",
        "30",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0] == (
        f"nsm reproduce: interrupted; {out / 'runs' / 'bnsm-mnist-seed0'} keeps its checkpoint "
        f"(after epoch 1); the same command resumes it: nsm {' '.join(argv)}"
    )
    assert not list((out / "runs").glob("*.claim"))


# ---------------------------------------------------------------- 7. a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MB tmpfs where this process may mount one (root on Linux), else None."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    ok = (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True).returncode
        == 0
        if os.geteuid() == 0
        else False
    )
    yield mnt if ok else None
    if ok:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_disk_names_the_file_keeps_the_checkpoint_and_says_how_to_resume(tmp_path, small_disk, monkeypatch):
    where = small_disk or tmp_path
    config = _config(where, epochs=3, checkpoint_every=2)
    real, calls = nsm.training.epoch.train_step, [0]
    filler = where / "filler"

    def fill_the_disk_on_step_5(*a, **k):
        calls[0] += 1
        if calls[0] == 5:
            if small_disk is not None:  # a real full disk: fill what is left
                with open(filler, "wb") as f:
                    try:
                        while True:
                            f.write(b"\0" * (1 << 16))
                            f.flush()
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC
            else:  # no tmpfs here: the next file write fails as a full disk would
                monkeypatch.setattr(nsm.utils.io.os, "fsync", _enospc)
        return real(*a, **k)

    monkeypatch.setattr(nsm.training.epoch, "train_step", fill_the_disk_on_step_5)
    run = where / "run"
    with pytest.raises(OSError) as info:
        fit(config, dataset=toy_dataset(), **QUIET)
    assert info.value.errno == errno.ENOSPC
    message = str(info.value)
    assert message.startswith(
        f"no space left on the device while writing {run / 'checkpoint.pt'}; "
        f"the previous checkpoint (epoch 2, after step 1) is kept"
    )
    assert message.endswith(f"free space and resume with: nsm train --resume {run}")
    assert not list(run.glob(".*.tmp"))
    monkeypatch.undo()
    filler.unlink(missing_ok=True)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["in_epoch"]["batch"] == 1
    fit(config, dataset=toy_dataset(), resume=run, **QUIET)
    fit(_config(tmp_path / "whole", epochs=3, checkpoint_every=2), dataset=toy_dataset(), **QUIET)
    assert_same_run(tmp_path / "whole" / "run", run)


def _enospc(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# ---------------------------------------------------------------- 8, 9. messages and early refusals


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seed", str(2**63)], r"'seed' must be an int in \[0, 2\^63\), got 9223372036854775808"),
        (["--threads", "1000000"], r"'threads' must be an int in \[1, 1024\], got 1000000"),
        (["--model", "dcnn", "--sampler", "synapse"], "model 'dcnn' has no option 'sampler'"),
        (["--weight-decay", "inf"], "'weight_decay' must be a finite number >= 0, got inf"),
    ],
)
def test_train_options_are_refused_with_what_is_allowed(tmp_path, capsys, argv, message, monkeypatch):
    monkeypatch.setattr("nsm.training.loop.load_dataset", lambda *a, **k: toy_dataset())
    assert main(["train", *argv, "--epochs", "1", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert pytest.importorskip("re").search(message, err), err


def test_model_options_in_a_hand_edited_config_and_a_binary_metrics_file(tmp_path, capsys):
    fit(_config(tmp_path, epochs=1), dataset=toy_dataset(), **QUIET)
    run = tmp_path / "run"
    (run / "summary.json").unlink()
    (run / "checkpoint.pt").unlink()
    saved = json.loads((run / "config.json").read_text())
    saved["model_options"] = {"widht": 3}
    (run / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"model 'bnsm' has no option 'widht' \(options given: widht=3\)"):
        fit(
            TrainConfig.from_dict({k: v for k, v in saved.items() if k != "_environment"}),
            dataset=toy_dataset(),
            resume=run,
            **QUIET,
        )
    (run / "metrics.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    saved["model_options"] = {}
    (run / "config.json").write_text(json.dumps(saved))
    assert main(["analyze", str(run), "--out", str(tmp_path / "fig")]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'metrics.jsonl'} is not UTF-8 text" in err


def _must_not_run(*a, **k):
    raise AssertionError("work started before the options were checked")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--angles", "0,nan"], "angles must be finite numbers"),
        (["--ood", "nope"], "ood must be 'auto', 'none' or a dataset name"),
    ],
)
def test_nsm_evaluate_refuses_bad_options_before_any_work(tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.setattr(nsm.studies.evaluate, "load_trained", _must_not_run)
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"x")
    assert main(["evaluate", str(run), "--out", str(tmp_path / "ev"), *extra]) == 2
    assert message in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(["evaluate", str(run), "--out", str(tmp_path / "file")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


def test_nsm_online_refuses_a_file_as_out_and_never_overwrites_a_result(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(nsm.studies.online, "online_comparison", _must_not_run)
    monkeypatch.setattr(nsm.studies.online, "load_dataset", _must_not_run)
    (tmp_path / "file").write_text("")
    assert main(["online", "bnsm", "--out", str(tmp_path / "file")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "online.json").write_text("{}")
    assert main(["online", "bnsm", "--out", str(tmp_path / "done")]) == 2
    assert "already holds online.json: nsm does not overwrite a result" in capsys.readouterr().err
    assert (tmp_path / "done" / "online.json").read_text() == "{}"


def test_more_threads_than_cores_gets_a_warning(tmp_path, capsys):
    fit(_config(tmp_path, epochs=1, threads=(os.cpu_count() or 1) + 1), dataset=toy_dataset(), **QUIET)
    assert "is more than this machine's" in capsys.readouterr().err


# ---------------------------------------------------------------- hostile run files (review, 2026-11-30)


def _interrupted_run(tmp_path, monkeypatch):
    """A run killed after its first epoch: its folder as the next `nsm train --resume` finds it."""
    config = _config(tmp_path, epochs=2)
    _ctrl_c_at_step(monkeypatch, 4)  # epoch 2's first step (3 steps of 30 per epoch)
    with pytest.raises(KeyboardInterrupt):
        fit(config, dataset=toy_dataset(), **QUIET)
    monkeypatch.undo()
    return config, tmp_path / "run"


def test_resume_removes_only_the_temporaries_nsm_left(tmp_path, monkeypatch):
    config, run = _interrupted_run(tmp_path, monkeypatch)
    ours = run / ".checkpoint.pt.a1b2c3d4.tmp"  # what a killed atomic_write leaves
    ours.write_bytes(b"half a checkpoint")
    theirs = [run / ".notes.tmp", run / ".metrics.jsonl.tmp", run / ".summary.json.x.tmp"]
    for p in theirs:
        p.write_text("mine")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".stats.csv.a1b2c3d4.tmp").write_text("mine too")
    (run / "record").symlink_to(elsewhere)  # a record folder that is a link: never followed
    fit(config, dataset=toy_dataset(), resume=run, **QUIET)
    assert not ours.exists() and (run / "summary.json").exists()
    assert all(p.read_text() == "mine" for p in theirs)
    assert (elsewhere / ".stats.csv.a1b2c3d4.tmp").read_text() == "mine too"


def _bomb(path: Path, megabytes: int) -> None:
    """A torch checkpoint whose pickle is a deflated string of ``megabytes`` MB (a small file)."""
    import io
    import struct
    import zipfile

    buf = io.BytesIO()
    torch.save({"a": 1}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            if info.filename.endswith("data.pkl"):
                member = zipfile.ZipInfo(info.filename)
                member.compress_type = zipfile.ZIP_DEFLATED
                with dst.open(member, "w", force_zip64=True) as w:
                    w.write(b"\x80\x02X" + struct.pack("<I", megabytes << 20))
                    for _ in range(megabytes):
                        w.write(b"a" * (1 << 20))
                    w.write(b".")
            else:
                dst.writestr(info, src.read(info))


def test_a_compressed_checkpoint_is_refused_before_it_expands(tmp_path, monkeypatch):
    from nsm.training.checkpoint import read_checkpoint

    _bomb(tmp_path / "checkpoint.pt", 64)  # 64 MB inside a file of a few hundred kB
    assert (tmp_path / "checkpoint.pt").stat().st_size < 1 << 20
    monkeypatch.setattr(torch, "load", _must_not_run)
    with pytest.raises(ValueError, match="member '.*data.pkl' is compressed, which torch.save never writes"):
        read_checkpoint(tmp_path / "checkpoint.pt")
    monkeypatch.undo()
    torch.save({"a": torch.ones(3)}, tmp_path / "fine.pt")  # torch's own files still load
    assert torch.equal(read_checkpoint(tmp_path / "fine.pt")["a"], torch.ones(3))


def test_a_checkpoint_that_declares_a_huge_network_is_refused_before_building_it(tmp_path, capsys, monkeypatch):
    run = tmp_path / "ev"
    run.mkdir()
    good = {"model": "bnsm-fc", "model_state": {}, "in_shape": (1, 28, 28), "num_classes": 10, "config": {}}
    for change, message in (
        ({"num_classes": 1_000_000}, "num_classes 1000000 is not in 1..10000"),
        ({"in_shape": (1, 10**6, 10**6)}, "is not an input shape"),
        ({"config": [1]}, "its config is not a configuration object"),
        ({"model": 3}, "model is a int"),
    ):
        torch.save({**good, **change}, run / "checkpoint.pt")
        monkeypatch.setattr(nsm.studies.evaluate, "build_model", _must_not_run)
        assert main(["evaluate", str(run), "--out", str(tmp_path / f"out-{len(message)}")]) == 2
        assert message in capsys.readouterr().err
    monkeypatch.undo()
    torch.save({**good, "model_state": {"bogus": torch.ones(1)}}, run / "checkpoint.pt")
    assert main(["evaluate", str(run), "--out", str(tmp_path / "out")]) == 2
    assert f"{run / 'checkpoint.pt'}: its weights do not fit network 'bnsm-fc'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "what, change, message",
    [
        ("checkpoint", {"wall_seconds": None}, "wall_seconds is a NoneType"),
        ("checkpoint", {"config": [1]}, "config is a list"),
        ("checkpoint", {"history": "x"}, "history is a str"),
        ("config", {"_environment": [1, 2]}, None),  # a hand-written environment: ignored
    ],
)
def test_a_run_whose_files_have_the_wrong_types_is_refused_in_one_line(
    tmp_path, monkeypatch, capsys, what, change, message
):
    config, run = _interrupted_run(tmp_path, monkeypatch)
    if what == "checkpoint":
        ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
        torch.save({**ckpt, **change}, run / "checkpoint.pt")
    else:
        saved = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**saved, **change}))
    if message is None:  # (the command would read MNIST: the toy run resumes through fit)
        assert fit(config, dataset=toy_dataset(), resume=run, **QUIET)["epochs"] == 2
        return
    code = main(["train", "--resume", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_run_files_too_large_or_too_deep_are_refused_naming_them(tmp_path, capsys):
    from nsm.utils.io import read_json

    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    assert main(["train", "--resume", str(tmp_path / "deep")]) == 2
    err = capsys.readouterr().err
    assert "config.json: JSON nested too deeply to read" in err and "Traceback" not in err
    big = tmp_path / "big.json"
    with open(big, "wb") as f:  # sparse: 64 MiB that take no disk
        f.truncate(64 * 2**20)
    with pytest.raises(ValueError, match="big.json is larger than 16,777,216 bytes"):
        read_json(big, "a configuration")


@pytest.mark.parametrize(
    "summary, message",
    [({}, "lacks last5_test_error"), ([], "holds a JSON list, not an object"), ({"x": 1}, "lacks")],
)
def test_a_bad_summary_in_a_table_folder_is_named(tmp_path, capsys, summary, message):
    run = tmp_path / "runs" / "dcnn-mnist-seed0"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "config.json").write_text(json.dumps(TrainConfig.for_dataset("mnist", model="dcnn").to_dict()))
    args = ["reproduce", "mnist", "--models", "dcnn", "--seed-list", "0", "--out", str(tmp_path), "--table-only"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_evaluate_analyze_and_reproduce_never_overwrite_a_users_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(nsm.studies.evaluate, "load_trained", _must_not_run)
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    (out / "evaluation.md").write_text("my notes")
    assert main(["evaluate", str(run), "--out", str(out)]) == 2
    assert "already holds evaluation.md: nsm does not overwrite a result" in capsys.readouterr().err
    (out / "convergence.png").write_text("my figure")
    assert main(["analyze", str(run), "--out", str(out)]) == 2
    assert "already holds convergence.png" in capsys.readouterr().err
    # a table folder: nsm rewrites its own table files, never someone else's
    (out / "table.md").write_text("mine, precious")
    args = ["reproduce", "mnist", "--models", "dcnn", "--seed-list", "0", "--out", str(out), "--table-only"]
    assert main(args) == 2
    assert "holds table.md, which nsm did not write" in capsys.readouterr().err
    assert (out / "table.md").read_text() == "mine, precious" and (out / "evaluation.md").read_text() == "my notes"
    (out / "table.md").unlink()
    assert main(args) == 0  # no table.md of anyone's: the (incomplete) table is written
    capsys.readouterr()
    assert main(args) == 0  # and rewritten: it is nsm's
    assert (out / "table.md").read_text().startswith("# nsm reproduce mnist")
