"""Data-parallel training (nsm.training.distributed): two gloo processes on the CPU compute the gradient
of one process on the whole batch, evaluate the whole test set, under ``torchrun`` only rank 0 writes the run directory, and a run
stopped anywhere (also by SIGKILL) resumes with as many processes bit for bit."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import nsm.training.epoch
from nsm.cli import main
from nsm.models import build_model
from nsm.nn.mc import forward_mode
from nsm.training.config import TrainConfig
from nsm.training.distributed import Group, from_env, noise_seed, process_group, wrap
from nsm.training.epoch import evaluate, train_one_epoch
from nsm.training.loop import fit
from toys import toy_dataset

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available"
)

CPU = torch.device("cpu")
SRC = Path(nsm.__file__).resolve().parents[1]  # the nsm under test, for the torchrun subprocess
WORLD = 2


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    """fit sets torch's thread count (threads=1); put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, *args) -> None:
    """``fn(*args)`` in WORLD processes with torchrun's environment (rank r: RANK=r)."""
    mp.spawn(_as_rank, args=(_free_port(), fn, args), nprocs=WORLD, join=True)


def _as_rank(rank: int, port: int, fn, args) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(WORLD),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
    )
    torch.set_num_threads(1)
    fn(*args)


def _bnsm(data):
    torch.manual_seed(0)
    return build_model("bnsm", data.in_shape, data.num_classes)


def _one_epoch_in_mean_mode(group: Group) -> dict:
    """One epoch of SGD on 45 toy images in batches of 20 (the last of 5, cut 3 + 2 over two
    processes), bnsm in mean-field mode (a deterministic forward), then the mean-mode test
    error in batches of 4: weights, last gradients, training and test figures."""
    data = toy_dataset()
    model = _bnsm(data)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    with forward_mode(model, "mean"):
        stats = train_one_epoch(
            wrap(model, group, CPU),
            optimizer,
            data.train_x[:45],
            data.train_y[:45],
            batch_size=20,
            generator=torch.Generator().manual_seed(1),
            device=CPU,
            group=group,
        )
        stats.update(
            evaluate(model, data.test_x, data.test_y, samples=1, device=CPU, batch_size=4, mode="mean", group=group)
        )
    return {
        "stats": stats,
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": {k: p.grad.clone() for k, p in model.named_parameters()},
    }


def _ddp_epoch_worker(out: str) -> None:
    group = from_env()
    with process_group(group, CPU):
        result = _one_epoch_in_mean_mode(group)
    torch.save(result, f"{out}/rank{group.rank}.pt")


def test_ddp_gradient_equals_the_gradient_of_one_process_on_the_whole_batch(tmp_path):
    """Deterministic forward (mean mode), so the two runs must agree up to float rounding:
    the DDP average of the two weighted shares is the gradient of the mean loss over the whole
    batch, also for the uneven last batch; every rank holds the same weights; the training
    loss/error and the test error and NLL (test set split 15 + 15) are those of one process."""
    single = _one_epoch_in_mean_mode(Group())
    _spawn(_ddp_epoch_worker, str(tmp_path))
    for rank in range(WORLD):
        ddp = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for key in ("grads", "weights"):
            for name, t in single[key].items():
                torch.testing.assert_close(ddp[key][name], t, rtol=1e-5, atol=1e-6, msg=f"{key} {name}")
        assert ddp["stats"]["train_error"] == single["stats"]["train_error"]
        assert ddp["stats"]["test_error"] == single["stats"]["test_error"]
        assert ddp["stats"]["train_loss"] == pytest.approx(single["stats"]["train_loss"], rel=1e-6)
        assert ddp["stats"]["test_nll"] == pytest.approx(single["stats"]["test_nll"], rel=1e-6)


def test_a_group_shares_items_into_contiguous_disjoint_parts():
    for n in (0, 1, 5, 20, 21):
        parts = [Group(rank=r, world_size=3).part(n) for r in range(3)]
        assert [i for p in parts for i in range(n)[p]] == list(range(n))
        assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1
    assert Group().part(7) == slice(0, 7) and noise_seed(3, 2) == 3 + 2 * 1000003


def test_what_ddp_cannot_do_exactly_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    config = TrainConfig(model="bnsm", epochs=1, batch_size=15, samples=1, progress=False, out=str(tmp_path))
    with pytest.raises(ValueError, match="--batch-size 15 is not divisible by the 2 processes"):
        fit(config, dataset=toy_dataset(), log=lambda *a: None)
    with pytest.raises(ValueError, match="--record is not supported with 2 processes"):
        fit(config.replace(batch_size=20, record=True), dataset=toy_dataset(), log=lambda *a: None)
    with pytest.raises(ValueError, match="--device must be cpu, cuda or auto"):
        fit(config.replace(batch_size=20, device="cuda:1"), dataset=toy_dataset(), log=lambda *a: None)
    assert not list(tmp_path.iterdir())


def _toy_config(tmp_path, name):
    """bnsm on the toy data: 90 images in batches of 20 (5 steps per epoch), a checkpoint every 2 steps."""
    return TrainConfig(
        model="bnsm",
        epochs=3,
        batch_size=20,
        samples=2,
        progress=False,
        threads=1,
        checkpoint_every=2,
        out=str(tmp_path),
        run_name=name,
    )


def _fit_worker(out: str, name: str, resume: bool, crash_at: int) -> None:
    """fit of the toy run in this process; ``crash_at``: every rank ends at that training step at once,
    with no cleanup, as if killed (``os._exit``)."""
    if crash_at:
        original, calls = nsm.training.epoch.train_step, [0]

        def train_step(*args, **kwargs):
            calls[0] += 1
            if calls[0] == crash_at:
                os._exit(0)
            return original(*args, **kwargs)

        nsm.training.epoch.train_step = train_step
    fit(_toy_config(out, name), dataset=toy_dataset(), resume=f"{out}/{name}" if resume else None, log=lambda *a: None)


def test_a_ddp_run_stopped_mid_epoch_resumes_bit_for_bit_and_only_with_as_many_processes(tmp_path):
    """Two processes stopped at the same step of epoch 2 (after the checkpoint of its step 1) and
    resumed by two: the metrics and weights of the uninterrupted two-process run. One process may
    not resume it (the message names the number), nor two a one-process run: no hang, a message."""
    _spawn(_fit_worker, str(tmp_path), "whole", False, 0)
    _spawn(_fit_worker, str(tmp_path), "run", False, 8)
    run = tmp_path / "run"
    assert (run / ".lock").exists()  # left by the kill: stale, the resume takes it
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["in_epoch"]["batch"], ckpt["world_size"]) == (1, 1, WORLD)
    assert len(ckpt["rng_ranks"]) == WORLD and not (run / "summary.json").exists()
    with pytest.raises(
        ValueError,
        match=rf"{run} was trained by 2 process\(es\) \(config.json\); resume it "
        rf"with as many, e.g. torchrun --nproc_per_node 2 \(this run has 1\)",
    ):
        fit(_toy_config(tmp_path, "run"), dataset=toy_dataset(), resume=run, log=lambda *a: None)
    _spawn(_fit_worker, str(tmp_path), "run", True, 0)
    assert _metrics(run) == _metrics(tmp_path / "whole")
    w0, w1 = (torch.load(d / "checkpoint.pt", weights_only=True)["model_state"] for d in (tmp_path / "whole", run))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert not (run / ".lock").exists() and (run / "summary.json").exists()

    fit(_toy_config(tmp_path, "single"), dataset=toy_dataset(), log=lambda *a: None)
    (tmp_path / "single" / "summary.json").unlink()
    with pytest.raises(mp.ProcessRaisedException, match=r"was trained by 1 process\(es\).*\(this run has 2\)"):
        _spawn(_fit_worker, str(tmp_path), "single", True, 0)


def _metrics(run_dir):
    return [
        {k: v for k, v in json.loads(line).items() if "seconds" not in k}
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]


@pytest.mark.slow
def test_torchrun_nsm_train_writes_one_run_directory_and_repeats_exactly(tmp_path, mnist_dir):
    """`torchrun --standalone --nproc_per_node 2 -m nsm train` on 1000 MNIST images, 1 epoch:
    one run directory, written by rank 0; the test error covers the 200 test images; the same
    command twice gives the same numbers."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    results = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node",
                str(WORLD),
                "-m",
                "nsm",
                "train",
                "--model",
                "bnsm",
                "--epochs",
                "1",
                "--train-subset",
                "1000",
                "--test-subset",
                "200",
                "--batch-size",
                "50",
                "--samples",
                "2",
                "--seed",
                "3",
                "--threads",
                "1",
                "--data-dir",
                str(mnist_dir),
                "--no-progress",
                "--out",
                str(out),
                "--run-name",
                "run",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.count("run directory:") == 2  # rank 0's log and report only
        assert [p.name for p in out.iterdir()] == ["run"]
        run = out / "run"
        assert sorted(p.name for p in run.iterdir()) == [
            "checkpoint.pt",
            "config.json",
            "curves.png",
            "metrics.jsonl",
            "summary.json",
        ]
        environment = json.loads((run / "config.json").read_text())["_environment"]
        assert environment["world_size"] == WORLD and environment["n_test"] == 200
        metrics = _metrics(run)
        assert len(metrics) == 1
        wrong = metrics[0]["test_error"] * 200
        assert abs(wrong - round(wrong)) < 1e-9  # a count out of all 200 test images
        results.append((metrics, torch.load(run / "checkpoint.pt", weights_only=True)["model_state"]))
    (m0, w0), (m1, w1) = results
    assert m0 == m1 and all(torch.equal(w0[k], w1[k]) for k in w0)


STOPPER = """import os, signal, sys
import nsm.training.epoch
from nsm.cli import main

original, calls, stop_at = nsm.training.epoch.train_step, [0], int(os.environ["NSM_TEST_SIGKILL_AT_STEP"])


def train_step(*args, **kwargs):
    calls[0] += 1
    if calls[0] == stop_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)


nsm.training.epoch.train_step = train_step
sys.exit(main(sys.argv[1:]))
"""


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _torchrun(args: list[str], log: Path, env: dict, timeout: float = 120) -> tuple[int, str]:
    """``torchrun --standalone --nproc_per_node WORLD ARGS``: its exit status and output. Output goes
    to a file, not a pipe (a worker left running cannot block the test on it); past ``timeout`` the
    agent and its workers (in sessions of their own) are killed and the test fails: no hang."""
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD), *args],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for pid in [*_children(proc.pid), proc.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait()
            pytest.fail(f"torchrun {' '.join(args)} did not end within {timeout} s (hung?):\n{log.read_text()[-3000:]}")
    return proc.returncode, log.read_text()


@pytest.mark.slow
def test_torchrun_nsm_train_killed_after_epoch_1_and_resumed_ends_as_the_uninterrupted_run(tmp_path, mnist_dir, capsys):
    """`torchrun --nproc_per_node 2 -m nsm train` on 500 MNIST images, 2 epochs of 10 steps: both
    processes SIGKILLed at the first step of epoch 2 (the checkpoint holds epoch 1), resuming in one
    process refused, then `torchrun ... -m nsm train --resume RUN_DIR`: the metrics, summary and
    weights of the same command run without interruption."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "NSM_TEST_SIGKILL_AT_STEP": "11",
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    args = [
        "train",
        "--model",
        "bnsm",
        "--epochs",
        "2",
        "--train-subset",
        "500",
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
        "--data-dir",
        str(mnist_dir),
        "--no-progress",
        "--run-name",
        "run",
    ]
    stopper = tmp_path / "stopper.py"
    stopper.write_text(STOPPER)
    killed = tmp_path / "killed" / "run"
    rc, out = _torchrun([str(stopper), *args, "--out", str(killed.parent)], tmp_path / "killed.log", env)
    assert rc != 0 and "SIGKILL" in out, out[-3000:]
    ckpt = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["in_epoch"], ckpt["finished"], ckpt["world_size"]) == (1, None, False, WORLD)
    assert (killed / ".lock").exists() and not (killed / "summary.json").exists()

    assert main(["train", "--resume", str(killed)]) == 2  # one process: refused
    assert f"{killed} was trained by 2 process(es) (config.json); resume it with as many" in capsys.readouterr().err

    rc, out = _torchrun(["-m", "nsm", "train", "--resume", str(killed), "--no-progress"], tmp_path / "resumed.log", env)
    assert rc == 0, out[-3000:]
    assert f"resuming from {killed / 'checkpoint.pt'}: after epoch 1" in out
    rc, out = _torchrun(["-m", "nsm", *args, "--out", str(tmp_path / "whole")], tmp_path / "whole.log", env)
    assert rc == 0, out[-3000:]
    whole = tmp_path / "whole" / "run"
    assert _metrics(killed) == _metrics(whole) and len(_metrics(whole)) == 2
    s0, s1 = (json.loads((d / "summary.json").read_text()) for d in (whole, killed))
    assert {k: v for k, v in s0.items() if k not in ("wall_seconds", "run_dir")} == {
        k: v for k, v in s1.items() if k not in ("wall_seconds", "run_dir")
    }
    w0, w1 = (torch.load(d / "checkpoint.pt", weights_only=True)["model_state"] for d in (whole, killed))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert not (killed / ".lock").exists() and not list(killed.glob(".*.tmp"))
