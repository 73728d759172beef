"""Where runwatch finds its shipped files and keeps its state, checkout or installed wheel.

Shipped files (named queries and migrations, prompt suites, the embedding head) live in the
repository's top-level folders (``queries/``, ``prompts/``, ``classifiers/minilm_head/``) and
are package data of the wheel (``runwatch/queries/`` ...). State (Kafka jars and data, detector
threshold cache, demo files) goes under the checkout's ``.cache/`` and ``var/`` when runwatch
runs from a source checkout, else under ``$XDG_CACHE_HOME/runwatch`` (``~/.cache/runwatch``);
``RUNWATCH_CACHE_DIR`` and ``RUNWATCH_DEMO_DIR`` override both.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def source_root() -> Path | None:
    """The repository root when runwatch runs from a source checkout, else None."""
    root = PACKAGE_DIR.parent
    if (root / "pyproject.toml").is_file() and (root / "queries" / "migrations").is_dir():
        return root
    return None


def shipped(name: str) -> Path:
    """A shipped folder by its repository path, e.g. ``"queries"``, ``"prompts"``."""
    root = source_root()
    return (root / name) if root is not None else (PACKAGE_DIR / name)


def cache_root() -> Path:
    """Base of runwatch's caches (``RUNWATCH_CACHE_DIR`` overrides)."""
    if os.environ.get("RUNWATCH_CACHE_DIR"):
        return Path(os.environ["RUNWATCH_CACHE_DIR"])
    root = source_root()
    if root is not None:
        return root / ".cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "runwatch"


def demo_dir() -> Path:
    """Where ``runwatch demo`` keeps its database, models and logs (``RUNWATCH_DEMO_DIR``)."""
    if os.environ.get("RUNWATCH_DEMO_DIR"):
        return Path(os.environ["RUNWATCH_DEMO_DIR"])
    root = source_root()
    return (root / "var" / "demo") if root is not None else cache_root() / "demo"
