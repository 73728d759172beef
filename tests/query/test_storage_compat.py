"""A view runwatch writes opens in the DuckDB 1.x that researchers' CLIs, notebooks and GUIs
carry: the file is written in DuckDB 1.5's storage format (version 68), not 2.0's (999).

The real check opens the file with a real DuckDB 1.5.5 (installed from PyPI into the ignored
cache once, ``pip install --target``) in a subprocess, and runs a named query and the flag-rule
macros there.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time

from runwatch.collectors.wire import encode_batch
from runwatch.detect.ensemble import FlagRules
from runwatch.ingest.decode import decode
from runwatch.query import named
from runwatch.resources import cache_root
from runwatch.store.store import Batch, Store
from tests.helpers import sample_record

OLD_DUCKDB = "1.5.5"


def _file_version(path) -> int:
    header = path.read_bytes()[:64]
    at = header.find(b"DUCK")
    assert at >= 0, header
    return struct.unpack("<Q", header[at + 4:at + 12])[0]


def _old_duckdb() -> str:
    target = cache_root() / f"duckdb-{OLD_DUCKDB}"
    if not (target / "duckdb").exists():
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                               "--target", str(target), f"duckdb=={OLD_DUCKDB}"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    return str(target)


def test_a_view_written_by_runwatch_opens_in_duckdb_1x_with_its_queries_and_macros(tmp_path):
    path = tmp_path / "view.duckdb"
    store = Store(path, flag_rules=FlagRules.parse(["2_of_n"]))
    records = [sample_record(sample_id=f"s-{i}", step=100, scores=[
        {"scorer": "a", "category": "injury", "score": 0.9, "flagged": True, "threshold": 0.5},
        {"scorer": "b", "category": "injury", "score": 0.9 if i < 3 else 0.1, "flagged": i < 3,
         "threshold": 0.5}], created_at=time.time()) for i in range(10)]
    batch = Batch()
    batch.add("t.samples", 0, 0, *decode(encode_batch("plain-run", records)))
    store.apply(batch)
    store.close()
    assert _file_version(path) == 68

    q = named.load("run_category_rates")
    script = f"""
import duckdb, json, sys
con = duckdb.connect({str(path)!r}, read_only=True)
rates = con.execute({q.sql!r}, {json.dumps(q.bind({"run_id": "plain-run"}))}).fetchall()
flags = con.execute("SELECT count(*) FILTER (WHERE f) FROM (SELECT rw_flagged(category, scorer, "
                    "flagged) AS f FROM scores GROUP BY sample_id, category)").fetchone()[0]
print(json.dumps({{"version": duckdb.__version__, "rates": [list(map(str, r)) for r in rates],
                  "flags": flags, "rule": con.execute("SELECT rw_rule('injury')").fetchone()[0]}}))
"""
    env = dict(os.environ, PYTHONPATH=_old_duckdb())
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert out["version"] == OLD_DUCKDB
    assert out["flags"] == 3 and out["rule"] == "2_of_n"  # both scorers agree on 3 of 10
    assert out["rates"] == [["100", "red_team", "injury", "10", "3", "7"]]  # the named query, in 1.x
