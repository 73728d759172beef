"""The benchmarks' PNG plots, drawn from small hand-made results (no broker, no training)."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, tmp_path, name):
    assert path == tmp_path / f"{name}.png"
    data = path.read_bytes()
    assert len(data) > 1000
    assert data.startswith(PNG_SIGNATURE)


def log_cost(mean_us: float) -> dict:
    return {"batch": 1, "mean_us": mean_us, "p50_us": mean_us / 2, "p99_us": mean_us * 4,
            "max_call_ms": 3.0, "dropped": 0, "sent": 100, "spooled": 0}


def test_ingest_plot(tmp_path):
    from bench.ingest import plot

    result = {"samples": 20_000, "repeat": 1, "bare_samples_per_s": 650_000.0,
              "bare_samples_per_s_median": 600_000.0, "materializer_samples_per_s": 51_000.0,
              "materializer_samples_per_s_median": 47_000.0, "ratio": 0.078}
    assert_png(plot(result, tmp_path), tmp_path, "ingest")
    (tmp_path / "three").mkdir()
    assert_png(plot({**result, "repeat": 3}, tmp_path / "three"), tmp_path / "three", "ingest")


def test_collector_overhead_plot(tmp_path):
    from bench.collector_overhead import plot

    results = {"broker up / batch 1": log_cost(7.0), "broker up / batch 32": log_cost(0.1),
               "broker down (spool) / batch 1": log_cost(6.6),
               "broker down (spool) / batch 32": log_cost(0.0)}  # 0 must not break the log axis

    def over(label, ms, rounds):
        return {"label": label, "without_ms": 40.0, "with_ms": 40.0 + ms, "ms": ms,
                "pct": ms / 40.0 * 100, "paired_median_ms": ms, "per_round_pct": rounds,
                "cpu_ms": ms * 2, "training_thread_cpu_ms": 0.0}

    per_step = {"samples_per_step": 16, "baseline_median_ms": 40.0, "steps_per_arm": 300,
                "rounds": 6, "overhead": {
                    "up": over("broker up", 0.3, [0.2, 1.5, -0.4]),
                    "down": over("broker down (spool)", 0.6, [1.0, 2.5, 0.1]),
                    "none_again": over("no collector, again (A/A noise check)", -0.1, [-1, 0.5]),
                }}
    assert_png(plot(results, per_step, tmp_path), tmp_path, "collector_overhead")
    # --steps 0: the log() panel alone
    (tmp_path / "only").mkdir()
    assert_png(plot(results, None, tmp_path / "only"), tmp_path / "only", "collector_overhead")


def test_dashboard_queries_plot(tmp_path):
    from bench.dashboard_queries import plot

    rows = [("runs", "runs_overview", 15.4, 20.0, 20), ("run", "run_summary", 2.0, 3.0, 1),
            ("checkpoint", "checkpoint_worst", 102.0, 130.0, 9),
            ("prompt", "prompt_history", 54.0, 60.0, 250)]
    results = {1_000_000: rows,
               10_000_000: [(p, q, med * 6, mx * 6, n) for p, q, med, mx, n in rows]}
    assert_png(plot(results, 7, tmp_path), tmp_path, "dashboard_queries")
