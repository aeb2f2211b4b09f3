"""Module 00 (Welcome): start a server, publish, subscribe, read the server's own view.

Learner code gets plain ``nats.connect`` connections (``learner_client``); the checkers wait on the
server's view of that connection (``/connz``, ``/subsz``), never on a flush of it.
"""
from __future__ import annotations

import asyncio
import contextlib

from ..checks import Mismatch, call_learner, exercise, expect
from ...runtime.server import Server
from ...runtime.waiting import until
from . import client, learner_client, of_type, published_by, scratch_server, subs_of, text_result, token


# ------------------------------------------------------------------------------ 0.1
@exercise("0.1", "start a server", hints=(
    "a server is started with the course's helper natslab.server(name, ...) and returned running "
    "(notebook 00_welcome, 'Start a server').",
    "natslab.server(name, jetstream=...) returns a Server; its first argument becomes the server_name "
    "in /varz.",
    'return natslab.server("welcome", jetstream=True)',
))
async def start_server(start_fn):
    srv = await call_learner(start_fn, what="start_welcome_server()", timeout=60)
    of_type(srv, Server, "start_welcome_server()", "the Server that natslab.server(...) returned")
    try:
        expect(srv.running, "the server you returned is not running.", expected="running", seen="stopped",
               hint="a server that is stopped (or never started) before the function returns cannot "
                    "answer; return it running.")
        varz = srv.monitor("varz")
        expect(varz.get("server_name") == "welcome", "the server has the wrong name.",
               expected="server_name: welcome", seen=f"server_name: {varz.get('server_name')}",
               hint="the name natslab.server() is given is the server_name the server reports in /varz; "
                    "names are case-sensitive.")
        jsz = srv.monitor("jsz")
        js_on = bool(jsz.get("config")) and not jsz.get("disabled", False)
        expect(js_on, "JetStream is not enabled on the server.", expected="/jsz shows a JetStream config",
               seen="JetStream disabled",
               hint="JetStream is a server option: natslab.server turns it on or off with its jetstream argument.")
        return f"/varz names it {varz['server_name']!r} (nats-server {varz.get('version')}); /jsz shows JetStream on."
    finally:
        await asyncio.to_thread(srv.close)


# ------------------------------------------------------------------------------ 0.2
@exercise("0.2", "publish a first message", hints=(
    "publishing sends bytes to a subject; the server forwards them to every matching subscription "
    "(notebook 00_welcome, 'Your first message').",
    "await nc.publish(subject, payload) with the subject as text and the payload as bytes.",
    'await nc.publish("greetings.world", b"hello, NATS")',
))
async def publish_first(say_hello):
    async with scratch_server(jetstream=False) as srv, client(srv) as watcher, learner_client(srv) as nc:
        got = await published_by(srv, watcher, nc, lambda: call_learner(say_hello, nc, what="say_hello(nc)"))
        expect(got, "no message reached the server.", expected="one message on greetings.world",
               seen="nothing (a subscriber on '>' received nothing from your connection)",
               hint="a publish is a call on the connection you are given; was it awaited?")
        expect(len(got) == 1, "say_hello published more than one message.", expected="exactly one message",
               seen=", ".join(f"{m.subject}: {m.data!r}" for m in got)[:160],
               hint="the exercise asks for a single publish.")
        msg = got[0]
        expect(msg.subject == "greetings.world", "the message went to another subject.",
               expected="subject greetings.world", seen=f"subject {msg.subject}",
               hint="subjects are compared exactly: case-sensitive, tokens separated by dots.")
        expect(msg.data == b"hello, NATS", "the message carries other data.",
               expected=repr(b"hello, NATS"), seen=repr(msg.data)[:80],
               hint="the payload is compared byte for byte: same text, same case, same punctuation.")
        return "a subscriber on '>' received exactly one message: b'hello, NATS' on greetings.world."


# ------------------------------------------------------------------------------ 0.3
@exercise("0.3", "receive a message", hints=(
    "a subscription receives messages until you unsubscribe; a message's data is bytes "
    "(notebook 00_welcome, 'Your first message').",
    "nc.subscribe(subject) returns a subscription; sub.next_msg(timeout=...) waits for one message; "
    "sub.unsubscribe() ends it; bytes.decode() gives text.",
    "sub = await nc.subscribe(subject); msg = await sub.next_msg(timeout=5); "
    "await sub.unsubscribe(); return msg.data.decode()",
))
async def receive_first(first_message):
    secret = f"token-{token(8)}"
    subject = f"welcome.{token()}"
    async with scratch_server(jetstream=False) as srv, client(srv) as pub, learner_client(srv) as nc:
        before = subs_of(srv, nc)
        task = asyncio.ensure_future(call_learner(first_message, nc, subject, timeout=10,
                                                  what="first_message(nc, subject)"))
        try:
            while not task.done():  # the learner subscribes whenever it likes: keep offering the token
                await pub.publish(subject, secret.encode())
                await asyncio.wait({task}, timeout=0.05)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        got = text_result(task.result(), "first_message")
        expect(got == secret, "first_message returned something other than the message's text.",
               expected=repr(secret), seen=repr(got)[:80],
               hint="the checker's message carries the token as its data; return that data as text, "
                    "nothing added (str(bytes) adds b'...').")
        expect(not nc.is_closed, "first_message closed the connection it was handed.",
               expected="the connection still open", seen="closed",
               hint="ending the subscription is enough; the connection belongs to the caller.")
        after = await until(lambda: subs_of(srv, nc) <= before, "the subscription to go", timeout=3,
                            error=False)
        expect(after, "the subscription is still open after first_message returned.",
               expected=f"{before} subscriptions on the connection (server's /connz)",
               seen=f"{subs_of(srv, nc)} subscriptions",
               hint="the server keeps routing messages to a subscription until it is told to end it "
                    "(an UNSUB); reading one message does not end it, and neither does nats-py's "
                    "subscribe(max_msgs=1), which only stops delivery inside the client.")
        return f"it returned {secret!r}, published by the checker, and left no subscription behind (/connz)."


# ------------------------------------------------------------------------------ 0.4
@exercise("0.4", "read the server's own view", hints=(
    "the server counts its own connections and tells you on its monitoring port, in /varz "
    "(notebook 00_welcome, 'Start a server' and 'Your first message').",
    'server.monitor("varz") returns /varz as a dict; its "connections" field is the number open now.',
    'return server.monitor("varz")["connections"]',
))
async def count_connections(client_count):
    async with scratch_server(jetstream=False) as srv:
        seen = []
        for extra in (2, 5, 3):
            async with contextlib.AsyncExitStack() as stack:
                for _ in range(extra):
                    await stack.enter_async_context(client(srv))
                await until(lambda: srv.monitor("varz")["connections"] == extra,
                            f"the server to count {extra} connections", timeout=10)
                got = await call_learner(client_count, srv, what="client_count(server)")
                of_type(got, int, "client_count(server)", "an int (the number of connections)")
                varz = srv.monitor("varz")
                seen.append(extra)
                if got != extra and got == varz.get("total_connections"):
                    raise Mismatch("client_count returned how many connections the server has ever had.",
                                   expected=f"{extra} open now (from /varz connections)",
                                   seen=f"{got} (/varz total_connections)",
                                   hint="total_connections counts every connection since the server started; "
                                        "another field counts the ones open now.")
                expect(got == extra, "client_count returned a different number than the server reports.",
                       expected=f"{extra} (from the server's /varz)", seen=repr(got),
                       hint="the count changes between calls: ask the server each time, and count every "
                            "client it has, not only connections your code opened.")
        return f"it matched the server's /varz with {seen[0]}, {seen[1]} and then {seen[2]} connections open."
