"""Dashboard authentication: hashed passwords, roles, the login gate, session expiry, proxy
mode, and the `runwatch users` / `runwatch serve` commands that configure it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from runwatch.dashboard import connection
from runwatch.serve import auth
from runwatch.errors import ConfigError
from tests.dashboard_seed import build

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


@pytest.fixture
def users_file(tmp_path) -> Path:
    path = tmp_path / "users.json"
    auth.add_user(path, "vic", "viewer", "viewer-pass-1")
    auth.add_user(path, "rita", "reviewer", "reviewer-pass-1")
    auth.add_user(path, "proxied", "reviewer", None)
    return path


@pytest.fixture
def seeded(tmp_path, monkeypatch, users_file):
    db = tmp_path / "seed.duckdb"
    build(db)
    connection.clear_service()
    monkeypatch.setenv("RUNWATCH_DB", str(db))
    monkeypatch.setenv("RUNWATCH_AUTH", "password")
    monkeypatch.setenv("RUNWATCH_USERS_FILE", str(users_file))
    return db


def test_passwords_are_stored_hashed_salted_and_verified(users_file):
    text = users_file.read_text()
    assert "viewer-pass-1" not in text and "reviewer-pass-1" not in text
    users = json.loads(text)["users"]
    assert users["vic"]["password_hash"].startswith("scrypt$")
    assert users["vic"]["password_hash"] != auth.hash_password("viewer-pass-1")  # salted
    assert oct(users_file.stat().st_mode & 0o777) == "0o600"
    cfg = auth.AuthConfig(users_file=users_file)
    assert auth.authenticate(cfg, "vic", "viewer-pass-1") == auth.User("vic", "viewer")
    assert auth.authenticate(cfg, "vic", "wrong") is None
    assert auth.authenticate(cfg, "nobody", "viewer-pass-1") is None
    assert auth.authenticate(cfg, "proxied", "") is None  # no password: proxy mode only


def test_roles_and_permissions():
    assert not auth.User("v", "viewer").can("act")
    assert auth.User("r", "reviewer").can("act") and not auth.User("r", "reviewer").can("admin")
    assert auth.User("a", "admin").can("act") and auth.User("a", "admin").can("admin")


def test_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="auth mode"):
        auth.AuthConfig.from_env({"RUNWATCH_AUTH": "maybe"})
    with pytest.raises(ConfigError, match="no users"):
        auth.check_ready(auth.AuthConfig(users_file=tmp_path / "none.json"))
    with pytest.raises(ConfigError, match="role"):
        auth.add_user(tmp_path / "u.json", "x", "root", "password-1")


def test_proxy_mode_takes_the_user_from_the_header_and_the_role_from_the_file(users_file):
    cfg = auth.AuthConfig(mode="proxy", users_file=users_file)
    assert auth.proxy_user(cfg, {"X-Forwarded-User": "proxied"}) == auth.User("proxied", "reviewer")
    assert auth.proxy_user(cfg, {"X-Forwarded-User": "stranger"}) == auth.User("stranger", "viewer")
    assert auth.proxy_user(cfg, {}) is None
    assert auth.proxy_user(cfg, {"X-Forwarded-User": "bad name; drop"}) is None


def _sign_in(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input(key="rw.login.name").input(name)
    at.text_input(key="rw.login.password").input(password)
    return at.button[0].click().run()


def test_the_dashboard_shows_only_the_login_page_until_signed_in(seeded):
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert [s.value for s in at.subheader] == ["Sign in"]
    assert not at.dataframe  # no data before signing in
    _sign_in(at, "vic", "nope")
    assert [e.value for e in at.error] == ["Wrong user name or password."]
    assert not at.dataframe
    _sign_in(at, "vic", "viewer-pass-1")
    assert not at.error
    assert "Signed in as **vic** (viewer)" in [c.value for c in at.sidebar.caption]
    assert at.dataframe  # the runs table


def test_sessions_expire(seeded, monkeypatch):
    monkeypatch.setenv("RUNWATCH_SESSION_TTL_S", "1")
    at = AppTest.from_file(APP, default_timeout=30).run()
    _sign_in(at, "rita", "reviewer-pass-1")
    assert "Signed in as **rita** (reviewer)" in [c.value for c in at.sidebar.caption]
    time.sleep(1.2)
    at.run()
    assert [s.value for s in at.subheader] == ["Sign in"]
    assert "Your session expired; please sign in again." in [i.value for i in at.info]


def test_repeated_failures_lock_the_form(seeded):
    at = AppTest.from_file(APP, default_timeout=30).run()
    for _ in range(auth_failures := 5):
        _sign_in(at, "vic", "wrong")
    _sign_in(at, "vic", "viewer-pass-1")
    assert any("Too many failed attempts" in e.value for e in at.error), auth_failures
    assert not at.dataframe


def test_serve_refuses_to_start_a_dashboard_nobody_can_sign_in_to(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "runwatch.cli", "serve", "--db", str(tmp_path / "v.duckdb"),
         "--auth", "password", "--users-file", str(tmp_path / "missing.json")],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "no users in" in done.stderr and "runwatch users add" in done.stderr


def test_users_command_adds_lists_and_removes(tmp_path):
    path = tmp_path / "u.json"
    run = lambda *a, **kw: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "runwatch.cli", "users", *a, "--users-file", str(path)],
        capture_output=True, text=True, timeout=60, **kw)
    assert run("add", "ann", "--role", "admin", "--password-stdin", input="long-password\n").returncode == 0
    assert run("list").stdout.split() == ["ann", "admin", "password"]
    short = run("add", "bob", "--password-stdin", input="short\n")
    assert short.returncode == 2 and "at least 8" in short.stderr
    assert run("remove", "ann").returncode == 0
    assert "no users" in run("list").stdout
