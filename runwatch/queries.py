"""Named SQL queries kept as files under ``queries/``.

Each ``queries/<subject>_<shape>.sql`` holds one statement; its first ``--`` lines describe it,
and ``$name`` placeholders are its parameters. Migrations live in ``queries/migrations/`` and run
in file-name order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from runwatch.errors import QueryError

QUERIES_DIR = Path(__file__).resolve().parent.parent / "queries"
MIGRATIONS_DIR = QUERIES_DIR / "migrations"
_PARAM = re.compile(r"(?<![\w$])\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class NamedQuery:
    name: str
    sql: str
    description: str
    params: tuple[str, ...]

    def bind(self, params: dict | None = None) -> dict:
        """Check ``params`` against the SQL's placeholders; return the dict to execute with."""
        params = dict(params or {})
        missing = [p for p in self.params if p not in params]
        extra = [p for p in params if p not in self.params]
        if missing:
            raise QueryError(f"query {self.name!r} is missing parameter(s): {', '.join(missing)}")
        if extra:
            raise QueryError(
                f"query {self.name!r} got unknown parameter(s): {', '.join(extra)}; "
                f"it takes: {', '.join(self.params) or 'none'}"
            )
        return params


def _strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))


def parse(name: str, text: str) -> NamedQuery:
    description = " ".join(
        line.lstrip()[2:].strip()
        for line in text.splitlines()
        if line.lstrip().startswith("--")
    ).strip()
    body = _strip_comments(text)
    params = tuple(dict.fromkeys(_PARAM.findall(body)))
    return NamedQuery(name=name, sql=text.strip(), description=description, params=params)


@lru_cache(maxsize=None)
def load(name: str) -> NamedQuery:
    path = QUERIES_DIR / f"{name}.sql"
    if not path.is_file():
        raise QueryError(f"no query named {name!r}; known: {', '.join(names())}")
    return parse(name, path.read_text())


def names() -> list[str]:
    return sorted(p.stem for p in QUERIES_DIR.glob("*.sql"))


def all_queries() -> list[NamedQuery]:
    return [load(n) for n in names()]


def migrations() -> list[tuple[str, str]]:
    """(file name, SQL) of every migration, in order."""
    return [(p.name, p.read_text()) for p in sorted(MIGRATIONS_DIR.glob("*.sql"))]
