"""Screenshots of every dashboard page, for docs and for checking the rendering by eye.

Starts ``streamlit run dashboard/app.py`` on a free port with ``RUNWATCH_DB`` pointing at a
database (by default the test seed, built fresh), drives Debian's chromium with Playwright, and
writes ``docs/screenshots/<prefix><page>.png``. The server is always stopped at the end. With
the default seed it also shoots the empty-database state (``runs-empty.png``) from an empty file.

    python scripts/screenshots.py [--db FILE --prefix bench- --run R --step S --prompt P
                                   --compare R1,R2] [--out docs/screenshots]

Needs ``apt-get install chromium`` and the playwright package (never ``playwright install``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHART = '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg'
STATUS = '[data-testid="stStatusWidget"]'

CODE = '[data-testid="stCode"]'
TABLE = '[data-testid="stDataFrame"]'



def seed_pages(run: str, step: int, prompt: str, compare: list[str],
               alert: str | None = None) -> dict:
    """name -> (URL path and query, viewport height, what to wait for before the shot)."""
    others = "&".join(f"run={r}" for r in compare)
    pages = {
        "runs": ("/", 1100, CHART),
        "run": (f"/run?run={run}", 1900, CHART),
        "checkpoint": (f"/checkpoint?run={run}&step={step}", 2300, CHART),
        "prompt_history": (f"/prompt?run={run}&step={step}&prompt={prompt}", 1900, CHART),
        "compare": (f"/compare?{others}", 1200, CHART),
        "alerts": ("/alerts", 1000, TABLE),
        "quality": ("/quality", 1500, TABLE),
        "health": (f"/health?run={run}", 1900, "h1"),  # a view without canaries has no chart
        "sql": (f"/sql?query=rates_by_checkpoint&run_id={run}", 1700, CHART),
    }
    if alert:
        pages["alert"] = (f"/alerts?alert={alert}", 2600, CHART)
    return pages


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StreamlitServer:
    """``streamlit run dashboard/app.py`` in a subprocess, stopped on exit."""

    def __init__(self, db: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, RUNWATCH_DB=str(db), RUNWATCH_AUTH="off")  # local screenshots
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                str(ROOT / "dashboard" / "app.py"),
                "--server.headless",
                "true",
                "--server.address",
                "127.0.0.1",
                "--server.port",
                str(self.port),
                "--browser.gatherUsageStats",
                "false",
                "--server.fileWatcherType",
                "none",
                "--client.toolbarMode",
                "viewer",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def __enter__(self) -> StreamlitServer:
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}: {self.output()}")
            try:
                if urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2).read() == b"ok":
                    return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"streamlit did not answer on {self.url} within 60 s: {self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def shoot(browser, url: str, path: Path, height: int, ready: str) -> None:
    page = browser.new_page(viewport={"width": 1440, "height": height})
    try:
        page.goto(url)
        # some charts sit in collapsed expanders: wait for a visible one
        page.locator(ready).locator("visible=true").first.wait_for(timeout=60_000)
        page.wait_for_selector(STATUS, state="detached", timeout=60_000)
        page.wait_for_timeout(1500)  # let Vega finish its transitions
        page.screenshot(path=str(path))
    finally:
        page.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="database to show (default: the test seed)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--prefix", default="", help="file name prefix, e.g. 'bench-'")
    parser.add_argument("--run", default="run-a", help="run on the run, checkpoint, prompt pages")
    parser.add_argument("--step", type=int, default=300, help="checkpoint shown")
    parser.add_argument("--prompt", default="rt-4", help="prompt shown on the history page")
    parser.add_argument("--compare", default="run-a,run-b", help="runs on the compare page")
    parser.add_argument("--alert", default=None, help="alert shown on the alert detail page")
    parser.add_argument("--pages", default="", help="comma-separated page names (default: all)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    chromium = shutil.which("chromium")
    if not chromium:
        print("chromium not found: apt-get install -y chromium", file=sys.stderr)
        return 2

    from playwright.sync_api import sync_playwright

    from runwatch.store.db import connect
    from tests.dashboard_seed import build

    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or build(Path(tmp) / "seed.duckdb").path
        empty = Path(tmp) / "empty.duckdb"
        connect(empty).close()
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium,
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                ],
            )
            try:
                with StreamlitServer(db) as server:
                    pages = seed_pages(args.run, args.step, args.prompt, args.compare.split(","),
                                       args.alert)
                    if args.pages:
                        pages = {k: v for k, v in pages.items() if k in args.pages.split(",")}
                    for name, (url, height, ready) in pages.items():
                        path = args.out / f"{args.prefix}{name}.png"
                        shoot(browser, server.url + url, path, height, ready)
                        print(f"wrote {path}", flush=True)
                if args.db is None:
                    with StreamlitServer(empty) as server:
                        path = args.out / "runs-empty.png"
                        shoot(browser, server.url + "/", path, 900, CODE)
                        print(f"wrote {path}", flush=True)
            finally:
                browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
