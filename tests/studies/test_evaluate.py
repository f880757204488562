"""``nsm evaluate`` end to end on tiny runs trained on real MNIST (Fashion-MNIST as OOD)."""

from __future__ import annotations

import json

import pytest
import torch

from nsm.cli import main
from nsm.studies.evaluate import as_preprocessed_like, evaluate_run, load_trained
from nsm.training.config import TrainConfig
from nsm.training.loop import fit


def _run(tmp_path, mnist_dir, model):
    config = TrainConfig(
        model=model,
        epochs=1,
        train_subset=3000,
        test_subset=100,
        samples=2,
        data_dir=str(mnist_dir),
        out=str(tmp_path / "runs"),
        progress=False,
    )
    return fit(config, log=lambda *a: None)["run_dir"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist_dir, fashion_dir):
    """Runs whose recorded data folder holds MNIST and Fashion-MNIST (the OOD set)."""
    assert fashion_dir == mnist_dir
    tmp = tmp_path_factory.mktemp("evaluate")
    return {m: _run(tmp, mnist_dir, m) for m in ("bnsm", "dcnn")}


def test_evaluate_command_writes_numbers_and_figures(runs, tmp_path, capsys):
    out = tmp_path / "ev"
    code = main(
        [
            "evaluate",
            runs["bnsm"],
            runs["dcnn"],
            "--out",
            str(out),
            "--samples",
            "4",
            "--shift-subset",
            "40",
            "--angles",
            "0,90",
            "--device-subset",
            "40",
            "--device-samples",
            "2",
            "--test-subset",
            "100",
        ]
    )
    assert code == 0, capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "accuracy_vs_samples.png",
        "devices.png",
        "evaluation.json",
        "evaluation.md",
        "ood.png",
        "reliability.png",
        "rotation.png",
    ]
    data = json.loads((out / "evaluation.json").read_text())
    bnsm, dcnn = data["runs"]
    assert (bnsm["label"], bnsm["samples"], dcnn["samples"]) == ("bnsm", 4, 1)
    u = bnsm["uncertainty"]
    assert 0 <= u["error"] <= 1 and u["nll"] > 0 and 0 <= u["ece"] <= 1 and 0 <= u["brier"] <= 2
    assert u["mutual_information"] > 0  # the NSM's samples disagree
    assert dcnn["uncertainty"]["mutual_information"] == 0  # one deterministic pass
    assert sorted(bnsm["accuracy_vs_samples"], key=int) == ["1", "2", "4"] and list(dcnn["accuracy_vs_samples"]) == [
        "1"
    ]
    assert bnsm["rotation"]["angle"] == [0.0, 90.0] and len(bnsm["rotation"]["entropy"]) == 2
    ood = bnsm["ood"]
    assert ood["dataset"] == "fashion-mnist" and ood["n_in"] == ood["n_out"] == 40
    assert 0 <= ood["entropy"]["auroc"] <= 1 and 0 <= ood["mutual_information"]["auroc"] <= 1
    assert dcnn["ood"]["mutual_information"]["auroc"] == 0.5  # MI is 0 for all: no information
    dev = bnsm["devices"]
    assert {"levels", "p_spread", "read_noise"} <= set(dev) and "p_spread" not in dcnn["devices"]
    assert all(0 <= v <= 1 for v in dev["levels"].values())
    assert "| bnsm | 4 |" in (out / "evaluation.md").read_text()


def test_rotation_makes_the_nsm_less_certain(runs):
    """Upright digits vs digits turned by 90 degrees: the mean predictive entropy rises and
    the accuracy falls (a trained model, 100 images, S = 8)."""
    res = evaluate_run(
        runs["bnsm"],
        samples=7,
        shift_subset=100,
        angles=[0, 90],
        ood="none",  # as the command line spells it (was refused from Python)
        devices=False,
        test_subset=100,
        log=lambda *a: None,
    )
    rot = res["rotation"]
    assert rot["entropy"][1] > rot["entropy"][0]
    assert rot["accuracy"][1] < rot["accuracy"][0]
    assert "ood" not in res
    # the accuracy-against-S curve ends at the S reported (it stopped at 5 for S = 7)
    assert list(res["accuracy_vs_samples"]) == ["1", "2", "5", "7"]
    assert res["accuracy_vs_samples"]["7"] == res["uncertainty"]["accuracy"]


def test_ood_images_are_preprocessed_as_the_models_own():
    """CIFAR-style standardization with each dataset's own statistics: the OOD images are
    mapped back to [0, 1] and standardized with the model's (they were scored as preprocessed
    by their own); ZCA and a mix of preprocessed and raw datasets are refused."""
    gen = torch.Generator().manual_seed(0)
    raw = torch.rand(6, 3, 4, 4, generator=gen, dtype=torch.float64)
    own = {"preprocessing": "per-channel standardization", "mean": [0.2, 0.5, 0.7], "std": [0.1, 0.3, 0.2]}
    model = {"preprocessing": "per-channel standardization", "mean": [0.4, 0.4, 0.3], "std": [0.25, 0.2, 0.3]}

    def standardize(x, info):
        m, sd = (torch.tensor(info[k], dtype=torch.float64).view(1, -1, 1, 1) for k in ("mean", "std"))
        return ((x - m) / sd).float()

    got = as_preprocessed_like(standardize(raw, own), own, model, "cifar100", "cifar10")
    assert got.dtype == torch.float32
    assert torch.allclose(got, standardize(raw, model), atol=1e-5)
    plain = raw.float()
    assert as_preprocessed_like(plain, {}, {"split": "letters"}, "mnist", "emnist") is plain
    with pytest.raises(ValueError, match="ZCA whitening"):
        as_preprocessed_like(
            plain, own, {"preprocessing": "ZCA (eps=0.01) fitted on the training set"}, "cifar100", "cifar10"
        )
    with pytest.raises(ValueError, match="their preprocessing differs"):
        as_preprocessed_like(plain, {}, model, "mnist", "cifar10")


def test_bad_run_directories_are_refused(tmp_path, runs):
    with pytest.raises(FileNotFoundError, match="not a finished nsm run directory"):
        load_trained(tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_trained(tmp_path)
    torch.save({"hello": 1}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="not an nsm checkpoint"):
        load_trained(tmp_path)
    with pytest.raises(ValueError, match="samples must be a positive int"):
        evaluate_run(runs["dcnn"], samples=0)


def test_a_checkpoints_data_folder_is_read_never_downloaded_into(runs, tmp_path, monkeypatch, mnist_dir):
    """The data folder a checkpoint records is someone else's when the checkpoint is: `nsm
    evaluate` reads the data there if it is there, and otherwise uses the default folder,
    never fetching into the recorded one (it did: a checkpoint naming a folder had MNIST
    downloaded into it)."""
    import nsm.studies.evaluate as ev

    elsewhere = tmp_path / "someone-elses-folder"
    elsewhere.mkdir()
    real = ev.load_trained

    def recorded_elsewhere(run_dir, device="cpu"):
        model, config = real(run_dir, device)
        return model, {**config, "data_dir": str(elsewhere)}

    monkeypatch.setattr(ev, "load_trained", recorded_elsewhere)
    monkeypatch.setenv("NSM_DATA_DIR", str(mnist_dir))  # the default folder: it has MNIST
    said = []
    small = dict(samples=2, shift_subset=10, angles=(0,), ood="none", devices=False, test_subset=20)
    result = evaluate_run(runs["bnsm"], **small, log=said.append)
    assert result["n_test"] == 20
    assert list(elsewhere.iterdir()) == []  # nothing written, fetched or made there
    assert any("could not be read from the run's data folder" in s and str(elsewhere) in s for s in said), said
    # where the recorded folder has the data, it is the one read
    monkeypatch.setenv("NSM_DATA_DIR", str(tmp_path / "empty-default"))
    (elsewhere / "mnist").symlink_to(mnist_dir / "mnist")
    said.clear()
    assert evaluate_run(runs["bnsm"], **small, log=said.append)["n_test"] == 20
    assert not (tmp_path / "empty-default").exists() and not any("data folder" in s for s in said)
    # a folder whose data cannot be read (a file where mnist/ belongs) is left for the default too
    (elsewhere / "mnist").unlink()
    (elsewhere / "mnist").write_text("not a folder")
    monkeypatch.setenv("NSM_DATA_DIR", str(mnist_dir))
    said.clear()
    assert evaluate_run(runs["bnsm"], **small, log=said.append)["n_test"] == 20
    assert any("expected a folder" in s for s in said), said
    assert (
        sorted(p.name for p in elsewhere.iterdir()) == ["mnist"] and (elsewhere / "mnist").read_text() == "not a folder"
    )
