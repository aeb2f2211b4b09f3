"""Connecting with errors a learner can act on.

``natslab.connect`` is ``nats.connect`` aimed at a natslab server or topology, with a quiet
error callback (one line per problem, not a traceback per reconnect attempt) and a plain
explanation when the first connection fails: wrong credentials, nothing listening, TLS.
"""
from __future__ import annotations

import asyncio

import nats
from nats.aio.client import PING_PROTO
from nats.errors import NoServersError

from ..errors import NatslabError
from .refusals import specific_rule_for


class Client(nats.NATS):
    """nats-py's client with two flush fixes.

    Ordering: nats-py 2.16 writes a flush's PING straight to the socket while earlier commands (a
    SUB, a PUB) may still sit in its pending buffer, so the server can answer PONG before it has
    seen them, and a "subscribe, flush, publish from elsewhere" sequence sometimes loses the
    message.  Queuing the PING behind the pending commands restores the order flush promises.

    Cancellation: a flush cancelled while it waits (a widget re-checking on every keystroke) leaves
    its future in nats-py's queue of PONG waiters; when the PONG comes, nats-py sets a result on the
    cancelled future, the read loop dies with InvalidStateError and every later flush times out.
    A PONG for a waiter that is already done is simply consumed.
    """

    async def _send_ping(self, future=None) -> None:
        if future is None:
            future = asyncio.Future()
        self._pongs.append(future)
        self._pending.append(PING_PROTO)
        self._pending_data_size += len(PING_PROTO)
        await self._flush_pending()

    async def _process_pong(self) -> None:
        if self._pongs:
            future = self._pongs.pop(0)
            if not future.done():
                future.set_result(True)
            self._pongs_received += 1
            self._pings_outstanding = 0


class ConnectFailed(NatslabError):
    """The first connection to the server failed; the message says why in plain words."""


def urls_of(target) -> list[str]:
    if target is None:
        raise NatslabError("connect() needs a server, a topology or a URL.",
                           "pass the object natslab.server() returned, e.g. natslab.connect(srv).")
    if isinstance(target, str):
        return [u.strip() for u in target.split(",") if u.strip()]
    if hasattr(target, "urls"):
        return list(target.urls)
    if hasattr(target, "url"):
        return [target.url]
    return list(target)


def _security_rule(text: str):
    """The specific cause for a refusal (revoked, expired, mTLS, ...), if any (runtime.refusals)."""
    return specific_rule_for(text)


def _server_side(target) -> str:
    """The server's own last error lines, when we know the server (a natslab Server)."""
    try:
        lines = [l for l in target.logs().splitlines() if "[ERR]" in l or "[WRN]" in l]
    except Exception:
        return ""
    return "\n".join(l.split("] ", 1)[-1] for l in lines[-2:])


def connect_failure(exc: BaseException, urls: list[str], tls: bool = False, target=None) -> ConnectFailed:
    """The ConnectFailed to raise for a failed first connection: its cause, in plain words."""
    server_says = _server_side(target) if target is not None else ""
    text = f"{type(exc).__name__}: {exc}" + (f"\nthe server logged: {server_says}" if server_says else "")
    low = text.lower()
    where = ", ".join(urls)
    if tls and isinstance(exc, (ConnectionResetError, EOFError)) and _security_rule(text) is None:
        return ConnectFailed(
            f"The server at {where} closed the connection during the TLS handshake.",
            "with mutual TLS (verify: true) the server refuses a client that sends no certificate, or one "
            "not signed by its ca_file: load one with ctx.load_cert_chain(cert, key).", details=text)
    rule = _security_rule(text)
    if rule is not None and "authorization violation" not in low:
        cause, advice = rule
        return ConnectFailed(f"The server at {where} refused the connection: {cause}.", advice, details=text)
    if "authorization violation" in low or "authentication" in low:
        return ConnectFailed(f"The server at {where} refused the credentials (Authorization Violation).",
                             "check the user/password, token, NKEY or creds file against the server's "
                             "authorization block (srv.config_text shows it); srv.logs() says why "
                             "(expired, revoked, unknown user).")
    if "certificate" in low or "ssl" in low or "tls" in low:
        return ConnectFailed(f"TLS failed while connecting to {where}: {exc}",
                             "the client must trust the CA that signed the server's certificate "
                             "and use the host name the certificate names; do not turn verification off.")
    if isinstance(exc, (NoServersError, ConnectionRefusedError, OSError, asyncio.TimeoutError)):
        return ConnectFailed(f"Nothing answered at {where} ({text}).",
                             "is the server running? (srv.running; a stopped server restarts with "
                             "srv.start()). Connect with the URL natslab gave you: srv.url.")
    return ConnectFailed(f"Connecting to {where} failed: {text}", "read the error above; srv.logs() shows the server's side.")


async def _reachable(url: str, timeout: float) -> bool:
    from urllib.parse import urlparse

    u = urlparse(url if "://" in url else f"nats://{url}")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(u.hostname, u.port or 4222), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True


def _fatal(exc: BaseException, tls: bool = False) -> bool:
    """Errors that no retry will cure: refused credentials, and TLS handshakes the server rejects."""
    import ssl

    low = str(exc).lower()
    if any(w in low for w in ("authorization", "authentication", "revoked", "expired", "certificate",
                              "permissions", "alert")):
        return True
    # with mutual TLS a server that rejects the client's certificate just resets the connection
    return tls and isinstance(exc, (ssl.SSLError, ConnectionResetError))


async def connect(target=None, *, quiet: bool = False, timeout: float = 15.0, **options) -> nats.aio.client.Client:
    """``await natslab.connect(srv)``: a nats-py client connected to ``srv`` (any nats.connect option).

    Unlike a bare ``nats.connect``, a refused credential or an address where nothing listens
    fails at once with an explanation, instead of retrying quietly for a minute.
    """
    urls = urls_of(options.pop("servers") if "servers" in options else target)
    options.setdefault("connect_timeout", 2)
    reach = await asyncio.gather(*(_reachable(u, options["connect_timeout"]) for u in urls))
    if not any(reach):
        raise connect_failure(ConnectionRefusedError(f"no server listening at {', '.join(urls)}"), urls, target=None)

    errors: list[BaseException] = []
    user_cb = options.pop("error_cb", None)
    nc = Client()
    refused = asyncio.Event()

    async def error_cb(exc):
        errors.append(exc)
        if not nc.is_connected and _fatal(exc, tls=bool(options.get("tls"))):
            refused.set()
        if user_cb is not None:
            await user_cb(exc)
        elif not quiet and nc.is_connected:
            print(f"nats: {type(exc).__name__}: {exc}")

    attempt = asyncio.ensure_future(nc.connect(servers=urls, error_cb=error_cb, **options))
    stop = asyncio.ensure_future(refused.wait())
    done, _ = await asyncio.wait({attempt, stop}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    if attempt in done and attempt.exception() is None:
        return nc
    attempt.cancel()
    try:  # closing a TLS socket the server has reset can hang in nats-py: bound it
        await asyncio.wait_for(nc.close(), 5)
    except Exception:
        pass
    cause = errors[0] if errors else (attempt.exception() if attempt.done() and not attempt.cancelled()
                                      else asyncio.TimeoutError(f"no connection after {timeout:.0f} s"))
    raise connect_failure(cause, urls, tls=bool(options.get("tls")), target=target) from None
