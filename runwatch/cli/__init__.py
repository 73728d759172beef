"""Command line: ``runwatch <command>``. ``main`` builds the parser; each command group with
more than a few lines of its own lives in a sibling module (``sql``, ``users``, ``demo``)."""

from runwatch.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
