"""``analyze``: every figure a set of run directories has data for, and ``analysis.json``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from ...utils.io import check_new_outputs, save_figure, write_json
from .common import _figure, _layers
from .convergence import plot_convergence
from .gradients import _cosine_layers, plot_grad_cosine, plot_grad_means
from .records import PathLike, RunRecord, cosine_summary, drift_summary, load_run, percentile_spread
from .weights import (
    plot_percentiles,
    plot_weight_drift,
    plot_weight_evolution,
    plot_weight_histograms,
    plot_weight_means,
)

__all__ = ["analyze"]


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _summary(run: RunRecord) -> dict:
    out = {
        "label": run.label,
        "model": run.model,
        "path": str(run.path),
        "dataset": run.config.get("dataset"),
        "seed": run.config.get("seed"),
        "epochs_evaluated": sum(1 for m in run.metrics if m.get("test_error") is not None),
        "final_test_error": run.final_test_error,
        "recorded": run.record is not None,
    }
    if run.record is not None:
        out["drift"] = {
            layer: drift_summary(run, layer)
            for layer in run.record.layer_names
            if len(run.record.stats.get(layer, {}).get("step", ()))
        }
        out["percentile_spread"] = percentile_spread(run) if run.record.percentiles is not None else None
        cosine: dict[str, dict[str, float]] = {}
        for (layer, companion), value in cosine_summary(run).items():
            cosine.setdefault(layer, {})[companion] = value
        out["grad_cosine_mean"] = cosine
    return out


# what analyze may write into its folder
ANALYSIS_FILES = (
    "analysis.json",
    *(
        f"{name}.png"
        for name in (
            "convergence",
            "weight_evolution",
            "weight_drift",
            "weight_histograms",
            "weight_means",
            "grad_means",
            "percentiles",
            "grad_cosine",
        )
    ),
)


def analyze(run_dirs: Sequence[PathLike], out: PathLike, layer: str = "W3") -> dict[str, Path]:
    """Load the runs and write every figure they have data for, plus ``analysis.json``.

    Always ``convergence.png``; with at least one recorded run also ``weight_evolution.png``
    (``layer``, one panel per recorded run), ``weight_drift.png`` (``layer``),
    ``weight_histograms.png``, ``weight_means.png``, ``grad_means.png`` (layers common to
    the recorded runs), ``percentiles.png`` (if some run recorded them) and
    ``grad_cosine.png`` (if some run has cosine rows). Returns file stem -> path.
    Everything is checked before anything is written.
    """
    run_dirs = list(run_dirs)
    if not run_dirs:
        raise ValueError("analyze: no run directories given")
    out = check_new_outputs(out, ANALYSIS_FILES)
    runs = [load_run(d) for d in run_dirs]
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.label] = counts.get(run.label, 0) + 1
    for run in runs:
        if counts[run.label] > 1:
            run.label = f"{run.label} ({run.path.name})"
    recorded = [r for r in runs if r.record is not None]
    for run in recorded:
        if layer not in run.record.layer_names:
            raise ValueError(
                f"run {run.label} ({run.path}) has no layer {layer!r}; "
                f"its layers are {run.record.layer_names} (choose one with layer=...)"
            )
    summaries = [_summary(r) for r in runs]
    layers = _layers(recorded, None) if recorded else []
    with_percentiles = [r for r in recorded if r.record.percentiles is not None]
    cos_layers = _cosine_layers(recorded) if recorded else []

    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    def save(name: str, fig) -> None:
        written[name] = save_figure(out / f"{name}.png", fig, new=True)
        fig.clear()

    fig, (ax,) = _figure(1, pyplot=False)
    plot_convergence(runs, ax=ax)
    save("convergence", fig)
    if recorded:
        fig, axes = _figure(len(recorded), pyplot=False, title=f"Weight histograms of {layer} over training")
        for run, ax in zip(recorded, axes):
            plot_weight_evolution(run, layer, ax=ax)
        save("weight_evolution", fig)
        fig, axes = _figure(2, pyplot=False, title=f"Weight drift of {layer}")
        plot_weight_drift(runs, layer, axes=axes)
        save("weight_drift", fig)
        for name, plot, title in (
            ("weight_histograms", plot_weight_histograms, "Weight distributions after training"),
            ("weight_means", plot_weight_means, "Mean weight per layer"),
            ("grad_means", plot_grad_means, "Mean gradient per layer"),
        ):
            fig, axes = _figure(len(layers), pyplot=False, title=title)
            plot(runs, layers, axes=axes)
            save(name, fig)
        if with_percentiles:
            fig, axes = _figure(
                len(with_percentiles), pyplot=False, title="Percentiles of the last hidden layer's input"
            )
            for run, ax in zip(with_percentiles, axes):
                plot_percentiles(run, ax=ax)
            save("percentiles", fig)
        if cos_layers:
            fig, axes = _figure(len(cos_layers), pyplot=False, title="Gradient cosine with companion models")
            plot_grad_cosine(runs, cos_layers, axes=axes)
            save("grad_cosine", fig)
    written["analysis"] = write_json(
        out / "analysis.json",
        _json_safe({"layer": layer, "runs": summaries, "figures": {k: str(v) for k, v in written.items()}}),
        new=True,
    )
    return written
