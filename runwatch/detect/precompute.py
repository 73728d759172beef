"""Precompute the detector's thresholds for a configuration and ship them with the code.

    python -m runwatch.detect.precompute [--mode self] [--start 1] [--horizon 100] [--prior-df 8]
                                         [--jobs 2]

Calibration is a seeded Monte Carlo (``runwatch.detect.calibration``), about 7 seconds per grid
point on one core (a binomial and five beta-binomial nulls); a fresh machine would otherwise pay it the first time the service sees a new
sample size or rate. This walks every grid point ``grid_points`` can return for the
configuration and writes the tails to ``runwatch/detect/thresholds/`` (8 KB each), where
``calibration`` looks after its own cache. The results are deterministic, so regenerating them
gives the same files.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from runwatch.detect import calibration as cal


def grid(p_values=None) -> list[tuple[int, float]]:
    """Every (n, p) grid point: each lam = 2^k, each rate band, both sides of 1/2."""
    out = set()
    lams = 2.0 ** np.arange(cal.LAM_MIN_LOG2, cal.LAM_MAX_LOG2 + cal.LAM_STEP, cal.LAM_STEP)
    rates = p_values or [2.0 ** -10, 1 / 8, 1 / 4, 1 / 2, 3 / 4, 7 / 8, 1 - 2.0 ** -10]
    for p in rates:
        for lam in lams:
            n = max(1.0, lam / min(p, 1 - p))
            n_lo, p_lo, n_hi, p_hi, _ = cal.grid_points(np.array([n]), np.array([p]))
            out.add((int(n_lo[0]), float(p_lo[0])))
            out.add((int(n_hi[0]), float(p_hi[0])))
    return sorted(out)


def _calibrate(key: "cal.CalibrationKey") -> "cal.CalibrationKey":
    cal.CACHE_DIR = cal.SHIPPED_DIR
    cal.null_maxima_tail(key)
    return key


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", default="self", choices=["self", "burnin", "rate"])
    ap.add_argument("--start", type=int, default=1)
    ap.add_argument("--horizon", type=int, default=100)
    ap.add_argument("--prior-df", type=float, default=8.0)
    ap.add_argument("--sims", type=int, default=cal.DEFAULT_SIMS)
    ap.add_argument("--jobs", type=int, default=1, help="processes (one grid point each)")
    args = ap.parse_args(argv)
    cal.SHIPPED_DIR.mkdir(parents=True, exist_ok=True)
    points = grid()
    t0 = time.monotonic()
    prior_df = cal.snap_prior_df(args.prior_df)
    keys = [cal.CalibrationKey(args.mode, args.start, args.horizon, n, p, prior_df, args.sims)
            for n, p in points]
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        for i, key in enumerate(pool.map(_calibrate, keys)):
            print(f"{i + 1}/{len(points)} n={key.n} p={key.p:.6g} ({time.monotonic() - t0:.0f} s)",
                  flush=True)
    print(f"{len(points)} grid points in {cal.SHIPPED_DIR} ({len(os.listdir(cal.SHIPPED_DIR))} files)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
