"""Wait for a real condition, never for a guessed number of seconds.

Things in a lesson happen on the server's schedule: a mirror catches up, a TTL expires, a
client reconnects, a new leader is elected.  ``await natslab.until(cond, "what")`` polls
``cond`` (sync or async) until it is true and returns its value, or fails after ``timeout``
seconds with a message naming what did not happen.
"""
from __future__ import annotations

import asyncio
import inspect

from ..errors import NatslabError


class WaitTimeout(NatslabError, TimeoutError):
    """A condition did not come true in time (also a TimeoutError, so ``except TimeoutError`` works)."""


async def until(condition, what: str = "the condition", *, timeout: float = 10.0, every: float = 0.02,
                error: bool = True):
    """Poll ``condition()`` until it returns a true value; return that value.

    On timeout raise ``WaitTimeout`` naming ``what``, or return False with ``error=False``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            if error:
                raise WaitTimeout(f"{what} did not happen within {timeout:g} s.",
                                  "if the server needs longer here, raise timeout=; otherwise look at "
                                  "what the condition reads (srv.monitor(...), srv.logs()).")
            return False
        await asyncio.sleep(every)
