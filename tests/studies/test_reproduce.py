"""`nsm reproduce`: runs, skipping, aggregation and the written table."""

import csv
import json
import math

import pytest

from nsm.cli import main
from nsm.studies.catalog import TABLES
from nsm.studies.reproduce import run_table
from nsm.studies.tables import PAPER_ERRORS, aggregate, write_table


def _fake_run(runs, model, dataset, seed, last5, final, wall=10.0, epochs=3, samples=20, n_last=3):
    d = runs / f"{model}-{dataset}-seed{seed}"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(
        json.dumps(
            {
                "last5_test_error": last5,
                "final_test_error": final,
                "wall_seconds": wall,
                "epochs": epochs,
                "samples": samples,
                "n_last": n_last,
            }
        )
    )


def test_aggregate_mean_std_over_seeds(tmp_path):
    runs = tmp_path / "runs"
    for seed, (last5, final) in enumerate([(0.010, 0.009), (0.014, 0.012), (0.018, 0.015)]):
        _fake_run(runs, "bnsm", "mnist", seed, last5, final)
    _fake_run(runs, "s2m", "mnist", 0, 0.05, 0.04, wall=3.0)
    rows = aggregate(runs, [("mnist", "bnsm")], [0, 1, 2])
    (r,) = rows
    assert r["error_pct"] == pytest.approx([1.0, 1.4, 1.8])
    assert r["error_mean_pct"] == pytest.approx(1.4)
    assert r["error_std_pct"] == pytest.approx(0.4)  # sample std of 1.0, 1.4, 1.8
    assert r["final_error_mean_pct"] == pytest.approx(1.2)
    assert r["paper_error_pct"] == PAPER_ERRORS["mnist"]["bnsm"] == 0.775
    assert r["wall_seconds"] == 30.0 and r["epochs"] == 3 and r["samples"] == 20
    (one,) = aggregate(runs, [("mnist", "s2m")], [0])
    assert math.isnan(one["error_std_pct"]) and math.isnan(one["paper_error_pct"])
    md, cs = write_table(rows + [one], tmp_path, "title", "nsm reproduce mnist")
    text = md.read_text()
    assert "| mnist | bnsm | 1.40 ± 0.40 | 1.20 | – | 0.775 | 3 | 3 | 3 | 20 | 30 |" in text  # no best: older runs
    assert "| mnist | s2m | 5.00 | 4.00 | – | – | 1 | 3 | 3 | 20 | 3 |" in text
    assert "Made by: `nsm reproduce mnist`" in text
    table = list(csv.DictReader(cs.open()))
    assert [t["model"] for t in table] == ["bnsm", "s2m"]
    assert float(table[0]["error_std_pct"]) == pytest.approx(0.4)
    assert table[0]["error_pct"] == "1.0000;1.4000;1.8000" and table[0]["seeds"] == "0;1;2"
    with pytest.raises(FileNotFoundError, match="missing finished run"):
        aggregate(runs, [("mnist", "s2m")], [0, 1])


def test_mnist_table_has_every_model():
    table = TABLES.get("mnist")
    assert set(PAPER_ERRORS["mnist"]) <= set(table.models)
    assert {"bnn", "stnn", "s2m", "sigmoid", "bnsm-binconcrete", "gnsm-binconcrete", "bnsm-fc", "stnn-fc"} <= set(
        table.models
    )


def test_run_table_trains_skips_and_protects_runs(mnist_dir, tmp_path):
    opts = dict(epochs=2, train_subset=200, test_subset=50, samples=2, data_dir=str(mnist_dir), progress=False)
    logs = []
    rows = run_table("mnist", out=tmp_path, seeds=[0, 1], models=["dcnn", "bd"], overrides=opts, log=logs.append)
    assert [(r["dataset"], r["model"]) for r in rows] == [("mnist", "dcnn"), ("mnist", "bd")]
    for r in rows:
        errs = [
            100
            * json.loads((tmp_path / "runs" / f"{r['model']}-mnist-seed{s}" / "summary.json").read_text())[
                "last5_test_error"
            ]
            for s in (0, 1)
        ]
        assert r["error_pct"] == pytest.approx(errs) and r["n_last"] == 2 and r["samples"] == 1
        bests = []
        for s in (0, 1):
            run = tmp_path / "runs" / f"{r['model']}-mnist-seed{s}"
            summary = json.loads((run / "summary.json").read_text())
            tested = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            best = min(tested, key=lambda m: m["test_error"])  # every epoch is tested here, at full S
            assert (summary["best_test_error"], summary["best_epoch"]) == (best["test_error"], best["epoch"])
            bests.append(100 * best["test_error"])
        assert r["best_error_mean_pct"] == pytest.approx(sum(bests) / 2)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # every finished run's curve
    summary = tmp_path / "runs" / "dcnn-mnist-seed0" / "summary.json"
    stamp = summary.stat().st_mtime_ns
    # a second call trains nothing
    logs.clear()
    again = run_table("mnist", out=tmp_path, seeds=[0, 1], models=["dcnn", "bd"], overrides=opts, log=logs.append)
    assert "4 already finished" in logs[0] and len(logs) == 1
    assert summary.stat().st_mtime_ns == stamp and again == rows
    # another protocol over finished runs is refused, nothing overwritten
    with pytest.raises(ValueError, match="another protocol .*epochs: 2 there, 3 asked"):
        run_table("mnist", out=tmp_path, seeds=[0], models=["dcnn"], overrides={**opts, "epochs": 3})
    # an interrupted run with nothing to resume (no config.json) is moved aside and run again
    (tmp_path / "runs" / "bd-mnist-seed2").mkdir()
    (tmp_path / "runs" / "bd-mnist-seed2" / "metrics.jsonl").write_text("{}\n")
    run_table("mnist", out=tmp_path, seeds=[2], models=["bd"], overrides=opts, log=logs.append)
    assert (tmp_path / "runs" / "bd-mnist-seed2.incomplete-1" / "metrics.jsonl").exists()
    assert (tmp_path / "runs" / "bd-mnist-seed2" / "summary.json").exists()


def test_run_table_rejects_bad_requests(tmp_path):
    with pytest.raises(ValueError, match=r"model\(s\) \['resnet'\] not in table 'mnist'"):
        run_table("mnist", out=tmp_path, models=["resnet"])
    with pytest.raises(ValueError, match="unknown table 'nope'"):
        run_table("nope", out=tmp_path)
    with pytest.raises(ValueError, match="seeds must be distinct"):
        run_table("mnist", out=tmp_path, seeds=[1, 1])
    with pytest.raises(ValueError, match="'epochs' must be >= 1"):
        run_table("mnist", out=tmp_path, overrides={"epochs": 0})
    assert not (tmp_path / "runs").exists()


def test_reproduce_command(mnist_dir, tmp_path, capsys):
    args = [
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
        "--data-dir",
        str(mnist_dir),
        "--out",
        str(tmp_path / "t"),
        "--no-progress",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| mnist | s2m |" in out and "| mnist | bnsm-fc |" in out
    text = (tmp_path / "t" / "table.md").read_text()
    assert "Made by: `nsm reproduce mnist --models s2m,bnsm-fc --seeds 2" in text
    assert len(list(csv.DictReader((tmp_path / "t" / "table.csv").open()))) == 2
    assert main(["reproduce", "--list"]) == 0
    assert "mnist:" in capsys.readouterr().out
    assert main(["reproduce", "mnist", "--seeds", "2", "--seed-list", "0,1"]) == 2
    assert "not both" in capsys.readouterr().err


def test_status_says_where_each_run_stands_and_touches_nothing(mnist_dir, tmp_path, capsys, monkeypatch):
    import os
    import shutil

    import nsm.studies.claim
    from nsm.studies.claim import claim_run
    from nsm.studies.reproduce import format_status, table_status

    monkeypatch.setattr(nsm.studies.claim, "HEARTBEAT_SECONDS", 3600.0)  # no touch while we compare times

    opts = dict(epochs=2, train_subset=200, test_subset=50, samples=2, data_dir=str(mnist_dir), progress=False)
    run_table("mnist", out=tmp_path, seeds=[0], models=["dcnn"], overrides=opts, log=lambda s: None)
    runs = tmp_path / "runs"
    # an interrupted run (its checkpoint, no summary) and one that a live worker (this process) holds
    for seed in (1, 2):
        run = runs / f"dcnn-mnist-seed{seed}"
        shutil.copytree(runs / "dcnn-mnist-seed0", run)
        (run / "summary.json").unlink()
        config = json.loads((run / "config.json").read_text())  # its own run: it would resume, not restart
        (run / "config.json").write_text(json.dumps({**config, "seed": seed, "run_name": run.name}))
    held, _ = claim_run(runs / "dcnn-mnist-seed2.claim")  # a live worker (this process) holds it, with its lock
    before = sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    rows = table_status("mnist", out=tmp_path, seeds=[0, 1, 2, 3], models=["dcnn"], overrides=opts)
    assert sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before
    assert [(r["run"], r["state"], r["epochs_done"]) for r in rows] == [
        ("dcnn-mnist-seed0", "finished", 2),
        ("dcnn-mnist-seed1", "interrupted", 2),
        ("dcnn-mnist-seed2", "running", 2),
        ("dcnn-mnist-seed3", "not started", 0),
    ]
    summary = json.loads((runs / "dcnn-mnist-seed0" / "summary.json").read_text())
    assert rows[0]["test_error"] == summary["last5_test_error"] and rows[1]["wall_seconds"] > 0
    assert rows[2]["holder"].startswith(f"pid {os.getpid()} on host")
    assert rows[1]["seconds_left"] == 0.0 and rows[3]["seconds_left"] is None  # all epochs done; nothing run
    text = format_status(rows)
    assert (
        f"| dcnn-mnist-seed0 | finished | 2 of 2 epochs done | 0.0 h | – | {100 * summary['last5_test_error']:.2f}% |"
        in text
    )
    assert text.endswith("4 runs: 1 finished, 1 interrupted, 1 running, 1 not started")
    # another protocol is shown, not refused; the command prints the same table
    assert (
        table_status("mnist", out=tmp_path, seeds=[0], models=["dcnn"], overrides={**opts, "epochs": 3})[0]["state"]
        == "other protocol"
    )
    args = ["reproduce", "mnist", "--models", "dcnn", "--seed-list", "0,1,2,3", "--epochs", "2"]
    args += ["--train-subset", "200", "--test-subset", "50", "--samples", "2", "--data-dir", str(mnist_dir)]
    assert main([*args, "--out", str(tmp_path), "--status"]) == 0
    assert "4 runs: 1 finished, 1 interrupted, 1 running, 1 not started" in capsys.readouterr().out
    held.release()


def test_table_only_rebuilds_the_table_and_trains_nothing(mnist_dir, tmp_path, capsys):
    args = ["reproduce", "mnist", "--models", "dcnn", "--epochs", "1", "--train-subset", "200"]
    args += ["--test-subset", "50", "--data-dir", str(mnist_dir), "--no-progress", "--out", str(tmp_path)]
    assert main([*args, "--seed-list", "0"]) == 0
    written = {f: (tmp_path / f).read_bytes() for f in ("table.md", "table.csv")}
    for f in ("table.md", "table.csv", "curves.png"):
        (tmp_path / f).unlink()
    runs = tmp_path / "runs"
    before = sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in runs.rglob("*"))
    capsys.readouterr()
    # seed 1 has not started: the table says so, and nothing trains it
    assert main([*args, "--seed-list", "0", "--table-only"]) == 0
    assert sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in runs.rglob("*")) == before
    assert {f: (tmp_path / f).read_bytes() for f in written} == written  # as the training command wrote it
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([*args, "--seed-list", "0,1", "--table-only"]) == 0
    assert sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in runs.rglob("*")) == before
    text = (tmp_path / "table.md").read_text()
    assert "**Incomplete**: 1 of 2 runs finished" in text and "| 1/2 |" in text
    assert "--table-only" not in text and "--seed-list 0,1" in text  # names the command that trains it
    # a finished run of another protocol is refused, as when training; the table stays
    capsys.readouterr()
    assert main([*args, "--epochs", "2", "--seed-list", "0", "--table-only"]) == 2
    assert "dcnn-mnist-seed0 holds a finished run with another protocol" in capsys.readouterr().err
    assert (tmp_path / "table.md").read_text() == text
    assert main([*args, "--seed-list", "0", "--table-only", "--status"]) == 2
    assert "give --status or --table-only, not both" in capsys.readouterr().err
    # a worker's options mean nothing to a command that trains nothing: said, not ignored
    for extra, named in (
        (["--table-only", "--worker", "1/2"], "--table-only trains nothing: --worker would"),
        (["--table-only", "--steal-after", "600"], "--table-only trains nothing: --steal-after would"),
        (["--status", "--worker", "1/2", "--steal-after", "600"], "--status trains nothing: --worker and"),
    ):
        assert main([*args, "--seed-list", "0", *extra]) == 2
        assert named in capsys.readouterr().err
    assert (tmp_path / "table.md").read_text() == text
    assert main([*args, "--seed-list", "0", "--status", "--steal-after", "600"]) == 0  # reads claims with it


def test_a_tables_own_protocol_reaches_its_runs(mnist_dir, tmp_path):
    # the authors' dCNN script: no weight decay, a constant learning rate (here even with a
    # decay step every epoch, which the default factor 0.5 would halve)
    opts = dict(epochs=3, lr_step=1, train_subset=200, test_subset=50, data_dir=str(mnist_dir), progress=False)
    run_table("mnist-authors-dcnn", out=tmp_path, seeds=[0], models=["dcnn-150"], overrides=opts, log=lambda s: None)
    run = tmp_path / "runs" / "dcnn-150-mnist-seed0"
    config = json.loads((run / "config.json").read_text())
    assert config["weight_decay"] == 0.0 and config["lr_gamma"] == 1.0 and config["model"] == "dcnn-150"
    lrs = [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lrs == [3e-4] * 3
    run_table("mnist", out=tmp_path / "main", seeds=[0], models=["dcnn"], overrides=opts, log=lambda s: None)
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "main/runs/dcnn-mnist-seed0/metrics.jsonl").open()]
    assert lrs == [3e-4, 1.5e-4, 7.5e-5]  # the paper's protocol keeps its halving


def test_a_runs_dataset_options_and_subsets_reach_its_data(tmp_path, monkeypatch):
    # run_table's loader passed the subsets but not dataset_options (zca, split...), which were
    # recorded in config.json all the same (found by review)
    import nsm.data
    from toys import toy_dataset

    calls = []

    def load(name, data_dir=None, **options):
        calls.append((name, options))
        return toy_dataset()

    monkeypatch.setattr(nsm.data, "load_dataset", load)
    opts = dict(epochs=1, batch_size=40, samples=2, progress=False, threads=1, compile="off")
    for split in ("letters", "digits"):
        overrides = {**opts, "dataset_options": {"split": split}, "train_subset": 80}
        run_table("mnist", out=tmp_path / split, seeds=[0], models=["bnsm"], overrides=overrides, log=lambda s: None)
        config = json.loads((tmp_path / split / "runs" / "bnsm-mnist-seed0" / "config.json").read_text())
        assert config["dataset_options"] == {"split": split}
    assert calls == [("mnist", {"train_subset": 80, "test_subset": None, "split": s}) for s in ("letters", "digits")]
    # one table, two runs of one data: loaded once
    calls.clear()
    run_table("mnist", out=tmp_path / "two", seeds=[0, 1], models=["dcnn"], overrides=opts, log=lambda s: None)
    assert len(calls) == 1


def test_time_left_follows_the_runs_own_pace_and_schedule(tmp_path):
    from nsm.studies.reproduce import _seconds_left
    from nsm.training.config import TrainConfig

    config = TrainConfig.for_dataset(
        "mnist", model="bnsm", epochs=10, eval_every=5, eval_last=2, samples=20, eval_samples=4
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    rows = [{"epoch": e, "train_seconds": 10.0 + e} for e in range(1, 7)]
    rows[4].update(test_seconds=8.0, samples=4)  # epoch 5, a cheap evaluation: 2 s per sample
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # epochs 7-10 at the median of the last 5 (14 s); epochs 9 and 10 evaluated at S=20 (40 s each)
    assert _seconds_left(run, config, done=6) == pytest.approx(4 * 14.0 + 2 * 40.0)
    assert _seconds_left(run, config, done=10) == 0.0
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_seconds": 3.0}) + "\n")
    assert _seconds_left(run, config, done=1) is None  # no evaluation yet to time
    dcnn = TrainConfig.for_dataset("mnist", model="dcnn", epochs=10, eval_every=5, eval_last=2, samples=20)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _seconds_left(run, dcnn, done=6) == pytest.approx(4 * 14.0 + 2 * 2.0)  # one pass per evaluation


def test_status_progress_reads_well_before_the_first_epoch_ends():
    from nsm.studies.reproduce import format_status

    row = dict(run="r", epochs=5, state="interrupted", wall_seconds=1.0, holder="", test_error=None, seconds_left=None)
    lines = format_status([{**row, "epochs_done": 0, "step": 1}, {**row, "epochs_done": 2, "step": 3}]).splitlines()
    assert "| r | interrupted | 1 step into epoch 1 |" in lines[2]
    assert "| 2 of 5 epochs done, 3 steps into the next |" in lines[3]
