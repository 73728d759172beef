"""The live query API of ``runwatch serve``: read-only SQL over HTTP while the view is written.

DuckDB allows one writer per file, so while ``serve`` runs no other process can open its file.
This endpoint answers queries on the service's own connection instead, through the same guard,
time limit, row cap and memory limit as the dashboard's SQL page (:mod:`runwatch.query.guard`).

Endpoints (``/api/v1``):

- ``GET  /api/v1/health`` -> ``{"ok": true}`` (no token needed);
- ``GET  /api/v1/queries`` -> the named queries and their typed parameters;
- ``POST /api/v1/sql`` with a JSON body, either ``{"sql": "SELECT ...", "params": {...}}``
  (ad-hoc; ``$name`` placeholders bound from ``params``) or ``{"query": "NAME", "params": {...}}``
  (a named query from ``queries/``; values given as text are converted to the declared types).
  ``?format=arrow`` (Arrow IPC stream, ``application/vnd.apache.arrow.stream``), ``json``
  (default: ``{"columns", "rows", "truncated", "seconds", "max_rows"}``) or ``csv``. Headers
  ``X-Runwatch-Truncated``, ``X-Runwatch-Rows``, ``X-Runwatch-Max-Rows`` and
  ``X-Runwatch-Seconds`` come with every format.

Auth: ``Authorization: Bearer <token>`` with a token from ``runwatch users token NAME`` (any
role may read); none or a wrong one -> 401. With ``--auth off`` no token is asked for. Every
query is logged with its user on the service's output. Errors are JSON ``{"error": message}``:
400 for a refused or failing query or a bad request, 504 for the time limit.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import duckdb
import pyarrow as pa

from runwatch.errors import QueryError
from runwatch.query import guard, named
from runwatch.serve.auth import AuthConfig, User, token_user

PREFIX = "/api/v1"
ARROW_TYPE = "application/vnd.apache.arrow.stream"
MAX_BODY = 1 << 20  # a query is text: 1 MiB is plenty
FORMATS = ("json", "arrow", "csv")


def describe_queries() -> list[dict]:
    out = []
    for q in named.all_queries():
        out.append({"name": q.name, "title": q.title, "description": q.description,
                    "library": q.library,
                    "params": [{"name": p.name, "type": p.type, "required": p.required,
                                "default": p.default, "help": p.help}
                               for p in q.form_params()]})
    return out


class QueryApi:
    """Serve the API on ``address:port`` from daemon threads; queries run on cursors of ``con``."""

    def __init__(self, con: duckdb.DuckDBPyConnection, *, address: str = "127.0.0.1",
                 port: int = 8502, auth: AuthConfig | None = None,
                 limits: guard.Limits | None = None, log=print):
        self._root = con.cursor()
        self._lock = threading.Lock()
        self.auth = auth
        self.limits = limits or guard.Limits.from_env()
        self.log = log
        api = self

        class Handler(_Handler):
            owner = api

        self.server = ThreadingHTTPServer((address, port), Handler)
        self.server.daemon_threads = True
        host, bound = self.server.server_address[:2]
        self.url = f"http://{address}:{bound}{PREFIX}"
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        self._thread = threading.Thread(target=self.server.serve_forever, name="query-api",
                                        daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            self._root.close()

    def user(self, headers) -> User | None:
        if self.auth is None or self.auth.mode == "off":
            return User("anonymous", "admin")
        value = headers.get("Authorization") or ""
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token_user(self.auth, token)

    def run(self, body: dict) -> guard.SqlResult:
        if not isinstance(body, dict):
            raise QueryError("the body must be a JSON object with \"sql\" or \"query\"")
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise QueryError("\"params\" must be an object of name: value")
        if body.get("query"):
            if body.get("sql"):
                raise QueryError("give either \"sql\" or \"query\", not both")
            q = named.load(str(body["query"]))
            # text values are converted to their declared types; JSON numbers, booleans and
            # lists are taken as they are; then one bind checks the set (missing, unknown)
            values = {k: q.param(k).coerce(v) if isinstance(v, str) and k in q.params else v
                      for k, v in params.items()}
            sql, bound = q.sql, q.bind(values)
        elif isinstance(body.get("sql"), str) and body["sql"].strip():
            sql, bound = body["sql"], params
        else:
            raise QueryError("nothing to run: give \"sql\": \"SELECT ...\" or \"query\": NAME")
        with self._lock:  # cursors of a shared connection are made one at a time
            con = self._root.cursor()
        try:
            return guard.run(con, sql, params=bound or None, limits=self.limits)
        finally:
            con.close()


class _Handler(BaseHTTPRequestHandler):
    owner: QueryApi
    server_version = "runwatch"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass  # queries are logged with their user in _query; no access log noise

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload) -> None:
        self._send(status, json.dumps(payload, default=str).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = urlparse(self.path).path.rstrip("/")
        if path == f"{PREFIX}/health":
            return self._json(200, {"ok": True})
        if self.owner.user(self.headers) is None:
            return self._unauthorized()
        if path == f"{PREFIX}/queries":
            return self._json(200, describe_queries())
        self._error(404, f"no such endpoint {path!r}; see {PREFIX}/queries, {PREFIX}/sql")

    def do_POST(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        if url.path.rstrip("/") != f"{PREFIX}/sql":
            return self._error(404, f"POST {PREFIX}/sql")
        user = self.owner.user(self.headers)
        if user is None:
            return self._unauthorized()
        fmt = (parse_qs(url.query).get("format") or ["json"])[0]
        if fmt not in FORMATS:
            return self._error(400, f"format must be one of {', '.join(FORMATS)}")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._error(413, f"the request body is over {MAX_BODY} bytes")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self._error(400, "the body is not JSON")
        self._query(user, body, fmt)

    def _unauthorized(self) -> None:
        self.send_response(401)
        body = json.dumps({"error": "an API token is needed: Authorization: Bearer TOKEN "
                                    "(create one with `runwatch users token NAME`)"}).encode()
        self.send_header("WWW-Authenticate", 'Bearer realm="runwatch"')
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _query(self, user: User, body, fmt: str) -> None:
        what = (body.get("query") or (body.get("sql") or "").strip()) if isinstance(body, dict) else ""
        started = time.monotonic()
        try:
            result = self.owner.run(body)
        except guard.QueryTimeoutError as exc:
            self._log(user, what, f"timed out ({exc})")
            return self._error(504, str(exc))
        except QueryError as exc:
            self._log(user, what, f"refused or failed ({exc})")
            return self._error(400, str(exc))
        self._log(user, what, f"{result.table.num_rows} rows in {time.monotonic() - started:.3f} s"
                  + (" (truncated)" if result.truncated else ""))
        headers = {"X-Runwatch-Truncated": str(result.truncated).lower(),
                   "X-Runwatch-Rows": str(result.table.num_rows),
                   "X-Runwatch-Max-Rows": str(result.max_rows),
                   "X-Runwatch-Seconds": f"{result.seconds:.4f}"}
        if fmt == "arrow":
            sink = io.BytesIO()
            with pa.ipc.new_stream(sink, result.table.schema) as writer:
                writer.write_table(result.table)
            return self._send(200, sink.getvalue(), ARROW_TYPE, headers)
        columns = result.columns
        rows = list(zip(*[c.to_pylist() for c in result.table.columns]))
        if fmt == "csv":
            out = io.StringIO()
            w = csv.writer(out)
            w.writerow(columns)
            w.writerows(rows)
            return self._send(200, out.getvalue().encode(), "text/csv; charset=utf-8", headers)
        payload = {"columns": columns, "rows": rows, "truncated": result.truncated,
                   "seconds": result.seconds, "max_rows": result.max_rows}
        self._send(200, json.dumps(payload, default=str).encode(), "application/json", headers)

    def _log(self, user: User, what: str, outcome: str) -> None:
        text = " ".join(str(what).split())
        text = text if len(text) <= 160 else text[:157] + "..."
        self.owner.log(f"runwatch serve: query API: {user.name} ({user.role}): {outcome}: {text}")
