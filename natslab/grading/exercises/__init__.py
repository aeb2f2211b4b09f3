"""Checkers for the course's exercises, one module per course module (m00, m01, ...).

Shared tools for checkers live here, one name each, so every checker is written the same way:

- ``scratch_server``: a fresh server the checker owns for the length of one check.
- ``client``: the checker's own connection (natslab's, so its flushes are ordered).
- ``learner_client``: a plain ``nats.connect`` connection, the kind a learner's own program
  makes, handed to learner code.  Checkers must pass with it, so they wait on the server's
  view (``interest``, ``subs_of``) instead of trusting a flush on the learner's connection.
- ``token``: a random name part, so no two checks (or learners) share subjects.
- ``text_result`` / ``of_type``: insist on what the exercise says the function returns.
- ``interest``: wait until the server routes a subject to a subscriber.
- ``scenario_ready``: wait for something the check's own scenario needs; a timeout is the check's
  trouble (a busy machine), never reported as the learner's mistake.
- ``everything_from``: wait until everything a learner's connection published has arrived.
- ``published_by``: every message the learner's code published, as the checker saw it.
"""
from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import nats

from ...runtime.client import connect
from ...runtime.server import server
from ...runtime.waiting import WaitTimeout, until
from ..checks import Mismatch, expect


@contextlib.asynccontextmanager
async def scratch_server(**kwargs):
    """A fresh server for one check, closed afterwards whatever happens."""
    srv = await asyncio.to_thread(server, "checker", **kwargs)
    try:
        yield srv
    finally:
        await asyncio.to_thread(srv.group.close)


@contextlib.asynccontextmanager
async def client(target, **options):
    """The checker's own connection, closed afterwards (whatever the learner did to theirs)."""
    nc = await connect(target, quiet=True, **options)
    try:
        yield nc
    finally:
        await _close_quietly(nc)


async def _quiet(_exc) -> None:
    pass


async def _close_quietly(nc) -> None:
    """Close ``nc`` whatever state its server left it in.

    nats-py can raise CancelledError from inside close() when the server was killed; that one is
    not a cancellation of the check, so it is swallowed, while a real cancellation still goes through.
    """
    if nc.is_closed:
        return
    try:
        await nc.close()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and getattr(task, "cancelling", lambda: 0)():
            raise
    except Exception:
        pass


@contextlib.asynccontextmanager
async def learner_client(target, **options):
    """A plain ``nats.connect`` connection for learner code, as a learner's own program opens it.

    Closed afterwards unless the learner closed or drained it (their right on a connection
    they are handed only where the exercise says so; the checker reports it otherwise).
    """
    url = target if isinstance(target, str) else target.url
    options = {"connect_timeout": 2, "max_reconnect_attempts": 3, "reconnect_time_wait": 0.2,
               "error_cb": _quiet, **options}
    nc = await nats.connect(url, **options)
    try:
        yield nc
    finally:
        await _close_quietly(nc)


def token(n: int = 6) -> str:
    """A random lowercase hex name part (subjects, streams, buckets unique to this check)."""
    return uuid.uuid4().hex[:n]


def text_result(value: Any, what: str) -> str:
    """The learner's return value, which the exercise says is text: bytes and other types fail."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise Mismatch(f"{what} returned bytes; the exercise asks for text (a str).",
                       expected="a str", seen=f"bytes: {bytes(value)!r}"[:120],
                       hint="message data is bytes: turn it into text with .decode().")
    expect(isinstance(value, str), f"{what} must return text (a str).", expected="a str",
           seen=f"{type(value).__name__}: {value!r}"[:120],
           hint="return the text itself, not the message object or a list.")
    return value


def of_type(value: Any, types, what: str, expected: str) -> Any:
    """Insist that the learner returned ``types``; otherwise a verdict naming what came back."""
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        ok = False
    else:
        ok = isinstance(value, types)
    expect(ok, f"{what} returned {type(value).__name__}, not {expected}.", expected=expected,
           seen=f"{type(value).__name__}: {value!r}"[:140],
           hint=f"the exercise asks {what} to return {expected}.")
    return value


def subs_of(srv, nc) -> int:
    """How many subscriptions the server holds for connection ``nc`` (its own /connz)."""
    for conn in srv.monitor("connz", subs=True).get("connections", []):
        if conn.get("cid") == nc.client_id:
            return conn.get("subscriptions", 0)
    return 0


async def interest(srv, subject: str, *, at_least: int = 1, timeout: float = 5.0) -> int:
    """Wait until the server would route ``subject`` to ``at_least`` subscriptions; how many it would.

    The server's own answer (``/subsz?test=``), not a flush on someone else's connection: it holds
    whatever client library, and whatever flush ordering, the subscriber used.  It counts the
    subscriptions of this server's own clients: on a leaf node, interest learned from the hub is not
    counted (read the leaf's ``/leafz`` for that).
    """
    def matching() -> int:
        found = srv.monitor("subsz", subs=1, test=subject, limit=1024)
        return int(found.get("total") or len(found.get("subscriptions_list") or []))

    count = await until(lambda: matching() >= at_least and matching(), f"interest in {subject!r}",
                        timeout=timeout, error=False)
    return count or matching()


async def scenario_ready(condition, what: str, timeout: float = 30.0, retry=(OSError,)):
    """``natslab.until`` for the check's own set-up; a timeout becomes a verdict that says so."""
    try:
        return await until(condition, what, timeout=timeout, retry=retry)
    except WaitTimeout:
        raise Mismatch(f"the check could not set up its scenario: {what} did not happen within {timeout:.0f} s.",
                       expected=what, seen="not yet", hint="run the check again; the machine may be busy.") from None


MARKER = "_CHECK.marker"


async def everything_from(srv, nc, chk, cid: int, timeout: float = 5.0) -> None:
    """Return once the server has routed everything ``nc`` published so far, and ``chk`` has it.

    No flush of the learner's connection (nats-py 2.16 may send its PING ahead of the buffer):
    on an open connection a marker published on it travels behind everything before it, so when
    ``chk`` receives the marker the rest has arrived; a closed connection wrote its buffer before
    closing, and the server lists it as closed once it has read it all.  ``cid`` is the
    connection's id, taken before the learner's code ran (nats-py forgets it on close).
    """
    if not nc.is_closed and not nc.is_draining:
        subject = f"{MARKER}.{token(12)}"
        marker = await chk.subscribe(subject)
        await chk.flush()
        try:
            await nc.publish(subject, b"")
            await marker.next_msg(timeout=timeout)
            return
        except Exception:  # closed meanwhile, or not connected: the closed path below
            pass
        finally:
            with contextlib.suppress(Exception):
                await marker.unsubscribe()
    await until(lambda: nc.is_closed, "the connection to finish closing", timeout=timeout, error=False)
    await until(lambda: srv.monitor("connz", state="closed", cid=cid).get("connections"),
                "the server to list the connection as closed", timeout=timeout, error=False)
    await chk.flush()


async def published_by(srv, chk, nc, run) -> list:
    """Every message published while ``await run()`` calls the learner's code, as ``chk`` saw them.

    ``chk`` (the checker's connection) listens on ``>``; everything the learner's connection ``nc``
    sent is in (``everything_from``), and a message the learner sent on a connection of its own gets
    a moment to arrive too.  The checker's own markers are left out.
    """
    got: list = []

    async def keep(msg):
        got.append(msg)

    listener = await chk.subscribe(">", cb=keep)
    await chk.flush()
    cid = nc.client_id
    await run()
    await everything_from(srv, nc, chk, cid)
    await until(lambda: any(not m.subject.startswith(MARKER) for m in got), "a message", timeout=2, error=False)
    await listener.unsubscribe()
    return [m for m in got if not m.subject.startswith(MARKER)]
