"""Data-parallel training (nsm.distributed): two gloo processes on the CPU compute the gradient
of one process on the whole batch, evaluate the whole test set, --resume is refused for now, and under
``torchrun`` only rank 0 writes the run directory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import nsm.train
from nsm.config import TrainConfig
from nsm.distributed import Group, from_env, noise_seed, process_group, wrap
from nsm.mc import forward_mode
from nsm.models import build_model
from nsm.train import evaluate, fit, train_one_epoch

from toys import toy_dataset

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")

CPU = torch.device("cpu")
SRC = Path(nsm.train.__file__).resolve().parents[1]  # the nsm under test, for the torchrun subprocess
WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, *args) -> None:
    """``fn(*args)`` in WORLD processes with torchrun's environment (rank r: RANK=r)."""
    mp.spawn(_as_rank, args=(_free_port(), fn, args), nprocs=WORLD, join=True)


def _as_rank(rank: int, port: int, fn, args) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
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
        stats = train_one_epoch(wrap(model, group, CPU), optimizer, data.train_x[:45], data.train_y[:45],
                                batch_size=20, generator=torch.Generator().manual_seed(1), device=CPU, group=group)
        stats.update(evaluate(model, data.test_x, data.test_y, samples=1, device=CPU, batch_size=4,
                              mode="mean", group=group))
    return {"stats": stats, "weights": {k: v.clone() for k, v in model.state_dict().items()},
            "grads": {k: p.grad.clone() for k, p in model.named_parameters()}}


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


def test_resume_with_several_processes_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    config = TrainConfig(model="bnsm", epochs=1, batch_size=20, samples=1, progress=False, out=str(tmp_path))
    with pytest.raises(ValueError, match="--resume is not supported with 2 processes"):
        fit(config, dataset=toy_dataset(), resume=tmp_path, log=lambda *a: None)


def _metrics(run_dir):
    return [{k: v for k, v in json.loads(line).items() if "seconds" not in k}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_torchrun_nsm_train_writes_one_run_directory_and_repeats_exactly(tmp_path, mnist_dir):
    """`torchrun --standalone --nproc_per_node 2 -m nsm train` on 1000 MNIST images, 1 epoch:
    one run directory, written by rank 0; the test error covers the 200 test images; the same
    command twice gives the same numbers."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    results = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
             "-m", "nsm", "train", "--model", "bnsm", "--epochs", "1", "--train-subset", "1000",
             "--test-subset", "200", "--batch-size", "50", "--samples", "2", "--seed", "3", "--threads", "1",
             "--data-dir", str(mnist_dir), "--no-progress", "--out", str(out), "--run-name", "run"],
            capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.count("run directory:") == 2  # rank 0's log and report only
        assert [p.name for p in out.iterdir()] == ["run"]
        run = out / "run"
        assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.json", "curves.png",
                                                         "metrics.jsonl", "summary.json"]
        environment = json.loads((run / "config.json").read_text())["_environment"]
        assert environment["world_size"] == WORLD and environment["n_test"] == 200
        metrics = _metrics(run)
        assert len(metrics) == 1
        wrong = metrics[0]["test_error"] * 200
        assert abs(wrong - round(wrong)) < 1e-9  # a count out of all 200 test images
        results.append((metrics, torch.load(run / "checkpoint.pt", weights_only=True)["model_state"]))
    (m0, w0), (m1, w1) = results
    assert m0 == m1 and all(torch.equal(w0[k], w1[k]) for k in w0)
