"""Data versions: counters that move when a transaction of the :class:`~runwatch.store.store.Store`
commits, so that readers in the same process (the dashboard) know, without a query, whether
anything they show could have changed.

- ``of()`` — ``("all", token, n)``: moves with every commit that wrote anything (samples, run events,
  alert events and labels, dead letters).
- ``of(run_id)`` — ``("run", token, n_run, n_reviews)``: moves when a commit wrote samples or run events
  of that run, or any alert event or label (the run's alerts and marks come from those).

A version is only ever compared for equality with an earlier one from the same process: equal
means that no transaction touching that scope committed in between. Counters start at 0 when
the Store opens the file and every version carries a token of this Store, so versions of two
Stores (an earlier one on the same file) never compare equal.
A reader takes the version *before* it queries: a result read after a newer commit then carries
an older version and is merely refreshed once more, never kept past a change.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable

_tokens = itertools.count(1)


class DataVersions:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._token = next(_tokens)
        self._all = 0
        self._reviews = 0
        self._runs: dict[str, int] = {}

    def bump(self, runs: Iterable[str] = (), *, reviews: bool = False) -> None:
        """Record one committed transaction that wrote rows of ``runs`` (and reviews)."""
        with self._lock:
            self._all += 1
            if reviews:
                self._reviews += 1
            for run_id in runs:
                self._runs[run_id] = self._runs.get(run_id, 0) + 1

    def of(self, run_id: str | None = None) -> tuple:
        with self._lock:
            if run_id is None:
                return ("all", self._token, self._all)
            return ("run", self._token, self._runs.get(run_id, 0), self._reviews)
