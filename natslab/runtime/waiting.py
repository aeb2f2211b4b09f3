"""Wait for a real condition, never for a guessed number of seconds.

Things in a lesson happen on the server's schedule: a mirror catches up, a TTL expires, a
client reconnects, a new leader is elected.  ``await natslab.until(cond, "what")`` polls
``cond`` (sync or async) until it is true and returns its value, or fails after ``timeout``
seconds with a message naming what did not happen.  This is the course's only polling loop;
``until_sync`` is the same loop for code running in a thread (server start-up, topologies).
"""
from __future__ import annotations

import asyncio
import inspect
import time

from ..errors import NatslabError


class WaitTimeout(NatslabError, TimeoutError):
    """A condition did not come true in time (also a TimeoutError, so ``except TimeoutError`` works)."""


def _timed_out(what: str, timeout: float, last_error: BaseException | None) -> WaitTimeout:
    details = f"the last attempt raised {type(last_error).__name__}: {last_error}" if last_error else ""
    return WaitTimeout(f"{what} did not happen within {timeout:g} s.",
                       "if the server needs longer here, raise timeout=; otherwise look at what the "
                       "condition reads (srv.monitor(...), srv.logs()).", details)


async def until(condition, what: str = "the condition", *, timeout: float = 10.0, every: float = 0.02,
                retry: tuple[type[BaseException], ...] = (), error: bool = True):
    """Poll ``condition()`` until it returns a true value; return that value.

    Exceptions in ``retry`` count as "not yet" (a server still electing a leader, a stream not
    created yet).  On timeout raise ``WaitTimeout`` naming ``what`` (and the last such exception),
    or, with ``error=False``, return the last value ``condition()`` gave (None if it never gave one).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    value, last_error = None, None
    while True:
        try:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
            last_error = None
        except retry as exc:  # noqa: PERF203 (polling)
            value, last_error = None, exc
        if value:
            return value
        if loop.time() > deadline:
            if error:
                raise _timed_out(what, timeout, last_error)
            return value
        await asyncio.sleep(every)


def until_sync(condition, what: str = "the condition", *, timeout: float = 10.0, every: float = 0.02,
               retry: tuple[type[BaseException], ...] = (), error: bool = True):
    """``until`` for code running in a thread (no event loop): same arguments, same results."""
    deadline = time.monotonic() + timeout
    value, last_error = None, None
    while True:
        try:
            value = condition()
            last_error = None
        except retry as exc:  # noqa: PERF203 (polling)
            value, last_error = None, exc
        if value:
            return value
        if time.monotonic() > deadline:
            if error:
                raise _timed_out(what, timeout, last_error)
            return value
        time.sleep(every)
