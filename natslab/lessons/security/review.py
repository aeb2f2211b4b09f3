"""A least-privilege review of a server's security settings, and of secret files on disk."""
from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any, Iterable, Mapping

_BCRYPT = re.compile(r"^\$2[abxy]\$\d\d\$")


def _users(conf: Mapping[str, Any]) -> Iterable[tuple[str, dict]]:
    auth = conf.get("authorization") or {}
    for u in auth.get("users", []) or []:
        yield "", u
    for name, acct in (conf.get("accounts") or {}).items():
        for u in (acct or {}).get("users", []) or []:
            yield name, u


def _allows_everything(perm: Any) -> bool:
    if perm is None:
        return True
    allow = perm.get("allow") if isinstance(perm, Mapping) else perm
    if allow is None:
        return not (isinstance(perm, Mapping) and perm.get("deny"))
    allow = [allow] if isinstance(allow, str) else list(allow)
    return ">" in allow


def review(srv, config: Mapping[str, Any] | None = None) -> list[str]:
    """Findings a security review would raise about ``srv`` (its ``/varz`` and its config).

    An empty list means nothing obvious: TLS on, every user authenticated with a hashed
    password, an NKEY or a JWT, and no user allowed everything.
    """
    conf = dict(config if config is not None else getattr(srv, "extra", {}) or {})
    varz = srv.monitor("varz")
    out = []
    if not varz.get("tls_required"):
        out.append("no TLS: passwords and messages cross the network readable by anyone on the path")
    if not varz.get("auth_required"):
        out.append("no authentication: anyone who can reach the port may connect")
    auth = conf.get("authorization") or {}
    if auth.get("token") and not _BCRYPT.match(str(auth["token"])):
        out.append("a shared token in clear text: one secret for every client, no per-user permissions")
    for account, u in _users(conf):
        who = u.get("user") or (u.get("nkey", "")[:10] + "...")
        if account:
            who += f" (account {account})"
        pw = u.get("password")
        if pw is not None and not _BCRYPT.match(str(pw)):
            out.append(f"user {who}: password stored in clear text; store a bcrypt hash")
        perms = u.get("permissions") or {}
        if _allows_everything(perms.get("publish")):
            out.append(f"user {who}: may publish to every subject")
        if _allows_everything(perms.get("subscribe")):
            out.append(f"user {who}: may subscribe to every subject")
    return out


def file_mode(path: str | Path) -> str:
    """The permission bits of ``path`` as ``0o600``-style text."""
    return oct(stat.S_IMODE(Path(path).stat().st_mode))


def exposed_secrets(directory: str | Path) -> list[str]:
    """Secret files (seeds, creds, private keys) under ``directory`` that others could read."""
    bad = []
    for p in sorted(Path(directory).rglob("*")):
        if p.is_file() and (p.suffix in (".creds", ".nk", ".seed") or p.name.endswith("-key.pem")):
            if stat.S_IMODE(p.stat().st_mode) & 0o077:
                bad.append(f"{p.name} is {file_mode(p)}: readable beyond its owner")
    return bad
