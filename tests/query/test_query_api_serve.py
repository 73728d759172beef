"""The live query API of a real ``runwatch serve`` (subprocess, real broker, password auth):
it answers while the materializer commits, the notebook client and ``runwatch sql --server``
give the rows the file gives once the service stopped, and ``runwatch sql --db`` on the held
file says where the API is."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

import runwatch
from runwatch.collectors.collector import Collector
from runwatch.demo.loadgen import SyntheticScorer
from runwatch.query import guard as sql_guard
from runwatch.query import named
from runwatch.query.client import Unauthorized
from runwatch.serve import auth
from tests.browser_helpers import ROOT, Serve, free_port

pytestmark = [pytest.mark.kafka]

RUN = "api-live"
STEPS = 12
PER_STEP = 200


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "runwatch.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **(env or {})))


def test_query_api_of_a_running_serve(tmp_path, bootstrap, topic_prefix):
    users = tmp_path / "users.json"
    auth.add_user(users, "ada", "admin", "a-long-password")
    made = cli("users", "add", "vic", "--role", "viewer", "--no-password",
               "--users-file", str(users))
    assert made.returncode == 0, made.stderr
    made = cli("users", "token", "vic", "--users-file", str(users))
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("rwt_") and "shown only once" in made.stderr

    db = tmp_path / "api.duckdb"
    api_port = free_port()
    serve = Serve(db=db, bootstrap=bootstrap, topic_prefix=topic_prefix, env={
        "RUNWATCH_AUTH": "password", "RUNWATCH_USERS_FILE": str(users)},
        extra_args=["--no-detect", "--api-port", str(api_port)])
    url = f"http://127.0.0.1:{api_port}"
    try:
        serve.wait_healthy()
        deadline = time.monotonic() + 30
        while f"query API at {url}/api/v1" not in serve.output():
            assert time.monotonic() < deadline, serve.output()
            time.sleep(0.2)
        rw = runwatch.connect(url, token=token)
        with pytest.raises(Unauthorized):
            runwatch.connect(url).sql("SELECT 1")

        # the API answers while the collector logs and the materializer commits
        counts, done = [], threading.Event()

        def log():
            col = Collector(run_id=RUN, bootstrap_servers=bootstrap, topic_prefix=topic_prefix,
                            scorers=[SyntheticScorer(seed=1)])
            try:
                for step in range(1, STEPS + 1):
                    ids = [f"p{i}" for i in range(PER_STEP)]
                    col.log(step * 10, [f"prompt {i}" for i in ids],
                            [f"completion {i}" for i in ids], prompt_set="red_team",
                            prompt_ids=ids, source="probe")
                    assert col.flush(timeout=30)
                    time.sleep(0.3)
            finally:
                col.close()
                done.set()

        writer = threading.Thread(target=log)
        writer.start()
        total = STEPS * PER_STEP
        deadline = time.monotonic() + 120
        while True:
            n = rw.sql("SELECT count(*) AS n FROM samples WHERE run_id = $run", run=RUN)["n"][0]
            counts.append(n.as_py())
            if counts[-1] == total and done.is_set():
                break
            assert time.monotonic() < deadline, counts[-5:]
            time.sleep(0.1)
        writer.join()
        assert counts == sorted(counts), "a reader saw rows disappear"
        assert len(set(counts)) >= 3, f"the answers did not follow the commits: {counts}"

        live = rw.query("run_category_rates", run_id=RUN)
        served_cli = cli("sql", "--server", url, "--token", token, "--query",
                         "run_category_rates", "--param", f"run_id={RUN}", "--format", "csv")
        assert served_cli.returncode == 0, served_cli.stderr
        held = cli("sql", "--db", str(db), "SELECT 1")
        assert held.returncode == 2
        assert f"runwatch sql --server {url}/api/v1" in held.stderr, held.stderr
        refused = cli("sql", "--server", url, "--token", token, "DROP TABLE samples")
        assert refused.returncode == 2 and "refused" in refused.stderr, refused.stderr
    finally:
        code = serve.terminate()
        out = serve.output()
        serve.close()
    assert code == 0, out
    assert "runwatch serve: query API: vic (viewer)" in out
    assert not (tmp_path / "api.duckdb.api.json").exists()

    # the same rows from the file itself, now that the service has let go of it
    con = sql_guard.open_read_only(db)
    try:
        q = named.load("run_category_rates")
        assert live.equals(sql_guard.run(con, q.sql, params=q.bind({"run_id": RUN})).table)
    finally:
        con.close()
    from_file = cli("sql", "--db", str(db), "--query", "run_category_rates", "--param",
                    f"run_id={RUN}", "--format", "csv")
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout == served_cli.stdout
    assert len(from_file.stdout.splitlines()) > STEPS  # a header and rows per step and category
