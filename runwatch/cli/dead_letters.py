"""``runwatch dead-letters list|replay``: what the materializer set aside, and bringing back
what this version can read now (see runwatch/ingest/replay.py)."""

from __future__ import annotations

import os


def cmd_dead_letters(args) -> int:
    from runwatch.query import named
    from runwatch.store import db

    if args.action == "list":
        con = db.connect(args.db, read_only=True, migrate=False)
        try:
            q = named.load("dead_letters_list")
            cur = con.execute(q.sql, q.bind({"reason": args.reason, "since": args.since,
                                             "max_rows": args.limit}))
            print("\t".join(d[0] for d in cur.description))
            rows = cur.fetchall()
            for row in rows:
                print("\t".join("" if v is None else str(v) for v in row))
            if not rows:
                print("no dead letters" + (" match" if args.reason or args.since else ""))
        finally:
            con.close()
        return 0

    from runwatch.ingest.replay import replay
    from runwatch.store.store import Store

    store = Store(args.db)
    try:
        result = replay(store, reason=args.reason, since=args.since, dry_run=args.dry_run)
    finally:
        store.close()
    verb = "would replay" if args.dry_run else "replayed"
    print(f"{verb} {result.replayed} of {result.tried} dead letters"
          + ("" if args.dry_run else f": {result.samples} samples and {result.events} events stored"))
    for reason, n in sorted(result.still_invalid.items(), key=lambda kv: -kv[1]):
        print(f"still invalid ({n}): {reason}")
    return 0


def register(sub) -> None:
    d = sub.add_parser("dead-letters", help="list dead letters; replay those this version can read now")
    d.add_argument("action", choices=["list", "replay"])
    d.add_argument("--db", default=os.environ.get("RUNWATCH_DB", "runwatch.duckdb"),
                   help="DuckDB file [env RUNWATCH_DB, default runwatch.duckdb]; replay needs "
                        "it free (stop `runwatch serve` first)")
    d.add_argument("--reason", default="", metavar="R",
                   help="only dead letters whose reason contains R (case-insensitive)")
    d.add_argument("--since", default="", metavar="T",
                   help="only dead letters received at or after T (e.g. 2026-12-01 or "
                        "'2026-12-01 12:00', UTC)")
    d.add_argument("--limit", type=int, default=1000, help="list: at most N rows, newest first [1000]")
    d.add_argument("--dry-run", action="store_true",
                   help="replay: count what would come back, store nothing")
    d.set_defaults(func=cmd_dead_letters)
