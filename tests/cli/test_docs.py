"""The README and docs/ document every setting and command users can rely on, and what they
say about the code holds: links resolve, documented command options exist in the real parser,
and repository paths in backticks exist."""

from __future__ import annotations

import argparse
import glob
import re
import sys
import unicodedata
from pathlib import Path

import pytest

from runwatch.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]

# Top-level folders of the repository: a backticked token starting with one of them is a path.
REPO_DIRS = ("bench", "classifiers", "collectors", "dashboard", "docs", "prompts", "queries",
             "runwatch", "scripts", "tests", ".ci")
# Written by the code at run time and ignored by git (.gitignore), so absent from a clone.
GENERATED = ("bench/out/",)
# Installed packages whose code lives in another folder of the repository (pyproject package-dir).
PACKAGE_DIRS = {"runwatch.collectors": "collectors", "runwatch.dashboard": "dashboard"}


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:  # the checkers' own tests use pages outside the repository
        return path.name


# --------------------------------------------------------------------------- markdown parsing
FENCE = re.compile(r"^(```|~~~)([^\n]*)\n(.*?)^\1[ \t]*$", re.M | re.S)
INLINE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)


def _fenced(text: str) -> list[tuple[str, str]]:
    """(info string, body) of each fenced code block."""
    return [(m.group(2).strip(), m.group(3)) for m in FENCE.finditer(text)]


def _prose(text: str) -> str:
    """The text with fenced blocks blanked (inline code kept)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def _inline_code(text: str) -> list[str]:
    return [m.group(2).strip() for m in INLINE.finditer(_prose(text))]


def _links(text: str) -> list[str]:
    """Targets of inline links and images, outside code."""
    prose = INLINE.sub(lambda m: " " * len(m.group(0)), _prose(text))
    return [m.group(1) for m in re.finditer(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", prose)]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").strip().lower()
    text = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LNM")
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for m in re.finditer(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", _prose(path.read_text()), re.M):
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


# --------------------------------------------------------------------------- what the code has
def test_every_environment_setting_is_documented():
    names = set()
    for path in [*ROOT.glob("runwatch/**/*.py"), *ROOT.glob("collectors/**/*.py"),
                 *ROOT.glob("dashboard/**/*.py")]:
        names |= set(re.findall(r"\b(RUNWATCH_[A-Z_]+)\b", path.read_text()))
    names = {n for n in names if not n.endswith("_")}  # prefixes such as RUNWATCH_KAFKA_
    configuration = (ROOT / "docs" / "configuration.md").read_text()
    missing = sorted(n for n in names if not re.search(rf"\b{n}\b", README))
    assert not missing, f"README lacks: {missing}"
    missing = sorted(n for n in names if not re.search(rf"\b{n}\b", configuration))
    assert not missing, f"docs/configuration.md lacks: {missing}"


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return dict(sub.choices)


def test_every_command_is_documented():
    missing = [name for name in _subparsers() if f"runwatch {name}" not in README]
    assert not missing, f"README lacks commands: {missing}"


def test_every_option_of_every_command_is_in_docs_commands():
    text = (ROOT / "docs" / "commands.md").read_text()
    sections = dict(re.findall(r"^## runwatch ([\w-]+)\n(.*?)(?=^## |\Z)", text, re.M | re.S))
    shared = re.search(r"^## Options the Kafka clients share\n(.*?)(?=^## )", text, re.M | re.S)
    problems = []
    for name, parser in _subparsers().items():
        if name not in sections:
            problems.append(f"no section '## runwatch {name}'")
            continue
        body = sections[name]
        if "[Kafka options](#options-the-kafka-clients-share)" in body and shared:
            body += shared.group(1)
        for action in parser._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt != "--help" and f"`{opt}" not in body:
                    problems.append(f"runwatch {name} {opt}")
    assert not problems, f"docs/commands.md lacks: {problems}"


def test_the_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "make test" in README


def test_there_is_a_docs_page_per_topic():
    names = {p.name for p in DOCS}
    assert {"wire-format.md", "tables.md", "commands.md", "configuration.md", "security.md",
            "reliability.md", "client.md", "architecture.md"} <= names


# --------------------------------------------------------------------------- links
def _link_problems(page: Path) -> list[str]:
    problems = []
    for target in _links(page.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        where = f"{_rel(page)}: ({target})"
        if ROOT not in dest.parents and dest != ROOT:
            problems.append(f"{where} leaves the repository")
        elif not dest.exists():
            problems.append(f"{where}: no file {dest.relative_to(ROOT)}")
        elif anchor:
            if dest.suffix != ".md" or not dest.is_file():
                problems.append(f"{where}: an anchor into a file that is not markdown")
            elif anchor not in _anchors(dest):
                problems.append(f"{where}: no heading #{anchor} in {_rel(dest)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_relative_links_resolve(page):
    problems = _link_problems(page)
    assert not problems, "\n".join(problems)


def test_the_readme_links_every_docs_page():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in _links(README)}
    missing = [_rel(p) for p in DOCS if p.resolve() not in linked]
    assert not missing, f"README does not link to {missing}"


def test_the_link_checker_catches_a_broken_link_and_anchor(tmp_path, monkeypatch):
    """The checker itself: a missing file and a missing heading are both reported."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "a.md").write_text("# Title\n## Some `code` heading: yes / no\n")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#some-code-heading-yes--no) [ok](a.md#title) [bad](a.md#nope) "
                    "[bad](c.md) `[not a link](c.md)`\n```\n[not a link](c.md)\n```\n")
    problems = _link_problems(page)
    assert len(problems) == 2 and "#nope" in problems[0] and "c.md" in problems[1], problems


# --------------------------------------------------------------------------- commands and options
SHELL_INFO = {"", "sh", "bash", "shell", "console", "text"}


def _commands(text: str) -> list[tuple[str, list[str], bool]]:
    """(what, tokens after `runwatch`, strict) of each runwatch command line in code.

    Fenced shell blocks: each logical line (backslash continuations joined, comments dropped)
    whose command is runwatch is strict: its first word must be a subcommand. Elsewhere (inline
    code, other blocks) a `runwatch WORD` counts only when WORD is a subcommand or an option.
    """
    out = []
    for info, body in _fenced(text):
        body = body.replace("\\\n", " ")
        for line in body.splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            line = re.sub(r"^\$\s+", "", line)
            strict = info.split()[0] in SHELL_INFO if info else True
            for segment in re.split(r"\s(?:\|\||&&|;|\|)\s", line):
                words = segment.split()
                while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # VAR=value cmd
                    words.pop(0)
                if words and re.fullmatch(r"(?:\S*/)?runwatch", words[0]):
                    out.append((segment, words[1:], strict))
                elif words:
                    out.extend((segment, w, False) for w in _runwatch_words(segment))
    for span in _inline_code(text):
        out.extend((span, w, False) for w in _runwatch_words(span))
    return out


def _runwatch_words(text: str) -> list[list[str]]:
    found = []
    for m in re.finditer(r"(?:^|(?<=[\s/(]))runwatch(?:\.cli)?[ \t]+(.*)$", text, re.M):
        found.append(m.group(1).split())
    return found


def _clean(word: str) -> str:
    return word.strip("[]`'\"(),;.").strip()


def _option_problems(what: str, words: list[str], strict: bool,
                     subs: dict[str, argparse.ArgumentParser]) -> list[str]:
    top = build_parser()
    if not words:
        return []
    first = _clean(words[0])
    if first.startswith("-"):
        known = {o for a in top._actions for o in a.option_strings}
        opt = first.split("=")[0]
        return [] if opt in known else [f"`{what}`: runwatch has no option {opt}"]
    names = [n for n in re.split(r"\\?\|", first) if n]
    if not all(n in subs for n in names):
        return [f"`{what}`: runwatch has no command {first!r}"] if strict else []
    problems = []
    for name in names:
        parser = subs[name]
        options = {o: a for a in parser._actions for o in a.option_strings}
        positional = [a for a in parser._actions if not a.option_strings and a.choices]
        rest = words[1:]
        if positional and rest and not _clean(rest[0]).startswith("-") and _clean(rest[0]):
            value = _clean(rest[0])
            if re.fullmatch(r"[a-z][a-z-]*(\\?\|[a-z][a-z-]*)*", value):
                bad = [v for v in re.split(r"\\?\|", value) if v not in positional[0].choices]
                if bad:
                    problems.append(f"`{what}`: runwatch {name} has no action {bad}")
        for i, word in enumerate(rest):
            word = _clean(word)
            if not re.match(r"--[a-z]", word):  # not an option (an arrow `---->` in a picture)
                continue
            opt, _, inline_value = word.partition("=")
            if opt.endswith("*"):  # --detect-*: a family of options
                if not any(o.startswith(opt[:-1]) for o in options):
                    problems.append(f"`{what}`: runwatch {name} has no option {opt}")
                continue
            action = options.get(opt)
            if action is None:
                problems.append(f"`{what}`: runwatch {name} has no option {opt}")
                continue
            value = inline_value or (_clean(rest[i + 1]) if i + 1 < len(rest) else "")
            if action.choices and re.fullmatch(r"[a-z][a-z-]*(\\?\|[a-z][a-z-]*)*", value):
                bad = [v for v in re.split(r"\\?\|", value) if v not in action.choices]
                if bad:
                    problems.append(f"`{what}`: runwatch {name} {opt} takes no {bad}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_documented_command_options_exist(page):
    subs = _subparsers()
    problems = []
    for what, words, strict in _commands(page.read_text()):
        problems += _option_problems(what, words, strict, subs)
    assert not problems, "\n".join(problems)


def test_the_option_checker_catches_a_wrong_option():
    text = ("```sh\nrunwatch serve --db x.duckdb \\\n    --no-such-option\n"
            "runwatch sevre --db x\n```\n"
            "`runwatch demo --scenario drift|nonsense` and `runwatch kafka launch` and "
            "`runwatch ingest --until-idle` and `pip install runwatch` and `runwatch --version`\n")
    subs = _subparsers()
    problems = [p for w, words, s in _commands(text) for p in _option_problems(w, words, s, subs)]
    assert len(problems) == 4, problems
    assert any("--no-such-option" in p for p in problems)
    assert any("'sevre'" in p for p in problems)
    assert any("nonsense" in p for p in problems)
    assert any("launch" in p for p in problems)


# --------------------------------------------------------------------------- repository paths
def _path_tokens(text: str) -> list[str]:
    """Tokens of inline code that name a repository path (a top-level folder, then '/')."""
    out = []
    for span in _inline_code(text):
        for word in span.split():
            word = word.strip("\"'(),;[]")
            if word.split("/")[0] in REPO_DIRS and "/" in word:
                out.append(word)
        for module in re.findall(r"python -m ([\w.]+)", span):  # python -m bench.faults
            if module.split(".")[0] in {"bench", "runwatch", "scripts", "tests"}:
                out.append("module:" + module)
    return out


def _module_exists(module: str) -> bool:
    for package, folder in PACKAGE_DIRS.items():
        if module == package or module.startswith(package + "."):
            module = folder + module[len(package):]
            break
    base = ROOT / module.replace(".", "/")
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _path_problems(page: Path) -> list[str]:
    problems = []
    for token in _path_tokens(page.read_text()):
        if token.startswith("module:"):
            if not _module_exists(token[7:]):
                problems.append(f"{_rel(page)}: no module {token[7:]}")
            continue
        if token.startswith(GENERATED) or re.search(r"[<>{}$]|\.\.\.", token):
            continue  # a placeholder (`bench/out/<name>.json`) or written at run time
        path, _, test_name = token.partition("::")
        for package, folder in PACKAGE_DIRS.items():  # an installed path: runwatch/collectors/...
            prefix = package.replace(".", "/")
            if path == prefix or path.startswith(prefix + "/"):
                path = folder + path[len(prefix):]
        matches = glob.glob(str(ROOT / path.rstrip("/")))
        if not matches:
            problems.append(f"{_rel(page)}: `{token}` does not exist")
        elif test_name and not re.search(rf"^\s*def {re.escape(test_name)}\(",
                                         Path(matches[0]).read_text(), re.M):
            problems.append(f"{_rel(page)}: `{token}`: no test {test_name}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_repository_paths_in_backticks_exist(page):
    problems = _path_problems(page)
    assert not problems, "\n".join(problems)


def test_the_path_checker_catches_a_stale_path(tmp_path):
    page = tmp_path / "x.md"
    page.write_text("`runwatch/kafka_broker.py`, `runwatch/transport/broker.py`, "
                    "`queries/alert_*.sql`, `bench/out/faults_fuzz.json`, "
                    "`python -m runwatch.cli ingest`, `python -m runwatch.nothing`, "
                    "`tests/cli/test_docs.py::test_no_such_test`\n")
    problems = _path_problems(page)
    assert len(problems) == 3, problems
    assert "kafka_broker" in problems[0] and "runwatch.nothing" in " ".join(problems)
