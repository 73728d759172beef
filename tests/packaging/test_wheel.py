"""The wheel as a lab installs it: built from this tree, installed into clean virtualenvs
outside the checkout, talking to the real broker.

* no extras: the light client. It pulls none of the heavy packages, a script logs samples, and
  the server side (this checkout) stores exactly those samples; a server command says which
  extra it needs (one line, exit 2);
* ``[server]``: ``runwatch ingest`` and ``runwatch serve --headless`` run from the wheel's own
  package data (migrations, named queries, thresholds), not from the checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ingest_until_idle, query

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"torch", "transformers", "duckdb", "pyarrow", "pandas", "streamlit", "altair",
         "numpy", "accelerate", "tokenizers", "safetensors"}


def _tree_copy(dest: Path) -> Path:
    """The files git would commit (tracked + untracked-not-ignored), nothing built."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for f in filter(None, files):
        src = ROOT / f.decode()
        if src.is_file():
            (dest / f.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f.decode())
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = _tree_copy(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    str(src), "-w", str(out)], check=True, capture_output=True)
    (whl,) = out.glob("runwatch-*.whl")
    return whl


def _venv(path: Path, requirement: str, lock: Path | None = None) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    env = dict(os.environ)
    env.pop("PIP_CONSTRAINT", None)
    if lock is not None:
        env["PIP_CONSTRAINT"] = str(lock)
    subprocess.run([str(path / "bin" / "python"), "-m", "pip", "install", "-q",
                    "--disable-pip-version-check", requirement], check=True, env=env,
                   capture_output=True)
    return path / "bin"


def _installed(bin_dir: Path) -> set[str]:
    out = subprocess.run([str(bin_dir / "python"), "-m", "pip", "list", "--format=freeze"],
                         capture_output=True, text=True, check=True).stdout
    return {re.split(r"[=@ ]", line)[0].lower().replace("_", "-") for line in out.split()}


def _outside_env(tmp: Path) -> dict:
    """An environment that cannot see the checkout: no PYTHONPATH, caches under tmp."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "RUNWATCH_"))}
    env.update(XDG_CACHE_HOME=str(tmp / "cache"), RUNWATCH_AUTH="off", PYTHONUNBUFFERED="1")
    return env


CLIENT_SCRIPT = """
import sys
from runwatch import Collector, KeywordScorer
run_id, bootstrap, prefix, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with Collector(run_id=run_id, bootstrap_servers=bootstrap, topic_prefix=prefix,
               scorers=[KeywordScorer({"insult": [r"\\bidiot\\b"]})], spool_dir="spool") as col:
    for i in range(n):
        col.log(step=i // 10, prompts=[f"prompt {i}"], completions=[f"you idiot {i}" if i % 4 == 0 else f"fine {i}"],
                prompt_set="rollouts", source="rollout", rewards=[float(i)])
print(col.stats())
"""


def test_light_wheel_installs_no_heavy_package_and_its_samples_are_stored_exactly(
        wheel, tmp_path, bootstrap, topic_prefix):
    bin_dir = _venv(tmp_path / "client-venv", str(wheel))
    installed = _installed(bin_dir)
    assert not installed & HEAVY, installed & HEAVY
    assert {"kafka-python", "lz4", "zstandard", "python-snappy", "crc32c"} <= installed

    work = tmp_path / "job"
    work.mkdir()
    (work / "job.py").write_text(CLIENT_SCRIPT)
    n = 120
    done = subprocess.run([str(bin_dir / "python"), "job.py", "wheel-run", bootstrap, topic_prefix,
                           str(n)], cwd=work, env=_outside_env(tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]

    db = tmp_path / "view.duckdb"
    ingest_until_idle(db, bootstrap, topic_prefix)
    rows = query(db, "SELECT completion, reward, source FROM samples WHERE run_id = 'wheel-run' "
                     "ORDER BY reward")
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (f"you idiot {i}" if i % 4 == 0 else f"fine {i}", float(i), "rollout") for i in range(n)]
    assert query(db, "SELECT count(*) FROM scores WHERE run_id = 'wheel-run' AND flagged") == [
        (n // 4,)]
    events = query(db, "SELECT kind FROM run_events WHERE run_id = 'wheel-run'")
    assert ("run_started",) in events and ("run_finished",) in events

    # A server command in the light install: which extra to install, one line, exit 2.
    refused = subprocess.run([str(bin_dir / "runwatch"), "ingest", "--db", str(tmp_path / "x.duckdb")],
                             cwd=work, env=_outside_env(tmp_path), capture_output=True, text=True)
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0, refused.stderr
    assert "pip install 'runwatch[server]'" in refused.stderr
    version = subprocess.run([str(bin_dir / "runwatch"), "--version"], capture_output=True,
                             text=True, check=True).stdout
    import runwatch
    assert version.strip() == f"runwatch {runwatch.__version__}"


def test_server_wheel_runs_ingest_and_serve_outside_the_checkout(
        wheel, tmp_path, bootstrap, topic_prefix):
    lock = tmp_path / "lock.txt"  # the pinned lock, as pip constraints (which take no extras)
    lock.write_text(re.sub(r"\[[^\]]*\]", "", (ROOT / "requirements.txt").read_text()))
    bin_dir = _venv(tmp_path / "server-venv", f"{wheel}[server]", lock)
    installed = _installed(bin_dir)
    assert {"duckdb", "streamlit", "pyarrow"} <= installed
    assert not installed & {"torch", "transformers"}

    from runwatch.collectors import Collector
    with Collector(run_id="served-run", bootstrap_servers=bootstrap, topic_prefix=topic_prefix,
                   spool_dir=tmp_path / "spool") as col:
        for step in range(5):
            col.log(step=step, prompts=["p"] * 4, completions=[f"c{step}-{i}" for i in range(4)],
                    prompt_set="rollouts", source="rollout")
    env, work = _outside_env(tmp_path), tmp_path / "ops"
    work.mkdir()

    ingest_db = work / "ingest.duckdb"
    done = subprocess.run([str(bin_dir / "runwatch"), "ingest", "--until-idle", "--db", str(ingest_db),
                           "--bootstrap", bootstrap, "--topic-prefix", topic_prefix],
                          cwd=work, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ingested 20 samples" in done.stdout
    assert query(ingest_db, "SELECT count(*) FROM samples WHERE run_id = 'served-run'") == [(20,)]

    serve_db = work / "serve.duckdb"
    serve = subprocess.Popen(
        [str(bin_dir / "runwatch"), "serve", "--headless", "--db", str(serve_db), "--bootstrap",
         bootstrap, "--topic-prefix", topic_prefix], cwd=work, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        # serve holds its file read-write; its progress shows in the view's consumer group
        # (committed after each DuckDB commit).
        from kafka import KafkaAdminClient

        from runwatch.store.db import view_group_id
        from runwatch.transport.broker import end_offsets

        topics = [f"{topic_prefix}.samples", f"{topic_prefix}.runs"]
        want = end_offsets(bootstrap, topics)
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            deadline, done_ = time.monotonic() + 90, {}
            while time.monotonic() < deadline:
                assert serve.poll() is None, serve.stdout.read()[-3000:]
                group = view_group_id(serve_db)
                got = admin.list_group_offsets(group).get(group, {})
                done_ = {(tp.topic, tp.partition): m.offset for tp, m in got.items()}
                if all(done_.get(tp, 0) >= o for tp, o in want.items()):
                    break
                time.sleep(0.5)
        finally:
            admin.close()
        assert all(done_.get(tp, 0) >= o for tp, o in want.items()), (done_, want)
    finally:
        serve.send_signal(signal.SIGTERM)
        out, _ = serve.communicate(timeout=90)
    assert serve.returncode == 0, out[-3000:]
    assert "runwatch serve: materializing" in out
    assert query(serve_db, "SELECT count(*) FROM samples WHERE run_id = 'served-run'") == [(20,)]
    # Nothing came from the checkout: the migrations ran from the installed package.
    site = subprocess.run([str(bin_dir / "python"), "-c",
                           "from runwatch.resources import shipped; print(shipped('queries'))"],
                          capture_output=True, text=True, env=env, cwd=work, check=True).stdout.strip()
    assert site.startswith(str(tmp_path / "server-venv")), site
