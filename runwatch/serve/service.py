"""``runwatch serve``: one process owns the DuckDB file, materializes Kafka into it and serves
the dashboard from the same connection.

Threads: the materializer starts with the service (not when a browser connects) in a worker
thread; the detector (:mod:`runwatch.alerts.monitor`) in another, looking at the view after
new data and applying and publishing alert events; the Streamlit server, when not headless, runs in the main thread (it installs signal
handlers, which only the main thread may do). SIGTERM/SIGINT stop both; the last batch is
committed before the file is closed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

from runwatch.alerts.monitor import DetectorConfig, Monitor
from runwatch.alerts.publish import ReviewPublisher
from runwatch.alerts.state import utc
from runwatch.store.db import view_group_id
from runwatch.ingest.materializer import Materializer
from runwatch.serve.leader import Leadership
from runwatch.store.store import Store

log = logging.getLogger("runwatch.serve.service")
CONTROL_MAX_AGE_S = 600  # requests older than this are not acted on (a rebuilt view reads them again)


class Service:
    def __init__(self, *, db: str, bootstrap: str, topic_prefix: str = "runwatch",
                 headless: bool = False, port: int = 8501, address: str = "127.0.0.1",
                 kafka_options: dict | None = None, detect: bool = True,
                 detector: DetectorConfig | None = None, webhook_url: str | None = None,
                 dashboard_url: str | None = None, auth=None, max_run_rate: int | None = None,
                 topic_retention_ms: int = -1, api_port: int | None = None, flag_rules=None):
        """``api_port``: serve the live query API (:mod:`runwatch.serve.api`) there; None: off.
        ``flag_rules``: a :class:`runwatch.detect.ensemble.FlagRules` the view flags with (None:
        the file's own)."""
        self.db = db
        self.api_port = api_port
        self.api = None
        self.headless = headless
        self.port = port
        self.address = address
        self.auth = auth  # runwatch.serve.auth.AuthConfig; None: from the environment
        self.store = Store(db, max_run_rate=max_run_rate, flag_rules=flag_rules)
        self.materializer = Materializer(self.store, bootstrap_servers=bootstrap,
                                         topic_prefix=topic_prefix, kafka_options=kafka_options,
                                         group_id=view_group_id(db),
                                         topic_retention_ms=topic_retention_ms,
                                         on_control=self._control)
        self.publisher = ReviewPublisher(bootstrap, topic_prefix=topic_prefix,
                                         kafka_options=kafka_options)
        self.dashboard_url = dashboard_url or f"http://{address}:{port}"
        self.notifier = None
        if webhook_url:
            from runwatch.alerts.webhook import WebhookNotifier

            self.notifier = WebhookNotifier(webhook_url, record=self._delivery_recorder(),
                                            dashboard_url=self.dashboard_url)
        self.monitor = None
        self.leadership = None
        if detect:
            # Replicas on the same topics: one leader publishes and notifies (runwatch/serve/leader.py).
            self.leadership = Leadership(
                bootstrap, topic_prefix=topic_prefix, kafka_options=kafka_options,
                member=view_group_id(db),
                on_change=lambda leader: print(
                    "runwatch serve: " + ("leader of the replicas: publishes alert events and "
                                          "sends the webhook" if leader else
                                          "a follower: another replica publishes and notifies"),
                    flush=True))
            self.monitor = Monitor(self.store, config=detector, publisher=self.publisher,
                                   notifier=self.notifier,
                                   caught_up=lambda: self.materializer.idle,
                                   is_leader=lambda: self.leadership.is_leader)
        self.stop_event = threading.Event()
        self.worker = threading.Thread(target=self._materialize, name="runwatch-materializer",
                                       daemon=True)
        self.monitor_thread = None
        if self.monitor is not None:
            self.monitor_thread = threading.Thread(target=self.monitor.run, args=(self.stop_event,),
                                                   name="runwatch-detector", daemon=True)
        self.worker_error: BaseException | None = None

    def _delivery_recorder(self):
        """Each delivery row into webhook_deliveries; a successful one also told to the other
        replicas (a ``webhook_delivered`` control on the alerts topic)."""
        from runwatch.alerts.records import control_event
        from runwatch.alerts.webhook import record_to_duckdb

        record = record_to_duckdb(self.store.cursor)

        def record_and_tell(row: dict) -> None:
            record(row)
            if row.get("ok"):
                try:
                    self.publisher.publish(control_event(
                        "webhook_delivered", row["trigger_event_id"], "*", view_group_id(self.db),
                        {"alert_id": row.get("alert_id"), "trigger": row.get("trigger")}))
                except Exception as exc:  # the others may announce it once more (same key)
                    log.warning("could not tell the replicas about delivery %s: %s",
                                row.get("trigger_event_id"), exc)

        return record_and_tell

    def _materialize(self) -> None:
        try:
            self.materializer.run(stop=self.stop_event)
        except BaseException as exc:  # surfaced by status() and at shutdown
            self.worker_error = exc
            self.materializer.last_error = f"materializer stopped: {exc!r}"
            log.exception("materializer stopped")
        finally:
            self.materializer.close()

    def status(self) -> dict:
        st = self.materializer.status()
        st["materializer_alive"] = self.worker.is_alive()
        if self.monitor is not None:
            st["detector_passes"] = self.monitor.passes
            st["detector_error"] = self.monitor.last_error
        if self.leadership is not None:
            st["leader"] = self.leadership.is_leader
        return st

    def _finish(self) -> None:
        """After the materializer stopped: a last detector pass over what was read, then flush
        the publisher and the webhook queue."""
        if self.monitor_thread is not None:
            self.monitor_thread.join(timeout=60)
        if self.monitor is not None and self.worker_error is None:
            try:
                self.monitor.pass_once(final=True)
            except Exception:
                log.exception("final detector pass failed")
        if self.notifier is not None:
            self.notifier.close(timeout=10)
        if self.leadership is not None:
            self.leadership.stop()  # leaves the group: another replica leads at once
        self.publisher.close()

    def _stop(self, *_):
        self.stop_event.set()

    def _control(self, record: dict) -> None:
        """Writer thread, after the batch that carried it is committed: a request addressed to
        this view (``runwatch dead-letters replay`` on the file this service holds), or a
        replica's word that it announced an alert event through the webhook."""
        if record.get("action") == "webhook_delivered":
            body = record.get("body") or {}
            cur = self.store.cursor()
            try:
                cur.execute("INSERT INTO webhook_announced VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                            [record["request_id"], str(body.get("alert_id") or ""),
                             str(body.get("trigger") or ""), str(record.get("actor") or ""),
                             utc(float(record.get("ts") or time.time()))])
            finally:
                cur.close()
            return
        if (record.get("action") != "replay_dead_letters"
                or record.get("target") != view_group_id(self.db)
                or time.time() - float(record.get("ts") or 0) > CONTROL_MAX_AGE_S):
            return  # someone else's, an answer, or an old request read again by a rebuild
        from dataclasses import asdict

        from runwatch.alerts.records import control_event
        from runwatch.ingest.replay import replay

        body = record.get("body") or {}
        result = replay(self.store, reason=str(body.get("reason") or ""),
                        since=str(body.get("since") or ""), dry_run=bool(body.get("dry_run")))
        print(f"runwatch serve: {'dry run: ' if body.get('dry_run') else ''}replayed "
              f"{result.replayed} of {result.tried} dead letters for {record.get('actor')} "
              f"(request {record.get('request_id')})", flush=True)
        self.publisher.publish(control_event("replay_done", record["request_id"], record["target"],
                                             "runwatch-serve", asdict(result)))

    def api_file(self) -> Path:
        """Where a running service says where its query API is (``runwatch sql --db`` reads it)."""
        return Path(f"{self.db}.api.json")

    def _start_api(self) -> None:
        from runwatch.serve.api import QueryApi
        from runwatch.serve.auth import AuthConfig

        auth = self.auth if self.auth is not None else AuthConfig.from_env()
        try:
            self.api = QueryApi(self.store.con, address=self.address, port=self.api_port,
                                auth=auth, log=lambda line: print(line, flush=True))
        except OSError as exc:  # the port is taken: the view and the dashboard still run
            print(f"runwatch serve: query API not started on {self.address}:{self.api_port} "
                  f"({exc.strerror or exc}); pick another with --api-port N", flush=True)
            return
        url = self.api.start()
        self.api_file().write_text(json.dumps({"url": url, "pid": os.getpid()}))
        print(f"runwatch serve: query API at {url}", flush=True)

    def _stop_api(self) -> None:
        if self.api is None:
            return
        try:
            self.api.stop()
        finally:
            self.api = None
            with contextlib.suppress(OSError):
                self.api_file().unlink()

    def run(self) -> int:
        self.worker.start()
        if self.leadership is not None:
            self.leadership.start()
        if self.monitor_thread is not None:
            self.monitor_thread.start()
        print(f"runwatch serve: materializing {self.materializer.bootstrap_servers} "
              f"({', '.join(self.materializer.topics)}) into {self.db}", flush=True)
        rules = self.store.flag_rules.texts
        if rules != ["any"]:
            print(f"runwatch serve: flag rule {'; '.join(rules)}", flush=True)
        try:
            # The SQL page and the query API share this database: no file or network access and
            # no extension loading from SQL, for the whole process, from the start
            # (runwatch/query/guard.py).
            from runwatch.query.guard import harden

            cur = self.store.cursor()
            try:
                harden(cur)
            finally:
                cur.close()
            if self.api_port is not None:
                self._start_api()
            if self.headless:
                signal.signal(signal.SIGTERM, self._stop)
                signal.signal(signal.SIGINT, self._stop)
                while not self.stop_event.wait(0.5):
                    if not self.worker.is_alive():
                        break
            else:
                from runwatch.dashboard.connection import set_service
                from runwatch.dashboard.server import serve_dashboard

                if self.auth is not None:  # the dashboard reads its auth settings from here
                    os.environ.update(self.auth.to_env())
                set_service(self.store.con, status=self.status, publisher=self.publisher,
                            version=self.store.data_version)
                print(f"runwatch serve: dashboard at http://{self.address}:{self.port}", flush=True)
                serve_dashboard(port=self.port, address=self.address)
        finally:
            self.stop_event.set()
            self._stop_api()
            self.worker.join(timeout=30)
            try:
                self._finish()
            finally:
                self.store.close()
        if self.worker_error is not None:
            print(f"runwatch serve: materializer failed: {self.worker_error}", flush=True)
            return 1
        return 0
