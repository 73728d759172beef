"""The dashboard's login gate and the signed-in user (settings: runwatch/serve/auth.py).

``app.py`` calls :func:`require_login` before any page runs: in ``password`` mode it shows the
login form until a user signs in (and again once the session is older than the TTL); in
``proxy`` mode it takes the user from the trusted header; in ``off`` mode (explicitly configured
local use) everyone is an admin. Pages ask :func:`user` who is acting and :func:`can` whether
they may act on alerts or label samples.
"""

from __future__ import annotations

import time

import streamlit as st

from runwatch.serve.auth import AuthConfig, User, authenticate, proxy_user

_SESSION = "_rw_auth"      # {"name", "role", "at"} of the signed-in user
_FAILURES = "_rw_auth_failures"
MAX_FAILURES = 5           # then the form waits
LOCKOUT_S = 30.0


def config() -> AuthConfig:
    return AuthConfig.from_env()


def _signed_in(cfg: AuthConfig) -> User | None:
    s = st.session_state.get(_SESSION)
    if not s:
        return None
    if time.time() - s["at"] > cfg.session_ttl_s:
        st.session_state.pop(_SESSION, None)
        st.session_state["_rw_auth_expired"] = True
        return None
    return User(s["name"], s["role"])


def _login_form(cfg: AuthConfig) -> None:
    st.title("runwatch")
    st.subheader("Sign in")
    if st.session_state.pop("_rw_auth_expired", False):
        st.info("Your session expired; please sign in again.")
    failures = st.session_state.get(_FAILURES, (0, 0.0))
    locked = failures[0] >= MAX_FAILURES and time.time() - failures[1] < LOCKOUT_S
    with st.form("rw.login"):
        name = st.text_input("User name", key="rw.login.name")
        password = st.text_input("Password", type="password", key="rw.login.password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if locked:
        st.error(f"Too many failed attempts; wait {LOCKOUT_S:.0f} s.")
        return
    if submitted:
        user = authenticate(cfg, name, password)
        if user is None:
            st.session_state[_FAILURES] = (failures[0] + 1, time.time())
            st.error("Wrong user name or password.")
            return
        st.session_state.pop(_FAILURES, None)
        st.session_state[_SESSION] = {"name": user.name, "role": user.role, "at": time.time()}
        st.rerun()


def needs_login() -> bool:
    """Would :func:`require_login` show the login page (or stop) right now?"""
    cfg = config()
    if cfg.mode == "off":
        return False
    if cfg.mode == "proxy":
        return proxy_user(cfg, st.context.headers) is None
    s = st.session_state.get(_SESSION)
    return not s or time.time() - s["at"] > cfg.session_ttl_s


def require_login() -> User | None:
    """The signed-in user; draws the login page and stops the script when there is none.

    Returns None in ``off`` mode (no authentication: the sidebar asks for a name instead).
    """
    cfg = config()
    if cfg.mode == "off":
        return None
    if cfg.mode == "proxy":
        user = proxy_user(cfg, st.context.headers)
        if user is None:
            st.error(f"Not signed in: the reverse proxy did not send the `{cfg.proxy_header}` "
                     "header. Open the dashboard through the proxy.")
            st.stop()
        st.session_state[_SESSION] = {"name": user.name, "role": user.role, "at": time.time()}
        _sidebar(user, logout=False)
        return user
    user = _signed_in(cfg)
    if user is None:
        _login_form(cfg)
        st.stop()
    _sidebar(user, logout=True)
    return user


def _sidebar(user: User, *, logout: bool) -> None:
    st.sidebar.caption(f"Signed in as **{user.name}** ({user.role})")
    if logout and st.sidebar.button("Sign out", key="rw.logout"):
        st.session_state.pop(_SESSION, None)
        st.rerun()


def user() -> User | None:
    """The signed-in user, or None when authentication is off."""
    if config().mode == "off":
        return None
    s = st.session_state.get(_SESSION)
    return User(s["name"], s["role"]) if s else None


def can(permission: str) -> bool:
    """May the current user do this ("view", "act", "admin")? Everyone may with auth off."""
    if config().mode == "off":
        return True
    u = user()
    return u is not None and u.can(permission)
