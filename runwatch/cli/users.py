"""``runwatch users add|remove|list|token``: the dashboard's users file (see runwatch/serve/auth.py)."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from runwatch.serve import auth
from runwatch.errors import ConfigError


def _password(args) -> str:
    if args.password_stdin:
        value = sys.stdin.readline().rstrip("\n")
    elif sys.stdin.isatty():
        value = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != value:
            raise ConfigError("the two passwords differ")
    else:
        raise ConfigError("no terminal to ask for the password: pass --password-stdin and pipe it")
    if len(value) < 8:
        raise ConfigError("use a password of at least 8 characters")
    return value


def cmd_users(args) -> int:
    path = Path(args.users_file)
    if args.action == "list":
        users = auth.load_users(path)
        for name, entry in sorted(users.items()):
            kind = "password" if entry.get("password_hash") else "proxy only"
            tokens = entry.get("tokens") or {}
            ids = ", ".join(f"{i} ({t.get('created', '?')})" for i, t in sorted(tokens.items()))
            print(f"{name}\t{entry['role']}\t{kind}" + (f"\tAPI tokens: {ids}" if ids else ""))
        if not users:
            print(f"no users in {path}")
        return 0
    if not args.name:
        raise ConfigError(f"`runwatch users {args.action}` needs a user name")
    if args.action == "add":
        password = None if args.no_password else _password(args)
        auth.add_user(path, args.name, args.role, password)
        print(f"{args.name} ({args.role}) saved in {path}")
        return 0
    if args.action == "token":
        if args.revoke:
            if not auth.revoke_token(path, args.name, args.revoke):
                raise ConfigError(f"user {args.name!r} has no API token {args.revoke!r} in {path}")
            print(f"API token {args.revoke} of {args.name} revoked")
            return 0
        token_id, token = auth.create_token(path, args.name)
        print(token)
        print(f"API token {token_id} for {args.name} saved (hashed) in {path}; it is shown only "
              f"once. Use it as `runwatch sql --server URL --token TOKEN` or RUNWATCH_TOKEN; "
              f"revoke it with `runwatch users token {args.name} --revoke {token_id}`.",
              file=sys.stderr)
        return 0
    if not auth.remove_user(path, args.name):
        raise ConfigError(f"no user {args.name!r} in {path}")
    print(f"{args.name} removed from {path}")
    return 0


def register(sub) -> None:
    u = sub.add_parser("users", help="manage the dashboard's users (hashed passwords, roles)")
    u.add_argument("action", choices=["add", "remove", "list", "token"])
    u.add_argument("name", nargs="?")
    u.add_argument("--role", choices=auth.ROLES, default="viewer",
                   help="viewer (read), reviewer (+ act on alerts, label), admin [viewer]")
    u.add_argument("--users-file", default=os.environ.get(auth.ENV_USERS_FILE) or auth.DEFAULT_USERS_FILE,
                   help=f"[env {auth.ENV_USERS_FILE}, default {auth.DEFAULT_USERS_FILE}]")
    u.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    u.add_argument("--no-password", action="store_true",
                   help="a role for a user the reverse proxy authenticates (proxy mode)")
    u.add_argument("--revoke", metavar="TOKEN_ID", default=None,
                   help="with `token`: revoke this API token of the user instead of creating one")
    u.set_defaults(func=cmd_users)
