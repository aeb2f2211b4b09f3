"""Module 01 (core messaging): wildcards, request/reply, queue groups, headers, message size,
scatter-gather, reconnects and draining.  Every checker drives its own server and looks at
what the server and the checker's own connections really saw."""
from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid

import nats.errors

from ..checks import Mismatch, call_learner, exercise, expect
from ...lessons.fanout import ready
from ...runtime.waiting import until
from . import client, scratch_server


def _tok(n: int = 6) -> str:
    return uuid.uuid4().hex[:n]


async def _until(cond, timeout: float) -> bool:
    return await until(cond, timeout=timeout, error=False)


async def _drain_sub(sub) -> list:
    out = []
    while sub.pending_msgs:
        out.append(await sub.next_msg(timeout=1))
    return out


async def _after_everything_from(pub, sub_nc, timeout: float = 5.0) -> None:
    """Return once everything ``pub`` has published so far has reached ``sub_nc``.

    One publisher's messages reach one connection in order, so a marker published last
    arrives last: when it is here, the rest is already in the subscriptions' queues.
    """
    subject = f"_CHECK.marker.{_tok(12)}"
    marker = await sub_nc.subscribe(subject)
    try:
        await ready(sub_nc)
        await pub.publish(subject, b"")
        await marker.next_msg(timeout=timeout)
    finally:
        await marker.unsubscribe()


def _subs_on(srv, subject: str) -> list[dict]:
    """Every client subscription on exactly ``subject``, from the server's /connz."""
    found = []
    for conn in srv.monitor("connz", subs="detail", limit=1024).get("connections", []):
        for s in conn.get("subscriptions_list_detail") or []:
            if s.get("subject") == subject:
                found.append({**s, "conn_name": conn.get("name")})
    return found


# ------------------------------------------------------------------------------ 1.1
@exercise("1.1", "route by wildcard",
          hints=("two subscriptions: 'sensors.*.temperature' (one token for the site) and 'audit.>' "
               "(one or more tokens); in each callback, publish msg.data to the new subject.",))
async def route_by_wildcard(route):
    sites = [f"site-{_tok(4)}" for _ in range(2)]
    who = _tok(4)
    cases = [  # (published subject, forwarded subject or None)
        (f"sensors.{sites[0]}.temperature", f"alerts.{sites[0]}"),
        (f"sensors.{sites[1]}.temperature", f"alerts.{sites[1]}"),
        (f"sensors.{sites[0]}.humidity", None),
        (f"sensors.{sites[1]}.temperature.raw", None),
        ("sensors.temperature", None),
        (f"Sensors.{sites[0]}.temperature", None),
        (f"audit.{who}.login", f"archive.audit.{who}.login"),
        (f"audit.{who}.profile.email.changed", f"archive.audit.{who}.profile.email.changed"),
        ("audit", None),
        (f"auditing.{who}", None),
    ]
    random.shuffle(cases)
    async with scratch_server(jetstream=False) as srv, client(srv) as chk, client(srv, name="router") as nc:
        got: list = []

        async def keep(msg):
            got.append(msg)

        await chk.subscribe("alerts.>", cb=keep)
        await chk.subscribe("archive.>", cb=keep)
        await ready(chk)
        await call_learner(route, nc, what="route(nc)")
        await ready(nc)
        payloads = {}
        for subject, _ in cases:
            payloads[subject] = f"reading-{_tok(8)}".encode()
            await chk.publish(subject, payloads[subject])
        # one last matching message per route: once both come out, everything before them has too
        marker_data = set()
        for marker in (f"sensors.m{_tok(4)}.temperature", f"audit.m{_tok(4)}"):
            data = f"marker-{_tok(8)}".encode()
            marker_data.add(data)
            await chk.publish(marker, data)
        await ready(chk)

        def both_markers() -> bool:
            return marker_data <= {m.data for m in got}

        await _until(both_markers, 5)
        forwarded = {(m.subject, m.data) for m in got if m.data not in marker_data}
        source_of = {data: subject for subject, data in payloads.items()}
        want = {(fwd, payloads[src]) for src, fwd in cases if fwd}
        for src, fwd in sorted(cases, key=lambda c: c[1] is None):
            if fwd and (fwd, payloads[src]) not in forwarded:
                wrong = [s for s, d in forwarded if d == payloads[src]]
                raise Mismatch(f"the message published to {src!r} was not forwarded to {fwd!r}.",
                               expected=f"{fwd!r} with the same payload",
                               seen=f"forwarded to {wrong}" if wrong else "nothing forwarded",
                               hint="'*' matches exactly one token, '>' one or more tokens at the end; build "
                                    "the new subject from the tokens of msg.subject.")
        extra = sorted(forwarded - want)
        expect(not extra, "a message that should not have been routed was forwarded.",
               expected="no forward for " + ", ".join(repr(s) for s, f in cases if not f),
               seen=", ".join(f"{source_of.get(d, '?')!r} -> {s!r}" for s, d in extra),
               hint="'sensors.*.temperature' needs exactly three tokens; 'audit.>' needs at least one token "
                    "after 'audit'; subjects are case-sensitive.")
        markers_ok = both_markers()
        expect(markers_ok, "the router stopped forwarding (the checker's last messages never came through).",
               expected="every matching message forwarded", seen="the final marker messages were not forwarded",
               hint="keep the subscriptions open after route() returns: don't unsubscribe or close nc.")
        return (f"{len(want)} matching messages forwarded with their payloads, {len(cases) - len(want)} "
                "look-alikes left alone.")


# ------------------------------------------------------------------------------ 1.2
@exercise("1.2", "a request/reply service",
          hints=("sub = await nc.subscribe(subject, cb=handler) where handler does "
               "await msg.respond(msg.data.upper())",))
async def upper_service(start_service):
    subject = f"svc.upper.{_tok()}"
    async with scratch_server(jetstream=False) as srv, client(srv) as chk, client(srv, name="service") as nc:
        await call_learner(start_service, nc, subject, what="start_upper_service(nc, subject)")
        await ready(nc)
        words = [f"{random.choice(['hello', 'nats', 'reply', 'queue'])}-{_tok(5)}" for _ in range(12)]

        async def ask(word):
            try:
                return (await chk.request(subject, word.encode(), timeout=3)).data
            except nats.errors.NoRespondersError:
                raise Mismatch(f"nobody answers requests on {subject!r}.", expected="a subscription on the subject",
                               seen="no responders (status 503 from the server)",
                               hint="subscribe to the subject you are given and keep the subscription open.")
            except asyncio.TimeoutError:
                raise Mismatch("the service received the request but never replied.", expected="a reply within 3 s",
                               seen="timeout",
                               hint="reply to msg.reply: await msg.respond(data) (or nc.publish(msg.reply, data)).")

        replies = await asyncio.gather(*(ask(w) for w in words))
        for word, reply in zip(words, replies):
            expect(reply == word.upper().encode(), "a reply is not the request's payload in upper case.",
                   expected=repr(word.upper().encode()), seen=repr(reply)[:80],
                   hint="reply with msg.data.upper() (bytes) or msg.data.decode().upper().encode().")
        subs = _subs_on(srv, subject)
        return (f"{len(words)} concurrent requests answered correctly; the server lists "
                f"{len(subs)} subscription(s) on {subject!r}.")


# ------------------------------------------------------------------------------ 1.3
@exercise("1.3", "reply, no responders or timeout",
          hints=("try: msg = await nc.request(subject, text.encode(), timeout=0.5) and catch "
               "nats.errors.NoRespondersError and nats.errors.TimeoutError separately.",))
async def request_outcomes(ask):
    async with scratch_server(jetstream=False) as srv, client(srv) as chk, client(srv) as nc:
        echo, silent, nobody = (f"outcome.{k}.{_tok()}" for k in ("echo", "silent", "nobody"))

        async def reverse(msg):
            await msg.respond(msg.data[::-1])

        await chk.subscribe(echo, cb=reverse)
        silent_sub = await chk.subscribe(silent)
        await ready(chk)
        text = f"ping-{_tok(8)}"
        got = await call_learner(ask, nc, echo, text, what=f"ask(nc, {echo!r}, {text!r})")
        expect(got == text[::-1], "with a responder, ask() must return the reply's text.",
               expected=repr(text[::-1]) + " (the checker's responder reverses the text)", seen=repr(got)[:80],
               hint="return msg.data.decode() of the reply.")
        got = await call_learner(ask, nc, nobody, text, what=f"ask(nc, {nobody!r}, ...)")
        expect(got == "no responders", "with nobody subscribed, ask() must return 'no responders'.",
               expected="'no responders'", seen=repr(got)[:80],
               hint="the server answers at once with a no-responders status: nc.request raises "
                    "nats.errors.NoRespondersError.")
        got = await call_learner(ask, nc, silent, text, what=f"ask(nc, {silent!r}, ...)")
        expect(got == "timeout", "with a subscriber that never answers, ask() must return 'timeout'.",
               expected="'timeout'", seen=repr(got)[:80],
               hint="someone is listening, so there is no no-responders status: nc.request raises "
                    "nats.errors.TimeoutError after the timeout.")
        expect(silent_sub.delivered >= 1, "the silent subscriber never saw the request.",
               expected="the request delivered to the silent subscriber", seen="nothing delivered",
               hint=f"send the request to the subject you are given ({silent!r}).")
        return "a reply, the no-responders status and a timeout were each told apart correctly."


# ------------------------------------------------------------------------------ 1.4
@exercise("1.4", "spread work over a queue group",
          hints=("for i in range(n): await nc.subscribe(subject, queue=\"workers\", cb=handler), "
               "where handler replies b\"done:\" + msg.data",))
async def queue_workers(start_workers):
    subject = f"jobs.{_tok()}"
    n = random.choice((3, 4))
    jobs = 60
    async with scratch_server(jetstream=False) as srv, client(srv) as chk, client(srv, name="workers") as nc:
        await call_learner(start_workers, nc, subject, n, what=f"start_workers(nc, {subject!r}, {n})")
        await ready(nc)
        subs = _subs_on(srv, subject)
        groups = {s.get("qgroup") for s in subs}
        expect(len(subs) == n, f"the server sees a different number of subscriptions on {subject!r}.",
               expected=f"{n} (one per worker)", seen=len(subs),
               hint="subscribe n times, once per worker.")
        expect(None not in groups and "" not in groups,
               "at least one worker subscribed without a queue group: it would get every job.",
               expected="every subscription in a queue group", seen=f"queue groups: {sorted(map(str, groups))}",
               hint="pass queue=\"workers\" to nc.subscribe.")
        expect(len(groups) == 1, "the workers are in different queue groups: each group gets its own copy.",
               expected="one queue group", seen=sorted(groups), hint="use the same queue name for every worker.")
        inbox = chk.new_inbox()
        replies = await chk.subscribe(inbox + ".*")
        payloads = {str(i): f"job-{i}-{_tok(4)}".encode() for i in range(jobs)}
        for i, data in payloads.items():
            await chk.publish(subject, data, reply=f"{inbox}.{i}")
        await ready(chk)
        got: dict[str, list] = {}
        deadline = time.monotonic() + 10
        while len(got) < jobs and time.monotonic() < deadline:
            try:
                msg = await replies.next_msg(timeout=0.2)
            except asyncio.TimeoutError:
                continue
            got.setdefault(msg.subject.rsplit(".", 1)[1], []).append(msg.data)
        expect(len(got) == jobs, "not every job got a reply.", expected=f"{jobs} replies",
               seen=f"{len(got)} replies within 10 s", hint="each worker replies to every job it receives: "
                                                              "await msg.respond(b\"done:\" + msg.data)")
        for i, datas in got.items():
            expect(datas[0] == b"done:" + payloads[i], "a reply has the wrong payload.",
                   expected=repr(b"done:" + payloads[i]), seen=repr(datas[0])[:80],
                   hint="reply with b\"done:\" + msg.data.")
        per_member = [s.get("msgs", 0) for s in _subs_on(srv, subject)]
        expect(sum(1 for m in per_member if m > 0) >= 2, "the work was not spread: one member did it all.",
               expected="jobs delivered to several members", seen=f"jobs per member (server's /connz): {per_member}",
               hint="all workers must be subscribed when the jobs arrive; keep them open.")
        return (f"{jobs} jobs each answered once; the server spread them over {n} members of queue group "
                f"{groups.pop()!r}: {per_member}.")


# ------------------------------------------------------------------------------ 1.5
@exercise("1.5", "metadata in headers, a versioned JSON body",
          hints=('await nc.publish(subject, json.dumps({"version": 2, ...}).encode(), '
               'headers={"Content-Type": "application/json", "Trace-Id": trace_id})',))
async def headers_and_json(publish_order):
    subject = f"orders.created.{_tok()}"
    order_id = f"ord-{_tok(8)}"
    trace_id = uuid.uuid4().hex
    items = [{"sku": f"sku-{_tok(4)}", "qty": random.randint(1, 9)} for _ in range(random.randint(1, 3))]
    async with scratch_server(jetstream=False) as srv, client(srv) as chk, client(srv) as nc:
        sub = await chk.subscribe(subject)
        await ready(chk)
        await call_learner(publish_order, nc, subject, order_id, items, trace_id,
                           what="publish_order(nc, subject, order_id, items, trace_id)")
        await ready(nc)
        try:
            msg = await sub.next_msg(timeout=3)
        except asyncio.TimeoutError:
            raise Mismatch("no message arrived on the subject.", expected=f"one message on {subject!r}",
                           seen="nothing within 3 s", hint="publish to the subject you are given.")
        headers = msg.headers or {}
        expect(headers.get("Trace-Id") == trace_id, "the Trace-Id header is missing or wrong.",
               expected=f"Trace-Id: {trace_id}", seen=f"headers: {headers}",
               hint="headers={\"Trace-Id\": trace_id, ...} in nc.publish.")
        expect(headers.get("Content-Type") == "application/json", "the Content-Type header is missing or wrong.",
               expected="Content-Type: application/json", seen=f"headers: {headers}",
               hint="say what the body is: headers={\"Content-Type\": \"application/json\", ...}.")
        try:
            body = json.loads(msg.data)
        except ValueError:
            raise Mismatch("the payload is not JSON.", expected="a JSON object", seen=repr(msg.data)[:80],
                           hint="json.dumps(body).encode()")
        expect(isinstance(body, dict), "the payload is JSON but not an object.", expected="{...}",
               seen=repr(body)[:80], hint="publish a JSON object (a dict).")
        expect(body.get("version") == 2, "the body has no version 2 field.", expected='"version": 2',
               seen=f'"version": {body.get("version")!r}',
               hint="consumers read the version first to know how to parse the rest.")
        expect(body.get("order_id") == order_id and body.get("items") == items,
               "the body does not carry the order as given.",
               expected={"order_id": order_id, "items": items},
               seen={k: body.get(k) for k in ("order_id", "items")}, hint="copy order_id and items into the body.")
        expect("Trace-Id" not in json.dumps(body) and trace_id not in json.dumps(body),
               "the trace id is in the body: it is metadata about the message, keep it in the headers.",
               expected="trace id only in the Trace-Id header", seen="trace id in the JSON body",
               hint="leave the body for business data.")
        return f"Trace-Id and Content-Type headers present; body is version 2 JSON with order {order_id}."


# ------------------------------------------------------------------------------ 1.6
@exercise("1.6", "send a payload larger than max_payload",
          hints=("chunk = nc.max_payload - 512 (room for headers); for each slice publish with headers "
               "Chunk-Index and Chunk-Count.",))
async def chunked(send_large):
    limit = random.choice((2048, 3072, 4096))
    data = os.urandom(limit * random.randint(5, 8) + random.randint(1, limit - 1))
    subject = f"blobs.{_tok()}"
    async with scratch_server(jetstream=False, config={"max_payload": limit}) as srv, \
            client(srv) as chk, client(srv) as nc:
        expect(nc.max_payload == limit, "checker set-up: the server did not apply max_payload.",
               expected=limit, seen=nc.max_payload)
        sub = await chk.subscribe(subject)
        await ready(chk)
        cid = nc.client_id
        too_big = (f"a message bigger than the server's max_payload ({limit} bytes, headers included) reached the "
                   "server, which closed the connection.")
        room = (f"size each chunk from nc.max_payload ({limit} here) minus room for the headers, which count "
                "toward the limit too (say 512 bytes).")
        try:
            await call_learner(send_large, nc, subject, data, what=f"send_large(nc, subject, <{len(data)} bytes>)")
        except Mismatch as m:
            if "MaxPayload" in m.problem:
                raise Mismatch("a message was bigger than max_payload: the client refused to send it.",
                               expected=f"every message at most {limit} bytes", seen=m.seen, hint=room)
            raise
        try:
            await ready(nc, timeout=3)  # behind every chunk: the server has judged them all
        except (nats.errors.Error, asyncio.TimeoutError):
            pass  # the server closed the connection; its reason is below
        reasons = [c.get("reason", "") for c in srv.monitor("connz", state="closed").get("connections", [])
                   if c.get("cid") == cid]
        expect(not any("Payload" in r for r in reasons), too_big, expected=f"every message at most {limit} bytes",
               seen=f"server closed the connection: {reasons[0] if reasons else ''}", hint=room)
        await _after_everything_from(nc, chk)
        msgs = await _drain_sub(sub)
        expect(len(msgs) > 1, "the data did not arrive as several messages.",
               expected=f"about {len(data) // limit + 1} chunks of at most {limit} bytes", seen=f"{len(msgs)} messages",
               hint=f"the server's max_payload here is {limit} bytes (nc.max_payload); slice the data.")
        heads = [m.headers or {} for m in msgs]
        try:
            idx = [int(h["Chunk-Index"]) for h in heads]
            counts = {int(h["Chunk-Count"]) for h in heads}
        except (KeyError, ValueError):
            raise Mismatch("a chunk has no usable Chunk-Index / Chunk-Count header.",
                           expected="Chunk-Index: 0..n-1 and Chunk-Count: n on every chunk",
                           seen=f"headers of the first chunk: {heads[0]}",
                           hint="headers={\"Chunk-Index\": str(i), \"Chunk-Count\": str(n)} (header values are text).")
        expect(len(counts) == 1 and counts == {len(msgs)}, "Chunk-Count does not match the chunks that arrived.",
               expected=f"Chunk-Count: {len(msgs)} on every chunk", seen=f"Chunk-Count values {sorted(counts)}",
               hint="compute the number of chunks before sending and put it on every chunk.")
        expect(sorted(idx) == list(range(len(msgs))), "the Chunk-Index values are not 0..n-1, each once.",
               expected=list(range(len(msgs))), seen=sorted(idx)[:20], hint="number the chunks from 0.")
        joined = b"".join(m.data for _, m in sorted(zip(idx, msgs), key=lambda p: p[0]))
        expect(joined == data, "the chunks, put together in Chunk-Index order, differ from the data.",
               expected=f"{len(data)} bytes equal to the input", seen=f"{len(joined)} bytes"
               + ("" if len(joined) != len(data) else " (same length, different content)"),
               hint="slice data[i*size:(i+1)*size] for i in range(n) and send each slice as is.")
        return (f"{len(data)} bytes arrived as {len(msgs)} chunks under the server's max_payload of "
                f"{limit} bytes and were put back together byte for byte.")


# ------------------------------------------------------------------------------ 1.7
@exercise("1.7", "scatter-gather",
          hints=("inbox = nc.new_inbox(); sub = await nc.subscribe(inbox); await nc.publish(subject, b\"\", "
               "reply=inbox); then collect sub.next_msg() until you have `expected` or max_wait has passed.",))
async def scatter_gather(gather_quotes):
    subject = f"quotes.{_tok()}"
    async with scratch_server(jetstream=False) as srv, client(srv) as chk, client(srv) as nc:
        asked = {}
        prices: dict[str, float] = {}

        def responder(name, answer):
            async def cb(msg):
                asked[name] = asked.get(name, 0) + 1
                if answer and msg.reply:
                    await msg.respond(f"{prices[name]:.2f}".encode())
            return cb

        k = random.randint(3, 5)
        subs = []
        for i in range(k):
            name = f"vendor{i}"
            prices[name] = round(random.uniform(10, 99), 2)
            subs.append(await chk.subscribe(subject, cb=responder(name, True)))
        await ready(chk)
        got = await call_learner(gather_quotes, nc, subject, k, 3.0,
                                 what=f"gather_quotes(nc, subject, expected={k}, max_wait=3.0)")
        want = sorted(prices.values())
        expect(isinstance(got, list), "gather_quotes must return a list of prices.", expected="a list",
               seen=type(got).__name__)
        expect(sorted(float(p) for p in got) == want, "not every responder's quote came back.",
               expected=f"{k} quotes {want}", seen=f"{len(got)}: {sorted(got)}",
               hint="nc.request returns only the first reply; subscribe to your own inbox and collect every reply.")
        expect(got == sorted(got), "the prices are not sorted.", expected=want, seen=got, hint="return sorted(prices)")
        expect(all(v == 1 for v in asked.values()), "each responder should get the request exactly once.",
               expected="one request published", seen=f"requests per responder: {asked}",
               hint="scatter means one publish that all responders see.")
        # round two: one responder is silent; the function must give up after max_wait
        for s in subs:
            await s.unsubscribe()
        asked.clear()
        for i in range(k):
            await chk.subscribe(subject, cb=responder(f"vendor{i}", i != 0))
        await ready(chk)
        got = await call_learner(gather_quotes, nc, subject, k, 0.5,
                                 what=f"gather_quotes(nc, subject, expected={k}, max_wait=0.5) with one silent vendor")
        want = sorted(v for n, v in prices.items() if n != "vendor0")
        expect(sorted(float(p) for p in (got or [])) == want,
               "with one silent responder, return the quotes that did arrive when max_wait is over.",
               expected=f"{k - 1} quotes {want}", seen=repr(got)[:120],
               hint="stop waiting after max_wait seconds in total (catch the TimeoutError of next_msg).")
        return f"all {k} quotes gathered from one request; with a silent vendor, the other {k - 1} after max_wait."


# ------------------------------------------------------------------------------ 1.8
@exercise("1.8", "survive a server restart",
          hints=("natslab.connect(srv, name=\"resilient\", reconnect_time_wait=0.5, max_reconnect_attempts=-1, "
               "disconnected_cb=..., reconnected_cb=...) with async callbacks that append to events.",))
async def survive_restart(resilient_client):
    subject = f"ticks.{_tok()}"
    events: list = []
    async with scratch_server(jetstream=False) as srv:
        nc = await call_learner(resilient_client, srv, events, what="resilient_client(srv, events)")
        try:
            expect(hasattr(nc, "is_connected") and nc.is_connected, "resilient_client must return a connected client.",
                   expected="a connected nats client", seen=repr(nc)[:80],
                   hint="return the value of await natslab.connect(srv, ...).")
            names = [c.get("name") for c in srv.monitor("connz").get("connections", [])]
            expect("resilient" in names, "the server sees no connection named 'resilient'.",
                   expected="name: resilient in /connz", seen=f"names: {names}", hint='pass name="resilient".')
            sub = await nc.subscribe(subject)
            await ready(nc)
            await asyncio.to_thread(srv.stop)
            await _until(lambda: not nc.is_connected, 10)
            expect(await _until(lambda: "disconnected" in events, 5),
                   "the server went away but events has no 'disconnected'.",
                   expected="'disconnected' appended by the disconnected_cb", seen=f"events: {events}",
                   hint="pass disconnected_cb=an async function that does events.append(\"disconnected\").")
            expect(not nc.is_closed, "the client gave up when the server stopped.", expected="reconnecting",
                   seen="closed", hint="leave allow_reconnect on and allow enough attempts (max_reconnect_attempts=-1).")
            buffered = [f"while-down-{i}-{_tok(4)}".encode() for i in range(5)]
            for data in buffered:
                try:
                    await nc.publish(subject, data)
                except nats.errors.OutboundBufferLimitError:
                    raise Mismatch("publishing while disconnected failed: the client buffers nothing.",
                                   expected="publishes kept in the reconnect buffer",
                                   seen="OutboundBufferLimitError",
                                   hint="keep pending_size above zero (the default, 2 MB, is fine).")
            await asyncio.to_thread(srv.start)
            back = await _until(lambda: nc.is_connected and "reconnected" in events, 30)
            expect(nc.is_connected, "the client did not reconnect after the server came back.",
                   expected="connected again within 30 s", seen="still disconnected" if not nc.is_closed else "closed",
                   hint="allow reconnects (max_reconnect_attempts=-1) with a short reconnect_time_wait.")
            expect(back, "the client reconnected but events has no 'reconnected'.",
                   expected="'reconnected' appended by the reconnected_cb", seen=f"events: {events}",
                   hint="pass reconnected_cb=an async function that does events.append(\"reconnected\").")
            first_down = events.index("disconnected")
            expect("reconnected" in events[first_down:], "the events are out of order.",
                   expected="'disconnected' before 'reconnected'", seen=events, hint="append in each callback.")
            got = []
            for _ in buffered:
                try:
                    got.append((await sub.next_msg(timeout=5)).data)
                except asyncio.TimeoutError:
                    break
            expect(got == buffered, "messages published while the server was down did not all arrive after "
                   "the reconnect.", expected=[b.decode() for b in buffered], seen=[g.decode() for g in got],
                   hint="don't flush or close the connection in the callbacks; the client sends its buffer itself.")
            await ready(nc)  # the client has re-subscribed on the new server process
            async with client(srv) as chk:
                await chk.publish(subject, b"after-restart")
                await ready(chk)
                try:
                    after = (await sub.next_msg(timeout=5)).data
                except asyncio.TimeoutError:
                    after = None
            expect(after == b"after-restart", "the subscription did not come back with the connection.",
                   expected="b'after-restart' from another client", seen=after,
                   hint="the client re-subscribes on reconnect; don't unsubscribe in a callback.")
            return (f"events {events}: the 5 buffered publishes and a new message reached the subscription "
                    "after the server restarted (new server process, same address).")
        finally:
            if hasattr(nc, "close") and not getattr(nc, "is_closed", True):
                await nc.close()


# ------------------------------------------------------------------------------ 1.9
@exercise("1.9", "drain cleanly",
          hints=("await nc.drain(): stop taking new messages, finish the ones already received, flush, close.",))
async def drain_cleanly(stop_worker):
    subject = f"work.{_tok()}"
    total = 80
    async with scratch_server(jetstream=False) as srv, client(srv) as chk, client(srv, name="worker") as nc:
        done = []

        async def handle(msg):
            await asyncio.sleep(0.005)
            done.append(msg.data)

        sub = await nc.subscribe(subject, cb=handle)
        await ready(nc)
        for i in range(total):
            await chk.publish(subject, f"{i}".encode())
        await ready(chk)
        await _until(lambda: sub.delivered >= total, 10)
        expect(sub.delivered >= total, "checker set-up: the worker did not receive the backlog.",
               expected=total, seen=sub.delivered)
        in_progress = total - len(done)
        await call_learner(stop_worker, nc, what="stop_worker(nc)")
        expect(len(done) == total, "messages the worker had already received were thrown away.",
               expected=f"all {total} processed", seen=f"{len(done)} processed ({total - len(done)} dropped)",
               hint="nc.close() drops what is waiting in the subscription; nc.drain() processes it first.")
        expect(nc.is_closed, "the connection is still open after stop_worker().", expected="closed",
               seen="connected" if nc.is_connected else "not closed", hint="drain ends by closing the connection.")
        gone = await _until(lambda: "worker" not in [c.get("name") for c in
                                                     srv.monitor("connz").get("connections", [])], 5)
        expect(gone, "the server still lists the worker's connection.", expected="no connection named worker",
               seen="still in /connz", hint="await the drain (or close) before returning.")
        return (f"{in_progress} messages were still waiting when stop_worker() began; all {total} were processed, "
                "then the connection closed (gone from /connz).")
