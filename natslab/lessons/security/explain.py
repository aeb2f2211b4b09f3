"""Turning a refusal into words: what the client saw, what the server logged, and why.

``await attempt(srv, **options)`` tries one connection (no retries, a few seconds at most) and
returns an ``Attempt``: ``ok``, the client's error, the server's own log lines written while
it refused, and an explanation a learner can act on.  ``explain(text)`` gives the explanation
for any error text (a client exception, a ``-ERR`` line, a server log line).
``ErrorLog`` collects the asynchronous errors a connection reports (permission violations
arrive that way) so a cell can wait for one and print it.
"""
from __future__ import annotations

import asyncio
import datetime
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


# nats-py closes TLS sockets in a way asyncio comments on at WARNING level; it teaches nothing.
class _QuietTLSClose(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_QuietTLSClose())

# (pattern in the client's error or the server's log, short cause, what it means and what to do)
RULES: list[tuple[str, str, str]] = [
    # TLS alerts the client *received*: the server refused the client's side of the handshake
    (r"alert certificate required|didn't provide a certificate|certificate required",
     "the server requires a client certificate (mutual TLS) and none was sent",
     "Load a client certificate signed by the CA the server trusts: "
     "ctx.load_cert_chain(cert_file, key_file) before connecting."),
    (r"alert unknown ca|alert bad certificate|failed to verify certificate|signed by unknown authority",
     "the server did not accept the client's certificate",
     "With mutual TLS the server checks the client's certificate against its ca_file. Use a client "
     "certificate signed by that CA (and not expired)."),
    (r"unable to get local issuer certificate|self[- ]signed certificate|unknown ca",
     "the client does not trust the server's certificate",
     "The server's certificate was signed by a CA the client does not trust. Give the client that CA "
     "(ssl.create_default_context(cafile=ca_file)). Switching verification off would 'fix' it by also "
     "trusting any impostor on the path: don't."),
    (r"ip address mismatch|hostname mismatch|doesn't match|not valid for",
     "the server's certificate does not name the address the client dialled",
     "TLS checks that the certificate names the host you connected to. Issue the server certificate "
     "for that name (natslab servers are reached at 127.0.0.1 and localhost), or connect with "
     "tls_hostname set to a name the certificate does carry. Turning hostname checks off lets any "
     "certificate from a trusted CA impersonate this server."),
    (r"certificate has expired|certificate expired",
     "a certificate has expired",
     "Certificates are valid only between their not-before and not-after dates. Issue a new one."),
    (r"tls required|secure connection - tls required",
     "the server only accepts TLS connections",
     "Connect with tls=<ssl.SSLContext> that trusts the server's CA."),
    (r"user authentication expired|jwt.*expired|claim is expired",
     "the user's JWT has expired",
     "A user JWT stops working at its 'exp' time, and the server disconnects users whose JWT "
     "expires while connected. Issue a fresh JWT (a new creds file)."),
    (r"user authentication revoked|revoke[ds]",
     "the user's JWT was revoked by its account",
     "The account JWT lists this user's public key under 'revocations'. Every JWT of that user issued "
     "before the revocation time is refused; issue a new user (a new key) if access should return."),
    (r"maximum account active connections|account.*connections exceeded",
     "the account's connection limit is reached",
     "The account JWT limits how many clients may be connected at once (limits.conn). Close a "
     "connection or raise the limit in the account JWT."),
    (r"maximum connections exceeded",
     "the server's connection limit is reached",
     "max_connections in the server config caps all clients together. Close connections or raise it."),
    (r"maximum payload",
     "the message is larger than allowed",
     "The server (max_payload) or the user/account JWT (limits.payload) caps the size of one message; the "
     "server closes the connection of a client that sends more. Send smaller messages (chunk them, "
     "or use the object store)."),
    (r"maximum subscriptions exceeded",
     "the connection has as many subscriptions as it may",
     "The user or account JWT limits subscriptions (limits.subs). Unsubscribe from something first."),
    (r"permissions violation for publish|publish violation",
     "the user may not publish to that subject",
     "The user's publish permissions do not allow that subject (or a deny rule matches). The message "
     "was dropped and the connection stays open. Grant the subject, or publish elsewhere."),
    (r"permissions violation for subscription|subscription violation",
     "the user may not subscribe to that subject",
     "The user's subscribe permissions do not allow that subject (or a deny rule matches). The "
     "subscription delivers nothing. Grant the subject, or subscribe to an allowed one."),
    (r"authentication timeout",
     "the client did not finish authenticating in time",
     "The server closes a connection that has not sent valid credentials within auth timeout "
     "(authorization { timeout: ... })."),
    (r"signature does not match|tampered",
     "the user JWT's signature does not match its contents",
     "Someone changed the JWT after it was signed (or signed it with another key). Only the account "
     "(or its signing key) can issue a valid user JWT: issue a new one instead of editing it."),
    (r"account fetch failed|account missing|account not found|unknown account",
     "the server does not know the user's account",
     "In operator mode the server loads account JWTs from its resolver. This account's JWT is not there, "
     "or it was signed by an operator the server does not trust. Add the account to the resolver "
     "(resolver_preload, or push it) and issue users from accounts of the trusted operator."),
    (r"auth callout|callout service returned an error",
     "the auth callout service refused the client",
     "An external service decides who may connect; its answer said no (the server log shows its reason)."),
    (r"authorization violation|authentication error|authorization error",
     "the server did not accept the credentials",
     "No user, token, NKEY or JWT in the server's configuration matches what the client sent. Check the "
     "credentials against the authorization block (srv.config_text)."),
    (r"no responders",
     "nobody is subscribed to the request's subject",
     "A request needs a responder subscribed to that subject in the same account (or one reachable "
     "through an import)."),
    (r"connection (lost|reset)|eof",
     "the server closed the connection during the handshake",
     "A server that requires something the client did not bring (a client certificate, TLS) closes "
     "the connection; its log says which."),
]


GENERIC = ("the server did not accept the credentials", "the server closed the connection during the handshake")


def _rule(text: Any) -> tuple[str, str] | None:
    low = str(text).lower()
    for pattern, cause, advice in RULES:
        if re.search(pattern, low):
            return cause, advice
    return None


def _best(texts) -> tuple[str, str] | None:
    """The first specific cause among ``texts`` (in order), else the first generic one."""
    found = [r for r in (_rule(t) for t in texts if t) if r]
    specific = [r for r in found if r[0] not in GENERIC]
    return (specific or found or [None])[0]


def explain(*texts: Any) -> str:
    """A plain explanation for error texts (client error first, then server log lines)."""
    rule = _best(texts)
    if rule is None:
        return "Not a recognised security refusal: read the client's error and the server's log (srv.logs())."
    cause, advice = rule
    return f"{cause[0].upper()}{cause[1:]}. {advice}"


def server_errors(text: str) -> list[str]:
    """The [ERR]/[WRN] lines of a server log, without the timestamp prefix."""
    out = []
    for line in text.splitlines():
        m = re.search(r"\[(ERR|WRN)\]\s*(.*)", line)
        if m:
            out.append(f"[{m.group(1)}] {m.group(2)}")
    return out


@dataclass
class Attempt:
    """One connection attempt: did it work, and if not, the client's and the server's words."""

    ok: bool
    client_error: str = ""
    server_log: list[str] = field(default_factory=list)
    cause: str = ""
    explanation: str = ""
    notes: list[str] = field(default_factory=list)
    nc: Any = None

    @property
    def refused(self) -> bool:
        return not self.ok

    def __repr__(self) -> str:
        if self.ok:
            return "accepted: the server let the client in."
        lines = [f"refused: {self.cause}", f"  client saw: {self.client_error}"]
        lines += [f"  server log: {l}" for l in self.server_log[-3:]]
        lines += [f"  credentials: {n}" for n in self.notes]
        lines.append(f"  why: {self.explanation}")
        return "\n".join(lines)


async def attempt(target, *, keep: bool = False, timeout: float = 4.0, **options) -> Attempt:
    """Try one connection to ``target`` with nats-py ``options`` (``tls``, ``user``, ``user_credentials``...).

    No retries: a refusal comes back at once.  With ``keep=True`` a successful connection is
    returned open in ``.nc`` (close it yourself); otherwise it is closed.
    """
    from ...runtime.client import Client, urls_of

    urls = urls_of(target)
    before = _log_size(target)
    errors: list[BaseException] = []

    async def error_cb(exc):
        errors.append(exc)

    nc = Client()  # natslab's nats-py client: its flush() waits for everything sent before
    options.setdefault("connect_timeout", 2)
    try:
        await asyncio.wait_for(nc.connect(servers=urls, allow_reconnect=False, max_reconnect_attempts=0,
                                          error_cb=error_cb, **options), timeout)
        if keep:
            return Attempt(True, nc=nc)
        await nc.close()
        return Attempt(True)
    except BaseException as exc:  # noqa: BLE001 - every failure is the answer here
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        await _close_quietly(nc)
        first = errors[0] if errors else exc
        client = f"{type(first).__name__}: {first}".strip()
        if isinstance(first, asyncio.TimeoutError) or client.endswith(":"):
            waited = options["connect_timeout"] if first is not exc else timeout
            client = f"{type(first).__name__} (the handshake got no answer within {waited:g} s)"
        logs = await _new_server_lines(target, before)
        notes = credential_notes(target, options)
        rule = _best([client, *notes, *logs])
        return Attempt(False, client, logs, rule[0] if rule else "unrecognised",
                       explain(client, *notes, *logs), notes=notes)


def credential_notes(target, options: dict) -> list[str]:
    """What the user's own JWT and the server's copy of its account say (expired? revoked?)."""
    creds = options.get("user_credentials")
    if not isinstance(creds, (str, Path)):
        return []
    try:
        text = Path(creds).read_text()
        token = text.split("-----BEGIN NATS USER JWT-----")[1].split("------END")[0].strip()
        from .jwt import decode

        claims = decode(token, verify_signature=False)
    except Exception:
        return []
    notes = []
    try:
        decode(token)
    except Exception:
        notes.append(f"the user JWT in {Path(creds).name}: signature does not match its issuer (tampered?)")
    now = int(time.time())
    if claims.get("exp") and claims["exp"] <= now:
        when = datetime.datetime.fromtimestamp(claims["exp"], datetime.timezone.utc).isoformat(timespec="seconds")
        notes.append(f"the user JWT in {Path(creds).name} expired at {when} ({now - claims['exp']} s ago)")
    account = claims.get("nats", {}).get("issuer_account") or claims.get("iss")
    try:
        detail = target.monitor("accountz", acc=account).get("account_detail", {})
        from .jwt import decode as _decode

        revoked = _decode(detail["jwt"]).get("nats", {}).get("revocations", {})
    except Exception:
        revoked = {}
    at = max(revoked.get(claims.get("sub"), 0), revoked.get("*", 0))
    if at and at >= claims.get("iat", 0):
        notes.append(f"the server's copy of the account JWT revokes user {claims.get('sub', '')[:12]}... "
                     f"(JWTs issued up to {at})")
    return notes


async def _close_quietly(nc, timeout: float = 0.3) -> None:
    """Close a failed connection; a TLS socket the server reset can hang in wait_closed()."""
    try:
        await asyncio.wait_for(nc.close(), timeout)
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise


def _log_size(target) -> int | None:
    logs = getattr(target, "logs", None)
    return len(logs()) if callable(logs) else None


async def _new_server_lines(target, before: int | None, wait: float = 1.0) -> list[str]:
    """[ERR]/[WRN] lines the server wrote since ``before``.

    Waits up to ``wait`` s for the first line, then until no new line has come for 0.1 s
    (a refusal is often logged as two or three lines).
    """
    if before is None:
        return []
    deadline = time.monotonic() + wait
    lines: list[str] = []
    quiet_since = None
    while time.monotonic() < deadline:
        now_lines = list(dict.fromkeys(server_errors(target.logs()[before:])))  # each line once
        if now_lines != lines:
            lines, quiet_since = now_lines, time.monotonic()
        elif lines and time.monotonic() - quiet_since >= 0.1:
            break
        await asyncio.sleep(0.03)
    return lines


class ErrorLog:
    """An ``error_cb`` that keeps what the server reported, and lets a cell wait for it.

        errs = ErrorLog()
        nc = await natslab.connect(srv, error_cb=errs, ...)
        await nc.publish("forbidden", b"")
        print(await errs.next(timeout=2))      # the Permissions Violation, as text
    """

    def __init__(self):
        self.errors: list[str] = []
        self._new = asyncio.Event()

    async def __call__(self, exc: BaseException) -> None:
        self.errors.append(str(exc))
        self._new.set()

    async def next(self, timeout: float = 2.0, contains: str = "") -> str | None:
        """The first error (containing ``contains``) not yet returned, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.errors):
                if contains.lower() in e.lower():
                    return self.errors.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), left)
            except asyncio.TimeoutError:
                pass

    def explain(self, text: str) -> str:
        return explain(text)
