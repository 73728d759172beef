"""Helpers for the browser tests: ``runwatch serve`` in a subprocess, headless Chromium through
Playwright (Debian's ``chromium``, never ``playwright install``), and reading what a rendered
Vega-Lite chart holds.

Reading a chart. Streamlit draws ``st.altair_chart`` with vega-embed and keeps the resulting
Vega ``View`` in a React ref of the chart component; it exposes it nowhere else. :data:`VEGA_JS`
finds it by walking the React fiber tree upward from the chart's DOM node and looking at each
component's hooks for an object that has the ``View`` API (``getState``, ``runAsync``,
``scale``...). No minified names are used, only React's ``__reactFiber$`` node key and Vega's
public methods, so it survives Streamlit rebuilds as long as the view lives in a hook. From the
view it returns the named datasets (``view.getState``: the rows the chart was drawn from) and
the ``x`` scale's domain (what the x axis actually spans/lists).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHART = '[data-testid="stVegaLiteChart"]'
CHART_DRAWN = f"{CHART} canvas, {CHART} svg"
STATUS = '[data-testid="stStatusWidget"]'
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# For every Streamlit chart on the page, in page order: null while it has no Vega view yet, else
# {datasets: {name: rows (plain fields only)}, x: domain of the scale named "x" or null}.
VEGA_JS = r"""
() => {
  const isView = (v) => v !== null && typeof v === "object" && typeof v.getState === "function"
    && typeof v.runAsync === "function" && typeof v.scale === "function"
    && typeof v.signal === "function";
  const fiberOf = (el) => {
    const key = Object.keys(el).find((k) => k.startsWith("__reactFiber$"));
    return key ? el[key] : null;
  };
  const findView = (el) => {
    for (let f = fiberOf(el), depth = 0; f && depth < 60; f = f.return, depth++) {
      let hook = f.memoizedState;
      for (let i = 0; hook !== null && typeof hook === "object" && "next" in hook && i < 200; i++) {
        const s = hook.memoizedState;
        if (isView(s)) return s;
        if (s !== null && typeof s === "object" && isView(s.current)) return s.current;
        hook = hook.next;
      }
    }
    return null;
  };
  const plain = (row) => Object.fromEntries(Object.entries(row || {}).filter(([, v]) =>
    v === null || ["string", "number", "boolean"].includes(typeof v)));
  return [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].map((host) => {
    let view = null;
    for (const el of [host, ...host.querySelectorAll("*")]) {
      view = findView(el);
      if (view) break;
    }
    if (!view) return null;
    const state = view.getState({ data: () => true, signals: () => false, recurse: false });
    const datasets = {};
    // rows of derived datasets may point at scenegraph items: keep plain fields only
    for (const [name, rows] of Object.entries(state.data || {})) {
      datasets[name] = (Array.isArray(rows) ? rows : []).map(plain);
    }
    let x = null;
    try { x = JSON.parse(JSON.stringify(view.scale("x").domain())); } catch (e) { x = null; }
    return { datasets, x };
  });
}
"""


def chromium_path() -> str | None:
    return shutil.which("chromium")


def free_port() -> int:
    from runwatch.transport.broker import free_port as _free_port

    return _free_port()


class Serve:
    """``python -m runwatch.cli serve`` in a subprocess; its output goes to a temporary file."""

    def __init__(self, *, db: Path, bootstrap: str, topic_prefix: str, port: int | None = None,
                 extra_args: list[str] | None = None, env: dict | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runwatch.cli", "serve", "--db", str(db),
             "--bootstrap", bootstrap, "--topic-prefix", topic_prefix, "--port", str(self.port),
             *(extra_args or [])],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def wait_healthy(self, timeout: float = 60.0) -> float:
        """Seconds until ``/_stcore/health`` answered ``ok``; raises with the log otherwise."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"serve did not answer on {self.url} within {timeout:.0f} s:\n"
                           f"{self.output()}")

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM; the exit code, or None if it was still running after ``timeout`` s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def output(self, tail: int = 6000) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-tail:]

    def close(self) -> None:
        self.kill()
        self._log.close()


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)


def chart_states(page) -> list[dict | None]:
    """What the Vega view of each chart on the page holds, in page order (see :data:`VEGA_JS`)."""
    return page.evaluate(VEGA_JS)


def find_chart(page, *fields: str) -> dict | None:
    """The first chart on the page whose data has rows carrying all of ``fields``, or None."""
    for state in chart_states(page):
        if rows_with(state, *fields):
            return state
    return None


def metrics(page) -> dict[str, str]:
    """``st.metric`` label -> displayed value, for every metric on the page."""
    return page.evaluate("""() => Object.fromEntries(
      [...document.querySelectorAll('[data-testid="stMetric"]')].map((m) => [
        (m.querySelector('[data-testid="stMetricLabel"]')?.innerText || "").trim(),
        (m.querySelector('[data-testid="stMetricValue"]')?.innerText || "").trim()]))""")


def rows_with(state: dict | None, *fields: str) -> list[dict]:
    """All rows of the chart's datasets that carry every one of ``fields``."""
    if not state:
        return []
    return [row for rows in state["datasets"].values() for row in rows
            if all(f in row for f in fields)]


def wait_until(predicate, timeout: float, interval: float = 0.25):
    """Poll ``predicate`` until it returns something truthy; returns (value, seconds waited) or
    (last value, None) on timeout."""
    started = time.monotonic()
    value = None
    while True:
        value = predicate()
        if value:
            return value, time.monotonic() - started
        if time.monotonic() - started > timeout:
            return value, None
        time.sleep(interval)
