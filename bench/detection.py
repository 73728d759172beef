"""Detection benchmark: false alarms and delays of runwatch.detect on simulated runs.

    .venv/bin/python -m bench.detection [--runs 2000] [--seed 1] [--cold]

Simulated runs of K = 100 checkpoints with n = 200 samples each (binomial counts; changes at
checkpoint 50). Scenarios: no change (1% and 5%), steps 1%->2%, 1%->3%, 5%->8%, a linear drift
1%->3% over checkpoints 50..99, no change with extra checkpoint-to-checkpoint variation of the
true rate (beta-binomial), no change with sample sizes varying 50..1000, and 20 series per run
(family-wise budget); and rarer (0.2%) and commoner (20%) categories, sample sizes log-uniform
37..400, changes at checkpoints 5 and 25, a fast (10 checkpoints) and a slow drift.
Detectors, all with a 1% false-alarm budget per run:

  (a)  glr_burnin   runwatch.detect, baseline = first 20 checkpoints (burn-in), dispersion estimated
  (a') glr_rate     runwatch.detect told the true baseline rate, dispersion estimated
  (b)  glr_self     runwatch.detect, self-starting (no baseline), dispersion estimated
  (c)  shewhart     fixed rule: alarm when a checkpoint's rate > burn-in rate + 3 sigma
  (d)  cusum_oracle binomial CUSUM told the true p0 and p1, threshold simulated for 1% per run
  and, to take the gap between (a)/(b) and (d) apart:
  (a0) glr_rate_binom    runwatch.detect told the true baseline rate, dispersion assumed binomial
  (a1) glr_burnin_binom  burn-in baseline, dispersion assumed binomial
  (b1) glr_self_binom    self-starting, dispersion assumed binomial
  and in the 20-series scenarios:
  (a2) glr_burnin_pooled burn-in baseline, dispersion prior pooled over the burn-in of all 20
                         series of the run (``pooled_dispersion``; 380 df instead of ~20..80)

Writes bench/out/detection.json, bench/out/detection.png and bench/out/detection_tables.md (the
README's tables); prints a table.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import OUT_DIR, print_table, save_json
from runwatch.detect import calibration as cal
from runwatch.detect import detect, first_alarms, pooled_dispersion

K = 100
N = 200
CHANGE = 50
BURN_IN = 20
BUDGET = 0.01
SERIES = 20
MULTI_RATES = np.geomspace(0.005, 0.1, SERIES)


# ---------------------------------------------------------------------------------------------
# Scenarios: true rates per run and checkpoint (R, K), and what the oracle is told.


def _beta_rates(mean: np.ndarray, cv: float, rng) -> np.ndarray:
    """Per-checkpoint true rates ~ Beta with the given mean and coefficient of variation."""
    var = (cv * mean) ** 2
    c = mean * (1 - mean) / var - 1
    return rng.beta(mean * c, (1 - mean) * c)


def overdispersion_phi(p: float, cv: float, n: int = N) -> float:
    """Variance of the count over the binomial variance: 1 + (n - 1) * rho."""
    var = (cv * p) ** 2
    rho = var / (p * (1 - p))
    return 1 + (n - 1) * rho


SCENARIOS = [
    dict(name="null_1pct", p0=0.01, p1=0.02, change=None, label="no change, 1%"),
    dict(name="null_5pct", p0=0.05, p1=0.08, change=None, label="no change, 5%"),
    dict(name="step_1_to_2pct", p0=0.01, p1=0.02, change=CHANGE, label="step 1% -> 2% at 50"),
    dict(name="step_1_to_3pct", p0=0.01, p1=0.03, change=CHANGE, label="step 1% -> 3% at 50"),
    dict(name="step_5_to_8pct", p0=0.05, p1=0.08, change=CHANGE, label="step 5% -> 8% at 50"),
    dict(name="drift_1_to_3pct", p0=0.01, p1=0.02, change=CHANGE, drift_to=0.03,
         label="linear drift 1% -> 3% over 50..99 (oracle told 2%)"),
    dict(name="overdispersed_5pct", p0=0.05, p1=0.08, change=None, cv=0.25,
         label="no change, 5%, true rate varies (CV 25%)"),
    dict(name="overdispersed_1pct", p0=0.01, p1=0.02, change=None, cv=0.5,
         label="no change, 1%, true rate varies (CV 50%)"),
    dict(name="null_varying_n", p0=0.02, p1=0.04, change=None, n_range=(50, 1000),
         label="no change, 2%, n uniform 50..1000 per checkpoint"),
    # Beyond the original bench: rarer and commoner categories, sample sizes that vary from
    # checkpoint to checkpoint (log-uniform 37..400), early changes, drifts of several speeds.
    dict(name="null_rare", p0=0.002, p1=0.006, change=None, label="no change, 0.2%"),
    dict(name="null_common", p0=0.20, p1=0.24, change=None, label="no change, 20%"),
    dict(name="null_varying_n_wide", p0=0.02, p1=0.04, change=None, n_log_range=(37, 400),
         label="no change, 2%, n log-uniform 37..400 per checkpoint"),
    dict(name="step_rare", p0=0.002, p1=0.006, change=CHANGE, label="step 0.2% -> 0.6% at 50"),
    dict(name="step_common", p0=0.20, p1=0.24, change=CHANGE, label="step 20% -> 24% at 50"),
    dict(name="step_varying_n", p0=0.02, p1=0.04, change=CHANGE, n_log_range=(37, 400),
         label="step 2% -> 4% at 50, n log-uniform 37..400"),
    dict(name="step_early_5", p0=0.01, p1=0.03, change=5, label="step 1% -> 3% at 5 (early)"),
    dict(name="step_early_25", p0=0.01, p1=0.02, change=25, label="step 1% -> 2% at 25"),
    dict(name="drift_fast", p0=0.01, p1=0.02, change=CHANGE, drift_to=0.03, drift_len=10,
         label="drift 1% -> 3% over 50..59, then 3% (oracle told 2%)"),
    dict(name="drift_slow", p0=0.01, p1=0.015, change=CHANGE, drift_to=0.02,
         label="drift 1% -> 2% over 50..99 (oracle told 1.5%)"),
    dict(name="multi_null", multi=True, change=None,
         label=f"{SERIES} series per run, rates 0.5%..10%, no change (family-wise)"),
    dict(name="multi_step", multi=True, change=CHANGE, step_series=5, step_factor=3.0,
         label=f"{SERIES} series per run, one (1%) steps x3 at 50 (family-wise)"),
]


def sample_ns(sc: dict, size, rng) -> np.ndarray:
    """Sample sizes per checkpoint: fixed N, uniform ``n_range`` or log-uniform ``n_log_range``."""
    if "n_range" in sc:
        lo, hi = sc["n_range"]
        return rng.integers(lo, hi + 1, size=size)
    if "n_log_range" in sc:
        lo, hi = sc["n_log_range"]
        return np.round(np.exp(rng.uniform(np.log(lo), np.log(hi), size=size))).astype(int)
    return np.full(size, N)


def simulate(sc: dict, runs: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> counts (R*S, K), ns (R*S, K), p0 per row (R*S,)."""
    if sc.get("multi"):
        p = np.broadcast_to(MULTI_RATES[None, :, None], (runs, SERIES, K)).copy()
        if sc["change"] is not None:
            s = sc["step_series"]
            p[:, s, sc["change"]:] *= sc["step_factor"]
        p = p.reshape(runs * SERIES, K)
        p0 = np.tile(MULTI_RATES, runs)
        n = np.full(p.shape, N)
    else:
        p = np.full((runs, K), sc["p0"])
        if sc["change"] is not None:
            if "drift_to" in sc:
                length = sc.get("drift_len", K - sc["change"])
                ramp = np.clip((np.arange(K) - sc["change"] + 1) / length, 0, 1)
                p = sc["p0"] + (sc["drift_to"] - sc["p0"]) * ramp[None, :] * np.ones((runs, 1))
            else:
                p[:, sc["change"]:] = sc["p1"]
        if "cv" in sc:
            p = _beta_rates(p, sc["cv"], rng)
        n = sample_ns(sc, (runs, K), rng)
        p0 = np.full(runs, sc["p0"])
    return rng.binomial(n, p), n, p0


# ---------------------------------------------------------------------------------------------
# Comparators


def cusum_stat(x, n, p0, p1):
    p0 = np.asarray(p0, dtype=float)[:, None]
    p1 = np.asarray(p1, dtype=float)[:, None]
    inc = x * np.log(p1 / p0) + (n - x) * np.log((1 - p1) / (1 - p0))
    S = np.empty(inc.shape)
    s = np.zeros(inc.shape[0])
    for k in range(inc.shape[1]):
        s = np.maximum(0.0, s + inc[:, k])
        S[:, k] = s
    return S


_cusum_h: dict = {}


def cusum_threshold(p0: float, p1: float, sc: dict, alpha: float, seed: int) -> float:
    """Threshold of the oracle CUSUM: seeded simulation of null runs at the true p0 with the
    scenario's own sample sizes, at least 100 simulated alarms at the quantile."""
    ns_kind = (sc.get("n_range"), sc.get("n_log_range"))
    key = (round(p0, 12), round(p1, 12), ns_kind, alpha)
    if key not in _cusum_h:
        sims = int(max(100_000, 100 / alpha))
        rng = np.random.default_rng([seed, int(p0 * 1e9), int(p1 * 1e9)])
        maxima = np.empty(0)
        for lo in range(0, sims, 100_000):
            m = min(100_000, sims - lo)
            n_k = sample_ns(sc, (m, K), rng)
            x = rng.binomial(n_k, p0)
            maxima = np.concatenate(
                [maxima, cusum_stat(x, n_k, np.full(m, p0), np.full(m, p1)).max(axis=1)])
        _cusum_h[key] = float(np.quantile(maxima, 1 - alpha, method="higher"))
    return _cusum_h[key]


def first_true(fired: np.ndarray) -> np.ndarray:
    return np.where(fired.any(axis=1), fired.argmax(axis=1), -1)


def cusum_oracle(x, n, p0, p1, alpha, seed, sc):
    out = np.full(x.shape[0], -1)
    for a, b in sorted(set(zip(p0.tolist(), p1.tolist()))):
        rows = (p0 == a) & (p1 == b)
        h = cusum_threshold(a, b, sc, alpha, seed)
        out[rows] = first_true(cusum_stat(x[rows], n[rows], p0[rows], p1[rows]) > h)
    return out


def shewhart(x, n):
    """Alarm when a checkpoint's rate exceeds the burn-in rate + 3 binomial sigmas."""
    p_hat = x[:, :BURN_IN].sum(axis=1) / n[:, :BURN_IN].sum(axis=1)
    limit = p_hat[:, None] + 3 * np.sqrt(p_hat[:, None] * (1 - p_hat[:, None]) / n)
    fired = x / n > limit
    fired[:, :BURN_IN] = False
    return first_true(fired)


# ---------------------------------------------------------------------------------------------


DETECTORS = ["glr_burnin", "glr_rate", "glr_self", "shewhart", "cusum_oracle",
             "glr_rate_binom", "glr_burnin_binom", "glr_self_binom"]
MULTI_DETECTORS = ["glr_burnin", "glr_burnin_pooled", "glr_rate", "glr_self", "shewhart",
                   "cusum_oracle"]


def run_detector(name, x, n, p0, p1, series, seed, sc):
    alpha_series = BUDGET / series
    if name == "glr_burnin":
        return first_alarms(x, n, baseline=BURN_IN, false_alarm=BUDGET, n_series=series)
    if name == "glr_self":
        return first_alarms(x, n, baseline=None, false_alarm=BUDGET, n_series=series)
    if name == "glr_burnin_binom":
        return first_alarms(x, n, baseline=BURN_IN, false_alarm=BUDGET, n_series=series,
                            dispersion="binomial")
    if name == "glr_self_binom":
        return first_alarms(x, n, baseline=None, false_alarm=BUDGET, n_series=series,
                            dispersion="binomial")
    if name in ("glr_rate", "glr_rate_binom"):
        disp = "binomial" if name == "glr_rate_binom" else "estimate"
        out = np.full(x.shape[0], -1)
        for a in np.unique(p0):
            rows = p0 == a
            out[rows] = first_alarms(x[rows], n[rows], baseline=float(a), false_alarm=BUDGET,
                                     n_series=series, dispersion=disp)
        return out
    if name == "glr_burnin_pooled":
        out = np.full(x.shape[0], -1)
        for lo in range(0, x.shape[0], series):
            rows = slice(lo, lo + series)
            disp = pooled_dispersion(x[rows, :BURN_IN], n[rows, :BURN_IN])
            out[rows] = first_alarms(x[rows], n[rows], baseline=BURN_IN, false_alarm=BUDGET,
                                     n_series=series, dispersion=disp)
        return out
    if name == "shewhart":
        return shewhart(x, n)
    if name == "cusum_oracle":
        return cusum_oracle(x, n, p0, p1, alpha_series, seed, sc)
    raise ValueError(name)


def summarise(first: np.ndarray, runs: int, series: int, change, changed_row=None) -> dict:
    """Per-run metrics. ``first``: (runs*series,) first alarm per series (-1 none)."""
    f = first.reshape(runs, series)
    if change is None:
        alarm = (f >= 0).any(axis=1)
        fa = float(alarm.mean())
        return dict(false_alarm=fa, false_alarm_se=math.sqrt(max(fa * (1 - fa), 1e-12) / runs))
    if changed_row is None:
        changed_row = 0
    others = np.delete(f, changed_row, axis=1)
    mine = f[:, changed_row]
    # A false alarm: the changed series before the change, or any other series at any time
    # before the changed series' own alarm.
    mine_t = np.where(mine >= 0, mine, K)
    other_t = np.where(others >= 0, others, K).min(axis=1) if others.shape[1] else np.full(runs, K)
    pre = (mine_t < change) | (other_t < np.minimum(mine_t, K))
    fa = float(pre.mean())
    ok = ~pre
    detected = ok & (mine >= change)
    delay = mine[detected] - change + 1
    return dict(
        false_alarm=fa, false_alarm_se=math.sqrt(max(fa * (1 - fa), 1e-12) / runs),
        miss=float((ok & (mine < 0)).sum() / max(ok.sum(), 1)),
        mean_delay=float(delay.mean()) if len(delay) else float("nan"),
        median_delay=float(np.median(delay)) if len(delay) else float("nan"),
        detected=int(detected.sum()),
    )


FA_COLUMNS = ["glr_burnin", "glr_rate", "glr_self", "shewhart", "cusum_oracle"]
DELAY_COLUMNS = ["cusum_oracle", "glr_rate", "glr_burnin", "glr_self", "shewhart",
                 "glr_rate_binom", "glr_self_binom"]


def markdown_tables(results: dict) -> str:
    """The README's two tables (false alarms per run; delays with their ratio to the oracle)."""
    def pct(m):
        return f"{100 * m['false_alarm']:.2f}" if m else "—"

    lines = ["| scenario | " + " | ".join(FA_COLUMNS) + " | binom. rate / burn-in / self |",
             "|---" * (len(FA_COLUMNS) + 2) + "|"]
    for name, r in results.items():
        if r["change"] is not None:
            continue
        d = r["detectors"]
        binom = " / ".join(pct(d.get(k)) for k in
                           ("glr_rate_binom", "glr_burnin_binom", "glr_self_binom"))
        lines.append(f"| {r['label']} | " + " | ".join(pct(d.get(k)) for k in FA_COLUMNS)
                     + f" | {binom} |")
    lines += ["", "| scenario | " + " | ".join(DELAY_COLUMNS) + " |",
              "|---" * (len(DELAY_COLUMNS) + 1) + "|"]
    for name, r in results.items():
        if r["change"] is None:
            continue
        cells = []
        for k in DELAY_COLUMNS:
            m = r["detectors"].get(k)
            if not m or not np.isfinite(m.get("mean_delay", np.nan)):
                cells.append("—")
                continue
            c = f"{m['mean_delay']:.2f}"
            if k != "cusum_oracle" and "delay_vs_oracle" in m:
                c += f" ({m['delay_vs_oracle']:.2f})"
            c += f" [{m['median_delay']:.0f}]"
            if m.get("miss", 0) > 0:
                c += f", miss {100 * m['miss']:.1f}%"
            if m.get("false_alarm", 0) > 0.05:
                c += f", FA {100 * m['false_alarm']:.0f}%"
            cells.append(c)
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def example_plot_data(seed: int) -> dict:
    rng = np.random.default_rng(seed + 99)
    p = np.full(K, 0.01)
    p[CHANGE:] = 0.03
    x = rng.binomial(N, p)
    n = np.full(K, N)
    out = {"counts": x.tolist(), "n": N, "true_rate": p.tolist()}
    for label, base in (("burn-in 20", BURN_IN), ("self-starting", None)):
        d = detect(x, n, baseline=base)
        out[label] = {"statistic": d.statistic.tolist(), "threshold": d.threshold.tolist(),
                      "first_alarm": d.first_alarm}
    return out


def plot(results: dict, example: dict, path: Path) -> Path | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    colors = {"glr_burnin": "tab:blue", "glr_rate": "tab:green", "glr_self": "tab:orange",
              "shewhart": "tab:gray",
              "cusum_oracle": "black", "glr_rate_binom": "tab:cyan",
              "glr_burnin_binom": "tab:purple", "glr_self_binom": "tab:red",
              "glr_burnin_pooled": "tab:olive"}
    fig, axes = plt.subplots(1, 3, figsize=(24, 6))
    ax = axes[0]
    fa_sc = [s for s in results if results[s]["change"] is None]
    xs = np.arange(len(fa_sc))
    shown = DETECTORS + ["glr_burnin_pooled"]
    width = 0.8 / len(shown)
    for i, d in enumerate(shown):
        vals = [results[s]["detectors"].get(d, {}).get("false_alarm", np.nan) * 100
                for s in fa_sc]
        errs = [results[s]["detectors"].get(d, {}).get("false_alarm_se", 0) * 200 for s in fa_sc]
        ax.bar(xs + (i - len(shown) / 2 + 0.5) * width, np.minimum(vals, 12), width,
               yerr=errs, color=colors[d], label=d, capsize=1.5)
    ax.axhline(1, color="green", lw=1, ls="--", label="budget 1%")
    ax.axhline(2, color="red", lw=1, ls=":", label="2% (extra-variation target)")
    ax.set_xticks(xs, [s.replace("_", "\n", 1) for s in fa_sc], fontsize=7)
    ax.set_ylabel("runs with any false alarm (%) [clipped at 12; bars +-2 SE]")
    ax.set_ylim(0, 12)
    ax.set_title("False alarms per run (budget 1%)")
    ax.legend(fontsize=7, ncol=2)
    ax = axes[1]
    ch_sc = [s for s in results if results[s]["change"] is not None]
    xs = np.arange(len(ch_sc))
    for i, d in enumerate(shown):
        vals = [results[s]["detectors"].get(d, {}).get("mean_delay", np.nan) for s in ch_sc]
        ax.bar(xs + (i - len(shown) / 2 + 0.5) * width, vals, width, color=colors[d],
               label=d)
    ax.set_xticks(xs, [s.replace("_", "\n", 1) for s in ch_sc], fontsize=7)
    ax.set_ylabel("mean delay (checkpoints after the change, incl. the alarm)")
    ax.set_title("Detection delay (change at checkpoint 50)")
    ax = axes[2]
    k = np.arange(K)
    ax.plot(k, np.array(example["counts"]) / example["n"] * 100, ".", color="gray",
            label="observed rate (%)")
    ax.plot(k, np.array(example["true_rate"]) * 100, "-", color="gray", lw=0.8)
    ax2 = ax.twinx()
    for label, c in (("burn-in 20", "tab:blue"), ("self-starting", "tab:orange")):
        e = example[label]
        ax2.plot(k, e["statistic"], color=c, label=f"{label}: statistic")
        thr = np.array(e["threshold"], dtype=float)
        ax2.plot(k, np.where(np.isfinite(thr), thr, np.nan), color=c, ls="--", lw=0.8,
                 label=f"{label}: threshold")
        if e["first_alarm"] is not None:
            ax2.axvline(e["first_alarm"], color=c, ls=":", lw=1)
    ax.set_xlabel("checkpoint")
    ax.set_ylabel("flagged rate (%)")
    ax2.set_ylabel("statistic (nats)")
    ax2.set_ylim(0, 30)
    ax2.legend(fontsize=7, loc="upper left")
    ax.set_title("Example: 1% -> 3% at checkpoint 50\n(burn-in and self-starting coincide once "
                 "the best change point is past the burn-in)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--cold", action="store_true",
                   help="calibrate from scratch in a temporary cache (measures cold runtime)")
    p.add_argument("--only", default=None, help="comma-separated scenario names")
    args = p.parse_args(argv)
    tmp = None
    if args.cold:
        tmp = tempfile.TemporaryDirectory(prefix="rw-detect-cal-")
        cal.CACHE_DIR = Path(tmp.name)
        cal.clear_memory()
    t_start = time.perf_counter()
    results: dict = {}
    rows = []
    scenarios = [s for s in SCENARIOS if not args.only or s["name"] in args.only.split(",")]
    for si, sc in enumerate(scenarios):
        rng = np.random.default_rng([args.seed, si])
        x, n, p0 = simulate(sc, args.runs, rng)
        series = SERIES if sc.get("multi") else 1
        if sc.get("multi"):
            p1 = p0 * 2.0
            if sc["change"] is not None:
                p1 = p1.reshape(args.runs, SERIES)
                p1[:, sc["step_series"]] = MULTI_RATES[sc["step_series"]] * sc["step_factor"]
                p1 = p1.ravel()
        else:
            p1 = np.full(len(p0), sc["p1"])
        res = {"label": sc["label"], "change": sc["change"], "runs": args.runs,
               "series_per_run": series, "detectors": {}}
        if "cv" in sc:
            res["phi"] = overdispersion_phi(sc["p0"], sc["cv"])
        for d in (MULTI_DETECTORS if sc.get("multi") else DETECTORS):
            t0 = time.perf_counter()
            first = run_detector(d, x, n, p0, p1, series, args.seed, sc)
            m = summarise(first, args.runs, series, sc["change"],
                          changed_row=sc.get("step_series"))
            m["seconds"] = round(time.perf_counter() - t0, 2)
            res["detectors"][d] = m
        oracle = res["detectors"]["cusum_oracle"].get("mean_delay")
        for d, m in res["detectors"].items():
            if oracle and "mean_delay" in m and np.isfinite(m["mean_delay"]):
                m["delay_vs_oracle"] = m["mean_delay"] / oracle
            rows.append([
                sc["name"], d, f"{100 * m['false_alarm']:.2f} ± {200 * m['false_alarm_se']:.2f}",
                f"{m['mean_delay']:.2f}" if "mean_delay" in m else "",
                f"{m['median_delay']:.0f}" if "median_delay" in m else "",
                f"{m['delay_vs_oracle']:.2f}" if "delay_vs_oracle" in m else "",
                f"{100 * m['miss']:.1f}" if "miss" in m else "", f"{m['seconds']:.1f}",
            ])
        results[sc["name"]] = res
        print(f"  {sc['name']}: done ({time.perf_counter() - t_start:.0f} s)", flush=True)
    total = time.perf_counter() - t_start
    print_table(f"Detection, {args.runs} runs per scenario, K={K}, n={N}, "
                f"budget {BUDGET:.0%} per run",
                ["scenario", "detector", "false alarm % (±2SE)", "mean delay", "median",
                 "vs oracle", "miss %", "s"], rows)
    # Speed of one call on a 100-checkpoint series, calibration cached.
    xs = np.random.default_rng(5).binomial(N, 0.01, size=K)
    ns = np.full(K, N)
    from runwatch.detect import first_alarm

    first_alarm(xs, ns)
    t0 = time.perf_counter()
    reps = 50
    for _ in range(reps):
        first_alarm(xs, ns)
    per_call_ms = (time.perf_counter() - t0) / reps * 1000
    example = example_plot_data(args.seed)
    png = plot(results, example, OUT_DIR / "detection.png")
    payload = {
        "config": {"K": K, "n": N, "change": CHANGE, "burn_in": BURN_IN, "budget": BUDGET,
                   "series": SERIES, "runs": args.runs, "seed": args.seed, "cold": args.cold,
                   "sims_per_calibration": cal.DEFAULT_SIMS},
        "results": results,
        "seconds_total": round(total, 1),
        "calibration": dict(cal.stats),
        "first_alarm_ms_100_checkpoints": round(per_call_ms, 2),
        "plot": str(png) if png else None,
    }
    path = save_json("detection", payload)
    (OUT_DIR / "detection_tables.md").write_text(markdown_tables(results) + "\n")
    print(f"\ntotal {total:.0f} s (calibration {cal.stats['seconds']:.0f} s, "
          f"{cal.stats['computed']} computed, {cal.stats['disk_hits']} from disk); "
          f"first_alarm on 100 checkpoints: {per_call_ms:.1f} ms")
    print(f"wrote {path}" + (f" and {png}" if png else " (matplotlib missing: no plot)"))
    if tmp is not None:
        tmp.cleanup()
    return payload


if __name__ == "__main__":
    main()
