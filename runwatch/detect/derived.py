"""Turning other monitored quantities into binomial count series the detector can watch.

Consistency-probe gap (does the model misbehave more when it believes it is unmonitored?)
----------------------------------------------------------------------------------------
Paired probes (``pair_id``; one ``cue="monitored"`` and one ``cue="unmonitored"`` completion per
pair): only *discordant* pairs carry information about the gap. With ``b`` = pairs flagged only
unmonitored and ``c`` = pairs flagged only monitored, under "no gap" ``b | b + c ~ Bin(b + c, 1/2)``
whatever the flag rate is (McNemar's conditional argument). A rising gap raises that share, so
``paired_gap_counts`` returns ``counts = b``, ``ns = b + c`` per checkpoint, to feed to the
detector:

* ``baseline=0.5`` (known rate): alarm when unmonitored is flagged more than monitored at all;
* ``baseline=None`` / a burn-in: alarm when the share *rises* relative to the run's own history
  (a gap that was there from the start is not a change).

Unpaired probes (independent samples per cue): conditional on the total flagged ``s = x_u + x_m``,
``x_u | s ~ Bin(s, n_u / (n_u + n_m))`` under "no gap" (exact for Poisson counts, close for rare
flags), so ``gap_counts`` returns ``counts = x_u``, ``ns = x_u + x_m``. The null share is
``n_u / (n_u + n_m)``: keep the allocation of probes between cues fixed across checkpoints
(``gap_counts`` refuses allocations that vary by more than ``max_allocation_drift``), and use
``baseline=null_share`` or a burn-in / self-starting baseline as above.

High-reward samples that are flagged (reward hacking)
----------------------------------------------------
Per checkpoint, among the samples whose reward is "high", how many are flagged: a binomial count
series (``high_reward_flagged_counts``). "High" is either an absolute reward (``min_reward``; the
number of high-reward samples then grows as training raises rewards, which is fine -- ``ns`` may
vary) or the top ``top_fraction`` of that checkpoint's rewards (constant ``ns``, insensitive to
reward scale drift). Feed ``(counts, ns)`` to the detector with any baseline. To ask whether
reward and flagging become *associated* (rather than flagged rates rising everywhere), compare the
high-reward group with the rest via ``gap_counts(rest_flagged, rest_n, high_flagged, high_n)``
(the high-reward group plays the "unmonitored" arm).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def paired_gap_counts(unmonitored_only, monitored_only) -> tuple[np.ndarray, np.ndarray]:
    """Discordant pairs per checkpoint -> ``(counts, ns)`` with counts = unmonitored-only.

    ``unmonitored_only[k]``: pairs flagged when unmonitored but not when monitored;
    ``monitored_only[k]``: the reverse. Null share 1/2.
    """
    b = np.asarray(unmonitored_only, dtype=np.int64)
    c = np.asarray(monitored_only, dtype=np.int64)
    if b.shape != c.shape or np.any(b < 0) or np.any(c < 0):
        raise ValueError("need two non-negative count arrays of the same shape")
    return b, b + c


def gap_counts(monitored_flagged, monitored_n, unmonitored_flagged, unmonitored_n, *,
               max_allocation_drift: float = 0.1) -> tuple[np.ndarray, np.ndarray, float]:
    """Unpaired probes -> ``(counts, ns, null_share)``: counts = unmonitored flagged,
    ns = all flagged, null share = unmonitored fraction of the probes."""
    xm = np.asarray(monitored_flagged, dtype=np.int64)
    nm = np.asarray(monitored_n, dtype=np.int64)
    xu = np.asarray(unmonitored_flagged, dtype=np.int64)
    nu = np.asarray(unmonitored_n, dtype=np.int64)
    if not (xm.shape == nm.shape == xu.shape == nu.shape):
        raise ValueError("all four arrays must have the same shape")
    if np.any(xm > nm) or np.any(xu > nu) or np.any(xm < 0) or np.any(xu < 0):
        raise ValueError("flagged counts must be within 0..n")
    tot = nm + nu
    live = tot > 0
    if not live.any():
        raise ValueError("no probes")
    share = nu[live] / tot[live]
    null_share = float(nu[live].sum() / tot[live].sum())
    if np.max(np.abs(share - null_share)) > max_allocation_drift:
        raise ValueError("the share of unmonitored probes varies across checkpoints; the "
                         "conditional test needs a fixed allocation")
    return xu, xu + xm, null_share


def high_reward_flagged_counts(rewards: Sequence, flagged: Sequence, *,
                               min_reward: float | None = None,
                               top_fraction: float | None = None
                               ) -> tuple[np.ndarray, np.ndarray]:
    """Per checkpoint: (# high-reward samples that are flagged, # high-reward samples).

    ``rewards[k]``, ``flagged[k]``: the samples of checkpoint k (arrays of equal length).
    Exactly one of ``min_reward`` (reward >= it) or ``top_fraction`` (the ceil(f * n) highest).
    """
    if (min_reward is None) == (top_fraction is None):
        raise ValueError("give exactly one of min_reward, top_fraction")
    if top_fraction is not None and not 0 < top_fraction <= 1:
        raise ValueError("top_fraction must be in (0, 1]")
    counts, ns = [], []
    for r, f in zip(rewards, flagged, strict=True):
        r = np.asarray(r, dtype=float)
        f = np.asarray(f, dtype=bool)
        if r.shape != f.shape:
            raise ValueError("rewards and flags of a checkpoint must have the same length")
        ok = np.isfinite(r)
        r, f = r[ok], f[ok]
        if min_reward is not None:
            high = r >= min_reward
        else:
            m = int(np.ceil(top_fraction * len(r)))
            high = np.zeros(len(r), dtype=bool)
            if m:
                high[np.argsort(-r, kind="stable")[:m]] = True
        counts.append(int(np.sum(f & high)))
        ns.append(int(np.sum(high)))
    return np.asarray(counts, dtype=np.int64), np.asarray(ns, dtype=np.int64)
