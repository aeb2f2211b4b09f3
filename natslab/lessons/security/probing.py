"""Ask the server what a user may do: publish and subscribe to each subject, and see its verdict.

A permission violation comes back as an asynchronous ``-ERR`` that the server sends while it
processes the ``PUB`` or ``SUB``, before it answers a later ``PING``.  So once a ``PING`` sent
after the ``PUB`` is answered, the verdict is known, with no waiting on timers.  Connections
made by ``natslab.connect`` queue a flush's ``PING`` behind earlier commands, so one ``flush()``
is enough.  (A plain nats-py 2.16 client writes the ``PING`` ahead of commands still in its
buffer, so a flush on it proves nothing: ``probe`` and ``delivered`` want natslab connections, or
ask the server itself, ``/subsz`` and ``/connz``.)
"""
from __future__ import annotations

import asyncio
import uuid

from ...runtime.client import connect
from .explain import ErrorLog


async def probe(target, subjects, **connect_options) -> dict[str, dict[str, bool | None]]:
    """``{subject: {"publish": bool, "subscribe": bool}}`` as the server decides for this user.

    Connects once with ``connect_options`` (user, password, creds, tls...).  Subjects with
    wildcards are only tried as subscriptions (``publish`` is None): one cannot publish to them.
    """
    errs = ErrorLog()
    nc = await connect(target, quiet=True, error_cb=errs, **connect_options)
    out: dict[str, dict[str, bool | None]] = {}
    try:
        for subject in subjects:
            row: dict[str, bool | None] = {"publish": None, "subscribe": None}
            wild = any(tok in ("*", ">") for tok in subject.split("."))
            if not wild:
                await nc.publish(subject, b"probe")
                await nc.flush()
                row["publish"] = _verdict(errs, "publish", subject)
            sub = await nc.subscribe(subject)
            await nc.flush()
            row["subscribe"] = _verdict(errs, "subscription", subject)
            await sub.unsubscribe()
            out[subject] = row
    finally:
        await nc.close()
    return out


def _verdict(errs: ErrorLog, kind: str, subject: str) -> bool:
    needle = f'for {kind} to "{subject}"'.lower()
    for i, e in enumerate(errs.errors):
        if needle in e.lower():
            errs.errors.pop(i)
            return False
    return True


def probe_table(results: dict[str, dict[str, bool | None]], title: str = "") -> str:
    """A small text table of ``probe`` results: ✓ allowed, ✗ refused, · not applicable."""
    mark = {True: "✓", False: "✗", None: "·"}
    width = max([len(s) for s in results] + [7])
    lines = [title] if title else []
    lines.append(f"{'subject':<{width}}  publish  subscribe")
    for subject, row in results.items():
        lines.append(f"{subject:<{width}}     {mark[row['publish']]}         {mark[row['subscribe']]}")
    return "\n".join(lines)


async def delivered(pub_nc, sub_nc, subject: str, publish_subject: str | None = None,
                    timeout: float = 0.5) -> bytes | None:
    """Publish on ``pub_nc`` and return the payload if ``sub_nc`` (subscribed to ``subject``) got it.

    Both must be natslab connections (``natslab.connect``): their ``flush()`` waits for the
    commands sent before it, so once the last flush returns, anything routed to ``sub_nc`` is in.

    ``publish_subject`` defaults to ``subject``; set it when an import maps one to another.
    Returns None when nothing arrived (accounts isolate, or no import/export connects them).
    """
    token = uuid.uuid4().hex[:8].encode()
    sub = await sub_nc.subscribe(subject)
    await sub_nc.flush()
    try:
        await pub_nc.publish(publish_subject or subject, token)
        await pub_nc.flush()
        await sub_nc.flush()  # anything routed to us is now ahead of this PONG
        try:
            msg = await sub.next_msg(timeout=timeout)
        except asyncio.TimeoutError:
            return None
        return msg.data if msg.data == token else None
    finally:
        await sub.unsubscribe()


async def wait_disconnected(nc, timeout: float = 5.0) -> bool:
    """Wait (at most ``timeout`` s) until the server has closed ``nc``; True if it did.

    Use it after something the server answers by closing the connection (an expired or revoked
    user, a limit exceeded).  ``nc.last_error`` then holds the server's reason.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while nc.is_connected and not nc.is_closed:
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True
