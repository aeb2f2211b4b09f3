"""Auth callout: a Python service, not the server's config, decides who may connect.

The server is configured with ``authorization { auth_callout { issuer, auth_users, account } }``.
When any other client connects, the server sends an *authorization request* JWT (signed by the
server's own NKEY) to ``$SYS.REQ.USER.AUTH`` in the callout account.  The service answers with
an *authorization response* JWT signed by the issuer account key: either a user JWT (which
account the client lands in and its permissions) or an error.  ``AuthRequest`` reads the request
and writes both kinds of answer; ``serve`` runs a responder around a decision function.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ...errors import NatslabError
from . import jwt as _jwt
from .keys import Key

SUBJECT = "$SYS.REQ.USER.AUTH"


def callout_config(issuer: Key | str, auth_users: Iterable[str], account: str) -> dict:
    """The ``authorization { auth_callout {...} }`` block: ``auth_users`` bypass the callout
    (the service's own login), ``account`` is where the service listens."""
    pub = issuer.public if isinstance(issuer, Key) else issuer
    return {"authorization": {"auth_callout": {"issuer": pub, "auth_users": list(auth_users), "account": account}}}


@dataclass
class AuthRequest:
    """What the server tells the service about a client that is connecting."""

    claims: dict
    raw: str = field(repr=False, default="")

    @classmethod
    def parse(cls, data: bytes | str) -> "AuthRequest":
        """Decode and verify the request JWT (the server's signature)."""
        claims = _jwt.decode(data)
        if claims.get("nats", {}).get("type") != "authorization_request":
            raise NatslabError("That message is not an auth callout request.",
                               f"subscribe to {SUBJECT} and pass msg.data.")
        if claims.get("iss") != claims["nats"].get("server_id", {}).get("id"):
            raise NatslabError("The auth request was not signed by the server it claims to come from.")
        return cls(claims, data.decode() if isinstance(data, bytes) else data)

    # -- what the client presented -----------------------------------------------------------
    @property
    def nats(self) -> dict:
        return self.claims["nats"]

    @property
    def connect_opts(self) -> dict:
        return self.nats.get("connect_opts", {})

    @property
    def user(self) -> str | None:
        return self.connect_opts.get("user")

    @property
    def password(self) -> str | None:
        return self.connect_opts.get("pass")

    @property
    def token(self) -> str | None:
        return self.connect_opts.get("auth_token")

    @property
    def client_name(self) -> str | None:
        return self.connect_opts.get("name")

    @property
    def user_nkey(self) -> str:
        """The public NKEY the server made for this connection: the subject of the user JWT."""
        return self.nats["user_nkey"]

    @property
    def server_id(self) -> str:
        return self.nats["server_id"]["id"]

    @property
    def client_tls(self) -> dict | None:
        return self.nats.get("client_tls")

    def summary(self) -> dict:
        return {"user": self.user, "password": "***" if self.password else None, "token": "***" if self.token else None,
                "client_name": self.client_name, "host": self.nats.get("client_info", {}).get("host"),
                "server": self.nats["server_id"].get("name")}

    # -- answers -----------------------------------------------------------------------------
    def allow(self, issuer: Key, *, account: str, name: str | None = None, pub=None, sub=None,
              pub_deny=None, sub_deny=None, allow_responses: bool | int = False,
              expires: float | None = None, subs: int = -1, data: int = -1, payload: int = -1) -> bytes:
        """A signed response that admits the client into ``account`` with these permissions."""
        nats: dict[str, Any] = {"subs": subs, "data": data, "payload": payload, "type": "user", "version": 2}
        for f, allow, deny in (("pub", pub, pub_deny), ("sub", sub, sub_deny)):
            perm = _jwt._allow_deny(allow, deny)
            if perm:
                nats[f] = perm
        if allow_responses:
            nats["resp"] = {"max": 1 if allow_responses is True else int(allow_responses), "ttl": 0}
        user = {"sub": self.user_nkey, "name": name or self.user or "callout-user", "aud": account, "nats": nats}
        exp = _jwt._expiry(expires)
        if exp is not None:
            user["exp"] = exp
        return self._respond(issuer, {"jwt": _jwt.encode(user, issuer)})

    def deny(self, issuer: Key, reason: str = "not authorized") -> bytes:
        """A signed response that refuses the client; ``reason`` appears in the server's log."""
        return self._respond(issuer, {"error": reason})

    def _respond(self, issuer: Key, body: dict) -> bytes:
        claims = {"sub": self.user_nkey, "aud": self.server_id,
                  "nats": {**body, "type": "authorization_response", "version": 2}}
        return _jwt.encode(claims, issuer).encode()


Decision = Callable[[AuthRequest], Any]


async def serve(nc, issuer: Key, decide: Decision, log: list | None = None):
    """Answer auth callout requests on ``nc`` with ``decide(request)``; returns the subscription.

    ``decide`` (plain or async) returns a dict of ``AuthRequest.allow`` keyword arguments
    (at least ``account``) to admit the client, or a string (the reason) to refuse it.
    Each decision is appended to ``log`` when given.
    """
    async def handle(msg):
        try:
            req = AuthRequest.parse(msg.data)
        except Exception:
            return  # not a request we can read: let the server time out
        try:
            verdict = decide(req)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except Exception as exc:  # a failing policy refuses, and says why
            verdict = f"auth service error: {type(exc).__name__}: {exc}"
        if isinstance(verdict, dict):
            reply = req.allow(issuer, **verdict)
            outcome = f"allowed into {verdict.get('account')}"
        else:
            reply = req.deny(issuer, str(verdict or "not authorized"))
            outcome = f"refused: {verdict or 'not authorized'}"
        if log is not None:
            log.append({"user": req.user, "decision": outcome})
        await msg.respond(reply)

    sub = await nc.subscribe(SUBJECT, cb=handle)
    await nc.flush()
    return sub
