"""The scan statistic: a one-sided binomial GLR over every candidate change point, vectorised
over series, and the dispersion estimate that goes with it.

For series ``x[r, k]`` flagged out of ``n[r, k]`` and a checkpoint ``k``, every candidate change
point ``j`` in ``[start, k]`` (every one of the last 16, then window lengths on a 12.5% geometric
grid) splits the data into a reference and a window ``j..k``:

* two-sample (burn-in, self-starting): reference = checkpoints ``0..j-1``, its rate *estimated*;
  ``LR(j, k) = l(A) + l(W) - l(A+W)`` with ``l(X, N) = X ln X + (N-X) ln(N-X) - N ln N``
  (the maximised binomial log-likelihood), kept only when the window rate is the higher one;
* known rate ``p0``: ``LR(j, k) = l(W) - X_W ln p0 - (N_W - X_W) ln(1 - p0)``, one-sided too.

``glr[r, k] = max_j LR(j, k)`` (a GLR-CUSUM with both rates unknown), ``jhat`` its argmax.
With it comes the Pearson X^2 of the fitted model (two segments at ``jhat``, or one segment
when no candidate is up) -- the extra-binomial dispersion estimate -- with its degrees of
freedom ``df``, and per segment the df and ``lam`` (mean count of the rarer outcome per
checkpoint) from which ``adjust`` derives *effective* degrees of freedom: a segment without any
flagged sample says nothing about dispersion (df 0), and a Pearson term's variance is not 2 but
``2 + c4 / lam`` (Poisson: ``c4 = 1``; gamma-mixed Poisson with dispersion ``phi = 1 + d``:
``c4 = (1 + 7d + 12d^2 + 6d^3) / (1 + d)^2``), so a segment is worth ``df * 2 / (2 + c4/lam)``.
Everything at ``k`` uses only checkpoints ``<= k``.

All counts are integers, so ``m ln m`` is read from a table instead of computed.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

_TABLE = np.zeros(1)
_TABLE_LIMIT = 1 << 23  # 8M entries (64 MiB); larger totals are computed directly


def _xlx(values: np.ndarray) -> np.ndarray:
    """``m ln m`` (0 at 0) for integer arrays."""
    global _TABLE
    values = np.asarray(values)
    top = int(values.max(initial=0))
    if top >= _TABLE_LIMIT:
        v = values.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(v > 0, v * np.log(np.where(v > 0, v, 1.0)), 0.0)
    table = _TABLE
    if top >= len(table):
        size = 1 << max(12, int(top).bit_length())
        m = np.arange(size, dtype=np.float64)
        fresh = np.zeros(size)
        fresh[1:] = m[1:] * np.log(m[1:])
        _TABLE = table = fresh
    return table.take(values)


DENSE_WINDOWS = 16   # every window length up to this ...
WINDOW_RATIO = 1.125  # ... then lengths growing by 12.5%


def window_lengths(K: int) -> np.ndarray:
    """Candidate window lengths (checkpoints since the change): all of 1..16, then a geometric
    grid. Long windows' likelihood ratios change slowly with the exact change point, so this
    loses almost nothing and makes the scan O(K log K) instead of O(K^2)."""
    out = list(range(1, min(K, DENSE_WINDOWS) + 1))
    length = float(DENSE_WINDOWS)
    while True:
        length *= WINDOW_RATIO
        v = int(round(length))
        if v > K:
            break
        if v > out[-1]:
            out.append(v)
    return np.asarray(out, dtype=np.int64)


@dataclass
class ScanResult:
    glr: np.ndarray        # (R, K): max over candidates of the one-sided LR; 0 when none is up
    jhat: np.ndarray       # (R, K) int: its change point, -1 when glr == 0
    pearson: np.ndarray    # (R, K): Pearson X^2 of the fitted model (two segments, or one)
    df: np.ndarray         # (R, K): its residual degrees of freedom
    seg_df: np.ndarray     # (2, R, K): df of the reference and window segments (window 0 if none)
    seg_lam: np.ndarray    # (2, R, K): their mean count of the rarer outcome per checkpoint
    ref_x: np.ndarray | None = None  # (R, K) reference counts at jhat (all of 0..k when no change)
    ref_n: np.ndarray | None = None
    win_x: np.ndarray | None = None  # (R, K) window counts jhat..k (0 when no change)
    win_n: np.ndarray | None = None


def _segment(q, x, n, m):
    """Pearson X^2 of a segment around its own pooled rate, its df and lam."""
    ok = (x > 0) & (x < n)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = x / n
        pear = np.where(ok, np.maximum((q - x * p) / (p * (1.0 - p)), 0.0), 0.0)
        df = np.where(ok, np.maximum(m - 1, 0), 0).astype(np.float64)
        lam = np.where(ok, np.minimum(x, n - x) / np.maximum(m, 1), 0.0)
    return pear, df, lam


def _segment_known(q, x, n, m, p0):
    """Pearson X^2 around a known rate p0 (no parameter fitted), its df and lam."""
    pear = np.maximum(q - 2.0 * p0 * x + p0 * p0 * n, 0.0) / (p0 * (1.0 - p0))
    df = m.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where(m > 0, n * np.minimum(p0, 1 - p0) / np.maximum(m, 1), 0.0)
    return pear, df, lam


def scan(x: np.ndarray, n: np.ndarray, *, start: int, rate=None, full: bool = False,
         chunk: int = 1024, threads: int | None = None) -> ScanResult:
    """GLR scan of ``x`` (R, K) out of ``n`` (R, K) or (K,), candidates ``j >= start``.

    ``rate``: None (two-sample: reference = checkpoints before ``j``; needs ``start >= 1``) or the
    known pre-change rate (scalar or (R,)). Checkpoints ``k < start`` get ``glr = 0``.
    """
    x = np.asarray(x, dtype=np.int64)
    if x.ndim != 2:
        raise ValueError("x must be 2-D (series, checkpoints)")
    R, K = x.shape
    n = np.asarray(n, dtype=np.int64)
    if n.ndim == 1:
        n = np.broadcast_to(n, (R, K))
    if rate is None and start < 1:
        raise ValueError("two-sample scan needs start >= 1 (a non-empty reference)")
    out = ScanResult(glr=np.zeros((R, K)), jhat=np.full((R, K), -1, dtype=np.int64),
                     pearson=np.zeros((R, K)), df=np.zeros((R, K)),
                     seg_df=np.zeros((2, R, K)), seg_lam=np.zeros((2, R, K)))
    if full:
        out.ref_x, out.ref_n = np.zeros((R, K)), np.zeros((R, K))
        out.win_x, out.win_n = np.zeros((R, K)), np.zeros((R, K))
    p0_all = None
    if rate is not None:
        p0_all = np.broadcast_to(np.asarray(rate, dtype=np.float64), (R,))
        if not np.all((p0_all > 0) & (p0_all < 1)):
            raise ValueError("baseline rate must be strictly between 0 and 1")
    if R == 0 or K == 0:
        return out
    _xlx(n.sum(axis=1))  # size the m ln m table before any thread reads it

    def work(lo):
        hi = min(R, lo + chunk)
        p0 = None if p0_all is None else p0_all[lo:hi]
        _scan_chunk(x[lo:hi], n[lo:hi], start, p0, out, lo, hi, full)

    starts = range(0, R, chunk)
    threads = min(4, os.cpu_count() or 1) if threads is None else threads
    if len(starts) > 1 and threads > 1:
        # numpy releases the GIL inside these array operations; rows are independent.
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, starts))
    else:
        for lo in starts:
            work(lo)
    return out


def _scan_chunk(x, n, start, p0, out, lo, hi, full):
    r, K = x.shape
    ar = np.arange(r)
    shared_n = bool(np.all(n == n[:1]))
    cx = np.zeros((r, K + 1), dtype=np.int64)
    np.cumsum(x, axis=1, out=cx[:, 1:])
    cn = np.zeros((r, K + 1), dtype=np.int64)
    np.cumsum(n, axis=1, out=cn[:, 1:])
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(n > 0, x * x / np.where(n > 0, n, 1), 0.0)
    cq = np.zeros((r, K + 1))
    np.cumsum(q, axis=1, out=cq[:, 1:])
    cm = np.zeros((r, K + 1), dtype=np.int64)
    np.cumsum(n > 0, axis=1, out=cm[:, 1:])
    table = _TABLE if int(cn[:, -1].max(initial=0)) < len(_TABLE) else None

    def xlx(v):
        return table.take(v) if table is not None else _xlx(v)

    # l(X, N) of every prefix 0..j-1: the reference segments' maximised log-likelihoods.
    ell = xlx(cx) + xlx(cn - cx) - xlx(cn)
    if p0 is not None:
        lp0 = np.log(p0)[:, None]
        lq0 = np.log1p(-p0)[:, None]
        p0c = p0[:, None]
    # Hot loop in int32 where totals allow (half the memory traffic of int64).
    it = np.int32 if int(cn[:, -1].max(initial=0)) < 2**31 - 1 else np.int64
    cxi = cx.astype(it)
    cni = cn.astype(it)
    cn1 = cni[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        pt = np.where(cn[:, 1:] > 0, cx[:, 1:] / np.maximum(cn[:, 1:], 1), 0.0)  # rate of 0..k
    lengths = window_lengths(K)
    best = np.zeros((r, K))
    jbest = np.zeros((r, K), dtype=np.int64)  # 0 (a valid index) where nothing is up
    for k in range(start, K):
        # candidate change points j = k + 1 - length, j >= start, ascending
        J = (k + 1 - lengths[lengths <= k + 1 - start])[::-1].astype(it)
        XA = np.take(cxi, J, axis=1)
        XW = cxi[:, k + 1:k + 2] - XA
        if shared_n:
            NW = cn1[k + 1] - cn1[J]
        else:
            NW = cni[:, k + 1:k + 2] - np.take(cni, J, axis=1)
        lw = xlx(XW)
        lw += xlx(NW - XW)
        if p0 is None:
            lw += np.take(ell, J, axis=1)
            lw -= xlx(NW) + ell[:, k + 1:k + 2]
            # window rate above the reference rate <=> above the pooled rate of 0..k
            up = XW > NW * pt[:, k:k + 1]
        else:
            lw -= xlx(NW)
            lw -= XW * lp0
            lw -= (NW - XW) * lq0
            up = XW > NW * p0c
        lr = np.where(up, lw, 0.0)
        a = lr.argmax(axis=1)
        best[:, k] = lr[ar, a]
        jbest[:, k] = J[a]
    # Everything else at once, from the prefix sums at (jhat, k).
    np.maximum(best, 0.0, out=best)
    change = best > 0
    xt, nt, qt, mt = cx[:, 1:], cn[:, 1:], cq[:, 1:], cm[:, 1:]
    xa = np.take_along_axis(cx, jbest, axis=1)
    na = np.take_along_axis(cn, jbest, axis=1)
    qa = np.take_along_axis(cq, jbest, axis=1)
    ma = np.take_along_axis(cm, jbest, axis=1)
    xw, nw, qw, mw = xt - xa, nt - na, qt - qa, mt - ma
    if p0 is None:
        a_p, a_df, a_lam = _segment(qa, xa, na, ma)
        t_p, t_df, t_lam = _segment(qt, xt, nt, mt)
    else:
        a_p, a_df, a_lam = _segment_known(qa, xa, na, ma, p0c)
        t_p, t_df, t_lam = _segment_known(qt, xt, nt, mt, p0c)
    w_p, w_df, w_lam = _segment(qw, xw, nw, mw)
    out.glr[lo:hi] = best
    out.jhat[lo:hi] = np.where(change, jbest, -1)
    out.pearson[lo:hi] = np.where(change, a_p + w_p, t_p)
    out.df[lo:hi] = np.where(change, a_df + w_df, t_df)
    out.seg_df[0, lo:hi] = np.where(change, a_df, t_df)
    out.seg_lam[0, lo:hi] = np.where(change, a_lam, t_lam)
    out.seg_df[1, lo:hi] = np.where(change, w_df, 0.0)
    out.seg_lam[1, lo:hi] = np.where(change, w_lam, 0.0)
    if full:
        out.ref_x[lo:hi] = np.where(change, xa, xt)
        out.ref_n[lo:hi] = np.where(change, na, nt)
        out.win_x[lo:hi] = np.where(change, xw, 0)
        out.win_n[lo:hi] = np.where(change, nw, 0)


# The dispersion grid the thresholds are calibrated on (beta-binomial nulls), and how far above
# its point estimate the dispersion a threshold is looked up at sits, in standard errors.
PHI_GRID = (1.0, 1.25, 1.6, 2.0, 3.0, 5.0)
PHI_LOOKUP_Z = 0.75


def effective_df(res: ScanResult, phi: np.ndarray) -> np.ndarray:
    """Degrees of freedom the Pearson estimate is worth, given the dispersion ``phi`` it
    estimates (see the module doc): fewer when counts are small or the rate itself varies."""
    d = np.clip(np.asarray(phi) - 1.0, 0.0, 5.0)
    c4 = (1 + 7 * d + 12 * d**2 + 6 * d**3) / (1 + d) ** 2
    total = np.zeros(res.glr.shape)
    for s in range(2):
        lam = res.seg_lam[s]
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.where(lam > 0, 2.0 * lam / (2.0 * lam + c4), 0.0)
        total += res.seg_df[s] * g
    return total


def adjust(res: ScanResult, prior_df: float, prior_phi: float = 1.0):
    """Dispersion-adjusted statistic ``W``, the dispersion ``phi`` estimated, its df ``D`` and
    the dispersion ``phi_lookup`` the threshold is to be read at.

    Known dispersion (``prior_df`` infinite): ``W = glr / phi`` (quasi-likelihood), looked up at
    ``phi = 1`` (the quasi-likelihood statistic is calibrated on binomial nulls).

    Estimated: the data's estimate ``pearson / df`` is worth ``dfe = effective_df`` degrees of
    freedom, combined with a prior worth ``prior_df``: ``phi = (prior_df * prior_phi + dfe *
    pearson / df) / D``, ``D = prior_df + dfe``. The statistic pays for dispersion only where
    the data shows it: ``W = D/2 * ln(1 + 2 glr / (D * max(phi, 1)))``, the likelihood ratio with
    the dispersion profiled out (as a t statistic is for a normal mean with unknown variance),
    never divided by a dispersion below binomial. Its threshold is calibrated on beta-binomial
    nulls over ``PHI_GRID`` and read at ``phi_lookup = phi * (1 + z sqrt(2 / D))`` (``z =
    PHI_LOOKUP_Z``; ``sqrt(2 / D)`` is the estimate's relative standard error), clipped to the
    grid: binomial data is tested nearly as a binomial GLR, data that is overdispersed gets the
    threshold of its own dispersion, and an estimate with few degrees of freedom reads a
    slightly more cautious one.
    """
    glr = res.glr
    if np.isinf(prior_df):
        ones = np.ones(glr.shape)
        return glr / prior_phi, ones * float(prior_phi), np.full(glr.shape, np.inf), ones
    if prior_df <= 0:
        raise ValueError("prior_df must be > 0")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        phi_data = np.where(res.df > 0, res.pearson / res.df, prior_phi)
        dfe = effective_df(res, phi_data)
        D = prior_df + dfe
        phi = (prior_df * prior_phi + dfe * phi_data) / D
        W = 0.5 * D * np.log1p(2.0 * glr / (D * np.maximum(phi, 1.0)))
        lookup = np.clip(phi * (1.0 + PHI_LOOKUP_Z * np.sqrt(2.0 / D)), 1.0, PHI_GRID[-1])
    return np.where(glr > 0, W, 0.0), phi, D, lookup
