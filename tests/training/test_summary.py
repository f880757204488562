"""A run's reported numbers (nsm.training.summary): the cheap evaluations of --eval-samples
never count, a deterministic network's included, and `nsm summarize` rewrites a summary made
under the older rule."""

from __future__ import annotations

import json

import pytest

from nsm.cli import main
from nsm.training.config import TrainConfig
from nsm.training.loop import fit
from nsm.training.summary import reported_numbers, resummarize
from toys import toy_dataset

# the 10-epoch protocol of results/mnist-candidates: epoch 5 cheap (S = 10), 8-10 at the full S
PROTOCOL = dict(epochs=10, eval_every=5, eval_samples=10, eval_last=3, samples=20)


def _history(samples_of_cheap: int) -> list[dict]:
    errors = {5: 0.0100, 8: 0.0090, 9: 0.0080, 10: 0.0085}
    return [
        {"epoch": e, **({"test_error": errors[e], "samples": 1 if e > 7 else samples_of_cheap} if e in errors else {})}
        for e in range(1, 11)
    ]


def _dcnn_run(tmp_path) -> dict:
    """A dCNN trained 4 epochs with cheap evaluations at epoch 2 and full ones at 3 and 4."""
    config = TrainConfig(
        model="dcnn", epochs=4, eval_every=2, eval_samples=2, eval_last=2, samples=4, batch_size=30,
        progress=False, threads=1, out=str(tmp_path), run_name="run",
    )  # fmt: skip
    return fit(config, dataset=toy_dataset(), log=lambda *a: None)


@pytest.mark.parametrize("cheap_s", [1, 10])  # a deterministic network's cheap evaluation is at S = 1 too
def test_the_cheap_evaluations_never_count(cheap_s):
    config = TrainConfig(**PROTOCOL)
    got = reported_numbers(_history(cheap_s), config, samples=1)
    assert got["n_last"] == 3 and got["last5_test_error"] == pytest.approx((0.009 + 0.008 + 0.0085) / 3, abs=1e-15)
    assert (got["best_test_error"], got["best_epoch"], got["final_test_error"]) == (0.008, 9, 0.0085)
    # without eval_samples every evaluation is a full one
    plain = reported_numbers(_history(1), TrainConfig(**{**PROTOCOL, "eval_samples": None}), samples=1)
    assert plain["n_last"] == 4 and plain["last5_test_error"] == pytest.approx(0.0355 / 4, abs=1e-15)


def test_a_deterministic_runs_summary_leaves_its_cheap_evaluation_out(tmp_path):
    """A dCNN trained with --eval-samples: its epoch-2 evaluation (cheap by the schedule, made at
    S = 1 like the others) is not in its reported error (it was: n_last 3, not 2)."""
    summary = _dcnn_run(tmp_path)
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evaluated = {m["epoch"]: m["test_error"] for m in metrics if "test_error" in m}
    assert sorted(evaluated) == [2, 3, 4] and summary["samples"] == 1
    assert summary["n_last"] == 2 and summary["last5_test_error"] == pytest.approx((evaluated[3] + evaluated[4]) / 2)


def test_nsm_summarize_rewrites_a_summary_made_under_the_older_rule(tmp_path, capsys):
    _dcnn_run(tmp_path)
    run = tmp_path / "run"
    right = json.loads((run / "summary.json").read_text())
    assert resummarize(run) == {}  # a summary by the current rule is left as it is
    old = {**right, "n_last": 3, "last5_test_error": 0.5, "best_epoch": 2}  # as the older rule could write it
    (run / "summary.json").write_text(json.dumps(old))
    assert main(["summarize", "--check", str(run)]) == 1
    out = capsys.readouterr().out
    assert "n_last 3 -> 2" in out and "best_epoch 2 -> " in out
    assert json.loads((run / "summary.json").read_text()) == old  # --check writes nothing
    assert main(["summarize", str(run)]) == 0
    assert json.loads((run / "summary.json").read_text()) == right  # every other field kept
    assert main(["summarize", "--check", str(run)]) == 0 and "unchanged" in capsys.readouterr().out
    assert main(["summarize", str(tmp_path / "nowhere")]) == 2
    assert "has no summary.json: not a finished run" in capsys.readouterr().err


def test_eval_samples_equal_to_samples_makes_no_evaluation_cheap():
    config = TrainConfig(**{**PROTOCOL, "eval_samples": 20})
    history = [{"epoch": e, "test_error": 0.01 * e, "samples": 20} for e in (5, 8, 9, 10)]
    assert reported_numbers(history, config, samples=20)["n_last"] == 4


def test_nsm_summarize_refuses_inconsistent_runs_and_names_each(tmp_path, capsys):
    _dcnn_run(tmp_path)
    run = tmp_path / "run"
    metrics = (run / "metrics.jsonl").read_text()
    summary = (run / "summary.json").read_text()
    last = metrics.splitlines()[-1]
    for bad, message in [
        (metrics + last + "\n", "epoch 4 after epoch 4"),  # an epoch twice
        (metrics.replace('"epoch": 1,', '"epoch": true,'), "expected an epoch's metrics"),
    ]:
        (run / "metrics.jsonl").write_text(bad)
        assert main(["summarize", str(tmp_path / "nowhere"), str(run)]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / 'nowhere'}: error:" in err and f"{run}: error:" in err and message in err
        assert (run / "summary.json").read_text() == summary  # nothing rewritten
    (run / "metrics.jsonl").write_text(metrics)
    (run / "config.json").write_text(json.dumps({**json.loads((run / "config.json").read_text()), "epochs": 100}))
    assert main(["summarize", str(run)]) == 2
    assert "is not the configuration of summary.json" in capsys.readouterr().err
