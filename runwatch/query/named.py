"""Named SQL queries kept as files under ``queries/``.

Each ``queries/<subject>_<shape>.sql`` holds one statement; its first ``--`` lines describe it,
and ``$name`` placeholders are its parameters. Migrations live in ``queries/migrations/`` and run
in file-name order; statements that write tables, which runwatch runs itself (backfills), in
``queries/maintenance/``.

A query whose header has a ``-- title:`` line belongs to the *library* shown by the SQL page and
``runwatch sql --list``; its header may also give ``-- description:`` and one
``-- param NAME: TYPE [= DEFAULT]  help`` line per placeholder (format: ``queries/README.md``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from runwatch.errors import QueryError
from runwatch.resources import shipped

QUERIES_DIR = shipped("queries")
MIGRATIONS_DIR = QUERIES_DIR / "migrations"
MAINTENANCE_DIR = QUERIES_DIR / "maintenance"  # statements that write: not named queries
_PARAM = re.compile(r"(?<![\w$])\$([A-Za-z_][A-Za-z0-9_]*)")


PARAM_TYPES = ("VARCHAR", "BIGINT", "DOUBLE", "BOOLEAN", "VARCHAR[]")
_HEADER = re.compile(r"^(title|description)\s*:\s*(.*)$", re.IGNORECASE)
_PARAM_LINE = re.compile(
    r"^param\s+([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(VARCHAR\[\]|VARCHAR|BIGINT|DOUBLE|BOOLEAN)"
    r"(?:\s*=\s*(\'[^\']*\'|\S+))?\s*(.*)$",
    re.IGNORECASE,
)
_TRUE = {"true", "t", "yes", "y", "1", "on"}
_FALSE = {"false", "f", "no", "n", "0", "off"}


@dataclass(frozen=True)
class Param:
    """A declared parameter: DuckDB type name, default (None = required) and a help line."""

    name: str
    type: str = "VARCHAR"
    default: object = None
    help: str = ""
    declared: bool = True

    @property
    def required(self) -> bool:
        return self.default is None

    def coerce(self, text) -> object:
        """A value typed as text (CLI, URL, form) converted to this parameter's type."""
        if not isinstance(text, str):
            return text
        kind = self.type.upper()
        try:
            if kind == "BIGINT":
                return int(text.strip())
            if kind == "DOUBLE":
                return float(text.strip())
            if kind == "BOOLEAN":
                low = text.strip().lower()
                if low in _TRUE or low in _FALSE:
                    return low in _TRUE
                raise ValueError(text)
            if kind == "VARCHAR[]":
                return [v.strip() for v in text.split(",") if v.strip()]
        except ValueError:
            raise QueryError(
                f"parameter {self.name!r} takes {self.type}; {text!r} is not one"
            ) from None
        return text


def _default(param_type: str, text: str | None) -> object:
    if text is None:
        return None
    if text.startswith("'") and text.endswith("'"):
        text = text[1:-1]
    return Param("default", param_type).coerce(text)


@dataclass(frozen=True)
class NamedQuery:
    name: str
    sql: str
    description: str
    params: tuple[str, ...]
    title: str = ""
    param_specs: tuple[Param, ...] = ()

    @property
    def library(self) -> bool:
        """Part of the query library (has a ``-- title:``): listed by the SQL page and the CLI."""
        return bool(self.title)

    def param(self, name: str) -> Param:
        """The declared parameter ``name``, or an undeclared VARCHAR one."""
        for spec in self.param_specs:
            if spec.name == name:
                return spec
        return Param(name, "VARCHAR", None, "", declared=False)

    def form_params(self) -> list[Param]:
        """Every placeholder as a :class:`Param`: declared ones in header order, then the rest."""
        declared = [p for p in self.param_specs if p.name in self.params]
        names = {p.name for p in declared}
        return declared + [self.param(n) for n in self.params if n not in names]

    def bind(self, params: dict | None = None) -> dict:
        """Check ``params`` against the SQL's placeholders; return the dict to execute with.

        Declared defaults fill parameters that are not given.
        """
        params = dict(params or {})
        for name in self.params:
            spec = self.param(name)
            if name not in params and not spec.required:
                params[name] = spec.default
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

    def bind_text(self, values: dict[str, str] | None = None) -> dict:
        """:meth:`bind` for values typed as text (``--param k=v``, URL parameters, forms):
        each converted to its declared type; undeclared ones pass as text."""
        typed = {}
        for name, value in (values or {}).items():
            typed[name] = self.param(name).coerce(value) if name in self.params else value
        return self.bind(typed)


def _strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))


def parse(name: str, text: str) -> NamedQuery:
    comments = [
        line.lstrip()[2:].strip() for line in text.splitlines() if line.lstrip().startswith("--")
    ]
    body = _strip_comments(text)
    params = tuple(dict.fromkeys(_PARAM.findall(body)))
    title, described, specs, plain = "", [], [], []
    for line in comments:
        header = _HEADER.match(line)
        declared = _PARAM_LINE.match(line)
        if header and header.group(1).lower() == "title":
            title = header.group(2).strip()
        elif header:
            described.append(header.group(2).strip())
        elif declared:
            kind = declared.group(2).upper()
            specs.append(Param(declared.group(1), kind, _default(kind, declared.group(3)),
                               declared.group(4).strip()))
        elif title and described and not declared:
            described.append(line)  # continuation of a library description
        else:
            plain.append(line)
    description = " ".join(described if title else plain).strip()
    unknown = [p.name for p in specs if p.name not in params]
    if unknown:
        raise QueryError(
            f"query {name!r} declares parameter(s) its SQL does not use: {', '.join(unknown)}"
        )
    return NamedQuery(name=name, sql=text.strip(), description=description, params=params,
                      title=title, param_specs=tuple(specs))


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


def library() -> list[NamedQuery]:
    """The library queries (those with a ``-- title:``), by name."""
    return [q for q in all_queries() if q.library]


def maintenance(name: str) -> str:
    """SQL of ``queries/maintenance/<name>.sql`` (writes tables; run by runwatch itself)."""
    return (MAINTENANCE_DIR / f"{name}.sql").read_text()


def migrations() -> list[tuple[str, str]]:
    """(file name, SQL) of every migration, in order."""
    return [(p.name, p.read_text()) for p in sorted(MIGRATIONS_DIR.glob("*.sql"))]


_CREATE = re.compile(
    r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(TABLE|VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.I
)
_COLUMN = re.compile(r"^\s*(\w+)\s+[A-Z][^-]*?(?:--\s*(.*))?$")
_ADD_COLUMN = re.compile(r"^\s*ALTER\s+TABLE\s+(\w+)\s+ADD\s+COLUMN\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.I)
# Tables whose migration has no comment block of their own.
_TABLE_NOTES = {
    "runs": "One row per run: status, times, last step, config and collector counters.",
    "checkpoints": "Checkpoints a run reported (step, time, path, metrics).",
    "run_events": "Every run event read from the runs topic (replays ignored).",
    "samples": "Every sampled prompt and completion, with step, prompt set, reward and cue.",
    "schema_migrations": "Migrations applied to this file.",
    "checkpoint_sets": "Per-checkpoint sample counts and reward sums per prompt set and cue.",
    "dead_letters": "Records the materializer set aside as invalid, with the reason.",
    "current_labels": "The latest reviewer label per sample and category (a view of labels).",
}


def schema_notes() -> dict[str, dict[str, str]]:
    """One-line descriptions from the migrations' comments: ``{table: {"": table note,
    column: column note}}`` (a table's note is the comment block right above its CREATE)."""
    notes: dict[str, dict[str, str]] = {}
    for _, sql in migrations():
        block: list[str] = []
        table = None
        for line in sql.splitlines():
            stripped = line.strip()
            if table is not None:
                if stripped.startswith(")"):
                    table = None
                    continue
                col = _COLUMN.match(line)
                if col and col.group(1).upper() not in ("PRIMARY", "UNIQUE", "FOREIGN"):
                    notes[table].setdefault(col.group(1), (col.group(2) or "").strip())
                continue
            added = _ADD_COLUMN.match(line)
            if added:  # a later migration's column: its note is the comment block above
                text = " ".join(block).strip()
                notes.setdefault(added.group(1), {})[added.group(2)] = (
                    text.split(". ")[0].rstrip(".") + "." if text else "")
                block = []
                continue
            create = _CREATE.match(line)
            if create:
                name = create.group(2)
                text = " ".join(block).strip()
                first = text.split(". ")[0].rstrip(".") + "." if text else ""
                notes.setdefault(name, {})[""] = first or _TABLE_NOTES.get(name, "")
                table = name if create.group(1).upper() == "TABLE" and "(" in line else None
                block = []
            elif stripped.startswith("--"):
                block.append(stripped[2:].strip())
            else:
                block = []
    for name, note in _TABLE_NOTES.items():
        notes.setdefault(name, {}).setdefault("", note)
    return notes
