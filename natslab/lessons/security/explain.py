"""Turning a refusal into words: what the client saw, what the server logged, and why.

``await attempt(srv, **options)`` tries one connection (no retries, a few seconds at most) and
returns an ``Attempt``: ``ok``, the client's error, the server's own log lines written while
it refused, and an explanation a learner can act on.  ``explain_refusal(text)`` gives the
explanation for any error text (a client exception, a ``-ERR`` line, a server log line); its
rules live in ``natslab.runtime.refusals``, shared with ``natslab.connect``.
``ErrorLog`` collects the asynchronous errors a connection reports (permission violations
arrive that way) so a cell can wait for one and print it.
"""
from __future__ import annotations

import asyncio
import datetime
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...runtime.client import Client, urls_of
from ...runtime.refusals import best_rule, explain_refusal, server_errors
from .jwt import decode


# nats-py closes TLS sockets in a way asyncio comments on at WARNING level; it teaches nothing.
class _QuietTLSClose(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_QuietTLSClose())

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
        rule = best_rule([client, *notes, *logs])
        return Attempt(False, client, logs, rule[0] if rule else "unrecognised",
                       explain_refusal(client, *notes, *logs), notes=notes)


def credential_notes(target, options: dict) -> list[str]:
    """What the user's own JWT and the server's copy of its account say (expired? revoked?)."""
    creds = options.get("user_credentials")
    if not isinstance(creds, (str, Path)):
        return []
    try:
        text = Path(creds).read_text()
        token = text.split("-----BEGIN NATS USER JWT-----")[1].split("------END")[0].strip()
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
        revoked = decode(detail["jwt"]).get("nats", {}).get("revocations", {})
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

    With a plain ``nats.connect`` pass the bound method: ``error_cb=errs.callback``.
    """

    def __init__(self):
        self.errors: list[str] = []
        self._new = asyncio.Event()

    async def callback(self, exc: BaseException) -> None:
        """The error callback itself; plain ``nats.connect(..., error_cb=errs.callback)`` needs this
        bound coroutine function (nats-py refuses other callables)."""
        self.errors.append(str(exc))
        self._new.set()

    async def __call__(self, exc: BaseException) -> None:  # natslab.connect(error_cb=errs) accepts the object
        await self.callback(exc)

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

    def explain_refusal(self, text: str | None = None) -> str:
        """Why the server refused: for ``text``, or for the latest error collected."""
        if text is None:
            text = self.errors[-1] if self.errors else ""
        return explain_refusal(text)
