"""Shared pieces of the benchmarks: a broker to run against, result tables and files."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "out"


@contextlib.contextmanager
def broker_or(bootstrap: str | None):
    """Use ``bootstrap`` if given, else start a throwaway local broker (the project's launcher)."""
    if bootstrap:
        yield bootstrap
        return
    from runwatch.transport.broker import Broker, free_port

    with tempfile.TemporaryDirectory(prefix="runwatch-bench-") as d:
        broker = Broker(d, port=free_port()).start(timeout=90)
        try:
            yield broker.bootstrap
        finally:
            broker.stop()


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print(f"\n{title}  ({machine()})")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")


def save_json(name: str, payload: dict, out_dir: str | os.PathLike | None = None) -> Path:
    """Write ``<out_dir>/<name>.json`` (default ``bench/out``) with the machine description."""
    out = Path(out_dir) if out_dir is not None else OUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=1))
    return path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plain_log_axis(axis) -> None:
    """Ticks at 1, 2, 5 x 10^k written as plain numbers (``0.5``, ``20``, ``1000``) on a
    log-scaled matplotlib axis (``ax.xaxis`` / ``ax.yaxis``)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.10g}"))
    axis.set_minor_formatter(NullFormatter())


def save_png(fig, name: str, out_dir: str | os.PathLike | None = None, *, dpi: int = 110) -> Path:
    """Lay out ``fig``, write it to ``<out_dir>/<name>.png`` (default ``bench/out``), close it
    and return the path."""
    import matplotlib.pyplot as plt

    out = Path(out_dir) if out_dir is not None else OUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
