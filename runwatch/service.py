"""``runwatch serve``: one process owns the DuckDB file, materializes Kafka into it and serves
the dashboard from the same connection.

Threads: the materializer starts with the service (not when a browser connects) in a worker
thread; the Streamlit server, when not headless, runs in the main thread (it installs signal
handlers, which only the main thread may do). SIGTERM/SIGINT stop both; the last batch is
committed before the file is closed.
"""

from __future__ import annotations

import logging
import signal
import threading

from runwatch.db import view_group_id
from runwatch.materializer import Materializer
from runwatch.store import Store

log = logging.getLogger("runwatch.service")


class Service:
    def __init__(self, *, db: str, bootstrap: str, topic_prefix: str = "runwatch",
                 headless: bool = False, port: int = 8501, address: str = "127.0.0.1",
                 kafka_options: dict | None = None):
        self.db = db
        self.headless = headless
        self.port = port
        self.address = address
        self.store = Store(db)
        self.materializer = Materializer(self.store, bootstrap_servers=bootstrap,
                                         topic_prefix=topic_prefix, kafka_options=kafka_options,
                                         group_id=view_group_id(db))
        self.stop_event = threading.Event()
        self.worker = threading.Thread(target=self._materialize, name="runwatch-materializer",
                                       daemon=True)
        self.worker_error: BaseException | None = None

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
        return st

    def _stop(self, *_):
        self.stop_event.set()

    def run(self) -> int:
        self.worker.start()
        print(f"runwatch serve: materializing {self.materializer.bootstrap_servers} "
              f"({', '.join(self.materializer.topics)}) into {self.db}", flush=True)
        try:
            if self.headless:
                signal.signal(signal.SIGTERM, self._stop)
                signal.signal(signal.SIGINT, self._stop)
                while not self.stop_event.wait(0.5):
                    if not self.worker.is_alive():
                        break
            else:
                from dashboard.connection import set_service
                from dashboard.server import serve_dashboard

                set_service(self.store.con, status=self.status)
                print(f"runwatch serve: dashboard at http://{self.address}:{self.port}", flush=True)
                serve_dashboard(port=self.port, address=self.address)
        finally:
            self.stop_event.set()
            self.worker.join(timeout=30)
            self.store.close()
        if self.worker_error is not None:
            print(f"runwatch serve: materializer failed: {self.worker_error}", flush=True)
            return 1
        return 0
