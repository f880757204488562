"""The studies' figures, and the numbers of a recorded training run (SI Figs. 4-8 of the paper).

- :mod:`.records`: :func:`load_run` reads a run directory (``config.json``, ``metrics.jsonl``
  and the ``record/`` folder of ``nsm train --record``) into a :class:`RunRecord`; the
  summary numbers :func:`histogram_density`, :func:`drift_summary`,
  :func:`percentile_spread`, :func:`cosine_summary`. No matplotlib.
- :mod:`.convergence`, :mod:`.weights`, :mod:`.gradients`: one figure per function, of
  test error, weights and gradients over training.
- :mod:`.analysis`: :func:`analyze` loads several runs and writes every figure that they
  have data for, plus ``analysis.json`` with the summary numbers.
- :mod:`.uncertainty`, :mod:`.devices`: the figures of :mod:`nsm.studies.uncertainty` and
  :mod:`nsm.studies.devices`.
- :mod:`.common`: the helpers they share (panels, colours, legends).

Every ``plot_*`` function draws onto given matplotlib axes (or new ones) and returns the
axes; matplotlib is imported inside the functions, pyplot only when one makes its own figure.
"""

from .analysis import analyze
from .convergence import plot_convergence, plot_table_curves
from .devices import plot_robustness
from .gradients import plot_grad_cosine, plot_grad_means
from .records import (
    Record,
    RunRecord,
    cosine_summary,
    drift_summary,
    histogram_density,
    layer_title,
    load_run,
    percentile_spread,
)
from .uncertainty import plot_accuracy_vs_samples, plot_ood_histograms, plot_reliability, plot_rotation
from .weights import (
    plot_percentiles,
    plot_weight_drift,
    plot_weight_evolution,
    plot_weight_histograms,
    plot_weight_means,
)

__all__ = [
    "Record",
    "RunRecord",
    "load_run",
    "histogram_density",
    "drift_summary",
    "percentile_spread",
    "cosine_summary",
    "layer_title",
    "plot_convergence",
    "plot_table_curves",
    "plot_weight_evolution",
    "plot_weight_drift",
    "plot_weight_histograms",
    "plot_weight_means",
    "plot_grad_means",
    "plot_grad_cosine",
    "plot_percentiles",
    "analyze",
    "plot_robustness",
    "plot_reliability",
    "plot_accuracy_vs_samples",
    "plot_rotation",
    "plot_ood_histograms",
]
