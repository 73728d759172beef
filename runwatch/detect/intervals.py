"""Interval estimates for flagged rates; pure functions over arrays of counts.

- :func:`wilson` -- the Wilson score interval for a binomial proportion k/n. Unlike the normal
  approximation it stays inside [0, 1] and behaves at k = 0 or k = n, which is where a
  monitoring dashboard spends its time.
- :func:`newcombe_difference` -- Newcombe's hybrid score interval (method 10, Newcombe 1998)
  for the difference of two independent proportions p1 - p2, built from their Wilson intervals.

Rows with n = 0 give NaN (no estimate), never a division error. Used by the dashboard, the
detector (``runwatch.detect.wilson_interval``), alerts and scorer quality.
"""

from __future__ import annotations

import numpy as np

Z95 = 1.959963984540054  # two-sided 95 %


def wilson(k, n, z: float = Z95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rate, low, high) arrays for k successes out of n trials."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(n > 0, k / n, np.nan)
        z2 = z * z
        denom = 1.0 + z2 / n
        center = (p + z2 / (2.0 * n)) / denom
        half = z * np.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
        low = np.where(n > 0, np.clip(center - half, 0.0, 1.0), np.nan)
        high = np.where(n > 0, np.clip(center + half, 0.0, 1.0), np.nan)
    return p, low, high


def newcombe_difference(k1, n1, k2, n2, z: float = Z95):
    """(difference, low, high) for p1 - p2 with p1 = k1/n1 and p2 = k2/n2."""
    p1, l1, u1 = wilson(k1, n1, z)
    p2, l2, u2 = wilson(k2, n2, z)
    d = p1 - p2
    low = d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, low, high
