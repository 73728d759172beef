"""Change detection on per-checkpoint binomial counts (flagged samples out of n).

    from runwatch.detect import first_alarm, detect

    first_alarm(counts, ns)                      # self-starting: no baseline given
    first_alarm(counts, ns, baseline=20)         # first 20 checkpoints are burn-in
    first_alarm(counts, ns, baseline=0.012)      # known baseline rate
    first_alarm(counts, ns, baseline=(base_counts, base_ns))   # a baseline run's series
    det = detect(counts, ns, n_series=12)        # per-checkpoint statistic, threshold, fired,
    det.to_records()                             # rates with Wilson intervals, change point

The method: a one-sided binomial GLR-CUSUM (every candidate change point, shift size fitted),
the pre-change rate estimated from all data before the candidate change point (or given), the
extra-binomial dispersion estimated from the series and profiled out where the data shows it
(never below binomial), and a threshold calibrated on binomial and beta-binomial nulls by seeded
Monte Carlo, read at the series' own dispersion, so that P(any false alarm over ``horizon``
checkpoints) = ``false_alarm / n_series``. Pure functions: the same data always gives the same answer, and the decision at
checkpoint k depends only on checkpoints <= k. Details and measurements:
bench/detection_README.md.
"""

from runwatch.detect.derived import gap_counts, high_reward_flagged_counts, paired_gap_counts
from runwatch.detect.detector import (
    Baseline,
    Detection,
    Dispersion,
    detect,
    estimate_dispersion,
    family_alpha,
    first_alarm,
    first_alarms,
    pooled_dispersion,
    wilson_interval,
)

__all__ = [
    "Baseline", "Detection", "Dispersion", "detect", "estimate_dispersion", "family_alpha",
    "first_alarm", "first_alarms", "gap_counts", "high_reward_flagged_counts",
    "paired_gap_counts", "pooled_dispersion", "wilson_interval",
]
