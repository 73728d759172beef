"""The layout's import rules, checked in fresh interpreters (``sys.modules`` after the import):
the light client loads nothing of the server and no heavy package; the deprecated top-level
``collectors`` name is the same modules as ``runwatch.collectors``, with a DeprecationWarning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER = ("runwatch.ingest", "runwatch.store", "runwatch.detect", "runwatch.alerts",
          "runwatch.query", "runwatch.serve", "runwatch.cli", "runwatch.transport",
          "runwatch.dashboard", "runwatch.demo", "runwatch.sidecar", "runwatch.errors",
          "runwatch.resources")
HEAVY = ("torch", "transformers", "duckdb", "pyarrow", "pandas", "streamlit", "altair", "numpy")


def _modules_after(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; "
                          "print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, cwd="/")
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.parametrize("code", [
    "import runwatch",
    "from runwatch import Collector, KeywordScorer, RepetitionScorer",
    "import runwatch.collectors.hooks, runwatch.collectors.generation, "
    "runwatch.collectors.embedding, runwatch.collectors.pipeline, runwatch.collectors.prompts, "
    "runwatch.collectors.wire, runwatch.collectors.spool",
    "from runwatch.collectors import Collector\n"
    "c = Collector(run_id='r', bootstrap_servers='127.0.0.1:1', spool_dir='/tmp/rw-layout-spool')\n"
    "c.log(step=0, prompts=['p'], completions=['c'], prompt_set='rollouts')\n"
    "c.close(timeout=0.5)",
])
def test_the_light_client_imports_nothing_of_the_server(code):
    loaded = _modules_after(code)
    server = [m for m in loaded if m.startswith(SERVER)]
    heavy = [m for m in loaded if m.split(".")[0] in HEAVY]
    assert not server, server
    assert not heavy, heavy
    assert "runwatch.collectors" in loaded or code == "import runwatch"


def test_no_generic_top_level_package_is_installed():
    """The wheel's top-level names (pyproject) are runwatch.* only."""
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert all(p == "runwatch" or p.startswith("runwatch.") for p in cfg["packages"])
    assert set(cfg["package-dir"]) <= {p for p in cfg["packages"]}


def test_the_deprecated_collectors_name_is_the_same_modules_with_a_warning():
    code = ("import warnings\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    from collectors import Collector\n"
            "    from collectors.wire import SCHEMA_VERSION\n"
            "import collectors, collectors.wire, runwatch.collectors as new, runwatch.collectors.wire\n"
            "print(Collector is new.Collector, collectors is new,"
            " collectors.wire is runwatch.collectors.wire,"
            " [str(x.message) for x in w if x.category is DeprecationWarning])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    same, pkg, sub, warnings = out.strip().split(" ", 3)
    assert (same, pkg, sub) == ("True", "True", "True")
    assert "runwatch.collectors" in warnings and warnings.count("deprecated") == 1


def test_runwatch_version_is_the_package_version():
    import runwatch

    out = subprocess.run([sys.executable, "-m", "runwatch.cli", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == f"runwatch {runwatch.__version__}"
