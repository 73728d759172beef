"""Login and roles in a real browser: ``runwatch serve --auth password`` with a drifting run (real
broker, real detector). An unauthenticated browser sees only the login page; a viewer sees the
alert but cannot acknowledge it; a reviewer acknowledges it, and the action reaches Kafka with
the reviewer as its actor."""

from __future__ import annotations

import time

import pytest

from runwatch.collectors.wire import encode_batch, run_event
from runwatch.serve import auth
from tests.browser_helpers import CHROMIUM_ARGS, Serve, chromium_path
from tests.helpers import drift_records, produce_raw
from tests.alerts.test_alerts_kafka import _alert_records

pytestmark = [
    pytest.mark.browser,
    pytest.mark.kafka,
    pytest.mark.skipif(chromium_path() is None, reason="chromium is not on PATH"),
]
LOAD_S = 60


def _sign_in(page, url: str, name: str, password: str) -> None:
    page.goto(url)
    page.get_by_role("heading", name="Sign in").wait_for()
    page.get_by_label("User name", exact=True).fill(name)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text(f"Signed in as {name}").wait_for()


def test_login_page_viewer_cannot_act_reviewer_can(tmp_path, bootstrap, topic_prefix):
    from playwright.sync_api import sync_playwright

    users = tmp_path / "users.json"
    auth.add_user(users, "vic", "viewer", "viewer-pass-1")
    auth.add_user(users, "rita", "reviewer", "reviewer-pass-1")
    run_id = "auth-run"
    serve = Serve(db=tmp_path / "view.duckdb", bootstrap=bootstrap, topic_prefix=topic_prefix,
                  extra_args=["--auth", "password", "--users-file", str(users)])
    try:
        serve.wait_healthy(timeout=LOAD_S)
        records = drift_records(run_id, {"red_team": [0.03] * 5 + [0.30] * 5})
        by_step: dict[int, list] = {}
        for r in records:
            by_step.setdefault(r["step"], []).append(r)
        produce_raw(bootstrap, f"{topic_prefix}.samples",
                    [encode_batch(run_id, rs) for _, rs in sorted(by_step.items())], key=run_id.encode())
        produce_raw(bootstrap, f"{topic_prefix}.runs",
                    [encode_batch(run_id, [run_event("run_finished", run_id, status="completed")])],
                    key=run_id.encode())
        alerts_topic = f"{topic_prefix}.alerts"
        opened = _alert_records(bootstrap, alerts_topic, lambda rs: any(r["action"] == "opened" for r in rs))
        alert_id = next(r["alert_id"] for r in opened if r["action"] == "opened")
        url = f"{serve.url}/alerts?alert={alert_id}"

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            try:
                # Not signed in: the login page and nothing else.
                page = browser.new_page()
                page.set_default_timeout(LOAD_S * 1000)
                page.goto(url)
                page.get_by_role("heading", name="Sign in").wait_for()
                assert page.get_by_text(alert_id).count() == 0
                assert page.get_by_role("button", name="Acknowledge").count() == 0
                page.get_by_label("User name", exact=True).fill("vic")
                page.get_by_label("Password", exact=True).fill("wrong-password")
                page.get_by_role("button", name="Sign in").click()
                page.get_by_text("Wrong user name or password.").wait_for()
                page.close()

                # A viewer reads the alert, but gets no actions.
                viewer = browser.new_context().new_page()
                viewer.set_default_timeout(LOAD_S * 1000)
                _sign_in(viewer, url, "vic", "viewer-pass-1")
                try:
                    viewer.get_by_text("viewers can read alerts but not act on them").wait_for()
                except Exception:
                    raise AssertionError(viewer.inner_text("body")[-3000:]) from None
                assert viewer.get_by_role("button", name="Acknowledge").count() == 0
                assert viewer.get_by_role("button", name="Resolve").count() == 0

                # A reviewer acknowledges it.
                reviewer = browser.new_context().new_page()
                reviewer.set_default_timeout(LOAD_S * 1000)
                _sign_in(reviewer, url, "rita", "reviewer-pass-1")
                reviewer.get_by_role("button", name="Acknowledge").click()
                reviewer.get_by_text("Acknowledged.").wait_for()
            finally:
                browser.close()
        records = _alert_records(bootstrap, alerts_topic, lambda rs: any(
            r["kind"] == "alert_event" and r["action"] == "acknowledged" for r in rs))
        acks = [r for r in records if r["kind"] == "alert_event" and r["action"] == "acknowledged"]
        assert [(r["alert_id"], r["actor"]) for r in acks] == [(alert_id, "rita")]
        time.sleep(0.5)
    finally:
        rc = serve.terminate(timeout=60)
        out = serve.output()
        serve.close()
    assert rc == 0, out[-3000:]
