"""A headless Streamlit viewer that speaks the browser's own websocket protocol.

One :class:`Viewer` is one open tab: it connects to ``ws://HOST:PORT/_stcore/stream`` (the
endpoint Streamlit's frontend uses, subprotocol ``streamlit``), asks for a page with
``BackMsg.rerun_script`` (the query string and page name a browser would send), reads the
``ForwardMsg`` stream, and, like the frontend, answers every ``auto_rerun`` message (a fragment
with ``run_every``) by asking for that fragment's rerun at its interval. It draws nothing, so a
benchmark that drives many of them measures the server, not a browser's layout and JavaScript.

What it does not do: send widget states (widgets keep their defaults and the URL's
parameters), fetch static files or media, or heartbeat. It counts what it receives:
``script_finished`` messages (full runs and fragment runs) and deltas.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

FINISHED = {
    ForwardMsg.ScriptFinishedStatus.FINISHED_SUCCESSFULLY,
    ForwardMsg.ScriptFinishedStatus.FINISHED_FRAGMENT_RUN_SUCCESSFULLY,
}


@dataclass
class Viewer:
    url: str  # http://127.0.0.1:8501
    page: str  # url_path of the page, e.g. "run"
    query: str = ""  # "run=demo"
    runs: int = 0  # script runs finished (full and fragment)
    full_runs: int = 0
    deltas: int = 0
    errors: list[str] = field(default_factory=list)
    first_ready_s: float | None = None  # connect -> first full run finished
    full_run_at: list[float] = field(default_factory=list)  # perf_counter() of each full run
    metrics: dict[str, str] = field(default_factory=dict)  # st.metric label -> value shown
    stop: bool = False  # set to close the tab at the next message or timeout
    _timers: dict[str, asyncio.Task] = field(default_factory=dict)
    _page_hash: str = ""

    def _rerun(self, *, fragment_id: str = "", auto: bool = False) -> bytes:
        msg = BackMsg()
        state = msg.rerun_script
        state.query_string = self.query
        state.page_name = self.page
        if self._page_hash:
            state.page_script_hash = self._page_hash
        if fragment_id:
            state.fragment_id = fragment_id
            state.is_auto_rerun = auto
        state.context_info.url = f"{self.url}/{self.page}?{self.query}"
        state.context_info.timezone = "UTC"
        return msg.SerializeToString()

    async def run(self, seconds: float) -> None:
        """Open the page, keep it open ``seconds`` (answering auto-reruns), close."""
        ws_url = self.url.replace("http", "ws", 1) + "/_stcore/stream"
        start = time.perf_counter()
        async with websockets.connect(ws_url, subprotocols=["streamlit"],
                                      origin=self.url, max_size=None) as ws:
            await ws.send(self._rerun())
            end = start + seconds
            try:
                while not self.stop:
                    left = end - time.perf_counter()
                    if left <= 0:
                        break
                    try:
                        raw = await asyncio.wait_for(ws.recv(), timeout=min(left, 0.5))
                    except TimeoutError:
                        continue
                    self._handle(ws, raw, start)
            finally:
                for task in self._timers.values():
                    task.cancel()

    def _handle(self, ws, raw: bytes, start: float) -> None:
        msg = ForwardMsg()
        msg.ParseFromString(raw)
        kind = msg.WhichOneof("type")
        if kind == "navigation":  # the page this session is on (as the frontend keeps it)
            self._page_hash = msg.navigation.page_script_hash or self._page_hash
        elif kind == "delta":
            self.deltas += 1
            if msg.delta.WhichOneof("type") == "new_element":
                el = msg.delta.new_element
                if el.WhichOneof("type") == "exception":
                    self.errors.append(el.exception.message)
                elif el.WhichOneof("type") == "metric":
                    self.metrics[el.metric.label] = el.metric.body
        elif kind == "auto_rerun":
            fid = msg.auto_rerun.fragment_id
            if fid not in self._timers:
                self._timers[fid] = asyncio.ensure_future(
                    self._every(ws, msg.auto_rerun.interval, fid))
        elif kind == "script_finished" and msg.script_finished in FINISHED:
            self.runs += 1
            if msg.script_finished == ForwardMsg.ScriptFinishedStatus.FINISHED_SUCCESSFULLY:
                self.full_runs += 1
                self.full_run_at.append(time.perf_counter())
                if self.first_ready_s is None:
                    self.first_ready_s = time.perf_counter() - start

    async def _every(self, ws, interval: float, fragment_id: str) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await ws.send(self._rerun(fragment_id=fragment_id, auto=True))
            except websockets.ConnectionClosed:
                return


async def open_tabs(url: str, page: str, query: str, k: int, seconds: float) -> list[Viewer]:
    """``k`` viewers on the same page, open together for ``seconds``."""
    viewers = [Viewer(url, page, query) for _ in range(k)]
    await asyncio.gather(*(v.run(seconds) for v in viewers))
    return viewers


async def page_view(url: str, page: str, query: str, timeout_s: float = 60.0) -> Viewer:
    """One page view: connect, wait for the first full run to finish, close."""
    v = Viewer(url, page, query)
    ws_url = url.replace("http", "ws", 1) + "/_stcore/stream"
    start = time.perf_counter()
    async with websockets.connect(ws_url, subprotocols=["streamlit"], origin=url,
                                  max_size=None) as ws:
        await ws.send(v._rerun())
        while v.first_ready_s is None:
            left = start + timeout_s - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"{page}?{query} did not finish within {timeout_s} s")
            v._handle(ws, await asyncio.wait_for(ws.recv(), timeout=left), start)
        for task in v._timers.values():
            task.cancel()
    return v
