"""``runwatch dead-letters list|replay``: what the materializer set aside, and bringing back
what this version can read now (see runwatch/ingest/replay.py)."""

from __future__ import annotations

import json
import os

from runwatch.transport.security import add_argument as kafka_config_argument


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

    from runwatch.errors import DatabaseLockedError
    from runwatch.ingest.replay import replay
    from runwatch.store.store import Store

    try:
        store = Store(args.db)
    except DatabaseLockedError:
        # A running `serve` holds the file: it replays, on its own writer (never a second one).
        result = replay_through_service(args)
    else:
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


def replay_through_service(args):
    """Ask the `runwatch serve` that holds ``args.db`` to replay, through the alerts topic, and
    wait for its answer; a ReplayResult, or RunwatchError when none comes."""
    import getpass
    import time

    from kafka import KafkaConsumer, TopicPartition

    from runwatch.alerts.publish import ReviewPublisher
    from runwatch.alerts.records import control_event
    from runwatch.collectors.wire import new_id, topics
    from runwatch.errors import RunwatchError
    from runwatch.ingest.replay import ReplayResult
    from runwatch.store.db import view_group_id
    from runwatch.transport.security import kafka_options

    options = kafka_options(args.kafka_config)
    topic = topics(args.topic_prefix)["alerts"]
    request_id, target = new_id(), view_group_id(args.db)
    print(f"{args.db} is held by a running `runwatch serve`; asking it to replay through "
          f"{topic} on {args.bootstrap} ...", flush=True)
    consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=500, client_id="runwatch-dead-letters", **options)
    try:
        partitions = consumer.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_end(*tps)
        for tp in tps:
            consumer.position(tp)  # fix the start before the request goes out
        publisher = ReviewPublisher(args.bootstrap, topic_prefix=args.topic_prefix,
                                    kafka_options=options)
        try:
            publisher.publish(control_event(
                "replay_dead_letters", request_id, target, os.environ.get("RUNWATCH_USER") or getpass.getuser(),
                {"reason": args.reason, "since": args.since, "dry_run": bool(args.dry_run)}))
        finally:
            publisher.close()
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            for message in consumer:
                try:
                    record = json.loads(message.value)
                except (TypeError, ValueError):
                    continue
                if (isinstance(record, dict) and record.get("kind") == "control"
                        and record.get("action") == "replay_done"
                        and record.get("request_id") == request_id):
                    body = record.get("body") or {}
                    return ReplayResult(**{k: body[k] for k in ("tried", "replayed", "samples",
                                                                "events", "still_invalid") if k in body})
    finally:
        consumer.close()
    raise RunwatchError(
        f"no answer from the `runwatch serve` holding {args.db} within {args.timeout:.0f} s; it "
        f"must read {topic} on {args.bootstrap} (same --bootstrap and --topic-prefix), or stop "
        f"it and replay on the file")


def register(sub) -> None:
    d = sub.add_parser("dead-letters", help="list dead letters; replay those this version can read now")
    d.add_argument("action", choices=["list", "replay"])
    d.add_argument("--db", default=os.environ.get("RUNWATCH_DB", "runwatch.duckdb"),
                   help="DuckDB file [env RUNWATCH_DB, default runwatch.duckdb]; replay on a "
                        "file a running `serve` holds asks that service through Kafka")
    d.add_argument("--reason", default="", metavar="R",
                   help="only dead letters whose reason contains R (case-insensitive)")
    d.add_argument("--since", default="", metavar="T",
                   help="only dead letters received at or after T (e.g. 2026-12-01 or "
                        "'2026-12-01 12:00', UTC)")
    d.add_argument("--limit", type=int, default=1000, help="list: at most N rows, newest first [1000]")
    d.add_argument("--dry-run", action="store_true",
                   help="replay: count what would come back, store nothing")
    d.add_argument("--bootstrap", default=os.environ.get("RUNWATCH_BOOTSTRAP", "127.0.0.1:9092"),
                   help="replay on a file a running `serve` holds: its Kafka [env RUNWATCH_BOOTSTRAP]")
    d.add_argument("--topic-prefix", default=os.environ.get("RUNWATCH_TOPIC_PREFIX", "runwatch"),
                   help="replay through a running `serve`: its topic prefix [env RUNWATCH_TOPIC_PREFIX]")
    d.add_argument("--timeout", type=float, default=120.0, metavar="S",
                   help="replay through a running `serve`: seconds to wait for its answer [120]")
    kafka_config_argument(d)
    d.set_defaults(func=cmd_dead_letters)
