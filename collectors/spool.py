"""A local spool of Kafka messages kept while the broker is unreachable.

One file per message, written to a temporary name and renamed, so a crash leaves either a
whole message or none. Files are named by a sequence number and resent oldest first. The
spool refuses a message that would take it past ``max_bytes``; the caller counts the drop.
"""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

_HEADER = struct.Struct(">HI")  # topic length, record count
SUFFIX = ".msg"


class SpoolError(OSError):
    """The spool directory cannot be written (disk full, read-only, missing permissions)."""


class Spool:
    def __init__(self, directory: str | Path, *, max_bytes: int):
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._next_seq = 0
        self._bytes = 0
        self._files: dict[str, int] = {}
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for path in self.directory.glob("*" + SUFFIX):
                size = path.stat().st_size
                self._files[path.name] = size
                self._bytes += size
                self._next_seq = max(self._next_seq, int(path.stem) + 1)
            for tmp in self.directory.glob("*.tmp"):
                tmp.unlink(missing_ok=True)
        except (OSError, ValueError):
            # Unusable directory: every put() will raise SpoolError and be counted as dropped.
            pass

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._files)

    def put(self, topic: str, key: bytes, value: bytes, n_records: int) -> bool:
        """Store one message; False when the byte limit would be exceeded."""
        t = topic.encode()
        blob = _HEADER.pack(len(t), n_records) + t + struct.pack(">I", len(key)) + key + value
        with self._lock:
            if self._bytes + len(blob) > self.max_bytes:
                return False
            name = f"{self._next_seq:016d}{SUFFIX}"
            self._next_seq += 1
            tmp = self.directory / (name + ".tmp")
            try:
                with open(tmp, "wb") as f:
                    f.write(blob)
                os.replace(tmp, self.directory / name)
            except OSError as exc:
                try:
                    tmp.unlink(missing_ok=True)
                except OSError:
                    pass
                raise SpoolError(f"cannot write spool file in {self.directory}: {exc}") from exc
            self._files[name] = len(blob)
            self._bytes += len(blob)
            return True

    def oldest(self, limit: int, exclude: set[str]) -> list[str]:
        with self._lock:
            names = sorted(n for n in self._files if n not in exclude)
        return names[:limit]

    def read(self, name: str) -> tuple[str, bytes, bytes, int]:
        data = (self.directory / name).read_bytes()
        tlen, n_records = _HEADER.unpack_from(data)
        pos = _HEADER.size
        topic = data[pos : pos + tlen].decode()
        pos += tlen
        (klen,) = struct.unpack_from(">I", data, pos)
        pos += 4
        key = data[pos : pos + klen]
        return topic, key, data[pos + klen :], n_records

    def remove(self, name: str) -> None:
        with self._lock:
            size = self._files.pop(name, None)
            if size is None:
                return
            self._bytes -= size
        try:
            (self.directory / name).unlink()
        except FileNotFoundError:
            pass
