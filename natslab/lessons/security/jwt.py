"""Decentralized auth: operator, account and user JWTs signed with NKEYs.

A NATS JWT is three base64url parts, ``header.claims.signature``; the header says
``{"typ": "JWT", "alg": "ed25519-nkey"}``, the claims are JSON with the issuer's public NKEY in
``iss`` and the NATS-specific part under ``nats``, and the signature is the issuer's Ed25519
signature over ``header.claims``.  The chain of trust is operator -> account -> user: the
server trusts the operator (its config names the operator JWT), an account JWT is valid when
the operator (or one of its signing keys) signed it, and a user JWT when its account (or one of
the account's signing keys) signed it.

No maintained Python library covers what the course needs (the PyPI ``nats-jwt`` package
calls itself untested and has no auth-callout claims), so this module encodes the few claim
types itself, with ``nkeys`` doing the signing.  Every claim it writes is accepted or rejected
by a real nats-server in the lessons and in ``tests/test_security.py``.
"""
from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from ...runtime import confgen
from ...runtime.client import connect
from ...errors import NatslabError
from .keys import Key, new_key, secrets_dir, verify, write_secret

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
NO_LIMIT = -1


class JWTError(NatslabError):
    """A token that is malformed or whose signature does not match its issuer."""


# ------------------------------------------------------------------------------ encoding
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def encode(claims: Mapping[str, Any], signer: Key) -> str:
    """Sign ``claims`` with ``signer``: sets ``iss``, ``iat`` (unless given) and ``jti``."""
    body = {k: v for k, v in claims.items() if k != "jti"}
    body["iss"] = signer.public
    body.setdefault("iat", int(time.time()))
    digest = hashlib.new("sha512_256", _json(body)).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    signed = f"{_b64(_json(HEADER))}.{_b64(_json(body))}"
    return f"{signed}.{_b64(signer.sign(signed.encode()))}"


def decode(token: str | bytes, verify_signature: bool = True) -> dict:
    """The claims of ``token`` as a dict; with ``verify_signature`` the issuer's signature is checked."""
    if isinstance(token, bytes):
        token = token.decode()
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise JWTError("That is not a JWT: it must have three parts separated by dots.",
                       "pass the token itself (it starts with eyJ).")
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
        sig = _unb64(parts[2])
    except ValueError:
        raise JWTError("That JWT does not decode (bad base64 or JSON).", "pass the token unchanged.") from None
    if header.get("alg") != HEADER["alg"]:
        raise JWTError(f"The JWT is signed with {header.get('alg')!r}, not ed25519-nkey.",
                       "NATS JWTs are signed with NKEYs.")
    if verify_signature and not verify(claims.get("iss", ""), f"{parts[0]}.{parts[1]}".encode(), sig):
        raise JWTError(f"The JWT's signature does not match its issuer {claims.get('iss')}.",
                       "a token changed after signing, or signed by another key, is worthless.")
    return claims


def _expiry(expires: float | _dt.datetime | _dt.timedelta | None) -> int | None:
    """Seconds from now, a timedelta or a datetime become a Unix time (None: never)."""
    if expires is None:
        return None
    if isinstance(expires, _dt.datetime):
        return int(expires.timestamp())
    if isinstance(expires, _dt.timedelta):
        expires = expires.total_seconds()
    return int(time.time() + expires)


def _allow_deny(allow: Iterable[str] | str | None, deny: Iterable[str] | str | None) -> dict | None:
    out = {}
    for key, val in (("allow", allow), ("deny", deny)):
        if val is not None:
            out[key] = [val] if isinstance(val, str) else list(val)
    return out or None


def creds_text(user_jwt: str, seed: str) -> str:
    """The text of a ``.creds`` file: the user JWT and the user's seed, in the standard layout."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


# ------------------------------------------------------------------------------ the chain
class User:
    """A user of an account: an NKEY, a signed user JWT, and a creds file holding both."""

    def __init__(self, account: "Account", name: str, claims: dict, signer: Key, key: Key):
        self.account = account
        self.name = name
        self.key = key
        self.signer = signer
        self.claims_in = claims
        self.jwt = encode(claims, signer)
        self._creds: Path | None = None

    @property
    def public(self) -> str:
        return self.key.public

    @property
    def claims(self) -> dict:
        return decode(self.jwt)

    @property
    def creds(self) -> Path:
        """Path of this user's creds file (written on first use, mode 0600)."""
        if self._creds is None:
            self._creds = self.save_creds(self.account.operator.dir / f"{self.name}-{self.public[:6]}.creds")
        return self._creds

    def save_creds(self, path: str | Path) -> Path:
        return write_secret(path, creds_text(self.jwt, self.key.seed))

    def connect_options(self) -> dict:
        """Keyword arguments for ``natslab.connect``: ``user_credentials`` pointing at the creds file."""
        return {"user_credentials": str(self.creds)}

    def __repr__(self) -> str:
        return f"<User {self.name} {self.public} of account {self.account.name}>"


class Account:
    """An account JWT: limits, signing keys, exports, imports and revocations."""

    def __init__(self, operator: "Operator", name: str, *, limits: Mapping[str, Any] | None = None,
                 signing_key: bool = False, jetstream: bool = False):
        self.operator = operator
        self.name = name
        self.key = new_key("account")
        self.signing_keys: list[Key] = [new_key("account")] if signing_key else []
        self.limits: dict[str, Any] = {"subs": NO_LIMIT, "data": NO_LIMIT, "payload": NO_LIMIT,
                                       "imports": NO_LIMIT, "exports": NO_LIMIT, "wildcards": True,
                                       "conn": NO_LIMIT, "leaf": NO_LIMIT}
        if jetstream:
            self.limits.update({"mem_storage": NO_LIMIT, "disk_storage": NO_LIMIT,
                                "streams": NO_LIMIT, "consumer": NO_LIMIT})
        self.limits.update(limits or {})
        self.exports: list[dict] = []
        self.imports: list[dict] = []
        self.revocations: dict[str, int] = {}
        self.extra: dict[str, Any] = {}

    @property
    def public(self) -> str:
        return self.key.public

    # -- claims -----------------------------------------------------------------------------
    def claims_data(self) -> dict:
        nats: dict[str, Any] = {"limits": dict(self.limits), "type": "account", "version": 2}
        if self.signing_keys:
            nats["signing_keys"] = [k.public for k in self.signing_keys]
        if self.exports:
            nats["exports"] = list(self.exports)
        if self.imports:
            nats["imports"] = list(self.imports)
        if self.revocations:
            nats["revocations"] = dict(self.revocations)
        nats.update(self.extra)
        return {"sub": self.public, "name": self.name, "nats": nats}

    @property
    def jwt(self) -> str:
        """The account JWT as it stands now, signed by the operator (its signing key if it has one)."""
        return encode(self.claims_data(), self.operator.account_signer)

    # -- users ------------------------------------------------------------------------------
    def user(self, name: str, *, pub: Iterable[str] | str | None = None, sub: Iterable[str] | str | None = None,
             pub_deny: Iterable[str] | str | None = None, sub_deny: Iterable[str] | str | None = None,
             allow_responses: bool | int = False, subs: int = NO_LIMIT, data: int = NO_LIMIT,
             payload: int = NO_LIMIT, expires: float | _dt.datetime | _dt.timedelta | None = None,
             bearer: bool = False, signing_key: bool | None = None, key: Key | None = None) -> User:
        """Issue a user JWT.

        ``pub``/``sub`` (and ``*_deny``) are subject lists; ``allow_responses`` lets the user reply
        to requests it received (``True`` for one reply each, or a number); ``subs``, ``data``,
        ``payload`` are limits (-1 unlimited); ``expires`` is seconds from now, a timedelta or a
        datetime.  By default the account's signing key signs when it has one.
        """
        key = key or new_key("user")
        nats: dict[str, Any] = {"subs": subs, "data": data, "payload": payload, "type": "user", "version": 2}
        for field_, allow, deny in (("pub", pub, pub_deny), ("sub", sub, sub_deny)):
            perm = _allow_deny(allow, deny)
            if perm:
                nats[field_] = perm
        if allow_responses:
            nats["resp"] = {"max": 1 if allow_responses is True else int(allow_responses), "ttl": 0}
        if bearer:
            nats["bearer_token"] = True
        use_signing = bool(self.signing_keys) if signing_key is None else signing_key
        if use_signing and not self.signing_keys:
            raise NatslabError(f"Account {self.name} has no signing key.",
                               "create it with operator.account(name, signing_key=True).")
        signer = self.signing_keys[0] if use_signing else self.key
        if use_signing:
            nats["issuer_account"] = self.public
        claims = {"sub": key.public, "name": name, "nats": nats}
        exp = _expiry(expires)
        if exp is not None:
            claims["exp"] = exp
        return User(self, name, claims, signer, key)

    def revoke(self, user: User | str, at: float | None = None) -> None:
        """Revoke every JWT of ``user`` issued at or before ``at`` (default: now)."""
        pub = user.public if isinstance(user, User) else user
        self.revocations[pub] = int(at if at is not None else time.time())

    # -- sharing ----------------------------------------------------------------------------
    def export_service(self, subject: str, name: str | None = None) -> None:
        self.exports.append({"name": name or subject, "subject": subject, "type": "service"})

    def export_stream(self, subject: str, name: str | None = None) -> None:
        self.exports.append({"name": name or subject, "subject": subject, "type": "stream"})

    def import_service(self, exporter: "Account", subject: str, local_subject: str | None = None) -> None:
        imp = {"name": subject, "subject": subject, "account": exporter.public, "type": "service"}
        if local_subject:
            imp["local_subject"] = local_subject
        self.imports.append(imp)

    def import_stream(self, exporter: "Account", subject: str, local_subject: str | None = None) -> None:
        imp = {"name": subject, "subject": subject, "account": exporter.public, "type": "stream"}
        if local_subject:
            imp["local_subject"] = local_subject
        self.imports.append(imp)

    def __repr__(self) -> str:
        return f"<Account {self.name} {self.public}>"


class Operator:
    """The root of trust: an operator NKEY and JWT, its accounts, and a system account ``SYS``.

    ``server_config()`` returns the settings that put a server in operator mode; pass them
    to ``natslab.server(config=...)``.
    """

    def __init__(self, name: str = "natslab", *, signing_key: bool = True):
        self.name = name
        self.key = new_key("operator")
        self.signing_keys: list[Key] = [new_key("operator")] if signing_key else []
        self.dir = secrets_dir(f"jwt-{name}")
        self.accounts: dict[str, Account] = {}
        self.system = self.account("SYS")
        self.system_user = self.system.user("sys")
        self._stores = 0

    @property
    def public(self) -> str:
        return self.key.public

    @property
    def account_signer(self) -> Key:
        return self.signing_keys[0] if self.signing_keys else self.key

    @property
    def jwt(self) -> str:
        nats: dict[str, Any] = {"type": "operator", "version": 2, "system_account": self.system.public}
        if self.signing_keys:
            nats["signing_keys"] = [k.public for k in self.signing_keys]
        return encode({"sub": self.public, "name": self.name, "nats": nats}, self.key)

    def account(self, name: str, **kwargs) -> Account:
        """A new account of this operator (kwargs: ``limits``, ``signing_key``, ``jetstream``)."""
        if name in self.accounts:
            raise NatslabError(f"Operator {self.name} already has an account named {name}.",
                               f"use operator.accounts[{name!r}] or another name.")
        acct = Account(self, name, **kwargs)
        self.accounts[name] = acct
        return acct

    def server_config(self, resolver: str = "memory", accounts: Iterable[Account] | None = None) -> dict:
        """Config for ``natslab.server(config=...)``: trust this operator, know these accounts.

        ``resolver="memory"`` keeps the account JWTs in the config (``resolver_preload``);
        ``resolver="full"`` also stores them in a directory and accepts updated account JWTs
        at run time on ``$SYS.REQ.CLAIMS.UPDATE`` (needed to revoke a user while it runs).
        """
        op_path = write_secret(self.dir / "operator.jwt", self.jwt + "\n")
        accts = list(accounts) if accounts is not None else list(self.accounts.values())
        if self.system not in accts:
            accts.insert(0, self.system)
        conf: dict[str, Any] = {"operator": str(op_path), "system_account": self.system.public,
                                "resolver_preload": {a.public: a.jwt for a in accts}}
        if resolver == "memory":
            conf["resolver"] = confgen.Raw("MEMORY")
        elif resolver == "full":
            self._stores += 1
            store = self.dir / f"jwt-store-{self._stores}"
            store.mkdir(mode=0o700)
            conf["resolver"] = {"type": "full", "dir": str(store), "allow_delete": False,
                                "interval": "2m", "timeout": "2s"}
        else:
            raise NatslabError(f"Unknown resolver {resolver!r}.", 'use "memory" or "full".')
        return conf

    def __repr__(self) -> str:
        return f"<Operator {self.name} {self.public}, accounts {list(self.accounts)}>"


async def push_account(target, account: Account, timeout: float = 5.0) -> dict:
    """Send ``account``'s current JWT to a running server (full resolver) as the system user.

    Returns the server's reply, e.g. ``{"code": 200, "message": "jwt updated"}``; raises
    ``NatslabError`` with the server's words when it refuses.
    """
    nc = await connect(target, quiet=True, **account.operator.system_user.connect_options())
    try:
        msg = await nc.request("$SYS.REQ.CLAIMS.UPDATE", account.jwt.encode(), timeout=timeout)
    finally:
        await nc.close()
    reply = json.loads(msg.data or b"{}")
    if "error" in reply:
        err = reply["error"]
        raise NatslabError(f"The server refused the account JWT of {account.name}: "
                           f"{err.get('description', err)}",
                           "is the server started with resolver=\"full\"? Was the account signed by "
                           "its operator?")
    return reply.get("data", reply)


def describe(token: str) -> dict:
    """The interesting parts of a JWT for reading: type, name, subject, issuer, expiry and ``nats``."""
    claims = decode(token)
    nats = dict(claims.get("nats", {}))
    out = {"type": nats.pop("type", None), "name": claims.get("name"), "sub": claims.get("sub"),
           "iss": claims.get("iss"), "iat": claims.get("iat")}
    if "exp" in claims:
        out["exp"] = claims["exp"]
        out["expires_in_s"] = claims["exp"] - int(time.time())
    nats.pop("version", None)
    out["nats"] = nats
    return out
