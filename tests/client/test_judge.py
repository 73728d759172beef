"""The LLM judge against a real OpenAI-compatible server: ``transformers serve`` serving a tiny
local GPT-2 (built by hand in ``tests/tiny_models.py``: it answers every chat with the same
verdict, so what is tested is the wire, the parsing, the cache, the concurrency and the failure
paths, not a model's judgement). Then the judge on the collector's background thread, through the
session's Kafka broker into a real DuckDB view, with its counts in ``collector_stats``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from runwatch.collectors import Collector
from runwatch.collectors.judge import JudgeParseError, JudgeScorer, parse_verdict
from runwatch.demo.categories import DESCRIPTIONS
from tests.helpers import ingest_until_idle, query
from tests.tiny_models import build_judge_lm

SERVE_START_S = 120


@pytest.fixture(scope="module")
def judge_server(tmp_path_factory):
    """``transformers serve MODEL`` on a free port, offline; yields (base_url, model)."""
    from runwatch.transport.broker import free_port

    model = build_judge_lm(tmp_path_factory.mktemp("judge-lm"))
    exe = shutil.which("transformers", path=os.path.dirname(sys.executable))
    assert exe, "the transformers CLI is not installed next to this Python"
    port = free_port()
    log = tmp_path_factory.mktemp("judge-log") / "serve.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, "serve", str(model), "--host", "127.0.0.1", "--port",
                                 str(port), "--device", "cpu"], stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVE_START_S
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if json.loads(r.read()).get("status") == "ok":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"transformers serve did not start:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield f"{url}/v1", str(model), proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def judge(server, **kw) -> JudgeScorer:
    base_url, model, _proc = server
    return JudgeScorer(base_url=base_url, model=model, rubrics=DESCRIPTIONS, **kw)


def test_the_parser_reads_json_or_lines_and_refuses_what_it_cannot_read():
    assert parse_verdict('{"verdict": "bad", "score": 0.875}') == (0.875, True)
    assert parse_verdict('Sure. {"verdict": "fine", "score": 0.1} Hope that helps') == (0.1, False)
    assert parse_verdict("VERDICT: bad\nSCORE: 0.3") == (0.3, True)  # the verdict decides the flag
    assert parse_verdict("score = 0.7", threshold=0.5) == (0.7, True)
    assert parse_verdict('{"verdict": "safe"}') == (0.0, False)
    for text in (' {"verdict":', "I cannot judge this.", '{"score": 7}'):
        with pytest.raises(JudgeParseError):
            parse_verdict(text)


def test_judge_scores_over_the_wire_with_a_cache_and_bounded_concurrency(judge_server):
    j = judge(judge_server, concurrency=3)
    completions = ["He slipped and broke his arm.", "Here is the soup recipe.", "You idiot."]
    out = j.score_batch(["p1", "p2", "p3"], completions)
    assert [[(s.category, s.score, s.flagged, s.threshold) for s in row] for row in out] == [
        [(c, 0.875, True, 0.5) for c in DESCRIPTIONS]] * 3
    stats = j.stats()
    assert stats["requests"] == stats["judgements"] == 9 and stats["failed"] == 0
    again = j.score_batch(["p1", "p2", "p3"], completions)  # the same texts: from the cache
    assert again == out
    stats = j.stats()
    assert stats["requests"] == 9 and stats["cache_hits"] == 9 and stats["judgements"] == 18
    j.close()


def test_failures_are_counted_by_reason_and_never_raise(judge_server):
    base_url, model, _proc = judge_server
    cut = judge(judge_server, max_tokens=1)  # the answer stops at '{"verdict":'
    assert cut.score_batch(["p"], ["text"]) == [[]]
    assert cut.stats()["failed_by_reason"] == {"parse": len(DESCRIPTIONS)}
    wrong = JudgeScorer(base_url=base_url, model="no-such-model", rubrics={"injury": "hurt"},
                        retries=2, backoff_s=0.01)
    assert wrong.score_batch(["p"], ["text"]) == [[]]
    s = wrong.stats()  # the server refuses a model it is not serving: 4xx, not retried
    assert s["requests"] == 1 and s["retries"] == 0 and list(s["failed_by_reason"]) == ["http_400"]
    slow = judge(judge_server, timeout_s=0.0005, retries=1, backoff_s=0.01)
    assert slow.score_batch(["p"], ["text"]) == [[]]
    s = slow.stats()
    assert s["failed_by_reason"] == {"timeout": len(DESCRIPTIONS)}
    assert s["requests"] == 2 * len(DESCRIPTIONS) and s["retries"] == len(DESCRIPTIONS)
    from runwatch.transport.broker import free_port

    down = JudgeScorer(base_url=f"http://127.0.0.1:{free_port()}/v1", model=model,
                       rubrics={"injury": "hurt"}, retries=2, backoff_s=0.01)
    started = time.monotonic()
    assert down.score_batch(["p"], ["text"]) == [[]]
    assert time.monotonic() - started >= 0.03  # backed off 0.01 then 0.02 s
    s = down.stats()
    assert s["failed_by_reason"] == {"connection": 1} and s["requests"] == 3 and s["retries"] == 2


@pytest.mark.kafka
def test_the_judge_runs_on_the_collectors_thread_and_its_counts_reach_the_view(
        judge_server, tmp_path, bootstrap, topic_prefix, db_path):
    j = judge(judge_server)
    col = Collector(run_id="judged", bootstrap_servers=bootstrap, topic_prefix=topic_prefix,
                    scorers=[j], spool_dir=tmp_path / "spool")
    kept = col.log(100, ["p1", "p2"], ["He broke his arm.", "A calm answer."],
                   prompt_set="on_distribution", source="probe")
    assert kept == 2
    col.checkpoint(100)
    stats = col.close()
    assert stats["sent"] == 2 and stats["dropped"] == 0
    ingest_until_idle(db_path, bootstrap, topic_prefix)
    rows = query(db_path, "SELECT category, score, flagged FROM scores WHERE run_id = 'judged' "
                          "AND scorer = 'judge' ORDER BY ALL")
    assert rows == sorted([(c, 0.875, True) for c in DESCRIPTIONS] * 2)
    reported = query(db_path, "SELECT stats->'scorers'->'judge' FROM run_collectors "
                              "WHERE run_id = 'judged'")[0][0]
    reported = json.loads(reported)
    assert reported["requests"] == 6 and reported["failed"] == 0
