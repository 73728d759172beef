"""Public detector API: pure functions of (counts, ns) -> decisions, with their thresholds.

See ``runwatch/detect/__init__.py`` for the overview and bench/detection_README.md for the
method, the reasoning and the measured behaviour.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from runwatch.detect import calibration as cal
from runwatch.detect._scan import adjust, scan
from runwatch.detect.intervals import Z95, wilson

DEFAULT_PRIOR_DF = 2.0  # the dispersion estimate's prior: worth 2 checkpoints at phi = 1


# ---------------------------------------------------------------------------------------------
# Configuration objects


@dataclass(frozen=True, eq=False)
class Baseline:
    """What "normal" is. Exactly one of:

    * ``burn_in=B``: the first B checkpoints of the series are declared in control. Alarms can
      fire from checkpoint B on; a change is looked for at ``j >= B`` against everything before
      ``j`` (the burn-in and any later in-control data), the reference rate being *estimated*.
    * ``rate=p0``: a known pre-change rate (e.g. from a long baseline run). One-sample GLR.
    * ``counts``/``ns``: per-checkpoint counts of a baseline run. They are prepended to the series
      as a burn-in, so the run is compared against them (and its own data before the candidate
      change); dispersion is estimated from them too. Indices in results refer to the run.
    """

    burn_in: int | None = None
    rate: float | None = None
    counts: np.ndarray | None = None
    ns: np.ndarray | None = None

    def __post_init__(self):
        given = [self.burn_in is not None, self.rate is not None, self.counts is not None]
        if sum(given) != 1:
            raise ValueError("Baseline needs exactly one of burn_in, rate, counts")
        if self.burn_in is not None and (int(self.burn_in) != self.burn_in or self.burn_in < 1):
            raise ValueError("burn_in must be an integer >= 1")
        if self.rate is not None and not 0 < self.rate < 1:
            raise ValueError("baseline rate must be strictly between 0 and 1")
        if self.counts is not None:
            c, n = _as_counts(self.counts, self.ns)
            if c.shape[-1] < 1:
                raise ValueError("baseline counts are empty")
            object.__setattr__(self, "counts", c)
            object.__setattr__(self, "ns", n)

    @classmethod
    def from_burn_in(cls, checkpoints: int) -> "Baseline":
        return cls(burn_in=int(checkpoints))

    @classmethod
    def from_rate(cls, rate: float) -> "Baseline":
        return cls(rate=float(rate))

    @classmethod
    def from_counts(cls, counts, ns) -> "Baseline":
        return cls(counts=counts, ns=ns)


@dataclass(frozen=True)
class Dispersion:
    """Extra-binomial dispersion ``phi`` (variance / binomial variance) worth ``df`` degrees of
    freedom. ``df = inf`` means known. Passed as ``dispersion=`` it is the prior the series' own
    estimate is combined with (e.g. pooled over the other series of the run, or from baseline
    runs -- see ``pooled_dispersion``)."""

    phi: float = 1.0
    df: float = math.inf

    def __post_init__(self):
        if not self.phi >= 0 or (math.isinf(self.df) and not self.phi > 0):
            raise ValueError("phi must be >= 0 (> 0 when known)")
        if not self.df > 0:
            raise ValueError("df must be > 0")


def _dispersion_spec(dispersion) -> Dispersion:
    if dispersion is None or (isinstance(dispersion, str) and dispersion == "estimate"):
        return Dispersion(1.0, DEFAULT_PRIOR_DF)
    if isinstance(dispersion, str) and dispersion == "binomial":
        return Dispersion(1.0, math.inf)
    if isinstance(dispersion, Dispersion):
        return dispersion
    if isinstance(dispersion, numbers.Real) and not isinstance(dispersion, bool):
        return Dispersion(float(dispersion), math.inf)
    raise ValueError("dispersion must be 'estimate', 'binomial', a number (known phi) or a "
                     "Dispersion(phi, df)")


def _resolve_baseline(baseline) -> Baseline | None:
    if baseline is None or isinstance(baseline, Baseline):
        return baseline
    if isinstance(baseline, bool):
        raise ValueError("baseline must be None, an int (burn-in), a float (rate) or a Baseline")
    if isinstance(baseline, numbers.Integral):
        return Baseline(burn_in=int(baseline))
    if isinstance(baseline, numbers.Real):
        return Baseline(rate=float(baseline))
    if isinstance(baseline, tuple) and len(baseline) == 2:
        return Baseline(counts=baseline[0], ns=baseline[1])
    raise ValueError("baseline must be None, an int (burn-in), a float (rate), (counts, ns) or "
                     "a Baseline")


def family_alpha(false_alarm: float, n_series: int) -> float:
    """Per-series budget for a family-wise budget over ``n_series`` series (Bonferroni).

    P(any of S series false-alarms) <= sum of the per-series probabilities = false_alarm.
    Series of one run are positively correlated (same checkpoints), which makes it conservative.
    """
    if n_series < 1:
        raise ValueError("n_series must be >= 1")
    return false_alarm / n_series


def _as_counts(counts, ns) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(counts)
    n = np.asarray(ns)
    if n.shape != c.shape:
        n = np.broadcast_to(n, c.shape)
    for name, a in (("counts", c), ("ns", n)):
        if a.dtype.kind == "f":
            if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
                raise ValueError(f"{name} must be whole numbers")
        elif a.dtype.kind not in "iub":
            raise ValueError(f"{name} must be numeric")
    c = c.astype(np.int64)
    n = n.astype(np.int64)
    if np.any(c < 0) or np.any(n < 0):
        raise ValueError("counts and ns must be >= 0")
    if np.any(c > n):
        raise ValueError("counts must be <= ns")
    return c, n


# ---------------------------------------------------------------------------------------------
# Core (vectorised over series)


@dataclass
class _Core:
    W: np.ndarray
    h: np.ndarray
    fired: np.ndarray
    first: np.ndarray      # (R,) first alarm index in the run, -1 when none
    res: object
    phi: np.ndarray
    D: np.ndarray
    offset: int
    mode: str
    start: int
    alpha: float
    rate: np.ndarray | None


def _run(counts2d, ns2d, *, baseline, false_alarm, horizon, n_series, dispersion, sims,
         full=False, thresholds="all") -> _Core:
    x, n = _as_counts(counts2d, ns2d)
    if x.ndim == 1:
        x, n = x[None], n[None]
    if x.ndim != 2:
        raise ValueError("counts must be 1-D (one series) or 2-D (series x checkpoints)")
    if int(horizon) != horizon or horizon < 1:
        raise ValueError("horizon must be a positive integer")
    alpha = family_alpha(false_alarm, n_series)
    if not 0 < alpha < 1:
        raise ValueError("false_alarm must be in (0, 1)")
    b = _resolve_baseline(baseline)
    disp = _dispersion_spec(dispersion)
    R, K = x.shape
    offset, rate = 0, None
    if b is None:
        mode, start = "self", 1
    elif b.burn_in is not None:
        mode, start = "burnin", b.burn_in
    elif b.rate is not None:
        mode, start, rate = "rate", 0, np.full(R, b.rate)
    else:
        bc, bn = b.counts, b.ns
        if bc.ndim != 1:
            raise ValueError("baseline counts must be one series (1-D)")
        offset = len(bc)
        x = np.concatenate([np.broadcast_to(bc, (R, offset)), x], axis=1)
        n = np.concatenate([np.broadcast_to(bn, (R, offset)), n], axis=1)
        mode, start = "burnin", offset
    Kt = x.shape[1]
    horizon_t = int(horizon) + offset
    if start >= horizon_t:
        raise ValueError("the burn-in must be shorter than the horizon")
    res = scan(x, n, start=start, rate=rate, full=full)
    W, phi, D, lookup = adjust(res, disp.df, disp.phi)
    h = np.full((R, Kt), np.inf)
    if start < Kt:
        need = np.zeros((R, Kt), dtype=bool)
        need[:, start:] = True
        if thresholds == "positive":  # first_alarm only needs h where W > 0
            need &= W > 0
        h[need] = _lookup_thresholds(x, n, rate, need, lookup[need], mode, start, horizon_t,
                                     disp, alpha, sims)
    fired = W > h
    anyf = fired.any(axis=1)
    first = np.where(anyf, fired.argmax(axis=1) - offset, -1)
    return _Core(W=W, h=h, fired=fired, first=first, res=res, phi=phi, D=D, offset=offset,
                 mode=mode, start=start, alpha=alpha, rate=rate)


def _lookup_thresholds(x, n, rate, need, phi_lookup, mode, start, horizon, disp, alpha, sims):
    """Thresholds for the cells in ``need``, each from the calibration of its own grid point:
    the series' typical n and rate *so far* (causal), read at the cell's lookup dispersion."""
    rows, cols = np.nonzero(need)
    cn = np.cumsum(n, axis=1)
    cm = np.cumsum(n > 0, axis=1)
    with np.errstate(divide="ignore"):
        cl = np.cumsum(np.where(n > 0, np.log(np.maximum(n, 1)), 0.0), axis=1)
    m = cm[rows, cols]
    n_typ = np.where(m > 0, np.exp(cl[rows, cols] / np.maximum(m, 1)), 1.0)
    if rate is not None:
        p = rate[rows]
    else:
        cx = np.cumsum(x, axis=1)
        p = (cx[rows, cols] + 0.5) / (cn[rows, cols] + 1.0)
    prior_df = cal.snap_prior_df(disp.df)
    n_lo, p_lo, n_hi, p_hi, weight = cal.grid_points(n_typ, p)
    # Distinct grid points, each calibrated once (the weight-0 upper neighbour is not needed).
    need_hi = weight > 0
    pts = np.concatenate([np.stack([n_lo, p_lo], 1), np.stack([n_hi[need_hi], p_hi[need_hi]], 1)])
    uniq, inverse = np.unique(pts, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    inv_lo, inv_hi = inverse[:len(n_lo)], inverse[len(n_lo):]
    phi_hi = phi_lookup[need_hi]
    h_lo = np.empty(len(n_lo))
    h_hi_needed = np.empty(len(inv_hi))
    for u, (ng, pg) in enumerate(uniq):
        key = cal.CalibrationKey(mode, start, horizon, int(ng), float(pg), prior_df, sims)
        for h, inv, phi in ((h_lo, inv_lo, phi_lookup), (h_hi_needed, inv_hi, phi_hi)):
            at = inv == u
            if at.any():
                h[at] = cal.thresholds(key, alpha, phi[at])
    h_hi = h_lo.copy()
    h_hi[need_hi] = h_hi_needed
    return (1.0 - weight) * h_lo + weight * h_hi


# ---------------------------------------------------------------------------------------------
# Results


def wilson_interval(x, n, z: float = Z95):
    """Wilson score interval for x successes out of n (arrays; n = 0 gives (0, 1): nothing
    known). The interval itself is :func:`runwatch.detect.intervals.wilson`."""
    _, lo, hi = wilson(x, n, z)
    known = np.asarray(n, dtype=float) > 0
    return np.where(known, lo, 0.0), np.where(known, hi, 1.0)


@dataclass
class Detection:
    """Per-checkpoint output of ``detect`` (arrays of the series' length), for storage.

    ``statistic`` (nats, dispersion-adjusted GLR) is compared with ``threshold``; ``fired`` is
    ``statistic > threshold``. ``change_point`` is the estimated first changed checkpoint (-1
    while nothing is up). ``baseline_rate`` is the reference rate (estimated from the data before
    the change point, or the given rate), ``window_rate`` the pooled rate since the change point,
    ``rate`` the checkpoint's own rate; intervals are Wilson 95%, the pooled ones on effective
    counts ``x / phi``, ``n / phi`` (overdispersion widens them).
    """

    statistic: np.ndarray
    threshold: np.ndarray
    fired: np.ndarray
    glr: np.ndarray
    dispersion: np.ndarray
    dispersion_df: np.ndarray
    change_point: np.ndarray
    rate: np.ndarray
    rate_low: np.ndarray
    rate_high: np.ndarray
    baseline_rate: np.ndarray
    baseline_low: np.ndarray
    baseline_high: np.ndarray
    window_rate: np.ndarray
    window_low: np.ndarray
    window_high: np.ndarray
    first_alarm: int | None
    mode: str
    alpha: float
    false_alarm: float
    n_series: int
    horizon: int
    config: dict = field(default_factory=dict)

    FIELDS = ("statistic", "threshold", "fired", "glr", "dispersion", "dispersion_df",
              "change_point", "rate", "rate_low", "rate_high", "baseline_rate", "baseline_low",
              "baseline_high", "window_rate", "window_low", "window_high")

    def __len__(self) -> int:
        return len(self.statistic)

    def to_records(self) -> list[dict]:
        """One plain dict per checkpoint (JSON-safe: NaN/inf become None)."""
        out = []
        for k in range(len(self)):
            rec = {"checkpoint": k}
            for f in self.FIELDS:
                v = getattr(self, f)[k]
                if isinstance(v, (np.bool_, bool)):
                    rec[f] = bool(v)
                elif isinstance(v, (np.integer,)):
                    rec[f] = int(v)
                else:
                    v = float(v)
                    rec[f] = v if math.isfinite(v) else None
            out.append(rec)
        return out


# ---------------------------------------------------------------------------------------------
# Entry points


def detect(counts, ns, *, baseline=None, false_alarm: float = 0.01, horizon: int = 100,
           n_series: int = 1, dispersion="estimate", sims: int = cal.DEFAULT_SIMS) -> Detection:
    """Run the detector over one series and return everything per checkpoint.

    ``counts[k]`` flagged samples out of ``ns[k]`` at checkpoint ``k`` (whole numbers).
    ``baseline``: None (self-starting), an int (burn-in checkpoints), a float (known rate),
    ``(counts, ns)`` of a baseline run, or a ``Baseline``.
    ``false_alarm``: probability of any false alarm over ``horizon`` checkpoints for the family of
    ``n_series`` series this one belongs to; this series gets ``false_alarm / n_series``.
    ``dispersion``: "estimate" (default: quasi-binomial phi estimated from the series, profiled
    out), "binomial" (phi = 1 known), a number (known phi) or ``Dispersion(phi, df)`` (a prior).
    The decision at checkpoint k depends only on checkpoints <= k.
    """
    if np.ndim(counts) != 1:
        raise ValueError("detect takes one series (1-D); use first_alarms for many")
    c = _run(counts, ns, baseline=baseline, false_alarm=false_alarm, horizon=horizon,
             n_series=n_series, dispersion=dispersion, sims=sims, full=True)
    o = c.offset
    res = c.res
    x, n = _as_counts(counts, ns)
    phi = c.phi[0, o:]
    jhat = res.jhat[0, o:]
    change = jhat >= 0
    rate_lo, rate_hi = wilson_interval(x, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(n > 0, x / np.maximum(n, 1), np.nan)
        eff = np.maximum(phi, 1.0)  # intervals only ever widen for dispersion
        if c.mode == "rate":
            p0 = float(c.rate[0])
            base = np.full(len(x), p0)
            base_lo = base_hi = base.copy()
        else:
            rx, rn = res.ref_x[0, o:], res.ref_n[0, o:]
            base = np.where(rn > 0, rx / rn, np.nan)
            base_lo, base_hi = wilson_interval(rx / eff, rn / eff)
        wx, wn = res.win_x[0, o:], res.win_n[0, o:]
        win = np.where(change & (wn > 0), wx / wn, np.nan)
        win_lo, win_hi = wilson_interval(wx / eff, wn / eff)
        win_lo = np.where(change, win_lo, np.nan)
        win_hi = np.where(change, win_hi, np.nan)
    before = np.arange(len(x)) + o < c.start
    if c.mode != "rate":
        base = np.where(before, np.nan, base)
        base_lo = np.where(before, np.nan, base_lo)
        base_hi = np.where(before, np.nan, base_hi)
    disp = _dispersion_spec(dispersion)
    df_used = c.D[0, o:]
    first = int(c.first[0])
    return Detection(
        statistic=c.W[0, o:], threshold=c.h[0, o:], fired=c.fired[0, o:], glr=res.glr[0, o:],
        dispersion=phi, dispersion_df=df_used, change_point=np.where(change, jhat - o, -1),
        rate=rate, rate_low=rate_lo, rate_high=rate_hi,
        baseline_rate=base, baseline_low=base_lo, baseline_high=base_hi,
        window_rate=win, window_low=win_lo, window_high=win_hi,
        first_alarm=None if first < 0 else first, mode=c.mode, alpha=c.alpha,
        false_alarm=false_alarm, n_series=n_series, horizon=int(horizon),
        config={"baseline": _describe(baseline), "dispersion": {"phi": disp.phi, "df": disp.df},
                "sims": sims, "algorithm": cal.ALGO_VERSION},
    )


def _describe(baseline) -> dict:
    b = _resolve_baseline(baseline)
    if b is None:
        return {"kind": "self-starting"}
    if b.burn_in is not None:
        return {"kind": "burn-in", "checkpoints": b.burn_in}
    if b.rate is not None:
        return {"kind": "rate", "rate": b.rate}
    return {"kind": "baseline-run", "checkpoints": len(b.counts), "flagged": int(b.counts.sum()),
            "samples": int(b.ns.sum())}


def first_alarm(counts, ns, *, baseline=None, false_alarm: float = 0.01, horizon: int = 100,
                n_series: int = 1, dispersion="estimate", sims: int = cal.DEFAULT_SIMS):
    """0-based index of the first checkpoint whose statistic crosses its threshold, or None.

    Same arguments as ``detect``. Causal: the decision at k depends only on checkpoints <= k,
    so appending checkpoints never changes an earlier answer.
    """
    if np.ndim(counts) != 1:
        raise ValueError("first_alarm takes one series (1-D); use first_alarms for many")
    c = _run(counts, ns, baseline=baseline, false_alarm=false_alarm, horizon=horizon,
             n_series=n_series, dispersion=dispersion, sims=sims, thresholds="positive")
    f = int(c.first[0])
    return None if f < 0 else f


def first_alarms(counts, ns, *, baseline=None, false_alarm: float = 0.01, horizon: int = 100,
                 n_series: int | None = None, dispersion="estimate",
                 sims: int = cal.DEFAULT_SIMS) -> np.ndarray:
    """Vectorised ``first_alarm`` over the rows of ``counts`` (series x checkpoints).

    Returns an int array, -1 where a series never alarms. ``n_series`` defaults to the number of
    rows: the rows are one family (e.g. the series of one run) sharing ``false_alarm``.
    Pass ``n_series=1`` to treat each row as its own run (e.g. simulations).
    """
    counts = np.asarray(counts)
    if counts.ndim != 2:
        raise ValueError("first_alarms takes a 2-D array (series x checkpoints)")
    if n_series is None:
        n_series = counts.shape[0]
    c = _run(counts, ns, baseline=baseline, false_alarm=false_alarm, horizon=horizon,
             n_series=n_series, dispersion=dispersion, sims=sims, thresholds="positive")
    return c.first


def estimate_dispersion(counts, ns) -> Dispersion:
    """Quasi-binomial dispersion of in-control data: Pearson X^2 around the pooled rate over its
    degrees of freedom (checkpoints with n > 0, minus one). ``phi`` 1 = binomial; values below
    1 are kept (it is an estimate; the detector weighs it by its df)."""
    x, n = _as_counts(counts, ns)
    x, n = x.ravel(), n.ravel()
    keep = n > 0
    x, n = x[keep], n[keep]
    m = len(x)
    X, N = x.sum(), n.sum()
    if m < 2 or X == 0 or X == N:
        return Dispersion(1.0, 1e-9 if m < 2 else float(m - 1))
    p = X / N
    pearson = float(np.sum((x - n * p) ** 2 / (n * p * (1 - p))))
    return Dispersion(pearson / (m - 1), float(m - 1))


def pooled_dispersion(counts2d, ns2d) -> Dispersion:
    """Dispersion pooled over several in-control series (e.g. all series of a baseline run, or
    the burn-in of every series of a run): sum of Pearson X^2 over sum of df. Pass the result as
    ``dispersion=`` to give each series' estimate many more degrees of freedom."""
    x, n = _as_counts(counts2d, ns2d)
    if x.ndim == 1:
        return estimate_dispersion(x, n)
    pear, df = 0.0, 0.0
    for xi, ni in zip(x, n):
        d = estimate_dispersion(xi, ni)
        if d.df >= 1:
            pear += d.phi * d.df
            df += d.df
    if df == 0:
        return Dispersion(1.0, 1e-9)
    return Dispersion(pear / df, df)
