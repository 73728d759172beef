"""Who may use the dashboard, and as what: users with hashed passwords, roles, auth modes.

Modes (``runwatch serve --auth``, env ``RUNWATCH_AUTH``):

* ``password`` (the default): users from a JSON file (``--users-file``, env
  ``RUNWATCH_USERS_FILE``, default ``runwatch-users.json``) with scrypt-hashed passwords; manage it
  with ``runwatch users add|remove|list``. The service refuses to start without a user.
* ``proxy``: a trusted reverse proxy authenticates and passes the user name in a header
  (``RUNWATCH_AUTH_PROXY_HEADER``, default ``X-Forwarded-User``). The user's role comes from the
  users file (no password needed there) or ``RUNWATCH_AUTH_PROXY_ROLE`` (default ``viewer``).
  Only safe when the dashboard is reachable through that proxy alone and the proxy overwrites
  the header.
* ``off``: no login; for local use only, and only when asked for explicitly. Everyone is an
  admin and names themselves in the sidebar.

Roles: ``viewer`` (read everything), ``reviewer`` (+ act on alerts, label samples), ``admin``
(+ everything a later feature restricts). Sessions expire after ``RUNWATCH_SESSION_TTL_S``
seconds (default 8 hours) and on closing the tab.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from runwatch.errors import ConfigError

ROLES = ("viewer", "reviewer", "admin")
MODES = ("password", "proxy", "off")
PERMISSIONS = {
    "view": {"viewer", "reviewer", "admin"},
    "act": {"reviewer", "admin"},      # alert actions and labels
    "admin": {"admin"},
}
ENV_MODE = "RUNWATCH_AUTH"
ENV_USERS_FILE = "RUNWATCH_USERS_FILE"
ENV_PROXY_HEADER = "RUNWATCH_AUTH_PROXY_HEADER"
ENV_PROXY_ROLE = "RUNWATCH_AUTH_PROXY_ROLE"
ENV_SESSION_TTL = "RUNWATCH_SESSION_TTL_S"
DEFAULT_USERS_FILE = "runwatch-users.json"
DEFAULT_TTL_S = 8 * 3600
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}


@dataclass(frozen=True)
class User:
    name: str
    role: str

    def can(self, permission: str) -> bool:
        return self.role in PERMISSIONS[permission]


@dataclass(frozen=True)
class AuthConfig:
    mode: str = "password"
    users_file: Path = Path(DEFAULT_USERS_FILE)
    proxy_header: str = "X-Forwarded-User"
    proxy_role: str = "viewer"
    session_ttl_s: float = DEFAULT_TTL_S

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"auth mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.proxy_role not in ROLES:
            raise ConfigError(f"{ENV_PROXY_ROLE} must be one of {', '.join(ROLES)}")
        if not self.session_ttl_s > 0:
            raise ConfigError(f"{ENV_SESSION_TTL} must be > 0")

    @classmethod
    def from_env(cls, env=None, **overrides) -> "AuthConfig":
        env = os.environ if env is None else env
        values = {
            "mode": env.get(ENV_MODE, "").strip() or "password",
            "users_file": Path(env.get(ENV_USERS_FILE, "").strip() or DEFAULT_USERS_FILE),
            "proxy_header": env.get(ENV_PROXY_HEADER, "").strip() or "X-Forwarded-User",
            "proxy_role": env.get(ENV_PROXY_ROLE, "").strip() or "viewer",
        }
        ttl = env.get(ENV_SESSION_TTL, "").strip()
        if ttl:
            try:
                values["session_ttl_s"] = float(ttl)
            except ValueError:
                raise ConfigError(f"{ENV_SESSION_TTL} must be a number of seconds") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["users_file"] = Path(values["users_file"])
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The settings as environment variables (how serve hands them to the dashboard)."""
        return {ENV_MODE: self.mode, ENV_USERS_FILE: str(self.users_file),
                ENV_PROXY_HEADER: self.proxy_header, ENV_PROXY_ROLE: self.proxy_role,
                ENV_SESSION_TTL: str(self.session_ttl_s)}


# ------------------------------------------------------------------------------ passwords


def hash_password(password: str) -> str:
    if not password:
        raise ConfigError("the password is empty")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, **_SCRYPT)
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt)}${b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt),
                             n=int(n), r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


# ------------------------------------------------------------------------------ users file


def load_users(path: Path) -> dict[str, dict]:
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        users = data["users"]
        assert isinstance(users, dict)
    except (ValueError, KeyError, AssertionError, OSError) as exc:
        raise ConfigError(f"cannot read the users file {path}: {exc}") from None
    for name, entry in users.items():
        if not isinstance(entry, dict) or entry.get("role") not in ROLES:
            raise ConfigError(f"users file {path}: user {name!r} needs a role in {', '.join(ROLES)}")
    return users


def save_users(path: Path, users: dict[str, dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".users-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump({"users": users}, f, indent=1, sort_keys=True)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def add_user(path: Path, name: str, role: str, password: str | None) -> None:
    if not _NAME.match(name):
        raise ConfigError("a user name is 1-64 letters, digits or _ . @ -")
    if role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(ROLES)}")
    users = load_users(path)
    entry = {"role": role}
    if password is not None:
        entry["password_hash"] = hash_password(password)
    users[name] = entry
    save_users(path, users)


def remove_user(path: Path, name: str) -> bool:
    users = load_users(path)
    if users.pop(name, None) is None:
        return False
    save_users(path, users)
    return True


# ------------------------------------------------------------------------------ API tokens
#
# A token is ``rwt_<id>_<secret>`` (id: 8 hex digits, secret: 32 random bytes, url-safe). The
# users file keeps, per user, ``tokens: {id: {"sha256": ..., "created": ...}}``: the SHA-256 of
# the whole token (a 256-bit random secret needs no slow hash), never the token itself. Revoking
# deletes the entry; removing the user removes their tokens.

_TOKEN = re.compile(r"^rwt_([0-9a-f]{8})_[A-Za-z0-9_-]{20,}$")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(path: Path, name: str) -> tuple[str, str]:
    """A new API token for user ``name``: ``(token_id, token)``; only the hash is stored."""
    from datetime import datetime, timezone

    users = load_users(path)
    if name not in users:
        raise ConfigError(f"no user {name!r} in {path}: add one with `runwatch users add {name}`")
    token_id = secrets.token_hex(4)
    token = f"rwt_{token_id}_{secrets.token_urlsafe(32)}"
    users[name].setdefault("tokens", {})[token_id] = {
        "sha256": _token_hash(token),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    save_users(path, users)
    return token_id, token


def revoke_token(path: Path, name: str, token_id: str) -> bool:
    users = load_users(path)
    tokens = (users.get(name) or {}).get("tokens") or {}
    if tokens.pop(token_id, None) is None:
        return False
    save_users(path, users)
    return True


def token_user(config: AuthConfig, token: str) -> User | None:
    """The user an API token belongs to (with their role now), or None: unknown, revoked or
    malformed. Compared in constant time."""
    match = _TOKEN.match((token or "").strip())
    if not match:
        return None
    token_id, digest = match.group(1), _token_hash(token.strip())
    for name, entry in load_users(config.users_file).items():
        stored = ((entry.get("tokens") or {}).get(token_id) or {}).get("sha256")
        if stored and hmac.compare_digest(stored, digest):
            return User(name, entry["role"])
    return None


def authenticate(config: AuthConfig, name: str, password: str) -> User | None:
    """The user when the name and password match (password mode), else None."""
    entry = load_users(config.users_file).get(name.strip())
    stored = (entry or {}).get("password_hash")
    if not stored:
        verify_password(password, hash_password("timing-equaliser"))  # same cost either way
        return None
    if not verify_password(password, stored):
        return None
    return User(name.strip(), entry["role"])


def proxy_user(config: AuthConfig, headers) -> User | None:
    """The user named by the trusted proxy's header, with their role (proxy mode)."""
    name = (headers.get(config.proxy_header) or "").strip() if headers else ""
    if not name or not _NAME.match(name):
        return None
    entry = load_users(config.users_file).get(name)
    return User(name, entry["role"] if entry else config.proxy_role)


def check_ready(config: AuthConfig) -> None:
    """Refuse to serve a password-protected dashboard nobody can log in to."""
    if config.mode == "password":
        users = load_users(config.users_file)
        if not any(u.get("password_hash") for u in users.values()):
            raise ConfigError(
                f"no users in {config.users_file}: add one with `runwatch users add NAME --role "
                f"admin --users-file {config.users_file}`, or run with `--auth off` (local use "
                f"only)")
