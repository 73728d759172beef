"""Canary statistics: exact binomial intervals, the miss-rate bound ("nines"), and the tables the
Monitor health page and notebooks read.

- :func:`clopper_pearson` -- the exact (Clopper-Pearson) two-sided interval for k of n. It never
  under-covers, which is what a claim like "recall is at least 99.9 %" needs; Wilson is shorter
  but can under-cover near 0 and 1.
- :func:`miss_upper` -- the one-sided upper bound of a miss rate: 0 misses in 3,000 canaries
  gives 0.000998 at 95 % (the "rule of three", exactly), i.e. :func:`nines` = 3.0.

No scipy: the regularized incomplete beta function by its continued fraction (Lentz), inverted
by bisection; exact to ~1e-12, about 50 µs per bound.
"""

from __future__ import annotations

import math

CONFIDENCE = 0.95


def is_ensemble(scorer: str) -> bool:
    """Is this canary_recall row the ensemble's, ``ensemble (RULE)`` for the service's flag rule?"""
    return scorer.startswith("ensemble (")


def _betacf(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 3e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def beta_ppf(q: float, a: float, b: float) -> float:
    """The q-quantile of Beta(a, b), by bisection on :func:`betainc`."""
    lo, hi = 0.0, 1.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-14:
            break
    return 0.5 * (lo + hi)


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact two-sided interval for the proportion k/n; (nan, nan) when n = 0."""
    if n <= 0:
        return math.nan, math.nan
    alpha = 1.0 - confidence
    low = 0.0 if k <= 0 else beta_ppf(alpha / 2, k, n - k + 1)
    high = 1.0 if k >= n else beta_ppf(1 - alpha / 2, k + 1, n - k)
    return low, high


def miss_upper(missed: int, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided upper confidence bound of the miss rate after ``missed`` misses in ``n``."""
    if n <= 0:
        return math.nan
    if missed >= n:
        return 1.0
    if missed == 0:  # closed form: 1 - (1 - confidence) ** (1 / n)
        return -math.expm1(math.log(1.0 - confidence) / n)
    return beta_ppf(confidence, missed + 1, n - missed)


def nines(upper: float) -> float:
    """-log10 of a miss-rate bound: 0.001 -> 3.0 ("three nines" of recall, at least)."""
    if upper is None or not upper > 0 or math.isnan(upper):
        return math.nan
    return -math.log10(upper)


def with_intervals(frame, confidence: float = CONFIDENCE):
    """Add ``recall_low``/``recall_high``, ``fp_low``/``fp_high``, ``miss_upper`` and ``nines``
    to rows of ``queries/canary_recall.sql`` (a pandas DataFrame; returned, modified)."""
    rl, rh, fl, fh, mu = [], [], [], [], []
    for caught, n_bad, fp, n_fine in zip(frame["caught"], frame["n_bad"],
                                         frame["false_positives"], frame["n_fine"]):
        lo, hi = clopper_pearson(int(caught), int(n_bad), confidence)
        rl.append(lo)
        rh.append(hi)
        lo, hi = clopper_pearson(int(fp), int(n_fine), confidence)
        fl.append(lo)
        fh.append(hi)
        mu.append(miss_upper(int(n_bad) - int(caught), int(n_bad), confidence))
    frame["recall_low"], frame["recall_high"] = rl, rh
    frame["fp_low"], frame["fp_high"] = fl, fh
    frame["miss_upper"] = mu
    frame["nines"] = [nines(u) for u in mu]
    return frame


def recall_table(con, run_id: str, *, by_step: bool = False, confidence: float = CONFIDENCE):
    """Canary recall per scorer and category of a run, with exact intervals and the nines.

    ``con`` is a DuckDB connection to a view, or :func:`runwatch.connect`'s client.
    """
    from runwatch.query import named

    from runwatch.query.client import Client

    if isinstance(con, Client):
        frame = con.query("canary_recall", run_id=run_id, by_step=by_step).to_pandas()
    else:
        q = named.load("canary_recall")
        frame = con.execute(q.sql, q.bind({"run_id": run_id, "by_step": by_step})).df()
    return with_intervals(frame, confidence)
