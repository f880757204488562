"""Is one model's test error lower than another's, over a few seeds? The rule that reads the
paper's claim in ``results/mnist-paper``: the difference of the means with its Welch confidence
interval (two samples, unequal variances), and what the interval says.

- :func:`welch_interval`: mean(a) - mean(b), its standard error sqrt(s_a^2/n_a + s_b^2/n_b),
  the Welch-Satterthwaite degrees of freedom and the two-sided interval at ``level``;
- :func:`verdict`: ``"lower"`` if the whole interval is below 0, ``"higher"`` if above, else
  ``"no difference"`` (at this precision);
- :func:`t_quantile`: Student's t quantile for any real degrees of freedom (no SciPy needed:
  the density integrated by Simpson's rule, then bisection; 1e-9 against published tables).
"""

from __future__ import annotations

import math
from typing import Sequence

__all__ = ["t_quantile", "welch_interval", "verdict"]


def _t_cdf_above_half(t: float, df: float, steps: int = 2000) -> float:
    """P(T <= t) - 1/2 for t >= 0: the density from 0 to t by Simpson's rule."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def pdf(x: float) -> float:
        return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))

    h = t / steps
    total = pdf(0.0) + pdf(t)
    for i in range(1, steps):
        total += (4 if i % 2 else 2) * pdf(i * h)
    return total * h / 3


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p for Student's t with ``df`` > 0 degrees of freedom."""
    if not (isinstance(p, (int, float)) and 0 < p < 1):
        raise ValueError(f"p must be in (0, 1), got {p!r}")
    if not (isinstance(df, (int, float)) and df > 0 and math.isfinite(df)):
        raise ValueError(f"df must be a finite number > 0, got {df!r}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    target = p - 0.5
    lo, hi = 0.0, 1.0
    while _t_cdf_above_half(hi, df) < target:  # the tails of df < 1 reach far: widen first
        lo, hi = hi, 2 * hi
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf_above_half(mid, df) < target else (lo, mid)
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2


def _mean_var(x: Sequence[float], name: str) -> tuple[float, float, int]:
    values = [float(v) for v in x]
    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} needs at least 2 finite values (one per seed), got {list(x)!r}")
    n = len(values)
    mean = sum(values) / n
    return mean, sum((v - mean) ** 2 for v in values) / (n - 1), n


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """mean(a) - mean(b) and its two-sided Welch interval at ``level``.

    Returns ``diff``, ``se``, ``df`` (Welch-Satterthwaite), ``t`` (the quantile used), ``low``,
    ``high``, ``level``, ``n_a``, ``n_b``. Two samples without any spread (se = 0) give an
    interval of width 0 and ``df`` = inf."""
    if not (isinstance(level, float) and 0 < level < 1):
        raise ValueError(f"level must be a float in (0, 1), got {level!r}")
    ma, va, na = _mean_var(a, "a")
    mb, vb, nb = _mean_var(b, "b")
    qa, qb = va / na, vb / nb
    se = math.sqrt(qa + qb)
    diff = ma - mb
    if se == 0:
        return dict(diff=diff, se=0.0, df=math.inf, t=0.0, low=diff, high=diff, level=level, n_a=na, n_b=nb)
    df = (qa + qb) ** 2 / (qa * qa / (na - 1) + qb * qb / (nb - 1))
    t = t_quantile(0.5 + level / 2, df)
    return dict(diff=diff, se=se, df=df, t=t, low=diff - t * se, high=diff + t * se, level=level, n_a=na, n_b=nb)


def verdict(interval: dict) -> str:
    """``"lower"`` (a below b: the interval is below 0), ``"higher"`` or ``"no difference"``."""
    if interval["high"] < 0:
        return "lower"
    if interval["low"] > 0:
        return "higher"
    return "no difference"
