"""Every named query in queries/, the library's headers, and `runwatch sql --list/--query`.

Each query runs through the guard (runwatch/query/guard.py) against an empty migrated database,
against the dashboard seed, and (slow, real broker) against the quick drift demo's database.
"""

from __future__ import annotations

import json
from datetime import datetime
import subprocess
import sys
from pathlib import Path

import pytest

from runwatch.query import named as queries
from runwatch.query import guard as sql_guard
from runwatch.store.db import connect
from tests.dashboard_seed import build

ROOT = Path(__file__).resolve().parents[2]
LIMITS = sql_guard.Limits(timeout_s=60, max_rows=100_000)
# Values for parameters without a default, by name (page queries' parameters are untyped).
SAMPLE_VALUES = {
    "run_id": "run-a", "step": 200, "from_step": 100, "to_step": 300, "prompt_id": "rt-2",
    "alert_id": "a-1", "category": "", "prompt_sets": [], "run_ids": ["run-a", "run-b"],
    "flagged": "any", "disagree_only": False, "search": "", "limit": 50, "per_category": 3,
    "statuses": ["open"], "severities": ["high", "medium", "low"], "assignee": "",
    "sample_ids": [], "prompt_set": "", "max_step": 1000, "after_step": 0, "cue": "",
    "min_reward": 0.0, "before": datetime(2030, 1, 1), "since": datetime(2000, 1, 1), "unlabelled_first": True,
}
REQUIRED_LIBRARY = {
    "rates_by_checkpoint", "samples_worst", "prompts_first_flagged", "prompts_flipped",
    "scorers_disagreement", "consistency_gap", "reward_vs_flags", "alerts_response_times",
    "dead_letters_by_reason", "ingestion_lag",
}


def params_for(q: queries.NamedQuery, run_id: str = "run-a") -> dict:
    values = {}
    for p in q.form_params():
        if p.name == "run_id" and p.required:
            values[p.name] = run_id
        elif p.required or not p.declared:
            values[p.name] = SAMPLE_VALUES.get(p.name, "")
    return q.bind(values)


def run_all(con, run_id="run-a") -> dict[str, sql_guard.SqlResult]:
    out = {}
    for q in queries.all_queries():
        try:
            out[q.name] = sql_guard.run(con, q.sql, params=params_for(q, run_id), limits=LIMITS)
        except sql_guard.QueryError as exc:
            raise AssertionError(f"query {q.name}: {exc}") from exc
    return out


def test_library_has_the_queries_people_reuse():
    lib = {q.name: q for q in queries.library()}
    assert len(lib) >= 10 and REQUIRED_LIBRARY <= set(lib)
    for q in lib.values():
        assert q.title and q.description, q.name
        declared = {p.name for p in q.param_specs}
        assert declared == set(q.params), f"{q.name}: declared {declared}, SQL uses {q.params}"
        assert all(p.type in queries.PARAM_TYPES for p in q.param_specs)


def test_headers_give_types_defaults_and_text_values_are_converted():
    q = queries.load("prompts_flipped")
    assert [(p.name, p.type, p.default) for p in q.form_params()] == [
        ("run_id", "VARCHAR", None), ("from_step", "BIGINT", None), ("to_step", "BIGINT", None),
        ("prompt_set", "VARCHAR", ""), ("category", "VARCHAR", "")]
    assert q.bind_text({"run_id": "r", "from_step": "100", "to_step": "300"}) == {
        "run_id": "r", "from_step": 100, "to_step": 300, "prompt_set": "", "category": ""}
    with pytest.raises(queries.QueryError, match="from_step.*BIGINT"):
        q.bind_text({"run_id": "r", "from_step": "soon", "to_step": "3"})
    with pytest.raises(queries.QueryError, match="missing parameter.*to_step"):
        q.bind_text({"run_id": "r", "from_step": "1"})
    with pytest.raises(queries.QueryError, match="does not use: ghost"):
        queries.parse("x", "-- title: X\n-- param ghost: BIGINT\nSELECT 1")
    # page queries keep their plain description and strict binding
    page = queries.load("run_summary")
    assert not page.library and page.description.startswith("One run's header")


def test_every_query_runs_on_an_empty_migrated_database(tmp_path):
    connect(tmp_path / "empty.duckdb").close()
    con = sql_guard.open_read_only(tmp_path / "empty.duckdb", LIMITS)
    try:
        results = run_all(con)
    finally:
        con.close()
    assert set(results) == set(queries.names())
    assert results["rates_by_checkpoint"].table.num_rows == 0


def test_every_query_runs_on_the_seed(tmp_path):
    seed = build(tmp_path / "seed.duckdb").path
    con = sql_guard.open_read_only(seed, LIMITS)
    try:
        results = run_all(con)
    finally:
        con.close()
    rates = results["rates_by_checkpoint"].df()
    # seed: run-a red_team injury flagged 3, 5, 7 of 10 at steps 100, 200, 300
    red = rates[(rates.category == "injury") & (rates.prompt_set == "red_team")]
    assert red[["step", "n_flagged", "n_scored"]].values.tolist() == [
        [100, 3, 10], [200, 5, 10], [300, 7, 10]]
    flipped = results["prompts_flipped"].df()
    assert set(flipped.direction) <= {"to_flagged", "to_clean"} and len(flipped) > 0
    assert results["consistency_gap"].table.num_rows > 0
    assert results["reward_vs_flags"].table.num_rows > 0


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runwatch.cli", "sql", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=env)


def test_cli_list_query_param_and_guard(tmp_path):
    seed = str(build(tmp_path / "seed.duckdb").path)
    listed = cli("--list")
    assert listed.returncode == 0
    for q in queries.library():
        assert q.name in listed.stdout and q.title in listed.stdout
    assert "$from_step BIGINT (required)" in listed.stdout

    out = cli("--db", seed, "--format", "json", "--query", "rates_by_checkpoint",
              "--param", "run_id=run-a", "--param", "prompt_set=red_team",
              "--param", "category=injury")
    assert out.returncode == 0, out.stderr
    assert [(r["step"], r["n_flagged"]) for r in json.loads(out.stdout)] == [
        (100, 3), (200, 5), (300, 7)]

    missing = cli("--db", seed, "--query", "prompts_flipped", "--param", "run_id=run-a")
    assert missing.returncode == 2 and "missing parameter(s): from_step, to_step" in missing.stderr
    unknown = cli("--db", seed, "--query", "no_such_query")
    assert unknown.returncode == 2 and "no query named 'no_such_query'" in unknown.stderr

    refused = cli("--db", seed, f"COPY runs TO '{tmp_path / 'x.csv'}'")
    assert refused.returncode == 2 and "refused: a COPY statement" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.csv").exists()

    env = {**__import__("os").environ, "RUNWATCH_SQL_MAX_ROWS": "5", "RUNWATCH_SQL_TIMEOUT_S": "1"}
    capped = cli("--db", seed, "--format", "csv", "SELECT * FROM range(20)", env=env)
    assert capped.returncode == 0 and capped.stdout.splitlines() == ["range", *map(str, range(5))]
    assert "truncated" in capped.stderr and "RUNWATCH_SQL_MAX_ROWS=5" in capped.stderr
    slow = cli("--db", seed, "SELECT count(*) FROM range(100000000000)", env=env)
    assert slow.returncode == 2 and "RUNWATCH_SQL_TIMEOUT_S=1" in slow.stderr


@pytest.mark.kafka
@pytest.mark.slow
def test_every_query_runs_on_the_demo_data(drift_demo):
    con = sql_guard.open_read_only(drift_demo["db"], LIMITS)
    try:
        results = run_all(con, run_id=drift_demo["run_id"])
    finally:
        con.close()
    assert results["rates_by_checkpoint"].table.num_rows > 0
    assert results["ingestion_lag"].table.num_rows > 0
    steps = sorted(set(results["rates_by_checkpoint"].df()["step"]))
    con = sql_guard.open_read_only(drift_demo["db"], LIMITS)
    try:
        q = queries.load("prompts_flipped")
        flipped = sql_guard.run(con, q.sql, limits=LIMITS, params=q.bind_text(
            {"run_id": drift_demo["run_id"], "from_step": str(steps[0]), "to_step": str(steps[-1])}))
    finally:
        con.close()
    # the drift makes injury completions appear: some prompts flip to flagged
    assert "to_flagged" in set(flipped.df()["direction"])
