"""Check that the dashboard really runs inside the service process and reads its connection.

What ``runwatch serve`` does, in miniature: the main thread opens a DuckDB file read-write,
registers the connection with ``runwatch.dashboard.connection.set_service``, and calls
``runwatch.dashboard.server.serve_dashboard`` (blocking, main thread). A writer thread keeps committing
new checkpoints of a run through that same connection, as the materializer does. A checker
thread drives headless Chromium to ``/run?run=live-run`` and reads the "last step" metric twice:
it must be a step the writer committed, and it must advance without a reload (the page's live
fragment). Then the service's status callable starts reporting the broker as unreachable, and the
open page must show the banner naming the address, again without a reload. The checker then
stops the server with ``stop_dashboard()`` from its own thread and ``serve_dashboard`` must return.

    python scripts/dashboard_inprocess_check.py [--port 8765] [--screenshot FILE.png]

Needs Debian's chromium (``apt-get install chromium``) and the playwright package.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runwatch.dashboard.connection import set_service  # noqa: E402
from runwatch.dashboard.server import serve_dashboard, stop_dashboard  # noqa: E402
from runwatch.store.db import connect  # noqa: E402

RUN = "live-run"
CATEGORIES = ("injury", "insult")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # TIMESTAMP columns hold naive UTC


def writer(con, stop: threading.Event, committed: list[int]) -> None:
    """Commit one checkpoint of aggregates every 0.3 s on the shared connection."""
    step = 0
    con.execute(
        "INSERT INTO runs (run_id, status, started_at, last_event_at) VALUES (?, 'running', ?, ?)",
        [RUN, _utcnow(), _utcnow()],
    )
    while not stop.is_set():
        step += 100
        now = _utcnow()
        con.execute("BEGIN")
        con.execute(
            "INSERT INTO checkpoint_sets VALUES (?, ?, 'on_distribution', '', 10, 0, 0, ?, ?)",
            [RUN, step, now, now],
        )
        for i, cat in enumerate(CATEGORIES):
            con.execute(
                "INSERT INTO checkpoint_categories"
                " VALUES (?, ?, 'on_distribution', '', ?, 10, ?, 0)",
                [RUN, step, cat, (step // 100 + i) % 11],
            )
        con.execute(
            "UPDATE runs SET last_step = ?, last_event_at = ? WHERE run_id = ?", [step, now, RUN]
        )
        con.execute("COMMIT")
        committed.append(step)
        stop.wait(0.3)


def read_last_step(page) -> int:
    metric = page.locator('[data-testid="stMetric"]', has_text="last step").first
    metric.wait_for(timeout=30_000)
    text = metric.locator('[data-testid="stMetricValue"]').inner_text()
    return int(re.sub(r"[^0-9]", "", text))


BROKER = {"bootstrap": "127.0.0.1:9092", "broker_reachable": True, "last_error": None, "lag": 0}


def status() -> dict:
    return dict(BROKER)


def checker(port: int, committed: list[int], result: dict, screenshot: Path | None) -> None:
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.3)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=shutil.which("chromium"),
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                ],
            )
            page = browser.new_page(viewport={"width": 1440, "height": 1300})
            page.goto(f"{url}/run?run={RUN}")
            first = read_last_step(page)
            time.sleep(4)  # two live refreshes, no reload
            second = read_last_step(page)
            BROKER.update(broker_reachable=False, last_error="NoBrokersAvailable")
            banner = page.get_by_text("Kafka broker unreachable at 127.0.0.1:9092")
            banner.wait_for(timeout=10_000)
            if screenshot:
                time.sleep(1)
                page.screenshot(path=str(screenshot))
            browser.close()
        result.update(
            first=first,
            second=second,
            committed=len(committed),
            banner=True,
            ok=first in committed and second in committed and second > first,
        )
    except Exception as exc:  # noqa: BLE001 - reported by the main thread
        result.update(ok=False, error=repr(exc))
    finally:
        stop_dashboard()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--screenshot", type=Path, help="save the page with the broker banner")
    args = parser.parse_args()
    port = args.port or free_port()

    with tempfile.TemporaryDirectory() as tmp:
        con = connect(Path(tmp) / "live.duckdb")  # read-write, migrated: the service's connection
        set_service(con, status=status)
        stop = threading.Event()
        committed: list[int] = []
        result: dict = {}
        w = threading.Thread(target=writer, args=(con, stop, committed), daemon=True)
        c = threading.Thread(
            target=checker, args=(port, committed, result, args.screenshot), daemon=True
        )
        w.start()
        c.start()
        t0 = time.time()
        serve_dashboard(port=port, address="127.0.0.1")  # blocks on the main thread
        print(f"serve_dashboard returned after {time.time() - t0:.1f} s", flush=True)
        stop.set()
        w.join(timeout=5)
        c.join(timeout=5)
        con.close()
    print(result, flush=True)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    raise SystemExit(main())
