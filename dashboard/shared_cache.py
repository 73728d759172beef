"""One cache for every viewer of the dashboard: work keyed by what it reads, done once.

Streamlit runs each browser session on its own thread, and ``st.cache_data`` would copy (pickle)
every hit. Here a value is computed once per key, shared as is, and kept in a bounded LRU:

- the key carries the data version it was computed at (:func:`runwatch.dashboard.connection.
  data_version`), so a value is never served after the data it came from changed; old versions
  simply age out;
- concurrent callers of the same missing key wait for the one computing it (single flight):
  twenty tabs refreshed by one commit run the query once, not twenty times;
- values are treated as read-only. Data frames are handed out as shallow copies, which pandas'
  copy-on-write (pandas >= 3) makes safe to modify.

Bounded by entries and by an estimate of the bytes held (``max_bytes``); a value larger than a
quarter of the budget is returned without being kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import pandas as pd

DEFAULT_MAX_BYTES = 256 * 2**20
DEFAULT_MAX_ENTRIES = 4096


def hashable(value: Any) -> Any:
    """``value`` as a cache key part: lists, tuples and sets become tuples, dicts sorted items,
    all the way down."""
    if isinstance(value, dict):
        return tuple(sorted((k, hashable(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(hashable(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return tuple(sorted(hashable(v) for v in value))
    return value


def size_of(value: Any) -> int:
    """A cheap estimate of the memory a cached value holds."""
    if isinstance(value, pd.DataFrame):
        shallow = int(value.memory_usage(index=True, deep=False).sum())
        objects = sum(1 for t in value.dtypes if t == object or str(t) in ("str", "string"))
        return shallow + 64 * objects * len(value)
    if isinstance(value, (bytes, str)):
        return len(value)
    if isinstance(value, dict):
        return 256 + sum(size_of(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return 64 + sum(size_of(v) for v in value)
    return 64


class _Pending:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class SharedCache:
    def __init__(self, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._values: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._pending: dict[Hashable, _Pending] = {}
        self._bytes = 0
        self.hits = 0
        self.misses = 0  # computations started (one per missing key, however many waited)

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The value for ``key``, computing it with ``compute()`` when missing (once, however
        many threads ask at the same time). An exception reaches every waiting caller and
        nothing is kept."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                self.hits += 1
                return self._values[key][0]
            pending = self._pending.get(key)
            owner = pending is None
            if owner:
                pending = self._pending[key] = _Pending()
                self.misses += 1
            else:
                self.hits += 1
        if not owner:
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            return pending.value
        try:
            pending.value = compute()
        except BaseException as exc:
            pending.error = exc
            raise
        finally:
            with self._lock:
                del self._pending[key]
                if pending.error is None:
                    self._keep(key, pending.value)
            pending.done.set()
        return pending.value

    def _keep(self, key: Hashable, value: Any) -> None:
        size = size_of(value)
        if size > self.max_bytes // 4:
            return
        self._values[key] = (value, size)
        self._bytes += size
        while self._values and (self._bytes > self.max_bytes
                                or len(self._values) > self.max_entries):
            _, (_, dropped) = self._values.popitem(last=False)
            self._bytes -= dropped

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._bytes = 0

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self._values), "bytes": self._bytes,
                    "hits": self.hits, "misses": self.misses}


results = SharedCache()  # query results and chart specs of all sessions of this process


def frame(df: pd.DataFrame) -> pd.DataFrame:
    """A cached frame for one caller: a shallow copy (copy-on-write keeps the original)."""
    return df.copy(deep=False)


def own(value: Any) -> Any:
    """A cached value for one caller to keep or modify: frames shallow-copied (copy-on-write),
    lists, dicts and sets copied one level; anything else (immutable) as is."""
    if isinstance(value, pd.DataFrame):
        return value.copy(deep=False)
    if isinstance(value, (list, dict, set)):
        return value.copy()
    return value
