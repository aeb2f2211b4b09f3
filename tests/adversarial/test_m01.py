"""Module 01 exercises answered as learners do: other correct answers pass (plain nats-py calls, plain
nats.connect), plausible wrong ones fail with a verdict that names the mistake."""
from __future__ import annotations

import asyncio
import json

import nats
import nats.errors

import natslab
from adversarial.harness import fails, passes


# ------------------------------------------------------------------------------ 1.1
def _router(temp_pattern="sensors.*.temperature", audit_pattern="audit.>", site_token=1, archive=True,
            unsubscribe=False):
    async def route(nc):
        async def temperature(msg):
            await nc.publish(f"alerts.{msg.subject.split('.')[site_token]}", msg.data)

        async def audit(msg):
            await nc.publish(f"archive.{msg.subject}" if archive else msg.subject.replace("audit", "archive", 1),
                             msg.data)

        a = await nc.subscribe(temp_pattern, cb=temperature)
        b = await nc.subscribe(audit_pattern, cb=audit)
        if unsubscribe:
            await a.unsubscribe()
            await b.unsubscribe()
    return route


def test_1_1_correct_answers():
    async def one_wildcard_sub(nc):
        async def cb(msg):
            t = msg.subject.split(".")
            if len(t) == 3 and t[0] == "sensors" and t[2] == "temperature":
                await nc.publish("alerts." + t[1], msg.data)
            elif len(t) >= 2 and t[0] == "audit":
                await nc.publish("archive." + msg.subject, msg.data)
        await nc.subscribe("sensors.>", cb=cb)
        await nc.subscribe("audit.>", cb=cb)

    async def own_connection(nc):           # a router with a connection of its own, kept open
        mine = await nats.connect(nc.connected_url.geturl(), name="my-router")
        _keep.append(mine)

        async def temperature(msg):
            await mine.publish("alerts." + msg.subject.split(".")[1], msg.data)

        async def audit(msg):
            await mine.publish("archive." + msg.subject, msg.data)
        await mine.subscribe("sensors.*.temperature", cb=temperature)
        await mine.subscribe("audit.>", cb=audit)
        await mine.flush()
    _keep: list = []
    passes("1.1", _router())
    passes("1.1", one_wildcard_sub)
    try:
        passes("1.1", own_connection)
    finally:
        for c in _keep:
            asyncio.run(_close_quietly(c))


async def _close_quietly(nc):
    try:
        await nc.close()
    except Exception:
        pass


def test_1_1_wrong_answers():
    fails("1.1", _router(temp_pattern="sensors.>"), says=("should not have been routed", "exactly three tokens"))
    fails("1.1", _router(audit_pattern="audit.*"), says=("was not forwarded", "'>' one or more"))
    fails("1.1", _router(unsubscribe=True), says=("no subscription on the server", "leave its subscriptions open"))
    fails("1.1", _router(site_token=2), says=("was not forwarded", "tokens of msg.subject"))
    fails("1.1", _router(archive=False), says=("was not forwarded", "archive."))

    async def str_forward(nc):
        async def temperature(msg):
            await nc.publish("alerts." + msg.subject.split(".")[1], msg.data.decode())

        async def audit(msg):
            await nc.publish("archive." + msg.subject, msg.data)
        await nc.subscribe("sensors.*.temperature", cb=temperature)
        await nc.subscribe("audit.>", cb=audit)
    fails("1.1", str_forward, says=("raised TypeError", "bytes"))

    async def closes(nc):
        await _router()(nc)
        await nc.drain()
    fails("1.1", closes, says="closed (or drained) the connection")


# ------------------------------------------------------------------------------ 1.2
def test_1_2_correct_answers():
    async def publish_to_reply(nc, subject):
        async def cb(msg):
            await nc.publish(msg.reply, msg.data.decode().upper().encode())
        await nc.subscribe(subject, cb=cb)

    async def queue_group(nc, subject):
        async def cb(msg):
            await msg.respond(bytes(msg.data).upper())
        for _ in range(2):
            await nc.subscribe(subject, queue="upper", cb=cb)
        await nc.flush()
    passes("1.2", publish_to_reply)
    passes("1.2", queue_group)


def test_1_2_wrong_answers():
    async def responds_str(nc, subject):
        async def cb(msg):
            await msg.respond(msg.data.decode().upper())
        await nc.subscribe(subject, cb=cb)

    async def not_upper(nc, subject):
        async def cb(msg):
            await msg.respond(msg.data)
        await nc.subscribe(subject, cb=cb)

    async def replies_to_subject(nc, subject):
        async def cb(msg):
            await nc.publish(subject + ".reply", msg.data.upper())
        await nc.subscribe(subject, cb=cb)

    async def not_awaited(nc, subject):
        async def cb(msg):
            msg.respond(msg.data.upper())  # noqa: RUF006 (the mistake under test)
        await nc.subscribe(subject, cb=cb)

    async def gone(nc, subject):
        async def cb(msg):
            await msg.respond(msg.data.upper())
        sub = await nc.subscribe(subject, cb=cb)
        await sub.unsubscribe()
    fails("1.2", responds_str, says=("callback raised", "bytes"))
    fails("1.2", not_upper, says="upper case")
    fails("1.2", replies_to_subject, says=("never replied", "msg.reply"))
    fails("1.2", not_awaited, says="never replied")
    fails("1.2", gone, says="nobody was subscribed")


# ------------------------------------------------------------------------------ 1.3
def _asker(timeout=0.5, catch_first=None):
    async def ask(nc, subject, text):
        try:
            msg = await nc.request(subject, text.encode(), timeout=timeout)
        except nats.errors.NoRespondersError:
            return "no responders"
        except nats.errors.TimeoutError:
            return "timeout"
        return msg.data.decode()
    return ask


def test_1_3_correct_answers():
    async def by_hand(nc, subject, text):
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish(subject, text.encode(), reply=inbox)
        try:
            msg = await sub.next_msg(timeout=0.5)
        except asyncio.TimeoutError:
            return "timeout"
        finally:
            await sub.unsubscribe()
        if msg.headers and msg.headers.get("Status") == "503":
            return "no responders"
        return msg.data.decode()

    async def asyncio_timeout(nc, subject, text):
        try:
            return (await nc.request(subject, text.encode())).data.decode()   # 0.5 s is nats-py's default
        except nats.errors.NoRespondersError:
            return "no responders"
        except asyncio.TimeoutError:
            return "timeout"
    passes("1.3", _asker())
    passes("1.3", by_hand)
    passes("1.3", asyncio_timeout)


def test_1_3_wrong_answers():
    async def one_except(nc, subject, text):
        try:
            return (await nc.request(subject, text.encode(), timeout=0.5)).data.decode()
        except Exception:
            return "timeout"

    async def returns_bytes(nc, subject, text):
        try:
            return (await nc.request(subject, text.encode(), timeout=0.5)).data
        except nats.errors.NoRespondersError:
            return "no responders"
        except nats.errors.TimeoutError:
            return "timeout"

    async def uncaught(nc, subject, text):
        return (await nc.request(subject, text.encode(), timeout=0.5)).data.decode()
    fails("1.3", _asker(timeout=2), says="waited longer than 0.5 s")
    fails("1.3", _asker(timeout=0.05), says="0.2 s after the request")
    fails("1.3", one_except, says="must return 'no responders'")
    fails("1.3", returns_bytes, says="returned bytes")
    fails("1.3", uncaught, says=("NoRespondersError", "return 'no responders'"))


# ------------------------------------------------------------------------------ 1.4
def _workers(queue=lambda i: "workers", count=lambda n: n, reply=lambda d: b"done:" + d):
    async def start_workers(nc, subject, n):
        for i in range(count(n)):
            async def work(msg):
                await msg.respond(reply(msg.data))
            await nc.subscribe(subject, queue=queue(i), cb=work)
    return start_workers


def test_1_4_correct_answers():
    async def own_connections(nc, subject, n):
        url = nc.connected_url.geturl()
        for i in range(n):
            worker = await nats.connect(url, name=f"worker-{i}")
            _keep.append(worker)

            async def work(msg, worker=worker):
                await worker.publish(msg.reply, b"done:" + msg.data)
            await worker.subscribe(subject, "pool", cb=work)
    _keep: list = []
    passes("1.4", _workers(queue=lambda i: "pool"))
    try:
        passes("1.4", own_connections)
    finally:
        for c in _keep:
            asyncio.run(_close_quietly(c))


def test_1_4_wrong_answers():
    fails("1.4", _workers(queue=lambda i: None), says="without a queue group")
    fails("1.4", _workers(queue=lambda i: f"w{i}"), says="different queue groups")
    fails("1.4", _workers(count=lambda n: 1), says="different number of subscriptions")
    fails("1.4", _workers(reply=lambda d: b"done: " + d), says="wrong payload")
    fails("1.4", _workers(reply=lambda d: "done:" + d.decode()), says=("raised TypeError", "bytes"))


# ------------------------------------------------------------------------------ 1.5
def _order(headers=lambda t: {"Content-Type": "application/json", "Trace-Id": t},
           body=lambda o, i, t: {"version": 2, "order_id": o, "items": i}, end=None):
    async def publish_order(nc, subject, order_id, items, trace_id):
        await nc.publish(subject, json.dumps(body(order_id, items, trace_id)).encode(), headers=headers(trace_id))
        if end == "close":
            await nc.close()
        elif end == "drain":
            await nc.drain()
    return publish_order


def test_1_5_correct_answers():
    passes("1.5", _order(end="drain"))
    passes("1.5", _order(end="close"))
    passes("1.5", _order(headers=lambda t: {"Trace-Id": t, "Content-Type": "application/json", "Source": "shop"},
                         body=lambda o, i, t: {"items": i, "order_id": o, "version": 2, "note": "v2"}))


def test_1_5_wrong_answers():
    fails("1.5", _order(body=lambda o, i, t: {"version": 2, "order_id": o, "items": i, "trace_id": t}),
          says="trace id is in the body")
    fails("1.5", _order(headers=lambda t: {"Trace-Id": t}), says="Content-Type header")
    fails("1.5", _order(headers=lambda t: {"Content-Type": "application/json", "trace-id": t}), says="Trace-Id header")
    fails("1.5", _order(body=lambda o, i, t: {"version": "2", "order_id": o, "items": i}), says="version 2")
    fails("1.5", _order(body=lambda o, i, t: {"version": 2, "order_id": o, "items": json.dumps(i)}),
          says="does not carry the order")


# ------------------------------------------------------------------------------ 1.6
def _chunks(size=lambda nc: nc.max_payload - 512, index0=0, count_fix=0, headers=True, end=None):
    async def send_large(nc, subject, data):
        step = size(nc)
        n = (len(data) + step - 1) // step + count_fix
        for i in range(0, len(data), step):
            h = {"Chunk-Index": str(i // step + index0), "Chunk-Count": str(n)} if headers else None
            await nc.publish(subject, data[i:i + step], headers=h)
        if end == "drain":
            await nc.drain()
    return send_large


def test_1_6_correct_answers():
    async def memoryview_slices(nc, subject, data):
        view, size = memoryview(data), 1000
        parts = [view[i:i + size] for i in range(0, len(data), size)]
        for i, part in enumerate(parts):
            await nc.publish(subject, bytes(part), headers={"Chunk-Count": f"{len(parts)}", "Chunk-Index": f"{i}"})
        await nc.flush()
    passes("1.6", _chunks(end="drain"))
    passes("1.6", memoryview_slices)


def test_1_6_wrong_answers():
    fails("1.6", _chunks(size=lambda nc: nc.max_payload), says=("max_payload", "headers"))
    fails("1.6", _chunks(size=lambda nc: 10 * nc.max_payload), says=("bigger than max_payload", "refused"))
    fails("1.6", _chunks(headers=False), says="Chunk-Index / Chunk-Count")
    fails("1.6", _chunks(index0=1), says="not 0..n-1")
    fails("1.6", _chunks(count_fix=1), says="Chunk-Count does not match")


# ------------------------------------------------------------------------------ 1.7
def _gather(per_reply=False, convert=float, always_wait=False, order=sorted):
    async def gather_quotes(nc, subject, expected, max_wait):
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish(subject, b"", reply=inbox)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        out = []
        while (always_wait or len(out) < expected) and (per_reply or loop.time() < deadline):
            try:
                wait = max_wait if per_reply else deadline - loop.time()
                msg = await sub.next_msg(timeout=max(wait, 0.001))
            except asyncio.TimeoutError:
                break
            out.append(convert(msg))
        await sub.unsubscribe()
        return order(out, key=lambda x: float(x.data) if hasattr(x, "data") else float(x))
    return gather_quotes


def test_1_7_correct_answers():
    async def with_callback(nc, subject, expected, max_wait):
        prices, enough = [], asyncio.Event()

        async def cb(msg):
            prices.append(float(msg.data.decode()))
            if len(prices) >= expected:
                enough.set()
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, cb=cb)
        await nc.publish(subject, b"quote?", reply=inbox)
        try:
            await asyncio.wait_for(enough.wait(), max_wait)
        except asyncio.TimeoutError:
            pass
        await sub.unsubscribe()
        return sorted(prices)
    passes("1.7", _gather(convert=lambda m: float(m.data)))
    passes("1.7", with_callback)


def test_1_7_wrong_answers():
    fails("1.7", _gather(per_reply=True, convert=lambda m: float(m.data)), says="longer than max_wait in total")
    fails("1.7", _gather(convert=lambda m: m), says=("list of Msg", "float()"))
    fails("1.7", _gather(convert=lambda m: m.data.decode()), says="list of str")
    fails("1.7", _gather(always_wait=True, convert=lambda m: float(m.data)), says="kept waiting")

    async def one_request(nc, subject, expected, max_wait):
        return [float((await nc.request(subject, b"", timeout=max_wait)).data)]

    async def request_each(nc, subject, expected, max_wait):
        out = []
        for _ in range(expected):
            try:
                out.append(float((await nc.request(subject, b"", timeout=max_wait / expected)).data))
            except nats.errors.TimeoutError:
                break
        return sorted(out)
    fails("1.7", one_request, says="not every responder")
    fails("1.7", request_each, says="exactly once")


# ------------------------------------------------------------------------------ 1.8
def _resilient(wait=0.5, attempts=-1, name="resilient", sync_cb=False, words=("disconnected", "reconnected")):
    async def resilient_client(srv, events):
        async def down():
            events.append(words[0])

        async def up():
            events.append(words[1])

        def sync_down():
            events.append(words[0])
        return await nats.connect(srv.url, name=name, reconnect_time_wait=wait, max_reconnect_attempts=attempts,
                                  disconnected_cb=sync_down if sync_cb else down, reconnected_cb=up)
    return resilient_client


def test_1_8_correct_answers():
    async def natslab_connect(srv, events):
        async def gone():
            events.append("disconnected")

        async def back():
            events.append("reconnected")
        return await natslab.connect(srv, name="resilient", reconnect_time_wait=0.4, max_reconnect_attempts=-1,
                                     disconnected_cb=gone, reconnected_cb=back)
    passes("1.8", _resilient())
    passes("1.8", natslab_connect)


def test_1_8_wrong_answers():
    fails("1.8", _resilient(wait=2), says="every half second")
    fails("1.8", _resilient(attempts=10), says="gives up")
    fails("1.8", _resilient(name="Resilient"), says="no connection named")
    fails("1.8", _resilient(sync_cb=True), says=("raised", "async def"))
    fails("1.8", _resilient(words=("down", "up")), says="no 'disconnected'")


# ------------------------------------------------------------------------------ 1.9
def test_1_9_correct_answers():
    async def drain_with_limit(nc):
        await asyncio.wait_for(nc.drain(), 20)

    async def task_awaited(nc):
        task = asyncio.ensure_future(nc.drain())
        await task
        assert nc.is_closed
    passes("1.9", drain_with_limit)
    passes("1.9", task_awaited)


def test_1_9_wrong_answers():
    async def closes(nc):
        await nc.close()

    async def not_awaited(nc):
        asyncio.ensure_future(nc.drain())

    async def flush_then_close(nc):
        await nc.flush()
        await nc.close()

    async def nothing(nc):
        await nc.flush()
    fails("1.9", closes, says=("thrown away", "received but not processed"))
    fails("1.9", not_awaited, says="returned before the worker had stopped")
    fails("1.9", flush_then_close, says="thrown away")
    fails("1.9", nothing, says="still open")
