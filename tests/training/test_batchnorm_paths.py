"""Models with batch normalization (dcnn-bn, sigmoid-bn, bnn) in training: ``--record``
measures without moving their running statistics, a batch of one example is refused before
any work (batch statistics of one example do not exist), and so is data-parallel training
(each process would normalize its part of a batch with that part's statistics)."""

from __future__ import annotations

import contextlib

import pytest
import torch

import nsm.training.loop
from nsm.data import Dataset
from nsm.models import build_model
from nsm.training.config import TrainConfig
from nsm.training.distributed import Group
from nsm.training.loop import fit
from nsm.training.preflight import check_distributed
from nsm.training.recorder import Recorder, layer_gradients
from toys import assert_same_run, toy_dataset

BN_MODELS = ("dcnn-bn", "sigmoid-bn", "bnn")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here at one thread (fit sets it too: threads=1), then as it was."""


def _buffers(model):
    return {k: b.clone() for k, b in model.named_buffers()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", BN_MODELS)
def test_a_record_point_leaves_every_buffer_of_model_and_companion_as_it_was(tmp_path, name):
    """The probe pass and the gradient agreement run in training mode (batch statistics), which
    moves running_mean, running_var and num_batches_tracked: all are put back, bit for bit."""
    data = toy_dataset()
    torch.manual_seed(0)
    model = build_model(name, data.in_shape, data.num_classes)
    companion = build_model("sigmoid-bn", data.in_shape, data.num_classes)
    before, companion_before = _buffers(model), _buffers(companion)
    assert any(k.endswith("running_mean") for k in before)
    recorder = Recorder(
        model,
        tmp_path,
        probe_x=data.train_x[:20],
        probe_y=data.train_y[:20],
        steps_per_epoch=3,
        companions={"sigmoid-bn": companion},
        draws=2,
    )
    recorder.record()
    assert model.training and recorder.pct and recorder.cos
    assert _same(_buffers(model), before)
    assert _same(_buffers(companion), companion_before)
    layer_gradients(model, data.train_x[:20], data.train_y[:20], draws=2)  # also on its own
    assert _same(_buffers(model), before)


def test_recording_does_not_change_the_training_of_a_batch_norm_model(tmp_path):
    """dcnn-bn trained with and without --record (a record point every 2 steps, a batch-norm
    companion): the same metrics and the same final state, running statistics included."""
    base = dict(
        model="dcnn-bn", epochs=2, batch_size=30, samples=1, progress=False, threads=1, compile="off", out=str(tmp_path)
    )
    fit(TrainConfig(**base, run_name="plain"), dataset=toy_dataset(), log=lambda *a: None)
    fit(
        TrainConfig(
            **base, run_name="rec", record=True, record_every=2, record_probe=20, record_compare=["sigmoid-bn"]
        ),
        dataset=toy_dataset(),
        log=lambda *a: None,
    )
    assert (tmp_path / "rec" / "record" / "grad_cosine.csv").exists()
    assert_same_run(tmp_path / "plain", tmp_path / "rec")


def _toy(n_train: int) -> Dataset:
    data = toy_dataset()
    return Dataset("toy", data.train_x[:n_train], data.train_y[:n_train], data.test_x, data.test_y, 3)


@pytest.mark.parametrize("name", BN_MODELS)
def test_a_batch_of_one_example_is_refused_before_any_work(tmp_path, name):
    config = TrainConfig(model=name, epochs=1, batch_size=10, samples=1, progress=False, out=str(tmp_path))
    with pytest.raises(ValueError, match=r"last batch of every epoch has one \(21 training images, batch size 10\)"):
        fit(config, dataset=_toy(21), log=lambda *a: None)
    with pytest.raises(ValueError, match=r"batch normalization.*every batch has one \(--batch-size 1\)"):
        fit(config.replace(batch_size=1), dataset=_toy(20), log=lambda *a: None)
    with pytest.raises(ValueError, match="probe batch of --record has one"):
        fit(config.replace(record=True, record_probe=1), dataset=_toy(20), log=lambda *a: None)
    assert not list(tmp_path.iterdir())  # refused before the run directory was made


def test_a_model_without_batch_norm_may_end_an_epoch_on_one_example(tmp_path):
    config = TrainConfig(model="sigmoid", epochs=1, batch_size=10, samples=1, progress=False, out=str(tmp_path))
    summary = fit(config, dataset=_toy(21), log=lambda *a: None)
    assert 0 <= summary["final_test_error"] <= 1


@pytest.mark.parametrize("name", BN_MODELS)
def test_data_parallel_training_of_a_batch_norm_model_is_refused(name):
    data = toy_dataset()
    config = TrainConfig(model=name, batch_size=20)
    model = build_model(name, data.in_shape, data.num_classes)
    with pytest.raises(ValueError, match=f"model '{name}' has batch normalization.*train it in one process"):
        check_distributed(config, Group(rank=0, world_size=2), model=model, n_train=90)
    check_distributed(
        config.replace(model="sigmoid"),
        Group(rank=0, world_size=2),
        model=build_model("sigmoid", data.in_shape, data.num_classes),
        n_train=90,
    )


def test_fit_under_torchrun_refuses_a_batch_norm_model_before_any_work(tmp_path, monkeypatch):
    """As under torchrun (WORLD_SIZE 2, rank 0), without the other process: the process group is
    not made (the refusal comes once the model is built, before training or any file)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(nsm.training.loop, "process_group", lambda group, device: contextlib.nullcontext())
    config = TrainConfig(model="dcnn-bn", epochs=1, batch_size=20, samples=1, progress=False, out=str(tmp_path))
    with pytest.raises(ValueError, match="'dcnn-bn' has batch normalization: each process would normalize"):
        fit(config, dataset=toy_dataset(), log=lambda *a: None)
    assert not list(tmp_path.iterdir())
