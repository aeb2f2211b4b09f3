"""Module 00 exercises answered as learners do: other correct answers pass, plausible wrong ones fail
with a verdict that names the mistake."""
from __future__ import annotations

import asyncio

import nats

import natslab
from adversarial.harness import fails, passes


# ------------------------------------------------------------------------------ 0.1
def test_0_1_correct_answers():
    passes("0.1", lambda: natslab.server(name="welcome", jetstream=True))
    passes("0.1", lambda: natslab.server("welcome", jetstream={"max_memory_store": 64 * 1024 * 1024}))


def test_0_1_wrong_answers():
    fails("0.1", lambda: natslab.server("welcome", jetstream=False), says="JetStream is not enabled")
    fails("0.1", lambda: natslab.server("Welcome", jetstream=True), says=("wrong name", "server_name: Welcome"))
    fails("0.1", lambda: natslab.server("welcome", jetstream=True).url, says=("returned str", "Server"))

    def stopped():
        srv = natslab.server("welcome", jetstream=True)
        srv.stop()
        return srv
    fails("0.1", stopped, says="not running")


# ------------------------------------------------------------------------------ 0.2
def test_0_2_correct_answers():
    async def drains_after(nc):
        await nc.publish("greetings.world", "hello, NATS".encode())
        await nc.drain()                      # as lesson 01.6 recommends for a publisher that is done

    async def own_connection(nc):
        mine = await nats.connect(nc.connected_url.geturl())
        await mine.publish("greetings.world", b"hello, NATS")
        await mine.flush()
        await mine.close()

    async def flushes(nc):
        await nc.publish(subject="greetings.world", payload=b"hello, NATS")
        await nc.flush()
    passes("0.2", drains_after)
    passes("0.2", own_connection)
    passes("0.2", flushes)


def test_0_2_wrong_answers():
    async def wrong_case(nc):
        await nc.publish("greetings.World", b"hello, NATS")

    async def other_text(nc):
        await nc.publish("greetings.world", b"Hello, NATS!")

    async def not_awaited(nc):
        nc.publish("greetings.world", b"hello, NATS")  # noqa: RUF006 (the mistake under test)

    async def twice(nc):
        await nc.publish("greetings.world", b"hello, NATS")
        await nc.publish("greetings.world", b"hello, NATS")

    async def str_payload(nc):
        await nc.publish("greetings.world", "hello, NATS")
    fails("0.2", wrong_case, says="another subject")
    fails("0.2", other_text, says="other data")
    fails("0.2", not_awaited, says=("no message", "awaited"))
    fails("0.2", twice, says="more than one")
    fails("0.2", str_payload, says=("raised", "bytes"))


# ------------------------------------------------------------------------------ 0.3
def test_0_3_correct_answers():
    async def with_callback(nc, subject):
        got = asyncio.get_running_loop().create_future()

        async def cb(msg):
            if not got.done():
                got.set_result(msg.data.decode())
        sub = await nc.subscribe(subject, cb=cb)
        text = await asyncio.wait_for(got, 5)
        await sub.unsubscribe()
        return text

    async def auto_unsubscribe(nc, subject):
        sub = await nc.subscribe(subject)
        await sub.unsubscribe(limit=1)       # UNSUB <sid> 1: the server ends it after one message
        msg = await sub.next_msg(timeout=5)
        return str(msg.data, "utf-8")

    async def iterate(nc, subject):
        sub = await nc.subscribe(subject)
        async for msg in sub.messages:
            await sub.unsubscribe()
            return msg.data.decode()
    passes("0.3", with_callback)
    passes("0.3", auto_unsubscribe)
    passes("0.3", iterate)


def test_0_3_wrong_answers():
    async def returns_bytes(nc, subject):
        sub = await nc.subscribe(subject)
        msg = await sub.next_msg(timeout=5)
        await sub.unsubscribe()
        return msg.data

    async def returns_msg(nc, subject):
        sub = await nc.subscribe(subject)
        msg = await sub.next_msg(timeout=5)
        await sub.unsubscribe()
        return msg

    async def keeps_subscription(nc, subject):
        sub = await nc.subscribe(subject)
        return (await sub.next_msg(timeout=5)).data.decode()

    async def str_of_bytes(nc, subject):
        sub = await nc.subscribe(subject)
        msg = await sub.next_msg(timeout=5)
        await sub.unsubscribe()
        return str(msg.data)

    async def client_side_limit(nc, subject):
        sub = await nc.subscribe(subject, max_msgs=1)   # nats-py: the server is never told
        return (await sub.next_msg(timeout=5)).data.decode()

    async def closes(nc, subject):
        sub = await nc.subscribe(subject)
        msg = await sub.next_msg(timeout=5)
        await nc.close()
        return msg.data.decode()
    fails("0.3", returns_bytes, says=("returned bytes", ".decode()"))
    fails("0.3", returns_msg, says=("must return text", "Msg"))
    fails("0.3", keeps_subscription, says="subscription is still open")
    fails("0.3", str_of_bytes, says="other than the message's text")
    fails("0.3", closes, says="closed the connection")
    fails("0.3", client_side_limit, says=("subscription is still open", "max_msgs"))


# ------------------------------------------------------------------------------ 0.4
def test_0_4_correct_answers():
    passes("0.4", lambda server: server.monitor("connz")["num_connections"])
    passes("0.4", lambda server: len(server.monitor("connz", limit=1000)["connections"]))


def test_0_4_wrong_answers():
    fails("0.4", lambda server: server.monitor("varz")["total_connections"], says="ever had")
    fails("0.4", lambda server: 2, says="different number")
    fails("0.4", lambda server: str(server.monitor("varz")["connections"]), says=("returned str", "an int"))
    cache = {}
    fails("0.4", lambda server: cache.setdefault("n", server.monitor("varz")["connections"]), says="ask the server each time")
