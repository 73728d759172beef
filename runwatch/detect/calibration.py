"""Thresholds: seeded Monte Carlo of the detector under "no change", cached in memory and on disk.

A threshold ``h`` is set so that, for a series of ``horizon`` checkpoints with no change,
``P(max_k W_k > h) = alpha`` -- the probability of *any* false alarm over the run, not per
checkpoint. The null runs are simulated at the series' own typical sample size and rate (so far:
the threshold at checkpoint k uses only checkpoints <= k), on a grid of expected counts per
checkpoint with interpolation between grid points (``grid_points``). The statistic is a
likelihood ratio, nearly pivotal: ``h`` moves by ~0.1-0.2 nats per doubling of the expected count
below 2 per checkpoint and by a few hundredths above (bench/detection_README.md). It does
depend on the dispersion: every key is also simulated under beta-binomial nulls over
``PHI_GRID`` and the threshold is read at the series' own lookup dispersion (``_simulate``).

* Deterministic: the random generator is seeded from the calibration key, so the same key always
  gives the same threshold (for a given numpy version; the disk cache pins it across upgrades).
* Small ``alpha`` (fewer than 400 simulated alarms, e.g. family-wise budgets split over many
  series): the 400 largest simulated maxima are fitted with an exponential tail (peaks over
  threshold) and extrapolated; likelihood-ratio maxima have exponential tails. Checked against
  200,000 simulated runs: at alpha = 0.0005 the extrapolated threshold gives 0.00042.
* Cache: one entry per key in memory; on disk under ``$RUNWATCH_CACHE_DIR/detect`` (default
  ``.cache/detect`` in the checkout) as small ``.npz`` files written atomically. Set
  ``runwatch.detect.calibration.CACHE_DIR = None`` to keep it in memory only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from runwatch.resources import cache_root

from runwatch.detect._scan import PHI_GRID, adjust, scan

ALGO_VERSION = "glr-4"
DEFAULT_SIMS = 20_000
TAIL_FRACTION = 0.05   # keep the top 5% of the simulated maxima
POT_EXCEEDANCES = 400  # peaks-over-threshold base: the 400 largest maxima
LAM_STEP = 1.0         # grid step, in log2 units
LAM_MIN_LOG2 = -8.0
LAM_MAX_LOG2 = 10.0
P_MIN = 2.0 ** -20
CURVE_LEVELS = (2, 3)  # the dispersion curve is measured at alpha = 1% and 0.1%

CACHE_DIR: Path | None = cache_root() / "detect"

# Thresholds shipped with the code for the service's default configuration (see
# ``runwatch.detect.precompute``): read-only, looked up when CACHE_DIR has no entry.
SHIPPED_DIR = Path(__file__).resolve().parent / "thresholds"

_memory: dict[tuple, dict[str, np.ndarray]] = {}
_lock = threading.Lock()
stats = {"computed": 0, "disk_hits": 0, "memory_hits": 0, "seconds": 0.0}


def grid_points(n, p):
    """(typical sample size, rate) arrays -> the calibration grid points to interpolate between.

    The threshold depends on the rate mostly through ``lam = n * min(p, 1 - p)``, the expected
    number of the rarer outcome per checkpoint (discreteness; how much a checkpoint says about
    dispersion), and only weakly on ``p`` itself. So thresholds are calibrated at ``lam`` = powers
    of 2 (1/256 .. 1024; beyond that the statistic is in its large-count regime) and interpolated
    linearly in ``log2 lam``. The rate enters as a second key only where binomial and Poisson
    counts differ: below ~1/11 every rate shares one (Poisson-like) calibration per ``lam``,
    above it the rate is snapped to 1/8, 1/4, 1/2 (mirrored above 1/2).

    Returns ``(n_lo, p_lo, n_hi, p_hi, weight)``:
    ``h = (1 - weight) h(n_lo, p_lo) + weight h(n_hi, p_hi)``.
    """
    n = np.maximum(np.asarray(n, dtype=float), 1.0)
    p = np.clip(np.asarray(p, dtype=float), P_MIN, 1.0 - P_MIN)
    lo = np.minimum(p, 1.0 - p)
    l2 = np.clip(np.round(np.log2(n * lo), 9), LAM_MIN_LOG2, LAM_MAX_LOG2)
    f = np.floor(l2 / LAM_STEP) * LAM_STEP
    weight = (l2 - f) / LAM_STEP
    big = np.minimum(0.5, 2.0 ** np.round(np.log2(lo)))  # nearest power of 2
    small = lo < 2.0 ** -3.5

    def point(lam):
        p_g = np.where(small, np.clip(lam / 256.0, 2.0 ** -14, 2.0 ** -4), big)
        n_g = np.maximum(1, np.round(lam / p_g)).astype(np.int64)
        return n_g, np.where(p <= 0.5, p_g, 1.0 - p_g)

    n_lo, p_lo = point(2.0 ** f)
    n_hi, p_hi = point(2.0 ** (f + LAM_STEP))
    return n_lo, p_lo, n_hi, p_hi, weight


def snap_prior_df(df: float) -> float:
    """Dispersion prior df -> grid, rounded *down* (fewer df = higher, safer threshold)."""
    if math.isinf(df):
        return math.inf
    if df >= 4096:
        return 4096.0
    return float(2 ** max(0, int(math.floor(math.log2(max(df, 1.0))))))


@dataclass(frozen=True)
class CalibrationKey:
    mode: str        # "self", "burnin" (reference = all data before j, j >= start), "rate"
    start: int       # first candidate change point = first checkpoint that can alarm
    horizon: int     # checkpoints per run the budget covers (including burn-in)
    n: int           # grid sample size per checkpoint
    p: float         # grid rate
    prior_df: float  # dispersion: inf = known, else prior df of the estimate
    sims: int = DEFAULT_SIMS

    def digest(self) -> str:
        text = json.dumps({"v": ALGO_VERSION, **asdict(self)}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def _null_counts(key: CalibrationKey, phi: float, rng) -> np.ndarray:
    """Null runs at the key's n and p, binomial (``phi = 1``) or beta-binomial with dispersion
    ``phi`` (the true rate varies from checkpoint to checkpoint; variance ``phi`` times binomial,
    ``phi = 1 + (n - 1) rho``)."""
    size = (key.sims, key.horizon)
    if phi <= 1.0 or key.n < 2:
        return rng.binomial(key.n, key.p, size=size)
    rho = min((phi - 1.0) / (key.n - 1), 0.95)
    c = 1.0 / rho - 1.0
    return rng.binomial(key.n, rng.beta(key.p * c, (1.0 - key.p) * c, size=size))


def _statistic(key: CalibrationKey, x: np.ndarray):
    K = key.horizon
    res = scan(x, np.full(K, key.n), start=key.start, rate=key.p if key.mode == "rate" else None)
    W, _, _, lookup = adjust(res, key.prior_df, 1.0)
    return W[:, key.start:], lookup[:, key.start:]


def _top(maxima: np.ndarray, sims: int) -> np.ndarray:
    keep = min(max(POT_EXCEEDANCES + 1, int(math.ceil(TAIL_FRACTION * sims))), sims)
    return -np.sort(-maxima)[:keep]


def _simulate(key: CalibrationKey) -> dict[str, np.ndarray]:
    """The calibration of one key: tails of the null maxima (descending).

    * ``phi_tails[i]``: maxima of ``W`` under the null with dispersion ``PHI_GRID[i]`` (row 0
      binomial); with known dispersion only the binomial row.
    * ``tail_<r>``: maxima of ``W - g_r(phi_lookup)`` under the binomial null, where ``g_r`` is
      the rise of the threshold with the dispersion, measured at ``alpha = 10^-r`` from
      ``phi_tails`` (``curve``). The threshold at a false-alarm probability ``alpha`` is read from
      the tail whose ``r`` is nearest, plus ``g_r`` at the series' lookup dispersion: exact under
      the binomial null (the lookup's own noise is in the tail), and the threshold of the data's
      own dispersion under extra variation.
    """
    seed = int(key.digest()[:16], 16)
    known = math.isinf(key.prior_df)
    if key.start >= key.horizon:
        zero = np.zeros(1)
        return {"phi_tails": zero[None], **{f"tail_{r}": zero for r in CURVE_LEVELS}}
    phis = PHI_GRID[:1] if known else PHI_GRID
    rows = []
    for i, phi in enumerate(phis):
        x = _null_counts(key, phi, np.random.default_rng([seed, i]))
        W, lookup = _statistic(key, x)
        rows.append(_top(W.max(axis=1), key.sims))
        if i == 0:
            W0, lookup0 = W, lookup
    out = {"phi_tails": np.stack(rows)}
    for r in CURVE_LEVELS:
        g = curve(out["phi_tails"], key.sims, 10.0 ** -r)
        T = W0 - _rise(g, lookup0)
        out[f"tail_{r}"] = _top(T.max(axis=1), key.sims)
    return out


def _rise(g: np.ndarray, phi_lookup) -> np.ndarray:
    """The curve ``g`` read at lookup dispersions (linear in ``log phi``, clipped to the grid)."""
    phi = np.clip(np.asarray(phi_lookup, dtype=float), PHI_GRID[0], PHI_GRID[-1])
    return np.interp(np.log(phi), np.log(PHI_GRID), g)


def curve(phi_tails: np.ndarray, sims: int, alpha: float) -> np.ndarray:
    """How much the threshold rises with the dispersion: ``h(phi) - h(1)`` over ``PHI_GRID`` at
    ``alpha``, non-decreasing (simulation noise evened out), 0 with known dispersion."""
    if len(phi_tails) < len(PHI_GRID):
        return np.zeros(len(PHI_GRID))
    h = np.array([threshold_from_tail(t, sims, alpha) for t in phi_tails])
    return np.maximum.accumulate(np.maximum(h - h[0], 0.0))


def null_maxima_tail(key: CalibrationKey) -> dict[str, np.ndarray]:
    """The calibration of ``key`` (see ``_simulate``), computed once per key."""
    mk = (ALGO_VERSION, key)
    hit = _memory.get(mk)
    if hit is not None:
        stats["memory_hits"] += 1
        return hit
    with _lock:
        hit = _memory.get(mk)
        if hit is not None:
            return hit
        tails = _load(key)
        if tails is None:
            import time

            t0 = time.perf_counter()
            tails = _simulate(key)
            stats["computed"] += 1
            stats["seconds"] += time.perf_counter() - t0
            _save(key, tails)
        else:
            stats["disk_hits"] += 1
        _memory[mk] = tails
        return tails


def threshold_from_tail(tail: np.ndarray, sims: int, alpha: float) -> float:
    """``h`` with ``P(max W > h) = alpha`` from the simulated tail (descending)."""
    if not 0 < alpha < 1:
        raise ValueError("false-alarm probability must be in (0, 1)")
    k = alpha * sims
    base = min(POT_EXCEEDANCES, len(tail) - 1)
    if k >= base:
        # Enough simulated alarms: empirical quantile (at most floor(alpha*sims) maxima exceed h).
        return float(tail[min(int(math.floor(k)), len(tail) - 1)])
    u = float(tail[base])
    exceed = tail[tail > u] - u
    if len(exceed) == 0:
        return u
    p_u = len(exceed) / sims
    if p_u <= alpha:
        return u
    return u + float(exceed.mean()) * math.log(p_u / alpha)


def _level(alpha: float) -> int:
    """The curve level nearest ``alpha`` in log scale."""
    return min(CURVE_LEVELS, key=lambda r: abs(math.log10(alpha) + r))


def thresholds(key: CalibrationKey, alpha: float, phi_lookup) -> np.ndarray:
    """Thresholds for ``W`` at false-alarm probability ``alpha``, for each lookup dispersion in
    ``phi_lookup`` (array; 1 = binomial)."""
    tails = null_maxima_tail(key)
    r = _level(alpha)
    base = threshold_from_tail(tails[f"tail_{r}"], key.sims, alpha)
    return base + _rise(curve(tails["phi_tails"], key.sims, 10.0 ** -r), phi_lookup)


def threshold(key: CalibrationKey, alpha: float, phi_lookup: float = 1.0) -> float:
    return float(thresholds(key, alpha, np.array([phi_lookup]))[0])


def clear_memory() -> None:
    _memory.clear()


def _path(key: CalibrationKey) -> Path | None:
    if CACHE_DIR is None:
        return None
    return Path(CACHE_DIR) / f"{ALGO_VERSION}-{key.digest()}.npz"


def _load(key: CalibrationKey) -> dict[str, np.ndarray] | None:
    path = _path(key)
    if path is None or not path.exists():
        path = SHIPPED_DIR / f"{ALGO_VERSION}-{key.digest()}.npz"
        if not path.exists():
            return None
    try:
        with np.load(path) as z:
            if str(z["key"]) != json.dumps(asdict(key), sort_keys=True, default=str):
                return None
            return {name: np.array(z[name]) for name in z.files if name != "key"}
    except Exception:  # a corrupt or foreign file: recompute
        return None


def _save(key: CalibrationKey, tails: dict[str, np.ndarray]) -> None:
    path = _path(key)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **tails, key=json.dumps(asdict(key), sort_keys=True, default=str))
        os.replace(tmp, path)
    except OSError:  # read-only checkout etc.: memory cache only
        pass
