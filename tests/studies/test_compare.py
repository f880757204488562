"""The claim's rule (nsm.studies.compare): Student's t quantiles against published tables and
Welch's interval against its formula worked by hand."""

from __future__ import annotations

import math

import pytest

from nsm.studies.compare import t_quantile, verdict, welch_interval

# two-sided 95% and one-sided 95% critical values, from standard t tables (9 digits)
TABLE = [
    (0.975, 1, 12.706204736),
    (0.975, 2, 4.302652730),
    (0.975, 4, 2.776445105),
    (0.975, 10, 2.228138852),
    (0.95, 3, 2.353363435),
    (0.995, 5, 4.032142984),
    (0.975, 1e6, 1.959966357),  # the normal's 1.959963985 + (z^3 + z) / (4 df)
]


@pytest.mark.parametrize("p, df, want", TABLE)
def test_t_quantiles_match_the_tables(p, df, want):
    assert t_quantile(p, df) == pytest.approx(want, rel=1e-8, abs=0)
    assert t_quantile(1 - p, df) == pytest.approx(-want, rel=1e-8, abs=0)


def test_t_quantiles_in_closed_form_and_far_out():
    """df = 1 (Cauchy: tan(pi (p - 1/2))) and df = 2 ((2p - 1) / sqrt(2 p (1 - p))) have closed
    forms, far into the tails too (Simpson's rule on the density itself was 9x off there); the
    expansion used above df = 1e5 meets the integral there."""
    for p in (0.6, 0.975, 0.9995, 1 - 1e-6):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9, abs=0), p
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9, abs=0), p
    assert t_quantile(0.975, 1e5) == pytest.approx(t_quantile(0.975, 1e5 + 1e-6), rel=1e-9, abs=0)
    assert t_quantile(0.975, 1e15) == pytest.approx(1.959963984540054, rel=1e-12, abs=0)  # the normal's


def _mpmath_t_quantile(p: float, df: float) -> float:
    """Student's t quantile from mpmath (an independent implementation, installed with torch's
    sympy): P(T <= t) = 1 - I_x(df/2, 1/2) / 2 at x = df / (df + t^2), solved at 30 digits."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(30):
        df_, tail = mpmath.mpf(df), 1 - mpmath.mpf(p)

        def excess(log_t):
            t = mpmath.exp(log_t)
            return mpmath.betainc(df_ / 2, mpmath.mpf(1) / 2, 0, df_ / (df_ + t * t), regularized=True) / 2 - tail

        lo, hi = mpmath.mpf(-30), mpmath.mpf(30)  # log t; the tail falls as t grows
        for _ in range(120):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
        return float(mpmath.exp((lo + hi) / 2))


@pytest.mark.parametrize("df", [1.01, 1.1, 1.2, 1.4, 1.5, 1.9, 2.5, 3.7, 9.99, 10.5, 57.3, 1000.0, 1e5])
def test_t_quantiles_of_every_df_match_mpmath(df):
    """Welch's df is rarely a whole number and, with two or three seeds, often between 1 and 2,
    where the density's angle form cos^(df - 1) has an unbounded slope at the interval's end
    (Simpson's rule there was 3e-4 off at df = 1.1); large df reach far into a narrow tail."""
    for p in (0.6, 0.9, 0.975, 0.999999):
        assert t_quantile(p, df) == pytest.approx(_mpmath_t_quantile(p, df), rel=1e-9, abs=0), (p, df)


def test_t_quantile_of_non_integer_df_lies_between_its_neighbours():
    q = [t_quantile(0.975, df) for df in (3.0, 3.5, 4.0)]
    assert q[0] > q[1] > q[2]
    assert t_quantile(0.5, 7.3) == pytest.approx(0.0, abs=1e-12)


def test_welch_interval_by_hand():
    a, b = [0.66, 0.77, 0.70], [0.69, 0.60, 0.65]
    got = welch_interval(a, b)
    ma, mb = sum(a) / 3, sum(b) / 3
    va = sum((x - ma) ** 2 for x in a) / 2
    vb = sum((x - mb) ** 2 for x in b) / 2
    se = math.sqrt(va / 3 + vb / 3)
    df = (va / 3 + vb / 3) ** 2 / ((va / 3) ** 2 / 2 + (vb / 3) ** 2 / 2)
    t = t_quantile(0.975, df)
    assert got["diff"] == pytest.approx(ma - mb, abs=1e-15)
    assert got["se"] == pytest.approx(se, rel=1e-12) and got["df"] == pytest.approx(df, rel=1e-12)
    assert (got["low"], got["high"]) == pytest.approx((ma - mb - t * se, ma - mb + t * se), rel=1e-12)
    assert 2 <= got["df"] <= 4  # between min(n) - 1 and n_a + n_b - 2
    # equal variances and sizes: Welch's df is the pooled test's n_a + n_b - 2
    assert welch_interval([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])["df"] == pytest.approx(4.0, rel=1e-12)


def test_verdicts():
    assert verdict(welch_interval([0.5, 0.52, 0.51], [0.9, 0.92, 0.91])) == "lower"
    assert verdict(welch_interval([0.9, 0.92, 0.91], [0.5, 0.52, 0.51])) == "higher"
    assert verdict(welch_interval([0.66, 0.77, 0.70], [0.69, 0.60, 0.75])) == "no difference"
    flat = welch_interval([0.7, 0.7], [0.8, 0.8])
    # no spread in either: an interval of width 0 would call a gap of one test image certain
    assert flat["se"] == 0 and flat["low"] == flat["high"] == pytest.approx(-0.1) and verdict(flat) == "no spread"


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least 2 finite values"):
        welch_interval([0.7], [0.6, 0.7])
    with pytest.raises(ValueError, match="at least 2 finite values"):
        welch_interval([0.7, float("nan")], [0.6, 0.7])
    with pytest.raises(ValueError, match="level must be a float in"):
        welch_interval([0.7, 0.8], [0.6, 0.7], level=95)
    with pytest.raises(ValueError, match="p must be in"):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="df must be"):
        t_quantile(0.9, 0.5)
