"""A run directory: the files nsm writes there, and where a new one goes.

:func:`nsm.training.loop.fit` writes a run directory::

    config.json       the resolved configuration
    metrics.jsonl     one JSON object per epoch: lr, train loss and error, train seconds; an
                      evaluated epoch also has samples, test error, accuracy, NLL, test seconds
    summary.json      final test error and the mean over the last 5 full evaluations (SI 4.7;
                      ``eval_samples`` may make earlier ones cheaper, and those never count),
                      and the lowest of those evaluations with its epoch (chosen on the test set:
                      shown beside the result, never as it); written last, it marks a finished run
    checkpoint.pt     everything needed to resume (:mod:`nsm.training.checkpoint`), after every epoch and
                      every ``checkpoint_every`` steps; after the last epoch, the trained model
    curves.png        learning curves
    record/           with ``config.record``: weight and gradient statistics (:mod:`nsm.training.recorder`)
    .lock             while a process writes the directory (:class:`nsm.training.checkpoint.RunLock`)

Each file is written whole or not at all (:func:`nsm.utils.io.atomic_write`); the temporaries
of a write that was killed are removed before a run resumes (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..utils.io import atomic_write, save_figure, stale_temporaries

__all__ = ["RUN_FILES", "RECORD_FILES", "make_run_dir", "write_metrics", "plot_curves", "remove_stale_temporaries"]


# the files nsm writes into a run directory (atomically: nsm.utils.io.atomic_write)
RUN_FILES = ("checkpoint.pt", "config.json", "metrics.jsonl", "summary.json", "curves.png")
RECORD_FILES = ("layers.json", "stats.csv", "percentiles.csv", "grad_cosine.csv", "histograms.npz")


def make_run_dir(out: str | os.PathLike, name: str) -> Path:
    """A new, empty run directory ``out/name`` (``name-1``, ``name-2``... if taken)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for k in range(10000):
        path = out / (name if k == 0 else f"{name}-{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run directory for {name!r} in {out}")


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    """The learning curves of ``history`` (metrics.jsonl's rows) into ``path``: training and test
    error, training loss and test NLL, against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    tested = [h for h in history if "test_error" in h]  # every epoch trains; some are tested
    marker = "o-" if len(history) <= 30 else "-"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax1.plot(epochs, [100 * h["train_error"] for h in history], marker, label="train (1 sample)")
    ax1.plot([h["epoch"] for h in tested], [100 * h["test_error"] for h in tested], "s-", label="test (MC mean)")
    ax1.set(xlabel="epoch", ylabel="error (%)", title=title)
    ax1.legend()
    ax2.plot(epochs, [h["train_loss"] for h in history], marker, label="train loss")
    ax2.plot([h["epoch"] for h in tested], [h["test_nll"] for h in tested], "s-", label="test NLL")
    ax2.set(xlabel="epoch", ylabel="loss")  # cross-entropy; the S2M's: its reconstruction error
    ax2.legend()
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    """``run_dir/metrics.jsonl``: one line of JSON a row of ``history``."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in history)

    atomic_write(run_dir / "metrics.jsonl", write)


def remove_stale_temporaries(run_dir: Path) -> None:
    """Remove what a killed write of nsm's left in ``run_dir`` and ``run_dir/record`` (the
    temporaries of :data:`RUN_FILES` and :data:`RECORD_FILES`), and nothing else."""
    for tmp in [*stale_temporaries(run_dir, RUN_FILES), *stale_temporaries(run_dir / "record", RECORD_FILES)]:
        tmp.unlink()
