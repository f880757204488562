"""Is one model's test error lower than another's, over a few seeds? The rule that reads the
paper's claim in ``results/mnist-paper``: the difference of the means with its Welch confidence
interval (two samples, unequal variances), and what the interval says.

- :func:`welch_interval`: mean(a) - mean(b), its standard error sqrt(s_a^2/n_a + s_b^2/n_b),
  the Welch-Satterthwaite degrees of freedom and the two-sided interval at ``level``;
- :func:`verdict`: ``"lower"`` if the whole interval is below 0, ``"higher"`` if above, else
  ``"no difference"`` (at this precision); ``"no spread"`` if neither sample varies;
- :func:`t_quantile`: Student's t quantile for real degrees of freedom >= 1 (no SciPy needed:
  the tail's density integrated by Simpson's rule in the angle theta = atan(t / sqrt(df)), then
  bisection; an expansion in 1/df above 1e5; within 1e-9 of published tables and of mpmath for
  non-integer df, 1.01 to 1e5, where |p - 1/2| >= 0.01: closer to the median t is near 0 and
  the error, about 1e-13 in the tail probability, is no longer small relative to t).
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence

__all__ = ["t_quantile", "welch_interval", "verdict"]


def _t_tail(theta: float, df: float, steps: int = 2000) -> float:
    """P(T > t) for t = sqrt(df) tan(theta) >= 0 and df >= 1. With x = sqrt(df) tan(phi) the
    density becomes c cos(phi)^(df - 1), bounded for df >= 1 (1/pi for df = 1), and the tail is
    its integral from theta to pi/2 by Simpson's rule: no cancellation against 1/2 far out.

    - Below df = 5 the integrand behaves as u^(df - 1) at u = pi/2 - phi -> 0, whose slope is
      unbounded for df < 2 (Simpson's rule was 3e-4 off at df = 1.1): u = (pi/2 - theta) s^k with
      k = ceil(5 / df) makes it s^(k df - 1), four times differentiable, in s.
    - Above, the integrand falls at least as exp(-(df - 1)(tan(theta) x + x^2 / 2)) at
      phi = theta + x (tan(theta + x) >= tan(theta) + x), so it is integrated only up to the x
      where that reaches exp(-40), or pi/2 if that comes first: the steps follow the width of
      the peak, which narrows as 1/sqrt(df)."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(math.pi)
    nu = df - 1
    span = math.pi / 2 - theta
    if df < 5:
        k = math.ceil(5 / df)

        def f(s: float) -> float:  # the integrand in s, Jacobian included
            u = span * s**k
            sin = math.sin(u)
            return math.exp(log_c + nu * math.log(sin)) * span * k * s ** (k - 1) if sin > 0 else 0.0

        a, b = 0.0, 1.0
    else:
        tan = math.tan(theta)
        b = theta + min(span, math.sqrt(tan * tan + 80 / nu) - tan)

        def f(phi: float) -> float:
            cos = math.cos(phi)
            return math.exp(log_c + nu * math.log(cos)) if cos > 0 else 0.0

        a = theta
    h = (b - a) / steps
    total = f(a) + f(b)
    for i in range(1, steps):
        total += (4 if i % 2 else 2) * f(a + i * h)
    return total * h / 3


# Above this, the quantile from its expansion in 1/df around the normal's (Abramowitz & Stegun
# 26.7.5; the terms left out are below 1e-15 here), where lgamma's difference would cancel.
_LARGE_DF = 1e5


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p for Student's t with ``df`` >= 1 degrees of freedom (Welch's
    df is at least 1), to 1e-9 relative for 1e-6 <= p <= 1 - 1e-6 away from the median
    (|p - 1/2| >= 0.01; nearer, to about 1e-13 in P(T <= t))."""
    if not (isinstance(p, (int, float)) and 1e-6 <= p <= 1 - 1e-6):
        raise ValueError(f"p must be in [1e-6, 1 - 1e-6], got {p!r}")
    if not (isinstance(df, (int, float)) and df >= 1 and math.isfinite(df)):
        raise ValueError(f"df must be a finite number >= 1, got {df!r}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    if df > _LARGE_DF:
        z = statistics.NormalDist().inv_cdf(p)
        g1 = (z**3 + z) / 4
        g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
        g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
        return z + g1 / df + g2 / df**2 + g3 / df**3
    tail = 1 - p
    lo, hi = 0.0, math.pi / 2  # bisect on theta = atan(t / sqrt(df)); the tail falls as it grows
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_tail(mid, df) > tail else (lo, mid)
        if hi - lo <= 1e-16:
            break
    return math.sqrt(df) * math.tan((lo + hi) / 2)


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
    """``"lower"`` (a below b: the interval is below 0), ``"higher"`` or ``"no difference"``;
    ``"no spread"`` where neither sample varies (se = 0): the seeds then say nothing about
    the noise, and an interval of width 0 would call a gap of one test image certain."""
    if interval["se"] == 0:
        return "no spread"
    if interval["high"] < 0:
        return "lower"
    if interval["low"] > 0:
        return "higher"
    return "no difference"
