"""``runwatch sql``: ad-hoc or named SQL on a view, through the same guard and limits as the
dashboard's SQL page (:mod:`runwatch.query.guard`).

    runwatch sql --db FILE "SELECT ..."                      # ad-hoc
    runwatch sql --db FILE --query NAME --param run_id=r1    # a named query from queries/
    runwatch sql --list                                      # the named queries
    runwatch sql --server URL --token T "SELECT ..."         # a running serve's query API
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

from runwatch.query import named as queries
from runwatch.errors import ConfigError

ENV_SERVER = "RUNWATCH_SERVER"
ENV_TOKEN = "RUNWATCH_TOKEN"


def add_arguments(parser) -> None:
    """The ``sql`` subcommand's arguments (``--db`` is added by the CLI)."""
    parser.add_argument("query", nargs="?", default=None, help="SQL text (one read-only query)")
    parser.add_argument("--query", dest="named", metavar="NAME", default=None,
                        help="run the named query NAME from queries/ (see --list)")
    parser.add_argument("--param", dest="params", metavar="K=V", action="append", default=[],
                        help="a parameter of the named query (repeatable; lists: a,b,c)")
    parser.add_argument("--list", dest="list_queries", action="store_true",
                        help="list the named queries and their parameters")
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table")
    parser.add_argument("--server", metavar="URL", default=os.environ.get(ENV_SERVER) or None,
                        help="ask a running `runwatch serve`'s query API instead of opening a "
                             f"file [env {ENV_SERVER}]")
    parser.add_argument("--token", default=None,
                        help=f"API token for --server (`runwatch users token NAME`) [env {ENV_TOKEN}]")


def parse_params(items: list[str]) -> dict[str, str]:
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--param {item!r}: write it as NAME=VALUE, e.g. --param run_id=r1")
        params[name.strip()] = value
    return params


def describe_param(p: queries.Param) -> str:
    default = "required" if p.required else f"default {p.default!r}"
    return f"${p.name} {p.type} ({default})" + (f": {p.help}" if p.help else "")


def list_text() -> str:
    lines = ["Named queries (runwatch sql --query NAME --param k=v; the SQL page's library):", ""]
    for q in queries.library():
        lines.append(f"{q.name}  {q.title}")
        if q.description:
            lines.append(f"    {q.description}")
        for p in q.form_params():
            lines.append(f"    {describe_param(p)}")
        lines.append("")
    others = [q.name for q in queries.all_queries() if not q.library]
    lines.append("Dashboard queries (also runnable with --query; parameters untyped): "
                 + ", ".join(others))
    return "\n".join(lines)


def cmd_sql(args) -> int:
    if args.list_queries:
        print(list_text())
        return 0
    if args.named and args.query:
        raise ConfigError("give either SQL text or --query NAME, not both")
    if args.params and not args.named:
        raise ConfigError("--param goes with --query NAME (ad-hoc SQL takes no parameters)")
    if args.server:
        return _via_server(args)
    params = None
    if args.named:
        named = queries.load(args.named)
        params = named.bind_text(parse_params(args.params))
        sql = named.sql
    elif args.query:
        sql = args.query
    else:
        raise ConfigError("nothing to run: give SQL text, --query NAME, or --list")
    from runwatch.query import guard as sql_guard

    limits = sql_guard.Limits.from_env()
    sql_guard.check(sql)  # refuse before opening the file
    from runwatch.store.db import DatabaseLockedError

    try:
        con = sql_guard.open_read_only(args.db, limits)
    except DatabaseLockedError as exc:
        url = served_api(args.db)
        if url is None:
            raise
        raise DatabaseLockedError(
            f"{exc}. Or ask it: the running `runwatch serve` answers queries on this file at "
            f"{url}: runwatch sql --server {url} --token TOKEN ...") from None
    try:
        result = sql_guard.run(con, sql, params=params, limits=limits)
    finally:
        con.close()
    write(result, args.format)
    if result.truncated:
        print(f"runwatch: {result.note()}", file=sys.stderr)
    return 0


def served_api(db: str) -> str | None:
    """The query API URL a running ``runwatch serve`` wrote next to ``db``, if any."""
    try:
        return json.loads(Path(f"{db}.api.json").read_text()).get("url")
    except (OSError, ValueError, AttributeError):
        return None


def _via_server(args) -> int:
    from runwatch.query.client import Client
    from runwatch.query.guard import SqlResult

    if args.named and args.query:
        raise ConfigError("give either SQL text or --query NAME, not both")
    if args.named:
        body = {"query": args.named, "params": parse_params(args.params)}
    elif args.query:
        if args.params:
            raise ConfigError("--param goes with --query NAME (ad-hoc SQL takes no parameters)")
        body = {"sql": args.query}
    else:
        raise ConfigError("nothing to run: give SQL text, --query NAME, or --list")
    client = Client(args.server, args.token or os.environ.get(ENV_TOKEN) or None)
    answer = client.run(body)
    result = SqlResult(table=answer.table, truncated=answer.truncated, seconds=answer.seconds,
                       kind="SELECT", max_rows=answer.max_rows)
    write(result, args.format)
    if result.truncated:
        print(f"runwatch: {result.note()}", file=sys.stderr)
    return 0


def write(result, fmt: str, out=None) -> None:
    """Print a :class:`runwatch.query.guard.SqlResult` as a table, CSV or JSON."""
    out = out or sys.stdout
    columns = result.columns
    rows = list(zip(*[c.to_pylist() for c in result.table.columns]))
    if fmt == "json":
        print(json.dumps([dict(zip(columns, r)) for r in rows], default=str, indent=1), file=out)
    elif fmt == "csv":
        w = csv.writer(out)
        w.writerow(columns)
        w.writerows(rows)
    else:
        cells = [[("NULL" if v is None else str(v)) for v in row] for row in rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths)), file=out)
        print("  ".join("-" * w for w in widths), file=out)
        for r in cells:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths)), file=out)
        print(f"({len(rows)} row{'s' if len(rows) != 1 else ''}"
              f"{', truncated' if result.truncated else ''})", file=out)
