"""The evaluation schedule of ``fit``: sparse cheap evaluations for the learning curve, the last
``eval_last`` epochs at the full S, and the reported last-5 mean taken over full-S evaluations only."""

from __future__ import annotations

import json

import pytest
import torch

import nsm.training.run
from nsm.training.config import TrainConfig
from nsm.training.loop import fit
from toys import toy_dataset


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _config(tmp_path, **fields):
    return TrainConfig(
        **{
            "model": "bnsm",
            "epochs": 9,
            "batch_size": 30,
            "samples": 4,
            "progress": False,
            "threads": 1,
            "out": str(tmp_path),
            "run_name": "run",
            **fields,
        }
    )


def _fake_evaluate(calls):
    """Records (epoch, samples) and returns an error that encodes both, so the summary can be checked."""

    def evaluate(model, x, y, *, samples, **kwargs):
        calls.append(samples)
        err = samples / 100 + len(calls) / 1000
        return {"test_error": err, "test_accuracy": 1 - err, "test_nll": 0.0}

    return evaluate


def test_sparse_cheap_evaluations_then_the_last_epochs_at_full_samples(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(nsm.training.run, "evaluate", _fake_evaluate(calls))
    summary = fit(
        _config(tmp_path, eval_every=3, eval_last=2, eval_samples=2), dataset=toy_dataset(), log=lambda *a: None
    )
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # one row per epoch; epochs 3 and 6 are tested on the sparse schedule at S=2, 8 and 9 are
    # the last 2, at S=4 (9 is also on it); the others have their training numbers only
    assert [r["epoch"] for r in rows] == list(range(1, 10))
    assert [(r["epoch"], r["samples"]) for r in rows if "test_error" in r] == [(3, 2), (6, 2), (8, 4), (9, 4)]
    for r in rows:
        assert {"lr", "train_loss", "train_error", "train_seconds"} <= r.keys()
        assert ("samples" in r) == ("test_seconds" in r) == ("test_error" in r) == (r["epoch"] in (3, 6, 8, 9))
    assert calls == [2, 2, 4, 4]
    # the last-5 mean covers only the two full-S evaluations: (0.04 + 0.003) and (0.04 + 0.004)
    assert summary["n_last"] == 2
    assert summary["last5_test_error"] == pytest.approx(0.0435)
    assert summary["final_test_error"] == pytest.approx(0.044)
    # the best is among the full-S evaluations only, not the cheaper (here lower) S=2 ones
    assert summary["best_test_error"] == pytest.approx(0.043) and summary["best_epoch"] == 8
    assert summary["samples"] == 4


def test_default_schedule_is_unchanged_and_deterministic_models_ignore_eval_samples(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(nsm.training.run, "evaluate", _fake_evaluate(calls))
    fit(_config(tmp_path, epochs=4, eval_every=2), dataset=toy_dataset(), log=lambda *a: None)
    assert calls == [4, 4]  # epochs 2 and 4, every one at the full S
    calls.clear()
    summary = fit(
        _config(tmp_path, model="dcnn", epochs=3, eval_last=1, eval_samples=2, run_name="det"),
        dataset=toy_dataset(),
        log=lambda *a: None,
    )
    # a deterministic network needs one pass each time, but its cheap evaluations (epochs 1 and
    # 2 by the schedule) are not in its reported error, as a stochastic network's are not
    assert calls == [1, 1, 1] and summary["n_last"] == 1


def test_a_real_run_records_the_samples_of_every_evaluation(tmp_path):
    summary = fit(
        _config(tmp_path, epochs=3, eval_every=2, eval_last=1, eval_samples=1),
        dataset=toy_dataset(),
        log=lambda *a: None,
    )
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [(r["epoch"], r["samples"]) for r in rows if "samples" in r] == [(2, 1), (3, 4)]
    assert summary["last5_test_error"] == rows[-1]["test_error"] and summary["n_last"] == 1
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0  # drawn from epochs with and without tests


@pytest.mark.parametrize("fields, message", [({"eval_last": -1}, "eval_last"), ({"eval_samples": 0}, "eval_samples")])
def test_bad_schedule_values_are_refused(tmp_path, fields, message):
    with pytest.raises(ValueError, match=message):
        _config(tmp_path, **fields)


def test_a_linear_schedule_that_never_decays_says_so(tmp_path):
    from nsm.training.config import TrainConfig
    from nsm.training.loop import fit
    from toys import toy_dataset

    lines = []
    base = dict(model="dcnn", batch_size=45, progress=False, threads=1, out=str(tmp_path), lr_schedule="linear")
    fit(TrainConfig(run_name="short", epochs=2, lr_decay_start=1, **base), dataset=toy_dataset(), log=lines.append)
    assert any("note: the linear schedule starts its decay after epoch 1" in line for line in lines)
    lines.clear()
    fit(TrainConfig(run_name="long", epochs=3, lr_decay_start=1, **base), dataset=toy_dataset(), log=lines.append)
    assert not any("linear schedule" in line for line in lines)  # epoch 3 trains at half the lr
