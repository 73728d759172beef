"""runwatch.detect: known answers on hand-built series, causality, determinism, the dispersion
estimate, and the false-alarm calibration checked by simulation. Runs in well under 30 s: the
calibrations use 4,000 simulated runs (the default is 20,000) in a per-session cache dir."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from runwatch.detect import (
    Baseline,
    Dispersion,
    detect,
    estimate_dispersion,
    family_alpha,
    first_alarm,
    first_alarms,
    gap_counts,
    high_reward_flagged_counts,
    paired_gap_counts,
    pooled_dispersion,
    wilson_interval,
)
from runwatch.detect import calibration as cal
from runwatch.detect._scan import scan, window_lengths

SIMS = 4000
K = 100
N = 200


@pytest.fixture(scope="module", autouse=True)
def private_calibration_cache(tmp_path_factory):
    old = cal.CACHE_DIR
    cal.CACHE_DIR = tmp_path_factory.mktemp("detect-cal")
    cal.clear_memory()
    yield cal.CACHE_DIR
    cal.CACHE_DIR = old
    cal.clear_memory()


def step_series(level=2, after=12, at=30, k=K):
    counts = np.full(k, level)
    counts[at:] = after
    return counts, np.full(k, N)


BASELINES = [None, 20, 0.01, Baseline.from_counts(np.full(30, 2), np.full(30, N))]


# --- known answers -----------------------------------------------------------------------------


@pytest.mark.parametrize("baseline", BASELINES, ids=["self", "burn-in", "rate", "baseline-run"])
def test_no_change_gives_no_alarm(baseline):
    counts = np.array([2, 1, 3, 2, 2, 1, 3, 2, 2, 2] * 10)  # 1% of 200, mild wobble
    assert first_alarm(counts, np.full(K, N), baseline=baseline, sims=SIMS) is None
    assert first_alarm(np.zeros(K, int), np.full(K, N), baseline=baseline, sims=SIMS) is None


@pytest.mark.parametrize("baseline", BASELINES, ids=["self", "burn-in", "rate", "baseline-run"])
def test_big_step_at_30_alarms_within_a_few_checkpoints(baseline):
    counts, ns = step_series()  # 1% -> 6% at checkpoint 30
    k = first_alarm(counts, ns, baseline=baseline, sims=SIMS)
    assert k is not None and 30 <= k <= 32, k
    det = detect(counts, ns, baseline=baseline, sims=SIMS)
    assert det.first_alarm == k
    assert det.change_point[k] == 30  # the estimated change point is the true one
    assert det.window_rate[k] == pytest.approx(12 / N)
    assert det.baseline_rate[k] == pytest.approx(0.01)
    assert not det.fired[:30].any() and det.fired[k]


def test_downward_change_does_not_alarm():
    counts, ns = step_series(level=10, after=0)
    for b in (None, 20):
        assert first_alarm(counts, ns, baseline=b, sims=SIMS) is None


def test_burn_in_cannot_fire_during_burn_in():
    counts, ns = step_series(at=5)
    det = detect(counts, ns, baseline=20, sims=SIMS)
    assert not det.fired[:20].any() and np.isinf(det.threshold[:20]).all()
    assert np.all(det.statistic[:20] == 0) and np.all(det.change_point[:20] == -1)


# --- causality and determinism ------------------------------------------------------------------


@pytest.mark.parametrize("baseline", [None, 15, 0.02], ids=["self", "burn-in", "rate"])
def test_appending_data_never_changes_earlier_decisions(baseline):
    rng = np.random.default_rng(7)
    p = np.full(60, 0.02)
    p[35:] = 0.05
    ns = rng.integers(100, 400, size=60)
    counts = rng.binomial(ns, p)
    full = detect(counts, ns, baseline=baseline, horizon=60, sims=SIMS)
    assert full.first_alarm is not None and full.first_alarm >= 35
    for length in range(1, 61):
        part = detect(counts[:length], ns[:length], baseline=baseline, horizon=60, sims=SIMS)
        for field in ("statistic", "threshold", "fired", "change_point", "baseline_rate"):
            np.testing.assert_array_equal(getattr(part, field), getattr(full, field)[:length])
        expect = full.first_alarm if full.first_alarm < length else None
        assert first_alarm(counts[:length], ns[:length], baseline=baseline, horizon=60,
                           sims=SIMS) == expect


def test_same_data_same_alerts_even_after_recalibrating(tmp_path):
    rng = np.random.default_rng(3)
    counts = rng.binomial(N, 0.03, size=80)
    ns = np.full(80, N)
    a = detect(counts, ns, baseline=10, horizon=80, sims=SIMS)
    old = cal.CACHE_DIR
    try:
        cal.CACHE_DIR = tmp_path  # empty: the thresholds are simulated again from scratch
        cal.clear_memory()
        b = detect(counts, ns, baseline=10, horizon=80, sims=SIMS)
        assert cal.stats["computed"] > 0
    finally:
        cal.CACHE_DIR = old
        cal.clear_memory()
    np.testing.assert_array_equal(a.threshold, b.threshold)
    np.testing.assert_array_equal(a.statistic, b.statistic)
    assert a.to_records() == b.to_records()


def test_disk_cache_is_used(tmp_path):
    old = cal.CACHE_DIR
    try:
        cal.CACHE_DIR = tmp_path
        cal.clear_memory()
        key = cal.CalibrationKey("rate", 0, 30, 256, 2.0 ** -7, math.inf, 1000)
        h1 = cal.threshold(key, 0.01)
        assert len(list(tmp_path.glob("*.npz"))) == 1
        cal.clear_memory()
        hits = cal.stats["disk_hits"]
        assert cal.threshold(key, 0.01) == h1 and cal.stats["disk_hits"] == hits + 1
    finally:
        cal.CACHE_DIR = old
        cal.clear_memory()


# --- statistics by hand ---------------------------------------------------------------------------


def test_dispersion_estimate_hand_computed():
    # pooled rate 20/400 = 0.05, expected 5 per checkpoint, binomial variance 100*.05*.95 = 4.75
    # Pearson X^2 = (9 + 9 + 0 + 0) / 4.75 = 3.7895 on 3 df -> phi = 1.2632
    d = estimate_dispersion([2, 8, 5, 5], [100, 100, 100, 100])
    assert d.df == 3
    assert d.phi == pytest.approx(18 / 4.75 / 3)
    # pooled over series: sum of X^2 over sum of df
    pooled = pooled_dispersion([[2, 8, 5, 5], [5, 5, 5, 5]], [[100] * 4, [100] * 4])
    assert pooled.df == 6 and pooled.phi == pytest.approx(18 / 4.75 / 6)


def test_dispersion_of_the_fitted_change_model_hand_computed():
    # Two segments: reference [2, 4] (n 100 each, rate 3%), window [10, 6] (rate 8%).
    res = scan(np.array([[2, 4, 10, 6]]), np.array([100] * 4), start=1)
    assert res.jhat[0, 3] == 2
    ref = ((2 - 3) ** 2 + (4 - 3) ** 2) / (100 * 0.03 * 0.97)
    win = ((10 - 8) ** 2 + (6 - 8) ** 2) / (100 * 0.08 * 0.92)
    assert res.pearson[0, 3] == pytest.approx(ref + win)
    assert res.df[0, 3] == 2  # 4 checkpoints - 2 rates
    # GLR: l(6, 200) + l(16, 200) - l(22, 400), l(X, N) = X ln X + (N-X) ln(N-X) - N ln N
    def ell(x, n):
        return x * math.log(x) + (n - x) * math.log(n - x) - n * math.log(n)
    assert res.glr[0, 3] == pytest.approx(ell(6, 200) + ell(16, 200) - ell(22, 400))


def test_scan_matches_brute_force():
    def ell(x, n):
        f = (lambda m: m * math.log(m) if m > 0 else 0.0)
        return f(x) + f(n - x) - f(n)

    rng = np.random.default_rng(4)
    for _ in range(4):
        k = 40
        ns = rng.integers(0, 60, size=k)
        xs = rng.binomial(ns, rng.uniform(0.02, 0.3))
        lengths = window_lengths(k)
        for start, rate in ((1, None), (7, None), (0, 0.1)):
            res = scan(xs[None], ns[None], start=start, rate=rate)
            for t in range(start, k):
                best, bj = 0.0, -1
                for j in sorted(t + 1 - lengths[lengths <= t + 1 - start]):
                    xa, na = xs[:j].sum(), ns[:j].sum()
                    xw, nw = xs[j:t + 1].sum(), ns[j:t + 1].sum()
                    if rate is None:
                        if nw == 0 or na == 0 or xw / nw <= xa / na:
                            continue
                        v = ell(xa, na) + ell(xw, nw) - ell(xa + xw, na + nw)
                    else:
                        if nw == 0 or xw / nw <= rate:
                            continue
                        v = ell(xw, nw) - xw * math.log(rate) - (nw - xw) * math.log1p(-rate)
                    if v > best + 1e-12:
                        best, bj = v, j
                assert res.glr[0, t] == pytest.approx(best, abs=1e-9)
                assert res.jhat[0, t] == bj


def test_wilson_interval_known_values():
    lo, hi = wilson_interval([0, 5, 3], [10, 10, 0])
    assert lo[0] == 0 and hi[0] == pytest.approx(0.27753, abs=1e-5)
    assert lo[1] == pytest.approx(0.23659, abs=1e-5) and hi[1] == pytest.approx(0.76341, abs=1e-5)
    assert (lo[2], hi[2]) == (0, 1)


# --- calibration -----------------------------------------------------------------------------


@pytest.mark.parametrize("baseline", [None, 20], ids=["self", "burn-in"])
def test_false_alarm_rate_matches_budget_on_500_null_runs(baseline):
    rng = np.random.default_rng(11)
    counts = rng.binomial(N, 0.05, size=(500, K))
    first = first_alarms(counts, np.full(K, N), baseline=baseline, false_alarm=0.1,
                         n_series=1, sims=SIMS)
    alarms = int((first >= 0).sum())
    # budget 10% of 500 = 50 runs; binomial sd 6.7 -> 3 sd band
    assert 30 <= alarms <= 70, alarms
    first1 = first_alarms(counts, np.full(K, N), baseline=baseline, false_alarm=0.01,
                          n_series=1, sims=SIMS)
    assert int((first1 >= 0).sum()) <= 13  # 5 expected; P(>= 14 | 5) < 0.1%


def test_family_budget_is_split_over_series():
    assert family_alpha(0.01, 20) == 0.0005
    counts, ns = step_series()
    d1 = detect(counts, ns, baseline=20, sims=SIMS)
    d20 = detect(counts, ns, baseline=20, n_series=20, sims=SIMS)
    assert d20.alpha == pytest.approx(0.0005) and d1.alpha == pytest.approx(0.01)
    assert np.all(d20.threshold[20:] > d1.threshold[20:] + 1.5)  # ~ln(20) nats higher
    # first_alarms treats the rows as one family by default
    rows = np.stack([counts] * 4)
    assert list(first_alarms(rows, ns, baseline=20, sims=SIMS)) == \
        [first_alarm(counts, ns, baseline=20, n_series=4, sims=SIMS)] * 4


def test_dispersion_is_estimated_and_discounts_noisy_series():
    rng = np.random.default_rng(5)
    p = rng.beta(0.05 * 60, 0.95 * 60, size=400)  # extra variation: phi = 1 + 199/61 ~ 4.3
    counts = rng.binomial(N, p)
    d = estimate_dispersion(counts, np.full(400, N))
    assert 3.3 < d.phi < 5.3
    det = detect(counts[:K], np.full(K, N), baseline=20, sims=SIMS)
    assert np.nanmedian(det.dispersion[40:]) > 2.5
    # The same series judged as binomial has a much larger statistic.
    binom = detect(counts[:K], np.full(K, N), baseline=20, dispersion="binomial", sims=SIMS)
    assert np.max(binom.statistic) > 2 * np.max(det.statistic)
    # A known dispersion is used as given.
    known = detect(counts[:K], np.full(K, N), baseline=20, dispersion=4.0, sims=SIMS)
    np.testing.assert_allclose(known.statistic, binom.glr / 4.0)
    with pytest.raises(ValueError):
        Dispersion(phi=0)
    with pytest.raises(ValueError):
        detect(counts[:K], np.full(K, N), dispersion=-1.0)


def test_dispersion_is_paid_for_only_where_the_data_shows_it():
    """Binomial data: the statistic is the binomial GLR under the profile's discount, never
    divided by a dispersion below 1, and its threshold is read near the binomial one. The same
    rate wobbling from checkpoint to checkpoint gets a higher threshold (its own dispersion's)."""
    rng = np.random.default_rng(21)
    steady = np.full(K, 10)                                  # 5% of 200, steadier than binomial
    wobbly = rng.binomial(N, rng.beta(0.05 * 30, 0.95 * 30, size=K))  # phi ~ 7
    ns = np.full(K, N)
    d_steady = detect(steady, ns, baseline=0.05, sims=SIMS)
    d_wobbly = detect(wobbly, ns, baseline=0.05, sims=SIMS)
    assert np.all(d_steady.dispersion[10:] < 0.5)
    glr = d_steady.glr
    D = d_steady.dispersion_df
    expect = np.where(glr > 0, D / 2 * np.log1p(2 * glr / D), 0.0)  # max(phi, 1) = 1
    np.testing.assert_allclose(d_steady.statistic, expect)
    key = cal.CalibrationKey("rate", 0, K, 256, 2.0 ** -4, cal.snap_prior_df(2.0), SIMS)
    tails = cal.null_maxima_tail(key)
    g = cal.curve(tails["phi_tails"], SIMS, 0.01)
    assert g[0] == 0 and np.all(np.diff(g) >= 0) and g[-1] > 1.0  # rises with phi
    assert np.nanmedian(d_wobbly.dispersion[30:]) > 3
    assert np.min(d_wobbly.threshold[30:]) > np.max(d_steady.threshold[30:]) + 1.0
    # a known dispersion keeps the binomial calibration
    known = detect(wobbly, ns, baseline=0.05, dispersion=3.0, sims=SIMS)
    np.testing.assert_allclose(known.statistic, known.glr / 3.0)


# --- API details -------------------------------------------------------------------------------


def test_records_are_json_safe_and_complete():
    counts, ns = step_series()
    det = detect(counts, ns, sims=SIMS)
    recs = det.to_records()
    assert len(recs) == K and recs[0]["checkpoint"] == 0
    json.dumps(recs)  # NaN/inf became None
    r = recs[det.first_alarm]
    assert r["fired"] and r["statistic"] > r["threshold"]
    assert r["rate_low"] < r["rate"] < r["rate_high"]
    assert r["baseline_low"] <= r["baseline_rate"] <= r["baseline_high"]
    assert r["window_low"] <= r["window_rate"] <= r["window_high"]
    assert det.config["baseline"] == {"kind": "self-starting"}


def test_baseline_run_indices_refer_to_the_run():
    base = np.full(40, 2)
    counts, ns = step_series(at=10, k=50)
    det = detect(counts, ns, baseline=(base, np.full(40, N)), horizon=50, sims=SIMS)
    assert len(det) == 50 and 10 <= det.first_alarm <= 12
    assert det.change_point[det.first_alarm] == 10
    # a change right at the start of the run is visible against the baseline run
    det0 = detect(np.full(20, 12), np.full(20, N), baseline=(base, np.full(40, N)), horizon=20,
                  sims=SIMS)
    assert det0.first_alarm is not None and det0.first_alarm <= 2 and det0.change_point[5] == 0


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        first_alarm([5, 3], [4, 10])
    with pytest.raises(ValueError):
        first_alarm([-1, 3], [4, 10])
    with pytest.raises(ValueError):
        first_alarm([1.5, 3], [4, 10])
    with pytest.raises(ValueError):
        first_alarm([1, 3], [4, 10], baseline=1.5)
    with pytest.raises(ValueError):
        first_alarm([1, 3], [4, 10], baseline=0)
    with pytest.raises(ValueError):
        first_alarm([1, 3], [4, 10], false_alarm=0)
    with pytest.raises(ValueError):
        first_alarm([1, 3], [4, 10], baseline=20, horizon=20)


def test_zero_sample_checkpoints_are_skipped():
    counts, ns = step_series()
    ns = ns.copy()
    counts = counts.copy()
    ns[::7] = 0
    counts[::7] = 0
    k = first_alarm(counts, ns, baseline=20, sims=SIMS)
    assert k is not None and 30 <= k <= 33


def test_first_alarm_is_fast_after_calibration():
    counts, ns = step_series(after=2)
    first_alarm(counts, ns, sims=SIMS)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        first_alarm(counts, ns, sims=SIMS)
        times.append(time.perf_counter() - t0)
    assert sorted(times)[2] < 0.05


# --- derived series ----------------------------------------------------------------------------


def test_paired_gap_detects_a_rising_gap():
    # 40 discordant pairs per checkpoint, split evenly, then 3:1 towards unmonitored from 30
    b = np.array([20] * 30 + [30] * 20)
    c = 40 - b
    counts, ns = paired_gap_counts(b, c)
    assert list(ns) == [40] * 50
    assert first_alarm(counts, ns, baseline=0.5, horizon=50, sims=SIMS) in range(30, 33)
    assert first_alarm(counts, ns, horizon=50, sims=SIMS) in range(30, 34)
    assert first_alarm(counts[:30], ns[:30], baseline=0.5, horizon=50, sims=SIMS) is None


def test_unpaired_gap_and_high_reward_helpers():
    xu, s, share = gap_counts([1, 2], [100, 100], [3, 4], [300, 300])
    assert list(xu) == [3, 4] and list(s) == [4, 6] and share == 0.75
    with pytest.raises(ValueError):
        gap_counts([1, 2], [100, 300], [3, 4], [300, 100])
    rewards = [[0.1, 0.9, 0.5, 0.7], [1.0, 2.0, 3.0, 4.0]]
    flagged = [[1, 1, 0, 0], [0, 0, 1, 1]]
    assert [list(a) for a in high_reward_flagged_counts(rewards, flagged, top_fraction=0.5)] == \
        [[1, 2], [2, 2]]
    assert [list(a) for a in high_reward_flagged_counts(rewards, flagged, min_reward=0.6)] == \
        [[1, 2], [2, 4]]
