"""A client for the live query API of ``runwatch serve`` (:mod:`runwatch.serve.api`), for
notebooks and scripts: the same guard and limits as the dashboard's SQL page, while the run is
live and the file is held by the service.

    import runwatch
    rw = runwatch.connect("http://127.0.0.1:8502", token="rwt_...")   # or RUNWATCH_TOKEN
    rw.sql("SELECT run_id, count(*) AS n FROM samples GROUP BY ALL")  # a pyarrow.Table
    rw.df("SELECT * FROM runs")                                       # a pandas DataFrame
    rw.query("run_category_rates", run_id="demo")                     # a named query
    rw.queries()                                                      # their parameters

Only the standard library and pyarrow (imported on first use); results travel as Arrow IPC.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from runwatch.errors import QueryError

ENV_TOKEN = "RUNWATCH_TOKEN"


class QueryTimeout(QueryError):
    """The service stopped the query at its time limit."""


class Unauthorized(QueryError):
    """No token, a wrong one, or a revoked one."""


@dataclass
class Result:
    """One answer: the table and whether the service's row cap cut it."""

    table: Any  # pyarrow.Table
    truncated: bool
    seconds: float
    max_rows: int


class Client:
    def __init__(self, url: str, token: str | None = None, *, timeout: float = 120.0):
        url = url.rstrip("/")
        if not url.endswith("/api/v1"):
            url += "/api/v1"
        self.url = url
        self.token = token if token is not None else (os.environ.get(ENV_TOKEN) or None)
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"runwatch.Client({self.url!r})"

    # ------------------------------------------------------------------------------ queries
    def sql(self, query: str, **params: Any):
        """Ad-hoc read-only SQL (``$name`` placeholders bound from ``params``): a pyarrow Table."""
        return self.run({"sql": query, "params": params}).table

    def df(self, query: str, **params: Any):
        """:meth:`sql` as a pandas DataFrame."""
        return self.sql(query, **params).to_pandas()

    def query(self, name: str, **params: Any):
        """A named query from ``queries/`` (see :meth:`queries`): a pyarrow Table."""
        return self.run({"query": name, "params": params}).table

    def queries(self) -> list[dict]:
        """The named queries with their typed parameters."""
        return json.loads(self._request("GET", "/queries")[0])

    def run(self, body: dict) -> Result:
        """POST ``body`` to ``/sql`` in Arrow format; the :class:`Result` with its metadata."""
        import pyarrow as pa

        payload, headers = self._request("POST", "/sql?format=arrow", body)
        table = pa.ipc.open_stream(payload).read_all()
        return Result(table=table,
                      truncated=headers.get("X-Runwatch-Truncated") == "true",
                      seconds=float(headers.get("X-Runwatch-Seconds") or 0.0),
                      max_rows=int(headers.get("X-Runwatch-Max-Rows") or 0))

    def health(self) -> bool:
        try:
            return json.loads(self._request("GET", "/health")[0]).get("ok") is True
        except (QueryError, OSError, ValueError):
            return False

    # --------------------------------------------------------------------------------- http
    def _request(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body, default=str).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error") or str(exc)
            except ValueError:
                message = str(exc)
            if exc.code == 401:
                raise Unauthorized(message) from None
            if exc.code == 504:
                raise QueryTimeout(message) from None
            raise QueryError(message) from None
        except urllib.error.URLError as exc:
            raise QueryError(f"no runwatch query API at {self.url} ({exc.reason}); is "
                             f"`runwatch serve` running? It prints `query API at URL`") from None


def connect(url: str, token: str | None = None, *, timeout: float = 120.0) -> Client:
    """A :class:`Client` for the query API at ``url`` (``http://HOST:PORT``, as ``runwatch
    serve`` prints it); ``token`` defaults to ``RUNWATCH_TOKEN``."""
    return Client(url, token, timeout=timeout)
