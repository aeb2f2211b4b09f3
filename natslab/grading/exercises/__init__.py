"""Checkers for the course's exercises, one module per course module (m00, m01, ...).

Shared tools for checkers live here: a scratch server the checker owns for the length of
one check, and a client connected to it.
"""
from __future__ import annotations

import asyncio
import contextlib

from ...runtime.client import connect
from ...runtime.server import server


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
    nc = await connect(target, quiet=True, **options)
    try:
        yield nc
    finally:
        if not nc.is_closed:
            await nc.close()


def subs_of(srv, nc) -> int:
    """How many subscriptions the server holds for connection ``nc`` (its own /connz)."""
    for conn in srv.monitor("connz", subs=True).get("connections", []):
        if conn.get("cid") == nc.client_id:
            return conn.get("subscriptions", 0)
    return 0
