"""Module 00 (Welcome): start a server, publish, subscribe, read the server's own view."""
from __future__ import annotations

import asyncio
import uuid

from ..checks import call_learner, exercise, expect
from ...runtime.server import Server
from . import client, scratch_server, subs_of


@exercise("0.1", "start a server",
          hints=('natslab.server("welcome", jetstream=True) starts one and returns it.',))
async def start_server(start_fn):
    srv = await call_learner(start_fn, what="start_welcome_server()")
    expect(isinstance(srv, Server), "start_welcome_server() must return the server natslab started.",
           expected="a natslab Server", seen=f"{type(srv).__name__}: {srv!r}"[:100],
           hint="return the value of natslab.server(...).")
    try:
        expect(srv.running, "the server you returned is not running.", expected="running", seen="stopped",
               hint="don't stop the server inside the function; return it running.")
        varz = srv.monitor("varz")
        expect(varz.get("server_name") == "welcome", "the server has the wrong name.",
               expected="server_name: welcome", seen=f"server_name: {varz.get('server_name')}",
               hint='give natslab.server() the name as its first argument: natslab.server("welcome").')
        jsz = srv.monitor("jsz")
        js_on = bool(jsz.get("config")) and not jsz.get("disabled", False)
        expect(js_on, "JetStream is not enabled on the server.", expected="/jsz shows a JetStream config",
               seen="JetStream disabled", hint="pass jetstream=True.")
        return f"/varz names it {varz['server_name']!r}, nats-server {varz.get('version')}, JetStream on."
    finally:
        await asyncio.to_thread(srv.close)


@exercise("0.2", "publish a first message",
          hints=('await nc.publish("greetings.world", b"hello, NATS")',))
async def publish_first(say_hello):
    async with scratch_server(jetstream=False) as srv, client(srv) as watcher, client(srv) as nc:
        sub = await watcher.subscribe(">")
        await watcher.flush()
        await call_learner(say_hello, nc, what="say_hello(nc)")
        await nc.flush()
        try:
            msg = await sub.next_msg(timeout=2)
        except asyncio.TimeoutError:
            msg = None
        expect(msg is not None, "no message reached the server.", expected="one message on greetings.world",
               seen="nothing within 2 s", hint="call await nc.publish(subject, data) inside say_hello.")
        expect(msg.subject == "greetings.world", "the message went to another subject.",
               expected="subject greetings.world", seen=f"subject {msg.subject}",
               hint="subjects are case-sensitive and separated by dots.")
        expect(msg.data == b"hello, NATS", "the message carries other data.",
               expected=repr(b"hello, NATS"), seen=repr(msg.data)[:80],
               hint="payloads are bytes: b\"hello, NATS\" or \"hello, NATS\".encode().")
        return "a subscriber on '>' received b'hello, NATS' on greetings.world."


@exercise("0.3", "receive a message",
          hints=("sub = await nc.subscribe(subject); msg = await sub.next_msg(timeout=5); "
               "await sub.unsubscribe(); return msg.data.decode()",))
async def receive_first(first_message):
    token = f"token-{uuid.uuid4().hex[:8]}"
    subject = f"welcome.{uuid.uuid4().hex[:6]}"
    async with scratch_server(jetstream=False) as srv, client(srv) as pub, client(srv) as nc:
        before = subs_of(srv, nc)
        task = asyncio.ensure_future(call_learner(first_message, nc, subject, what="first_message(nc, subject)"))
        while not task.done():  # the learner subscribes whenever it likes: keep offering the token
            await pub.publish(subject, token.encode())
            await pub.flush()
            await asyncio.wait({task}, timeout=0.05)
        got = task.result()
        if isinstance(got, (bytes, bytearray)):
            got = bytes(got).decode(errors="replace")
        expect(got == token, "first_message returned something other than the message's text.",
               expected=repr(token), seen=repr(got)[:80],
               hint="return msg.data.decode(): the data of the message, as text.")
        await nc.flush()
        after = subs_of(srv, nc)
        expect(after <= before, "the subscription is still open after first_message returned.",
               expected=f"{before} subscriptions on the connection (server's /connz)",
               seen=f"{after} subscriptions",
               hint="call await sub.unsubscribe() once you have the message: the server keeps "
                    "routing messages to a subscription until you do.")
        return f"it returned {token!r}, published by the checker, and left no subscription behind (/connz)."


@exercise("0.4", "read the server's own view",
          hints=('server.monitor("varz")["connections"] is the number of client connections right now.',))
async def count_connections(client_count):
    async with scratch_server(jetstream=False) as srv:
        seen = []
        for extra in (2, 5):
            conns = [await _open(srv) for _ in range(extra)]
            want = srv.monitor("varz")["connections"]
            got = await call_learner(client_count, srv, what="client_count(server)")
            seen.append((want, got))
            for c in conns:
                await c.close()
            expect(got == want, "client_count returned a different number than the server reports.",
                   expected=f"{want} (from the server's /varz)", seen=repr(got),
                   hint="ask the server each time: server.monitor(\"varz\") returns /varz as a dict.")
        return f"it matched the server's /varz with {seen[0][0]} and then {seen[1][0]} connections open."


async def _open(srv):
    from ...runtime.client import connect

    return await connect(srv, quiet=True)
