"""The README documents every setting and command users can rely on."""

from __future__ import annotations

import re
from pathlib import Path

from runwatch.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_environment_setting_is_documented():
    names = set()
    for path in [*ROOT.glob("runwatch/**/*.py"), *ROOT.glob("collectors/**/*.py"),
                 *ROOT.glob("dashboard/**/*.py")]:
        names |= set(re.findall(r"\b(RUNWATCH_[A-Z_]+)\b", path.read_text()))
    missing = sorted(n for n in names if n not in README)
    assert not missing, f"README lacks: {missing}"


def test_every_command_is_documented():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    missing = [name for name in sub.choices if f"runwatch {name}" not in README]
    assert not missing, f"README lacks commands: {missing}"


def test_the_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "make test" in README
