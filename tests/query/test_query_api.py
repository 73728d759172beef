"""The live query API over real HTTP on a real DuckDB file held read-write by a Store (as under
``runwatch serve``): formats, named queries, tokens, the hostile corpus, the client.

The end-to-end test with a real broker and a ``runwatch serve`` subprocess is
``tests/query/test_query_api_serve.py``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pyarrow as pa
import pytest

import runwatch
from runwatch.errors import QueryError
from runwatch.query import guard as sql_guard
from runwatch.query.client import Unauthorized
from runwatch.serve import auth
from runwatch.serve.api import QueryApi
from tests.query.test_sql_guard import FAST, HOSTILE, _files, _seed, _state


@pytest.fixture
def users(tmp_path):
    path = tmp_path / "users.json"
    auth.add_user(path, "ada", "admin", "a-long-password")
    auth.add_user(path, "vic", "viewer", None)
    return path


@pytest.fixture
def api(tmp_path, monkeypatch, users):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    store = _seed(tmp_path / "view.duckdb")
    sql_guard.harden(store.con.cursor())
    logged = []
    server = QueryApi(store.con, port=0, auth=auth.AuthConfig.from_env(
        env={}, mode="password", users_file=users), limits=FAST, log=logged.append)
    server.start()
    server.store, server.logged = store, logged
    yield server
    server.stop()
    store.close()


def post(url: str, body: dict, token: str | None = None, fmt: str = "json"):
    req = urllib.request.Request(f"{url}/sql?format={fmt}", data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_tokens_none_wrong_revoked_and_a_viewers(api, users):
    token_id, token = auth.create_token(users, "vic")
    assert json.loads(users.read_text())["users"]["vic"]["tokens"][token_id]["sha256"] != token
    assert token not in users.read_text()  # stored hashed only
    body = {"sql": "SELECT count(*) AS n FROM samples"}
    assert post(api.url, body)[0] == 401
    assert post(api.url, body, token="rwt_00000000_" + "x" * 43)[0] == 401
    assert post(api.url, body, token=token[:-1] + ("A" if token[-1] != "A" else "B"))[0] == 401
    status, payload, headers = post(api.url, body, token=token)
    assert status == 200, payload
    assert json.loads(payload)["rows"] == [[3]]
    assert any(line.startswith("runwatch serve: query API: vic (viewer): 1 rows")
               for line in api.logged), api.logged
    assert auth.revoke_token(users, "vic", token_id)
    assert post(api.url, body, token=token)[0] == 401


def test_formats_named_queries_and_the_client(api, users):
    _, token = auth.create_token(users, "ada")
    rw = runwatch.connect(api.url.removesuffix("/api/v1"), token=token)
    table = rw.sql("SELECT sample_id, step FROM samples ORDER BY sample_id")
    assert isinstance(table, pa.Table)
    assert table.to_pydict() == {"sample_id": ["s0", "s1", "s2"], "step": [10, 10, 10]}
    assert rw.df("SELECT count(*) AS n FROM samples WHERE step = $step", step=10)["n"][0] == 3
    # a named query, its value given as text like the CLI's --param, equals the guard's answer
    named = rw.query("run_category_rates", run_id="r1")
    q = runwatch.query.named.load("run_category_rates")
    direct = sql_guard.run(api.store.con, q.sql, params=q.bind({"run_id": "r1"}), limits=FAST)
    assert named.equals(direct.table)
    assert any(q["name"] == "run_category_rates" for q in rw.queries())
    # a required list parameter given as JSON next to a text one (was refused as missing)
    heat = rw.query("run_category_heatmap", run_id="r1", prompt_sets=["on_distribution"])
    q = runwatch.query.named.load("run_category_heatmap")
    direct = sql_guard.run(api.store.con, q.sql, limits=FAST, params=q.bind(
        {"run_id": "r1", "prompt_sets": ["on_distribution"]}))
    assert heat.equals(direct.table)
    with pytest.raises(QueryError, match="missing parameter"):
        rw.query("run_category_heatmap", run_id="r1")
    status, csv_body, headers = post(api.url, {"sql": "SELECT 1 AS a, 'x' AS b"}, token, "csv")
    assert status == 200 and csv_body.decode().splitlines() == ["a,b", "1,x"]
    assert headers["X-Runwatch-Truncated"] == "false"
    # the row cap of the SQL page applies, and says so
    capped = rw.run({"sql": "SELECT * FROM range(5000)"})
    assert capped.truncated and capped.table.num_rows == FAST.max_rows
    with pytest.raises(QueryError, match="no query named"):
        rw.query("no_such_query")
    with pytest.raises(Unauthorized):
        runwatch.connect(api.url, token="rwt_deadbeef_" + "y" * 43).sql("SELECT 1")


@pytest.mark.parametrize("statement", HOSTILE)
def test_hostile_sql_is_refused_through_the_api_and_nothing_changes(api, users, tmp_path,
                                                                     statement):
    _, token = auth.create_token(users, "ada")
    before, files = _state(api.store.con), _files(tmp_path)
    status, payload, _ = post(api.url, {"sql": statement.format(out=tmp_path / "out")}, token)
    assert status in (400, 504), (status, payload)
    message = json.loads(payload)["error"]
    assert message.startswith("refused: ") or "time limit RUNWATCH_SQL_TIMEOUT_S" in message \
        or message.startswith("syntax error"), message
    assert _state(api.store.con) == before
    assert _files(tmp_path) == files
    assert post(api.url, {"sql": "SELECT count(*) FROM samples"}, token)[0] == 200
