"""The committed results agree with themselves and with what the pages say about them.

- every run's summary follows from its per-epoch metrics by the reporting rule (SI 4.7: the
  mean over the last 5 epochs evaluated at the full S; `final` the last evaluation; `best` the
  lowest at the full S), recomputed here without the training loop's code;
- every row of every ``table.csv`` follows from its runs' summaries (mean, std, final, best,
  wall time), and ``table.md`` shows the same numbers;
- the numbers docs/reproduce.md quotes in its tables are those of the results folder it cites;
- ``mnist-evaluate/evaluation.md`` is what ``evaluation.json`` renders to, and docs/beyond.md
  quotes its table and the online-learning errors of ``mnist-online/online.json``;
- every folder of ``results/`` is listed in ``results/README.md``.

These read only committed files: no training, no data."""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from pathlib import Path

import pytest

from nsm.studies import evaluate
from nsm.studies.catalog import TABLES
from nsm.studies.tables import PAPER_ERRORS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
FOLDERS = sorted(p for p in RESULTS.iterdir() if p.is_dir())
TABLE_FOLDERS = [p for p in FOLDERS if (p / "table.csv").exists()]
CSV_DIGITS = 1e-4 / 2 + 1e-12  # table.csv writes floats with 4 decimals


def _id(p: Path) -> str:
    return p.name


def _runs(folder: Path) -> dict[str, tuple[dict, list[dict]]]:
    """Every finished run of a results folder: name -> (summary, per-epoch metrics).

    A folder keeps its runs either as ``runs/NAME/{summary.json,metrics.jsonl}`` or, for runs
    trained outside the repository, in one ``runs.json`` (a dict by name or a list of records)."""
    runs: dict[str, tuple[dict, list[dict]]] = {}
    for summary in sorted(folder.glob("runs/*/summary.json")):
        lines = (summary.parent / "metrics.jsonl").read_text().splitlines()
        runs[summary.parent.name] = (json.loads(summary.read_text()), [json.loads(x) for x in lines if x.strip()])
    if (folder / "runs.json").exists():
        data = json.loads((folder / "runs.json").read_text())
        records = data.items() if isinstance(data, dict) else ((r["run"], r) for r in data)
        for name, record in records:
            assert name not in runs, f"{folder.name}: run {name} is kept twice"
            runs[name] = (record["summary"], record["metrics"])
    return runs


ALL_RUNS = [(folder, name) for folder in FOLDERS for name in _runs(folder)]


def _config(folder: Path, name: str):
    """The run's config.json, or the configuration its runs.json record keeps (None if none)."""
    path = folder / "runs" / name / "config.json"
    if path.exists():
        return json.loads(path.read_text())
    if (folder / "runs.json").exists():
        data = json.loads((folder / "runs.json").read_text())
        records = data.items() if isinstance(data, dict) else ((r["run"], r) for r in data)
        return next((r.get("config") for n, r in records if n == name), None)
    return None


def test_the_results_have_runs_to_check():
    assert len(ALL_RUNS) >= 60 and len(TABLE_FOLDERS) >= 6


@pytest.mark.parametrize(("folder", "name"), ALL_RUNS, ids=[f"{f.name}/{n}" for f, n in ALL_RUNS])
def test_each_summary_follows_from_its_metrics(folder, name):
    summary, metrics = _runs(folder)[name]
    config = _config(folder, name)
    if config is None:  # runs kept in runs.json without their config: no eval_samples was set (checked)
        assert all(m.get("samples", summary["samples"]) == summary["samples"] for m in metrics if "test_error" in m)
        config = {}
    eval_samples, eval_last = config.get("eval_samples"), config.get("eval_last", 0)
    cheap = eval_samples is not None and eval_samples != config.get("samples")

    def reported(epoch: int) -> bool:
        return not cheap or epoch > summary["epochs"] - eval_last or epoch == summary["epochs"]

    assert name == f"{summary['model']}-{summary['dataset']}-seed{summary['seed']}"
    epochs = [m["epoch"] for m in metrics]
    assert epochs == sorted(set(epochs)), "an epoch is recorded twice, or out of order"
    assert epochs[-1] == summary["epochs"]
    evaluated = [m for m in metrics if "test_error" in m]
    # an epoch evaluated before metrics recorded their S was evaluated at the full S; the cheap
    # evaluations of eval_samples never count, even a deterministic network's at S = 1
    full = [m for m in evaluated if m.get("samples", summary["samples"]) == summary["samples"] and reported(m["epoch"])]
    last = full[-5:]
    assert summary["n_last"] == len(last)
    assert summary["last5_test_error"] == pytest.approx(statistics.fmean(m["test_error"] for m in last), abs=1e-12)
    assert summary["final_test_error"] == evaluated[-1]["test_error"]
    assert evaluated[-1]["epoch"] == summary["epochs"], "the last epoch was not evaluated"
    if "best_test_error" in summary:  # summaries written before 2026-11-29 have no `best`
        lowest = min(m["test_error"] for m in full)
        assert summary["best_test_error"] == lowest
        assert summary["best_epoch"] == next(m["epoch"] for m in full if m["test_error"] == lowest)
    # the run took at least the time its epochs report
    spent = sum(m.get("train_seconds", 0) + m.get("test_seconds", 0) for m in metrics)
    assert summary["wall_seconds"] >= 0.99 * spent


def _csv_rows(folder: Path) -> list[dict]:
    with open(folder / "table.csv", newline="") as f:
        return list(csv.DictReader(f))


def _num(text: str) -> float:
    return math.nan if text in ("", "nan") else float(text)


def _same(a: float, b: float, tol: float = CSV_DIGITS) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


def _recompute(row: dict, runs: dict) -> dict:
    """A table row's numbers, in %, recomputed from its runs' summaries at full precision."""
    summaries = [runs[f"{row['model']}-{row['dataset']}-seed{s}"][0] for s in row["seeds"].split(";") if s]

    def mean(key: str) -> float:
        values = [100 * s[key] for s in summaries if key in s]
        return statistics.fmean(values) if values and len(values) == len(summaries) else math.nan

    errs = [100 * s["last5_test_error"] for s in summaries]
    return {
        "summaries": summaries,
        "errs": errs,
        "mean": mean("last5_test_error"),
        "std": statistics.stdev(errs) if len(errs) > 1 else math.nan,
        "final": mean("final_test_error"),
        "best": mean("best_test_error"),
        "finals": [100 * s["final_test_error"] for s in summaries],
        "bests": [100 * s["best_test_error"] for s in summaries]
        if all("best_test_error" in s for s in summaries)
        else [],
    }


@pytest.mark.parametrize("folder", TABLE_FOLDERS, ids=_id)
def test_each_table_row_follows_from_its_runs(folder):
    runs = _runs(folder)
    rows = _csv_rows(folder)
    assert rows
    for row in rows:
        where = f"{folder.name}: {row['model']} on {row['dataset']}"
        want = _recompute(row, runs)
        summaries = want["summaries"]
        listed = [float(x) for x in row["error_pct"].split(";") if x]
        assert all(_same(a, b) for a, b in zip(listed, want["errs"], strict=True)), where
        assert _same(_num(row["error_mean_pct"]), want["mean"]), where
        assert _same(_num(row["error_std_pct"]), want["std"]), where
        assert _same(_num(row["final_error_mean_pct"]), want["final"]), where
        if "best_error_mean_pct" in row:
            assert _same(_num(row["best_error_mean_pct"]), want["best"]), where
        wall = sum(s["wall_seconds"] for s in summaries) if summaries else math.nan  # no finished run: –
        assert _same(_num(row["wall_seconds"]), wall), where
        if summaries:
            assert int(row["epochs"]) == summaries[0]["epochs"], where
            assert int(row["samples"]) == summaries[0]["samples"], where
            assert int(row["n_last"]) == min(s["n_last"] for s in summaries), where
        paper = PAPER_ERRORS.get(row["dataset"], {}).get(row["model"], math.nan)
        assert _same(_num(row["paper_error_pct"]), paper), where
        # a seed the table calls pending has no finished run
        for s in (int(s) for s in row.get("pending_seeds", "").split(";") if s):
            assert f"{row['model']}-{row['dataset']}-seed{s}" not in runs, where


def _md_tables(text: str) -> list[tuple[int, list[str], list[list[str]]]]:
    """Every markdown table of a page: (offset, header cells, body rows of cells)."""
    tables = []
    for m in re.finditer(r"(?m)^(\|.*\|)\n\|[-| :]+\|\n((?:\|.*\|\n?)+)", text):
        cells = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]  # noqa: E731
        tables.append((m.start(), cells(m.group(1)), [cells(x) for x in m.group(2).splitlines()]))
    return tables


def _fmt(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:.2f}"


@pytest.mark.parametrize("folder", TABLE_FOLDERS, ids=_id)
def test_each_table_md_shows_its_csv(folder):
    runs, rows = _runs(folder), {(r["dataset"], r["model"]): r for r in _csv_rows(folder)}
    (_, header, body), *_ = _md_tables((folder / "table.md").read_text())
    assert len(body) == len(rows)
    for cells in body:
        shown = dict(zip(header, cells, strict=True))
        want = _recompute(rows[(shown["dataset"], shown["model"])], runs)
        assert shown["ours"] == _fmt(want["mean"]) + ("" if math.isnan(want["std"]) else f" ± {_fmt(want['std'])}")
        assert shown["final"] == _fmt(want["final"])
        if "best" in shown:
            assert shown["best"] == _fmt(want["best"])


def _signed(x: float) -> str:
    return "–" if math.isnan(x) else ("0.00" if abs(x) < 0.005 else f"{x:+.2f}")


@pytest.mark.parametrize("folder", TABLE_FOLDERS, ids=_id)
def test_each_table_compares_its_models_with_the_dcnn(folder):
    """Each model against the dCNN of its dataset: the difference of the means, its 95% Welch
    interval and its reading, recomputed from the runs (the table.csv columns and the second
    table of table.md). The interval's t quantile here comes from the t distribution's own
    definition (the Welch df, then a quantile of Student's t by bisection on its CDF via the
    regularized incomplete beta function's continued fraction), not from nsm."""
    runs, rows = _runs(folder), _csv_rows(folder)
    refs = {r["dataset"]: _recompute(r, runs)["errs"] for r in rows if r["model"] == "dcnn"}
    tables = _md_tables((folder / "table.md").read_text())
    shown = {(c[0], c[1]): dict(zip(tables[1][1], c, strict=True)) for c in tables[1][2]} if len(tables) > 1 else {}
    compared = 0
    for row in rows:
        where = f"{folder.name}: {row['model']} on {row['dataset']}"
        ref = refs.get(row["dataset"])
        if ref is None or row["model"] == "dcnn":
            assert row["reference"] == "" and row["reading"] == "", where
            assert (row["dataset"], row["model"]) not in shown, where
            continue
        errs = _recompute(row, runs)["errs"]
        assert row["reference"] == "dcnn", where
        md = shown[(row["dataset"], row["model"])]
        if len(errs) < 2 or len(ref) < 2:
            assert row["reading"] == "too few seeds" and md["reading"] == "too few seeds", where
            continue
        diff, low, high, reading = _read(errs, ref)
        assert _same(_num(row["diff_pct"]), diff), where
        assert _same(_num(row["diff_low_pct"]), low) and _same(_num(row["diff_high_pct"]), high), where
        assert row["reading"] == reading, where
        assert md["difference"] == _signed(diff), where
        assert md["95% interval"] == _shown_interval(low, high), where
        assert md["reading"] == _shown_reading(reading, "dcnn"), where
        compared += 1
    assert len(shown) == sum(1 for r in rows if r["reference"]), folder.name
    if folder.name == "mnist-paper":
        assert compared == 2


@pytest.mark.parametrize("folder", TABLE_FOLDERS, ids=_id)
def test_each_table_compares_the_other_reporting_rules_with_the_dcnn(folder):
    """The same comparison for each seed's final epoch and its best evaluation at the full S
    (the CSV's final_/best_ columns and table.md's third table), recomputed from the runs."""
    runs, rows = _runs(folder), _csv_rows(folder)
    if "final_reading" not in rows[0]:
        pytest.skip(f"{folder.name}: a table from before the other rules were compared")
    refs = {r["dataset"]: _recompute(r, runs) for r in rows if r["model"] == "dcnn"}
    tables = _md_tables((folder / "table.md").read_text())
    by_rule = [t for t in tables if "rule" in t[1]]
    shown = {(c[0], c[1], c[3]): dict(zip(by_rule[0][1], c, strict=True)) for c in by_rule[0][2]} if by_rule else {}
    n = 0
    for row in rows:
        mine, ref = _recompute(row, runs), refs.get(row["dataset"])
        for rule, key in (("final", "finals"), ("best", "bests")):
            where = f"{folder.name}: {row['model']} on {row['dataset']}, {rule}"
            listed = [float(x) for x in row[f"{key[:-1]}_error_pct"].split(";") if x]
            assert all(_same(a, b) for a, b in zip(listed, mine[key], strict=True)), where
            if ref is None or row["model"] == "dcnn" or not (mine[key] and ref[key]):
                assert row[f"{rule}_reading"] == "" and (row["dataset"], row["model"], rule) not in shown, where
                continue
            md = shown[(row["dataset"], row["model"], rule)]
            n += 1
            if len(mine[key]) < 2 or len(ref[key]) < 2:
                assert row[f"{rule}_reading"] == "too few seeds" == md["reading"], where
                continue
            diff, low, high, reading = _read(mine[key], ref[key])
            assert _same(_num(row[f"{rule}_diff_pct"]), diff), where
            assert _same(_num(row[f"{rule}_diff_low_pct"]), low), where
            assert _same(_num(row[f"{rule}_diff_high_pct"]), high), where
            assert row[f"{rule}_reading"] == reading, where
            assert md["difference"] == _signed(diff) and md["95% interval"] == _shown_interval(low, high), where
            assert md["reading"] == _shown_reading(reading, "dcnn"), where
    assert n == len(shown), folder.name
    if folder.name == "mnist-paper":
        assert n == 4  # bnsm and gnsm, final and best


@pytest.mark.parametrize("folder", TABLE_FOLDERS, ids=_id)
def test_each_chosen_pair_of_a_table_follows_from_its_runs(folder):
    """table.md's chosen pairs of models, recomputed from the runs by the same Welch rule, and
    exactly the pairs its table names (results/mnist-candidates: the five of its plan)."""
    runs, rows = _runs(folder), {(r["dataset"], r["model"]): r for r in _csv_rows(folder)}
    text = (folder / "table.md").read_text()
    tables = [t for t in _md_tables(text) if text[: t[0]].rstrip().rsplit("\n\n", 1)[-1].startswith("Chosen pairs")]
    shown = tables[0][2] if tables else []
    header = tables[0][1] if tables else []
    for cells in shown:
        md = dict(zip(header, cells, strict=True))
        a = _recompute(rows[(md["dataset"], md["model"])], runs)["errs"]
        b = _recompute(rows[(md["dataset"], md["minus"])], runs)["errs"]
        where = f"{folder.name}: {md['model']} - {md['minus']}"
        if len(a) < 2 or len(b) < 2:
            assert md["reading"] == "too few seeds", where
            continue
        diff, low, high, reading = _read(a, b)
        assert md["difference"] == _signed(diff) and md["95% interval"] == _shown_interval(low, high), where
        assert md["reading"] == _shown_reading(reading, md["minus"]), where
    # the pairs shown are those its table names (nsm.studies.catalog), where both models have rows
    m = re.match(r"# nsm reproduce ([\w-]+):", text)
    assert m, f"{folder.name}: table.md does not begin as nsm's tables do"
    pairs = TABLES.get(m.group(1)).pairs if m.group(1) in TABLES.names() else ()
    datasets = list(dict.fromkeys(d for d, _ in rows))
    want = [(d, a, b) for a, b in pairs for d in datasets if (d, a) in rows and (d, b) in rows]
    assert [(c[0], c[1], c[2]) for c in shown] == want, folder.name


def _t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t and t >= 0: 1 - I_x(df/2, 1/2) / 2 at x = df / (df + t^2), with
    I_x(a, b) = 1 - I_(1-x)(b, a) where the continued fraction converges slowly."""
    a, b, x = df / 2, 0.5, df / (df + t * t)
    beta = _beta_reg(a, b, x) if x < (a + 1) / (a + b + 2) else 1 - _beta_reg(b, a, 1 - x)
    return 1 - beta / 2


def _beta_reg(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), by Lentz's continued fraction."""
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    f, c, d = 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1 + num * d
        d = 1 / (d if abs(d) > 1e-300 else 1e-300)
        c = 1 + num / (c if abs(c) > 1e-300 else 1e-300)
        f *= c * d
        if abs(c * d - 1) < 1e-15:
            break
    return front * (f - 1)


def _t_975(df: float) -> float:
    """The t with P(T <= t) = 0.975, by bisection on the CDF."""
    lo, hi = 0.0, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < 0.975 else (lo, mid)
    return (lo + hi) / 2


def _read(a: list[float], b: list[float]) -> tuple[float, float, float, str]:
    """mean(a) - mean(b), its 95% Welch interval and the reading; with no spread in either
    sample there is no interval (NaN) and the reading is "no spread"."""
    diff, low, high = _welch(a, b)
    if statistics.variance(a) + statistics.variance(b) == 0:
        return diff, math.nan, math.nan, "no spread"
    return diff, low, high, "lower" if high < 0 else "higher" if low > 0 else "no difference"


def _shown_interval(low: float, high: float) -> str:
    return "–" if math.isnan(low) else f"[{_signed(low)}, {_signed(high)}]"


def _shown_reading(reading: str, minus: str) -> str:
    return {"lower": f"beats {minus}", "higher": f"trails {minus}", "no spread": "no spread: cannot tell"}.get(
        reading, reading
    )


def _welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its 95% Welch interval."""
    qa, qb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.fmean(a) - statistics.fmean(b)
    if qa + qb == 0:
        return diff, diff, diff
    df = (qa + qb) ** 2 / (qa**2 / (len(a) - 1) + qb**2 / (len(b) - 1))
    half = _t_975(df) * math.sqrt(qa + qb)
    return diff, diff - half, diff + half


def test_the_independent_t_quantile_matches_the_tables():
    """The check above is only as good as its own t distribution: published 97.5% quantiles,
    and one Welch interval worked by hand (equal spreads and sizes: df = 2(n - 1) = 4)."""
    for df, t in ((1, 12.7062047), (2, 4.3026527), (4, 2.7764451), (10, 2.2281389), (30, 2.0422725)):
        assert _t_975(df) == pytest.approx(t, rel=1e-7), df
    diff, low, high = _welch([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    assert (diff, low, high) == pytest.approx(
        (-1, -1 - 2.7764451 * math.sqrt(2 / 3), -1 + 2.7764451 * math.sqrt(2 / 3))
    )


# docs/reproduce.md quotes the tables of results folders: which column holds which number
_QUOTED = {
    r"mean of epochs 1–3": "mean ± std",
    r"epoch 3 \(%\)|epoch 3, mean": "final",
    r"paper": "paper",
    r"epoch 3, seeds 0 / 1 / 2": "final by seed",
}


def test_the_docs_quote_the_results_they_cite():
    page = ROOT / "docs" / "reproduce.md"
    text = page.read_text()
    checked = 0
    for start, header, body in _md_tables(text):
        cited = re.findall(r"results/([\w.-]+)/", text[:start])
        if not cited or header[0] != "model" or not (RESULTS / cited[-1] / "table.csv").exists():
            continue
        folder = RESULTS / cited[-1]  # the last results folder named before the table
        runs, rows = _runs(folder), {r["model"]: r for r in _csv_rows(folder)}
        for cells in body:
            row = rows[cells[0].split()[0]]
            want = _recompute(row, runs)
            for title, cell in zip(header[1:], cells[1:], strict=True):
                kind = next((k for pattern, k in _QUOTED.items() if re.search(pattern, title)), None)
                assert kind, f"{page.name}: no rule for the column {title!r}"
                if kind == "mean ± std":
                    shown = f"{_fmt(want['mean'])} ± {_fmt(want['std'])}"
                    assert cell == shown, f"{page.name}, {folder.name}, {cells[0]}: {cell} != {shown}"
                elif kind == "final":
                    assert cell == _fmt(want["final"]), f"{page.name}, {folder.name}, {cells[0]}: {cell}"
                elif kind == "paper":
                    paper = _num(row["paper_error_pct"])
                    assert (cell == "–") if math.isnan(paper) else float(cell) == pytest.approx(paper)
                else:
                    assert cell == " / ".join(map(_fmt, want["finals"])), f"{folder.name}, {cells[0]}"
                checked += 1
    assert checked >= 50, "the tables docs/reproduce.md quotes were not found"


def test_every_results_folder_is_listed_in_the_results_readme():
    index = (RESULTS / "README.md").read_text()
    missing = [p.name for p in FOLDERS if f"`{p.name}/`" not in index]
    assert not missing, f"results/README.md does not list {missing}"


def test_the_evaluation_table_is_what_its_json_renders_to_and_what_the_docs_quote():
    folder = RESULTS / "mnist-evaluate"
    data = json.loads((folder / "evaluation.json").read_text())
    md = (folder / "evaluation.md").read_text()
    assert md == f"# nsm evaluate\n\n`{data['command']}`\n\n" + evaluate.format_markdown(data["runs"])
    [(_, header, body)] = _md_tables(md)
    beyond = _md_tables((ROOT / "docs" / "beyond.md").read_text())
    assert (header, body) in [(h, b) for _, h, b in beyond], "docs/beyond.md does not show evaluation.md's table"


def test_the_docs_quote_the_online_learning_errors():
    data = json.loads((RESULTS / "mnist-online" / "online.json").read_text())
    labels = {"bNSM": "bnsm", "dCNN": "dcnn", "dCNN-WN": "dcnn-wn", "dCNN-BN": "dcnn-bn"}
    [(_, header, body)] = [
        t for t in _md_tables((ROOT / "docs" / "beyond.md").read_text()) if t[1][0] == "examples seen"
    ]
    seen = [int(x.replace(",", "")) for x in header[1:]]
    checked = 0
    for cells in body:
        result = data["results"][labels[cells[0]]]
        if result["failed"]:
            assert "fails" in cells[1]
            continue
        assert result["examples"] == seen
        for cell, err in zip(cells[1:], result["test_error"], strict=True):
            assert float(cell) == pytest.approx(100 * err, abs=1e-9), f"{cells[0]}: {cell} != {100 * err}"
            checked += 1
    assert checked == 24


def test_the_status_page_counts_the_finished_runs_of_the_mnist_table():
    text = (ROOT / "docs" / "status.md").read_text()
    m = re.search(r"(\d+) of (\d+) runs of the 100-epoch MNIST table have finished", text)
    assert m, "docs/status.md no longer says how many runs of the MNIST table have finished"
    finished = sorted(p.parent.name for p in (RESULTS / "mnist-paper" / "runs").glob("*/summary.json"))
    assert (int(m.group(1)), int(m.group(2))) == (len(finished), 9), finished
    # and every per-seed error it quotes ("seed N: bNSM x%, gNSM y%, dCNN z%", any of the three)
    # is that run's (mean of the last 5 evaluations)
    runs = _runs(RESULTS / "mnist-paper")
    names = {"bNSM": "bnsm", "gNSM": "gnsm", "dCNN": "dcnn"}
    quoted = 0
    for seed, listing in re.findall(r"seed (\d): ((?:[bgd][NC][SN][MN] [\d.]+%(?:, )?)+)", text):
        for label, shown in re.findall(r"([bgd][NC][SN][MN]) ([\d.]+)%", listing):
            run = f"{names[label]}-mnist-seed{seed}"
            assert shown == _fmt(100 * runs[run][0]["last5_test_error"]), run
            quoted += 1
    assert quoted >= 3


def test_the_candidates_plan_quotes_the_epoch_10_errors_of_the_100_epoch_runs():
    """results/mnist-candidates/README.md gives epoch 10 of the 100-epoch runs (at S = 10) as the
    reason a 10-epoch budget can still tell the models apart: those are the runs' numbers."""
    text = (RESULTS / "mnist-candidates" / "README.md").read_text()
    m = re.search(r"bNSM ([\d.]+)% and ([\d.]+)%, dCNN ([\d.]+)% and ([\d.]+)%,\s+seeds 0 and 1", text)
    assert m, "the candidates' README no longer quotes epoch 10 of the 100-epoch runs"
    runs = _runs(RESULTS / "mnist-paper")
    for shown, run in zip(m.groups(), ("bnsm-mnist-seed0", "bnsm-mnist-seed1", "dcnn-mnist-seed0", "dcnn-mnist-seed1")):
        [epoch10] = [x for x in runs[run][1] if x["epoch"] == 10 and "test_error" in x]
        assert epoch10.get("samples", 10) == (1 if run.startswith("dcnn") else 10), run
        assert shown == _fmt(100 * epoch10["test_error"]), run


def test_the_readme_quotes_the_fashion_mnist_comparison_of_its_table():
    """The README's Fashion-MNIST sentence gives bnsm-real − dcnn with its Welch interval: the
    numbers of results/fashion-mnist-real/table.csv (themselves recomputed from the runs above)."""
    text = " ".join((ROOT / "README.md").read_text().split())
    m = re.search(r"trails the dCNN by ([\d.]+) points, 95% Welch interval ([+-][\d.]+) to ([+-][\d.]+)", text)
    assert m, "the README no longer quotes the Fashion-MNIST comparison"
    [row] = [r for r in _csv_rows(RESULTS / "fashion-mnist-real") if r["model"] == "bnsm-real"]
    assert row["reading"] == "higher" and row["reference"] == "dcnn"
    shown = [float(x) for x in m.groups()]
    want = [_num(row["diff_pct"]), _num(row["diff_low_pct"]), _num(row["diff_high_pct"])]
    assert shown == pytest.approx([round(x, 2) for x in want], abs=1e-9)


def test_the_readme_reads_the_mnist_claim_by_its_rule_once_both_models_have_three_seeds():
    """Once bnsm and dcnn both have three finished seeds in results/mnist-paper, the README
    states the claim in one sentence with the table's difference, Welch interval and reading
    (table.csv's, themselves recomputed from the runs above); before, it must not state one."""
    rows = {r["model"]: r for r in _csv_rows(RESULTS / "mnist-paper")}
    text = " ".join((ROOT / "README.md").read_text().split())
    m = re.search(
        r"Over three seeds each, bNSM ([\d.]+)% against dCNN ([\d.]+)%: the difference is ([+−-]?[\d.]+) points, "
        r"95% Welch interval ([+−-]?[\d.]+) to ([+−-]?[\d.]+), so by the rule fixed in advance (.+?)\.",
        text,
    )
    both = rows["bnsm"]["seeds"] == rows["dcnn"]["seeds"] == "0;1;2"
    if not both:
        assert m is None, "the README reads the claim before both models have three seeds"
        return
    assert m, "both models have three seeds: the README should state the claim by its rule"
    b = rows["bnsm"]
    shown = [float(x.replace("−", "-")) for x in m.groups()[:5]]
    want = [_num(b["error_mean_pct"]), _num(rows["dcnn"]["error_mean_pct"])]
    want += [_num(b[k]) for k in ("diff_pct", "diff_low_pct", "diff_high_pct")]
    assert shown == pytest.approx([round(x, 2) for x in want], abs=1e-9)
    words = {
        "no difference": ("does not beat", "not reproduced", "neither"),
        "lower": ("beats", "reproduced"),
        "higher": ("trails", "not reproduced"),
    }[b["reading"]]
    assert all(w in m.group(6) for w in words), (b["reading"], m.group(6))


def test_the_readme_reads_the_gnsm_by_the_same_rule():
    """The README's gNSM sentence quotes table.csv's gnsm row (its mean, the dCNN's, the
    difference and its Welch interval) and says what its reading says."""
    rows = {r["model"]: r for r in _csv_rows(RESULTS / "mnist-paper")}
    text = " ".join((ROOT / "README.md").read_text().split())
    m = re.search(
        r"Over three seeds each, gNSM ([\d.]+)% against dCNN ([\d.]+)%: the difference is ([+−-]?[\d.]+) points, "
        r"95% Welch interval ([+−-]?[\d.]+) to ([+−-]?[\d.]+), so by the same rule (.+?)\.",
        text,
    )
    if rows["gnsm"]["seeds"] != "0;1;2" or rows["dcnn"]["seeds"] != "0;1;2":
        assert m is None, "the README reads the gNSM before it has three seeds"
        return
    assert m, "the gNSM has three seeds: the README should read it by the rule"
    g = rows["gnsm"]
    want = [_num(g["error_mean_pct"]), _num(rows["dcnn"]["error_mean_pct"])]
    want += [_num(g[k]) for k in ("diff_pct", "diff_low_pct", "diff_high_pct")]
    assert [float(x.replace("−", "-")) for x in m.groups()[:5]] == pytest.approx([round(x, 2) for x in want], abs=1e-9)
    words = {"no difference": ("does not beat", "neither"), "lower": ("beats",), "higher": ("trails",)}[g["reading"]]
    assert all(w in m.group(6) for w in words), (g["reading"], m.group(6))


def test_the_mnist_paper_page_shows_its_table():
    """results/mnist-paper/README.md's result table: each seed's error, the mean ± std, the
    paper's number and the comparison with the dCNN, as table.csv has them (recomputed from
    the runs by the tests above); and the page's claim about the other reporting rules."""
    folder = RESULTS / "mnist-paper"
    rows = {r["model"]: r for r in _csv_rows(folder)}
    text = (folder / "README.md").read_text()
    (table,) = [t for t in _md_tables(text) if t[1][:2] == ["model", "seeds 0, 1, 2"]]
    assert [c[0] for c in table[2]] == ["bnsm", "gnsm", "dcnn"]
    for cells in table[2]:
        shown, row = dict(zip(table[1], cells, strict=True)), rows[cells[0]]
        assert shown["seeds 0, 1, 2"] == ", ".join(f"{float(x):.2f}" for x in row["error_pct"].split(";"))
        assert shown["mean ± std"] == f"{_num(row['error_mean_pct']):.2f} ± {_num(row['error_std_pct']):.2f}"
        assert shown["the paper"] == f"{_num(row['paper_error_pct']):.3f}"
        cmp = shown["minus the dCNN, 95% Welch interval"].replace("−", "-")
        if row["reference"]:
            lo, hi = _signed(_num(row["diff_low_pct"])), _signed(_num(row["diff_high_pct"]))
            assert cmp == f"{_signed(_num(row['diff_pct']))} [{lo}, {hi}]" and shown["reading"] == row["reading"]
        else:
            assert cmp == "" and shown["reading"] == ""
    if "changes no reading" in text:
        for model in ("bnsm", "gnsm"):
            assert rows[model]["final_reading"] == rows[model]["best_reading"] == rows[model]["reading"], model
    b = rows["bnsm"]
    for rule in ("final", "best"):
        lo, hi = _signed(_num(b[f"{rule}_diff_low_pct"])), _signed(_num(b[f"{rule}_diff_high_pct"]))
        quoted = f"{_signed(_num(b[f'{rule}_diff_pct']))} [{lo}, {hi}] by the {rule}"
        assert quoted.replace("-", "−") in " ".join(text.split()), quoted


def test_the_readme_table_of_the_mnist_protocol_is_table_csvs():
    """The README's table beside the paper: the paper's numbers, our mean ± std and the
    comparison with the dCNN for each model, as results/mnist-paper/table.csv has them."""
    rows = {r["model"]: r for r in _csv_rows(RESULTS / "mnist-paper")}
    text = (ROOT / "README.md").read_text()
    (table,) = [t for t in _md_tables(text) if t[1][0] == "MNIST, 100 epochs"]
    header, body = table[1], {c[0]: c for c in table[2]}
    models = {"bNSM": "bnsm", "gNSM": "gnsm", "dCNN": "dcnn"}
    assert header[1:] == list(models)
    for i, model in enumerate(models.values(), start=1):
        row = rows[model]
        assert row["seeds"] == "0;1;2", model
        assert body["the paper"][i] == f"{_num(row['paper_error_pct']):.3f}"
        assert body["`nsm`, mean ± std over seeds 0, 1, 2"][i] == (
            f"{_num(row['error_mean_pct']):.2f} ± {_num(row['error_std_pct']):.2f}"
        )
        shown = body["minus the dCNN, 95% Welch interval"][i].replace("−", "-")
        if row["reference"]:
            lo, hi = _signed(_num(row["diff_low_pct"])), _signed(_num(row["diff_high_pct"]))
            assert shown == f"{_signed(_num(row['diff_pct']))} [{lo}, {hi}]", model
        else:
            assert shown == "", model
    m = re.search(r"9 runs, (\d+) hours of training and testing summed over them", " ".join(text.split()))
    assert m and int(m.group(1)) == round(sum(_num(rows[k]["wall_seconds"]) for k in models.values()) / 3600)


def test_the_candidates_page_quotes_its_table():
    """Every row results/mnist-candidates/README.md shows of its measured tables is a row of its
    table.md (itself recomputed from the runs by the tests above), and the page says how many
    runs have finished."""
    folder = RESULTS / "mnist-candidates"
    if not (folder / "table.md").exists():
        pytest.skip("no candidate run has been tabulated yet")
    page, table = (folder / "README.md").read_text(), (folder / "table.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| mnist |")]
    assert rows, "the page shows none of its table's rows"
    for line in rows:
        assert line in table.splitlines(), line
    finished = len(list((folder / "runs").glob("*/summary.json")))
    m = re.search(r"(\d+) of 18 runs have finished", page)
    assert m and int(m.group(1)) == finished, finished
