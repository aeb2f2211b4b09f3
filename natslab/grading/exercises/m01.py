"""Module 01 (core messaging): wildcards, request/reply, queue groups, headers, message size,
scatter-gather, reconnects and draining.

Every checker drives its own server and looks at what the server and the checker's own
connections really saw.  Learner code gets plain ``nats.connect`` connections
(``learner_client``), as its own programs would open them; the checkers never rely on a flush of
those (nats-py 2.16 may write the flush's PING ahead of pending commands): they wait on the
server's view (``interest``, ``/connz``) or on a marker sent behind the learner's messages.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid

import nats
import nats.errors

from ..checks import Mismatch, call_learner, exercise, expect
from ...runtime.waiting import until
from . import client, everything_from, interest, learner_client, of_type, published_by, scratch_server, text_result, token

CLOSED_HINT = ("close or drain only connections you open yourself; the connection you are handed "
               "belongs to the caller, who still uses it.")


def _subs_on(srv, subject: str) -> list[dict]:
    """Every client subscription on exactly ``subject``, from the server's /connz."""
    found = []
    for conn in srv.monitor("connz", subs="detail", limit=1024).get("connections", []):
        for s in conn.get("subscriptions_list_detail") or []:
            if s.get("subject") == subject:
                found.append({**s, "conn_name": conn.get("name"), "cid": conn.get("cid")})
    return found


def _subs_of_conn(srv, cid: int | None) -> list[dict]:
    if cid is None:  # nats-py forgets its id once closed
        return []
    for conn in srv.monitor("connz", subs="detail", cid=cid).get("connections", []):
        return conn.get("subscriptions_list_detail") or []
    return []


def _still_open(nc, what: str) -> None:
    expect(not nc.is_closed and not nc.is_draining, f"{what} closed (or drained) the connection it was handed.",
           expected="the connection still open when your function returns", seen="closed", hint=CLOSED_HINT)


class _Errors:
    """An error_cb that keeps what the learner's callbacks raised (nats-py hands it those)."""

    def __init__(self):
        self.seen: list[BaseException] = []

        async def callback(exc):  # nats-py wants a coroutine function, not a callable object
            self.seen.append(exc)
        self.callback = callback

    def from_callbacks(self) -> list[BaseException]:
        return [e for e in self.seen if not isinstance(e, nats.errors.Error)]

    def check(self, what: str) -> None:
        """A verdict naming what a learner's callback raised (nats-py only tells the error callback)."""
        raised = self.from_callbacks()
        if raised:
            first = raised[0]
            raise Mismatch(f"{what} raised {type(first).__name__} instead of finishing.",
                           expected="callbacks that run to the end", seen=f"{type(first).__name__}: {first}"[:160],
                           hint=("payloads are bytes: nats-py cannot send a str, so the callback raised. "
                                 if isinstance(first, TypeError) else "") +
                                "nats-py reports an exception in a subscription callback only to the "
                                "connection's error callback; run the callback's code on its own to see it.")


# ------------------------------------------------------------------------------ 1.1
@exercise("1.1", "route by wildcard", hints=(
    "a subscription's wildcards decide what it receives: '*' stands for exactly one token, '>' for one "
    "or more tokens at the end (lesson 01.1); the subscription keeps working after your function returns.",
    "two nc.subscribe(pattern, cb=...) calls, one per rule; in each callback nc.publish(new_subject, "
    "msg.data), building new_subject from msg.subject.split('.').",
    "await nc.subscribe('sensors.*.temperature', cb=lambda m: nc.publish(f\"alerts.{m.subject.split('.')[1]}\", "
    "m.data)) and await nc.subscribe('audit.>', cb=lambda m: nc.publish('archive.' + m.subject, m.data))",
))
async def route_by_wildcard(route):
    sites = [f"site-{token(4)}" for _ in range(2)]
    who = token(4)
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
    errors = _Errors()
    async with scratch_server(jetstream=False) as srv, client(srv) as chk, \
            learner_client(srv, name="router", error_cb=errors.callback) as nc:
        got: list = []

        async def keep(msg):
            got.append(msg)

        await chk.subscribe("alerts.>", cb=keep)
        await chk.subscribe("archive.>", cb=keep)
        await chk.flush()
        await call_learner(route, nc, what="route(nc)")
        _still_open(nc, "route(nc)")
        # the server's view: are the learner's subscriptions in place? (never a flush of nc)
        probes = {"sensors": f"sensors.p{token(4)}.temperature", "audit": f"audit.p{token(4)}"}
        listening = {k: await interest(srv, s, timeout=3) for k, s in probes.items()}
        for k, s in probes.items():
            expect(listening[k], f"when route() returned, no subscription on the server receives {s!r}.",
                   expected=f"a subscription that matches {s!r} still open after route() returns",
                   seen=f"the server's /subsz: nothing matches; your connection holds "
                        f"{[x.get('subject') for x in _subs_of_conn(srv, nc.client_id)]}",
                   hint="a subscription that is unsubscribed (or never made) receives nothing: route() must "
                        "leave its subscriptions open when it returns." if not _subs_of_conn(srv, nc.client_id)
                   else "the pattern of that subscription does not match this subject: '*' is exactly one "
                        "token, '>' one or more at the end.")
        payloads = {}
        for subject, _ in cases:
            payloads[subject] = f"reading-{token(8)}".encode()
            await chk.publish(subject, payloads[subject])
        # one last matching message per route: once both come out, everything before them has too
        marker_data = set()
        for marker in (f"sensors.m{token(4)}.temperature", f"audit.m{token(4)}"):
            data = f"marker-{token(8)}".encode()
            marker_data.add(data)
            await chk.publish(marker, data)
        await chk.flush()

        def both_markers() -> bool:
            return marker_data <= {m.data for m in got}

        await until(both_markers, "both routes to forward the checker's last message", timeout=5, error=False)
        forwarded = {(m.subject, m.data) for m in got if m.data not in marker_data}
        source_of = {data: subject for subject, data in payloads.items()}
        want = {(fwd, payloads[src]) for src, fwd in cases if fwd}
        still_subscribed = [x.get("subject") for x in _subs_of_conn(srv, nc.client_id)]
        if not both_markers():
            errors.check("a callback of your router")
        for src, fwd in sorted(cases, key=lambda c: c[1] is None):
            if fwd and (fwd, payloads[src]) not in forwarded:
                wrong = [s for s, d in forwarded if d == payloads[src]]
                if wrong:
                    hint = ("the new subject is built from the tokens of msg.subject: alerts.<site> takes the "
                            "second token; archive. goes in front of the whole original subject.")
                elif not still_subscribed:
                    hint = "your subscriptions were gone by then: leave them open after route() returns."
                else:
                    hint = ("'*' matches exactly one token, '>' one or more tokens at the end; which of your "
                            f"patterns ({still_subscribed}) should match {src!r}?")
                raise Mismatch(f"the message published to {src!r} was not forwarded to {fwd!r}.",
                               expected=f"{fwd!r} with the same payload",
                               seen=f"forwarded to {wrong}" if wrong else "nothing forwarded", hint=hint)
        extra = sorted(forwarded - want)
        expect(not extra, "a message that should not have been routed was forwarded.",
               expected="no forward for " + ", ".join(repr(s) for s, f in cases if not f),
               seen=", ".join(f"{source_of.get(d, '?')!r} -> {s!r}" for s, d in extra),
               hint="'sensors.*.temperature' needs exactly three tokens; 'audit.>' needs at least one token "
                    "after 'audit'; subjects are case-sensitive.")
        expect(both_markers(), "the router stopped forwarding (the checker's last messages never came through).",
               expected="every matching message forwarded", seen="the final marker messages were not forwarded",
               hint="keep the subscriptions open after route() returns: don't unsubscribe or close nc.")
        return (f"{len(want)} matching messages forwarded with their payloads, {len(cases) - len(want)} "
                "look-alikes left alone.")


# ------------------------------------------------------------------------------ 1.2
@exercise("1.2", "a request/reply service", hints=(
    "a service is a subscription whose callback answers each request on the request's reply subject, "
    "with bytes (lesson 01.2, 'Request/reply').",
    "nc.subscribe(subject, cb=handler); in the handler await msg.respond(data) (data is bytes; "
    "msg.data is bytes too).",
    "async def handle(msg): await msg.respond(msg.data.upper())  -  then: await nc.subscribe(subject, cb=handle)",
))
async def upper_service(start_service):
    subject = f"svc.upper.{token()}"
    errors = _Errors()
    async with scratch_server(jetstream=False) as srv, client(srv) as chk, \
            learner_client(srv, name="service", error_cb=errors.callback) as nc:
        await call_learner(start_service, nc, subject, what="start_upper_service(nc, subject)")
        _still_open(nc, "start_upper_service")
        listening = await interest(srv, subject, timeout=5)
        expect(listening, f"when start_upper_service returned, nobody was subscribed to {subject!r}.",
               expected="a subscription on the subject (the server's /subsz)", seen="none",
               hint="the service is a subscription on the subject you are given, left open when the "
                    "function returns.")
        words = [f"{random.choice(['hello', 'nats', 'reply', 'queue'])}-{token(5)}" for _ in range(12)]

        async def ask(word):
            try:
                return (await chk.request(subject, word.encode(), timeout=3)).data
            except nats.errors.NoRespondersError:
                raise Mismatch(f"nobody answers requests on {subject!r}.", expected="a subscription on the subject",
                               seen="no responders (status 503 from the server)",
                               hint="the subscription went away: keep it open after the function returns.")
            except asyncio.TimeoutError:
                delivered = sum(s.get("msgs", 0) for s in _subs_of_conn(srv, nc.client_id))
                raised = errors.from_callbacks()
                if raised:
                    first = raised[0]
                    byte_hint = ("a reply's payload must be bytes: nats-py cannot send a str and the callback "
                                 "raised instead of answering." if isinstance(first, TypeError) else
                                 "your callback raised before it answered; nats-py only reports that to the "
                                 "connection's error callback, so the requester just times out.")
                    raise Mismatch("the service received the request, but its callback raised instead of replying.",
                                   expected="a reply within 3 s",
                                   seen=f"{type(first).__name__}: {first}"[:160], hint=byte_hint)
                if delivered:
                    raise Mismatch("the service received the request but never replied.",
                                   expected="a reply within 3 s",
                                   seen=f"timeout; the server delivered {delivered} request(s) to your connection",
                                   hint="a reply goes to the request's reply subject (msg.reply), not back to the "
                                        "service's own subject; was the respond/publish awaited?")
                raise Mismatch("the request reached no subscription of your connection.", expected="a reply",
                               seen="timeout", hint="subscribe to exactly the subject you are given.")

        replies = await asyncio.gather(*(ask(w) for w in words))
        for word, reply in zip(words, replies):
            expect(reply == word.upper().encode(), "a reply is not the request's payload in upper case.",
                   expected=repr(word.upper().encode()), seen=repr(reply)[:80],
                   hint="answer with the request's own data, every letter in upper case, nothing added.")
        subs = _subs_on(srv, subject)
        return (f"{len(words)} concurrent requests answered correctly; the server lists "
                f"{len(subs)} subscription(s) on {subject!r}.")


# ------------------------------------------------------------------------------ 1.3
SLACK = 0.4  # seconds of scheduling noise allowed around a measured wait


@exercise("1.3", "reply, no responders or timeout", hints=(
    "a request ends one of three ways: a reply, the server's immediate no-responders status, or a "
    "timeout when a subscriber stays silent (lesson 01.2, 'When nobody answers').",
    "nc.request(subject, data, timeout=...) returns the reply Msg or raises nats.errors.NoRespondersError "
    "or nats.errors.TimeoutError.",
    "try: msg = await nc.request(subject, text.encode(), timeout=0.5) / except nats.errors.NoRespondersError: "
    "return 'no responders' / except nats.errors.TimeoutError: return 'timeout' / return msg.data.decode()",
))
async def request_outcomes(ask):
    exc_hints = {
        "NoRespondersError": "that is one of the outcomes ask() must turn into a return value: catch "
                             "nats.errors.NoRespondersError and return 'no responders'.",
        "TimeoutError": "that is one of the outcomes ask() must turn into a return value: catch "
                        "nats.errors.TimeoutError and return 'timeout'.",
    }
    async with scratch_server(jetstream=False) as srv, client(srv) as chk, learner_client(srv) as nc:
        echo, slow, silent, nobody = (f"outcome.{k}.{token()}" for k in ("echo", "slow", "silent", "nobody"))

        async def reverse(msg):
            await msg.respond(msg.data[::-1])

        async def reverse_later(msg):
            await asyncio.sleep(0.2)
            await msg.respond(msg.data[::-1])

        await chk.subscribe(echo, cb=reverse)
        await chk.subscribe(slow, cb=reverse_later)
        silent_sub = await chk.subscribe(silent)
        await chk.flush()
        text = f"ping-{token(8)}"

        async def timed(subject, label):
            t0 = time.perf_counter()
            got = await call_learner(ask, nc, subject, text, what=f"ask(nc, {label}, {text!r})", hints=exc_hints)
            return got, time.perf_counter() - t0

        got, _ = await timed(echo, "<subject with a responder>")
        got = text_result(got, "ask() with a responder")
        expect(got == text[::-1], "with a responder, ask() must return the reply's text.",
               expected=repr(text[::-1]) + " (the checker's responder reverses the text)", seen=repr(got)[:80],
               hint="return the reply's data as text, not the text you sent.")
        got, took = await timed(slow, "<subject whose responder answers after 0.2 s>")
        expect(got == text[::-1], "a reply that came 0.2 s after the request was not returned.",
               expected=repr(text[::-1]) + " (a reply within the 0.5 s)", seen=f"{got!r} after {took:.2f} s"[:100],
               hint="ask() waits up to 0.5 s for the reply: a shorter timeout gives up on replies that "
                    "are on time.")
        got, took = await timed(nobody, "<subject nobody listens on>")
        expect(got == "no responders", "with nobody subscribed, ask() must return 'no responders'.",
               expected="'no responders'", seen=repr(got)[:80],
               hint="with no subscriber at all the server answers at once with a no-responders status, "
                    "which nats-py raises as its own exception, distinct from a timeout.")
        got, took = await timed(silent, "<subject whose subscriber never answers>")
        expect(got == "timeout", "with a subscriber that never answers, ask() must return 'timeout'.",
               expected="'timeout'", seen=repr(got)[:80],
               hint="someone is listening, so there is no no-responders status: the request times out.")
        expect(took <= 0.5 + SLACK, "ask() waited longer than 0.5 s for a reply that never came.",
               expected="'timeout' after about 0.5 s", seen=f"'timeout' after {took:.2f} s",
               hint="the request's own timeout is how long it waits; set it to 0.5 s.")
        expect(silent_sub.delivered >= 1, "the silent subscriber never saw the request.",
               expected="the request delivered to the silent subscriber", seen="nothing delivered",
               hint="send the request to the subject you are given.")
        return ("a reply (also one 0.2 s late), the no-responders status and a timeout after "
                f"{took:.2f} s were each told apart correctly.")


# ------------------------------------------------------------------------------ 1.4
@exercise("1.4", "spread work over a queue group", hints=(
    "subscribers that share a queue group name on a subject split its messages: each goes to one member "
    "(lesson 01.3).",
    "nc.subscribe(subject, queue=name, cb=handler) once per worker, the same name each time; the handler "
    "answers with await msg.respond(...).",
    "for _ in range(n): await nc.subscribe(subject, queue=\"workers\", cb=work)  where  "
    "async def work(msg): await msg.respond(b\"done:\" + msg.data)",
))
async def queue_workers(start_workers):
    subject = f"jobs.{token()}"
    n = random.choice((3, 4))
    jobs = 60
    errors = _Errors()
    async with scratch_server(jetstream=False) as srv, client(srv) as chk, \
            learner_client(srv, name="workers", error_cb=errors.callback) as nc:
        await call_learner(start_workers, nc, subject, n, what=f"start_workers(nc, {subject!r}, {n})")
        _still_open(nc, "start_workers")
        await until(lambda: len(_subs_on(srv, subject)) >= n, "the workers' subscriptions", timeout=3, error=False)
        subs = _subs_on(srv, subject)
        groups = {s.get("qgroup") for s in subs}
        expect(len(subs) == n, f"the server sees a different number of subscriptions on {subject!r}.",
               expected=f"{n} (one per worker)", seen=len(subs),
               hint="each worker is its own subscription, and they stay open after the function returns.")
        expect(None not in groups and "" not in groups,
               "at least one worker subscribed without a queue group: it would get every job.",
               expected="every subscription in a queue group", seen=f"queue groups: {sorted(map(str, groups))}",
               hint="a plain subscription receives every message on its subject; a queue group shares them.")
        expect(len(groups) == 1, "the workers are in different queue groups: each group gets its own copy.",
               expected="one queue group", seen=sorted(groups),
               hint="members of one group share one queue name; each distinct name is a separate group.")
        inbox = chk.new_inbox()
        replies = await chk.subscribe(inbox + ".*")
        await chk.flush()
        payloads = {str(i): f"job-{i}-{token(4)}".encode() for i in range(jobs)}
        for i, data in payloads.items():
            await chk.publish(subject, data, reply=f"{inbox}.{i}")
        await chk.flush()
        got: dict[str, list] = {}
        deadline = time.monotonic() + 10
        while len(got) < jobs and time.monotonic() < deadline:
            try:
                msg = await replies.next_msg(timeout=0.2)
            except asyncio.TimeoutError:
                continue
            got.setdefault(msg.subject.rsplit(".", 1)[1], []).append(msg.data)
        if len(got) < jobs:
            errors.check("a worker's callback")
        expect(len(got) == jobs, "not every job got a reply.", expected=f"{jobs} replies",
               seen=f"{len(got)} replies within 10 s",
               hint="every worker answers every job it receives, on the job's reply subject.")
        for i, datas in got.items():
            expect(datas[0] == b"done:" + payloads[i], "a reply has the wrong payload.",
                   expected=repr(b"done:" + payloads[i]), seen=repr(datas[0])[:80],
                   hint="the answer is the bytes done: followed by the job's own payload, unchanged.")
        per_member = [s.get("msgs", 0) for s in _subs_on(srv, subject)]
        expect(sum(per_member) == jobs, "some jobs were delivered to more than one worker.",
               expected=f"{jobs} deliveries in total", seen=f"deliveries per member (server's /connz): {per_member}",
               hint="each job must reach exactly one member of the group.")
        expect(sum(1 for m in per_member if m > 0) >= 2, "the work was not spread: one member did it all.",
               expected="jobs delivered to several members", seen=f"jobs per member (server's /connz): {per_member}",
               hint="all workers must be subscribed when the jobs arrive; keep them open.")
        return (f"{jobs} jobs each answered once; the server spread them over {n} members of queue group "
                f"{groups.pop()!r}: {per_member}.")


# ------------------------------------------------------------------------------ 1.5
@exercise("1.5", "metadata in headers, a versioned JSON body", hints=(
    "metadata about a message (content type, trace id) travels in headers; the body holds business data "
    "with a version field (lesson 01.4).",
    "nc.publish(subject, payload, headers={name: value, ...}); json.dumps(obj).encode() makes the JSON bytes.",
    'await nc.publish(subject, json.dumps({"version": 2, "order_id": order_id, "items": items}).encode(), '
    'headers={"Content-Type": "application/json", "Trace-Id": trace_id})',
))
async def headers_and_json(publish_order):
    subject = f"orders.created.{token()}"
    order_id = f"ord-{token(8)}"
    trace_id = uuid.uuid4().hex
    items = [{"sku": f"sku-{token(4)}", "qty": random.randint(1, 9)} for _ in range(random.randint(1, 3))]
    async with scratch_server(jetstream=False) as srv, client(srv) as chk, learner_client(srv) as nc:
        got = await published_by(srv, chk, nc, lambda: call_learner(
            publish_order, nc, subject, order_id, items, trace_id,
            what="publish_order(nc, subject, order_id, items, trace_id)"))
        expect(got, "no message arrived.", expected=f"one message on {subject!r}", seen="nothing",
               hint="the publish must be awaited, on the connection you are given.")
        on_subject = [m for m in got if m.subject == subject]
        expect(on_subject, "no message arrived on the subject.", expected=f"one message on {subject!r}",
               seen=f"messages on {sorted({m.subject for m in got})}", hint="publish to the subject you are given.")
        expect(len(got) == 1, "publish_order published more than one message.", expected="exactly one message",
               seen=f"{len(got)} messages", hint="headers and body travel together in a single publish.")
        msg = on_subject[0]
        headers = msg.headers or {}
        expect(headers.get("Trace-Id") == trace_id, "the Trace-Id header is missing or wrong.",
               expected=f"Trace-Id: {trace_id}", seen=f"headers: {headers}",
               hint="header names are compared exactly (Trace-Id); the value is the trace id you are given.")
        expect(headers.get("Content-Type") == "application/json", "the Content-Type header is missing or wrong.",
               expected="Content-Type: application/json", seen=f"headers: {headers}",
               hint="say what the body is, in the Content-Type header, spelled exactly.")
        try:
            body = json.loads(msg.data)
        except ValueError:
            raise Mismatch("the payload is not JSON.", expected="a JSON object", seen=repr(msg.data)[:80],
                           hint="the body must be JSON text encoded as bytes (the json module writes it).")
        expect(isinstance(body, dict), "the payload is JSON but not an object.", expected="{...}",
               seen=repr(body)[:80], hint="publish a JSON object (a dict).")
        expect(body.get("version") == 2 and not isinstance(body.get("version"), bool),
               "the body has no version 2 field.", expected='"version": 2 (a number)',
               seen=f'"version": {body.get("version")!r}',
               hint="consumers read the version first to know how to parse the rest; it is the number 2.")
        expect(body.get("order_id") == order_id and body.get("items") == items,
               "the body does not carry the order as given.",
               expected={"order_id": order_id, "items": items},
               seen={k: body.get(k) for k in ("order_id", "items")},
               hint="copy order_id and items into the body as they are (items is a list, not a JSON string).")
        expect(trace_id not in json.dumps(body) and trace_id not in msg.data.decode(errors="replace"),
               "the trace id is in the body: it is metadata about the message, keep it in the headers.",
               expected="trace id only in the Trace-Id header", seen="trace id in the JSON body",
               hint="leave the body for business data.")
        return f"one message: Trace-Id and Content-Type headers present; body is version 2 JSON with order {order_id}."


# ------------------------------------------------------------------------------ 1.6
@exercise("1.6", "send a payload larger than max_payload", hints=(
    "a server refuses messages bigger than its max_payload, headers included; large data goes as numbered "
    "chunks (lesson 01.4, 'Size limits').",
    "nc.max_payload is the server's limit; slice the bytes and nc.publish(subject, part, headers={...}) "
    "each slice, with header values as text.",
    "size = nc.max_payload - 512; n = (len(data) + size - 1) // size; for i in range(n): await nc.publish("
    "subject, data[i*size:(i+1)*size], headers={\"Chunk-Index\": str(i), \"Chunk-Count\": str(n)})",
))
async def chunked(send_large):
    limit = random.choice((2048, 3072, 4096))
    data = os.urandom(limit * random.randint(5, 8) + random.randint(1, limit - 1))
    subject = f"blobs.{token()}"
    room = (f"size each chunk from nc.max_payload ({limit} here) minus room for the headers, which count "
            "toward the limit too.")
    async with scratch_server(jetstream=False, config={"max_payload": limit}) as srv, \
            client(srv) as chk, learner_client(srv, allow_reconnect=False) as nc:
        expect(nc.max_payload == limit, "checker set-up: the server did not apply max_payload.",
               expected=limit, seen=nc.max_payload)
        got: list = []

        async def keep(msg):
            got.append(msg)

        await chk.subscribe(subject, cb=keep)
        await chk.flush()
        cid = nc.client_id
        def reasons():
            return [c.get("reason", "") for c in srv.monitor("connz", state="closed", cid=cid).get("connections", [])]

        try:
            await call_learner(send_large, nc, subject, data, what=f"send_large(nc, subject, <{len(data)} bytes>)",
                               hints={"MaxPayloadError": "a message was bigger than max_payload, so the client "
                                                         "refused to send it: " + room})
        except Mismatch:
            if not any("Payload" in r for r in reasons()):
                raise   # otherwise the server's reason below says what happened first
        await everything_from(srv, nc, chk, cid)
        reasons = reasons()
        expect(not any("Payload" in r for r in reasons),
               f"a message bigger than the server's max_payload ({limit} bytes, headers included) reached the "
               "server, which closed the connection.", expected=f"every message at most {limit} bytes",
               seen=f"server closed the connection: {reasons[0] if reasons else ''}", hint=room)
        msgs = list(got)
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
                           hint="every chunk carries both headers, spelled exactly, with whole numbers as text.")
        expect(len(counts) == 1 and counts == {len(msgs)}, "Chunk-Count does not match the chunks that arrived.",
               expected=f"Chunk-Count: {len(msgs)} on every chunk", seen=f"Chunk-Count values {sorted(counts)}",
               hint="compute the number of chunks before sending (round up) and put it on every chunk.")
        expect(sorted(idx) == list(range(len(msgs))), "the Chunk-Index values are not 0..n-1, each once.",
               expected=list(range(len(msgs))), seen=sorted(idx)[:20], hint="number the chunks from 0.")
        joined = b"".join(m.data for _, m in sorted(zip(idx, msgs), key=lambda p: p[0]))
        expect(joined == data, "the chunks, put together in Chunk-Index order, differ from the data.",
               expected=f"{len(data)} bytes equal to the input", seen=f"{len(joined)} bytes"
               + ("" if len(joined) != len(data) else " (same length, different content)"),
               hint="consecutive slices of the data, in order, nothing skipped or repeated at the edges.")
        return (f"{len(data)} bytes arrived as {len(msgs)} chunks under the server's max_payload of "
                f"{limit} bytes and were put back together byte for byte.")


# ------------------------------------------------------------------------------ 1.7
@exercise("1.7", "scatter-gather", hints=(
    "scatter-gather: one publish with your own inbox as the reply subject reaches every responder; you "
    "collect their replies until you have enough or the time is up (lesson 01.2, 'Scatter-gather').",
    "nc.new_inbox(), nc.subscribe(inbox), nc.publish(subject, data, reply=inbox), then sub.next_msg(timeout=...) "
    "with the time LEFT until one deadline; float(msg.data) reads a price.",
    "deadline = loop.time() + max_wait; while len(prices) < expected and loop.time() < deadline: "
    "prices.append(float((await sub.next_msg(timeout=deadline - loop.time())).data))  (catch the TimeoutError)",
))
async def scatter_gather(gather_quotes):
    subject = f"quotes.{token()}"
    async with scratch_server(jetstream=False) as srv, client(srv) as chk, learner_client(srv) as nc:
        asked: dict[str, int] = {}
        prices: dict[str, float] = {}

        def responder(name, delay):
            async def cb(msg):
                asked[name] = asked.get(name, 0) + 1
                if delay is not None and msg.reply:
                    await asyncio.sleep(delay)
                    await msg.respond(f"{prices[name]:.2f}".encode())
            return cb

        def prices_of(got, what):
            of_type(got, list, what, "a list of floats")
            for p in got:
                expect(isinstance(p, (float, int)) and not isinstance(p, bool), f"{what} returned a list of "
                       f"{type(p).__name__}, not of floats.", expected="[12.5, 40.25, ...]",
                       seen=f"{type(p).__name__}: {p!r}"[:120],
                       hint="each reply's data is text such as b'42.50': turn it into a number with float().")
            return [float(p) for p in got]

        k = random.randint(3, 5)
        subs = []
        for i in range(k):
            name = f"vendor{i}"
            prices[name] = round(random.uniform(10, 99), 2)
            subs.append(await chk.subscribe(subject, cb=responder(name, 0.0)))
        await chk.flush()
        what = f"gather_quotes(nc, subject, expected={k}, max_wait=3.0)"
        t0 = time.perf_counter()
        got = await call_learner(gather_quotes, nc, subject, k, 3.0, what=what)
        took = time.perf_counter() - t0
        got = prices_of(got, "gather_quotes")
        want = sorted(prices.values())
        expect(all(v == 1 for v in asked.values()) and len(asked) == k,
               "each responder should get the request exactly once.",
               expected="one request published", seen=f"requests per responder: {asked}",
               hint="scatter means one publish that all responders see; a request() per reply sends it again.")
        expect(sorted(got) == want, "not every responder's quote came back.",
               expected=f"{k} quotes {want}", seen=f"{len(got)}: {sorted(got)}",
               hint="nc.request returns only the first reply; subscribe to your own inbox and collect every reply.")
        expect(got == sorted(got), "the prices are not sorted.", expected=want, seen=got,
               hint="return them in ascending order.")
        expect(took < 1.5, f"all {k} quotes were in at once, yet gather_quotes kept waiting.",
               expected=f"return as soon as {k} (expected) quotes are in", seen=f"returned after {took:.2f} s",
               hint="stop collecting when you have `expected` replies; max_wait is only the upper bound.")
        # round two: staggered vendors, one silent, one too late; max_wait counts in total
        for s in subs:
            await s.unsubscribe()
        asked.clear()
        max_wait = 1.0
        # on time: from 0.1 s to 0.6 s, the last at 0.6 s (so a timeout per reply overshoots max_wait)
        delays = {f"vendor{i}": (None if i == 0 else 3.0 if i == 1 else 0.6 - 0.5 * (k - 1 - i) / max(k - 3, 1))
                  for i in range(k)}
        for name, delay in delays.items():
            await chk.subscribe(subject, cb=responder(name, delay))
        await chk.flush()
        what = f"gather_quotes(nc, subject, expected={k}, max_wait={max_wait})"
        t0 = time.perf_counter()
        got = await call_learner(gather_quotes, nc, subject, k, max_wait, timeout=10,
                                 what=what + " with a silent vendor and one that answers after 3 s")
        took = time.perf_counter() - t0
        got = prices_of(got, "gather_quotes")
        want = sorted(prices[n] for n, d in delays.items() if d is not None and d < max_wait)
        expect(took <= max_wait + SLACK, "gather_quotes waited longer than max_wait in total.",
               expected=f"return after at most {max_wait} s", seen=f"returned after {took:.2f} s",
               hint="max_wait is the whole time budget, not a timeout per reply: compute one deadline and "
                    "wait only for the time left until it.")
        expect(sorted(got) == want, "with a silent vendor, return the quotes that arrived within max_wait.",
               expected=f"{len(want)} quotes {want} (vendors answering after "
                        f"{sorted(round(d, 2) for d in delays.values() if d is not None and d < max_wait)} s)",
               seen=f"{sorted(got)} after {took:.2f} s",
               hint="keep collecting until `expected` replies or the deadline, not until the first pause.")
        return (f"all {k} quotes gathered from one request at once; with staggered vendors, a silent one and a "
                f"late one, the {len(want)} on time after {took:.2f} s (max_wait {max_wait} s).")


# ------------------------------------------------------------------------------ 1.8
@exercise("1.8", "survive a server restart", hints=(
    "a client reconnects by itself if allowed to, and reports disconnects and reconnects through callbacks "
    "(lesson 01.5, 'Connection events and a restart mid-stream').",
    "nats.connect(url, name=..., reconnect_time_wait=..., max_reconnect_attempts=..., disconnected_cb=..., "
    "reconnected_cb=...) with async def callbacks; -1 attempts means never give up.",
    "await nats.connect(srv.url, name=\"resilient\", reconnect_time_wait=0.5, max_reconnect_attempts=-1, "
    "disconnected_cb=on_down, reconnected_cb=on_up)  where  async def on_down(): events.append(\"disconnected\")",
))
async def survive_restart(resilient_client):
    subject = f"ticks.{token()}"
    events: list = []
    async with scratch_server(jetstream=False) as srv:
        nc = await call_learner(resilient_client, srv, events, what="resilient_client(srv, events)",
                                hints={"InvalidCallbackTypeError": "nats-py calls the connection's callbacks with "
                                       "await: they must be async def functions."})
        try:
            of_type(nc, nats.NATS, "resilient_client", "a connected nats client")
            expect(nc.is_connected, "resilient_client must return a connected client.",
                   expected="a connected nats client", seen="closed" if nc.is_closed else "not connected",
                   hint="return the connection itself, open.")
            opts = nc.options
            wait, attempts = opts.get("reconnect_time_wait"), opts.get("max_reconnect_attempts")
            expect(opts.get("allow_reconnect", True), "the connection does not reconnect at all.",
                   expected="allow_reconnect on", seen="allow_reconnect=False",
                   hint="reconnecting is on by default; leave it on.")
            expect(isinstance(wait, (int, float)) and 0.25 <= wait <= 1.0,
                   "the connection does not retry every half second or so.",
                   expected="reconnect_time_wait about 0.5 s (0.25 to 1)", seen=f"reconnect_time_wait={wait!r}",
                   hint="the pause between attempts is a connect option; its default is 2 s.")
            expect(attempts == -1, "the connection gives up after a number of attempts.",
                   expected="max_reconnect_attempts=-1 (never give up)", seen=f"max_reconnect_attempts={attempts!r}",
                   hint="the number of attempts is a connect option (default 60); a negative value means no limit.")
            names = [c.get("name") for c in srv.monitor("connz").get("connections", [])]
            expect("resilient" in names, "the server sees no connection named 'resilient'.",
                   expected="name: resilient in /connz", seen=f"names: {names}",
                   hint="a connection's name is a connect option; the server lists it in /connz.")
            sub = await nc.subscribe(subject)
            await interest(srv, subject)          # the server's view, whatever the client's flush does
            await asyncio.to_thread(srv.stop)
            await until(lambda: not nc.is_connected, "the client to notice", timeout=10, error=False)
            expect(await until(lambda: "disconnected" in events, timeout=5, error=False),
                   "the server went away but events has no 'disconnected'.",
                   expected="'disconnected' appended by the disconnected callback", seen=f"events: {events}",
                   hint="the disconnected_cb runs when the connection is lost; it appends the exact word.")
            expect(not nc.is_closed, "the client gave up when the server stopped.", expected="reconnecting",
                   seen="closed", hint="leave reconnecting on and never give up (max_reconnect_attempts=-1).")
            buffered = [f"while-down-{i}-{token(4)}".encode() for i in range(5)]
            for data in buffered:
                try:
                    await nc.publish(subject, data)
                except nats.errors.OutboundBufferLimitError:
                    raise Mismatch("publishing while disconnected failed: the client buffers nothing.",
                                   expected="publishes kept in the reconnect buffer",
                                   seen="OutboundBufferLimitError",
                                   hint="keep pending_size above zero (the default, 2 MB, is fine).")
            await asyncio.to_thread(srv.start)
            back = await until(lambda: nc.is_connected and "reconnected" in events, timeout=30, error=False)
            expect(nc.is_connected, "the client did not reconnect after the server came back.",
                   expected="connected again within 30 s", seen="still disconnected" if not nc.is_closed else "closed",
                   hint="allow reconnects (max_reconnect_attempts=-1) with a short reconnect_time_wait.")
            expect(back, "the client reconnected but events has no 'reconnected'.",
                   expected="'reconnected' appended by the reconnected callback", seen=f"events: {events}",
                   hint="the reconnected_cb runs when the connection is back; it appends the exact word.")
            first_down = events.index("disconnected")
            expect("reconnected" in events[first_down:], "the events are out of order.",
                   expected="'disconnected' before 'reconnected'", seen=events,
                   hint="append from the callbacks themselves, when they run.")
            got = []
            for _ in buffered:
                try:
                    got.append((await sub.next_msg(timeout=5)).data)
                except asyncio.TimeoutError:
                    break
            expect(got == buffered, "messages published while the server was down did not all arrive after "
                   "the reconnect.", expected=[b.decode() for b in buffered], seen=[g.decode() for g in got],
                   hint="don't flush or close the connection in the callbacks; the client sends its buffer itself.")
            await interest(srv, subject)          # re-subscribed on the new server process
            async with client(srv) as chk:
                await chk.publish(subject, b"after-restart")
                await chk.flush()
                try:
                    after = (await sub.next_msg(timeout=5)).data
                except asyncio.TimeoutError:
                    after = None
            expect(after == b"after-restart", "the subscription did not come back with the connection.",
                   expected="b'after-restart' from another client", seen=after,
                   hint="the client re-subscribes on reconnect; don't unsubscribe in a callback.")
            return (f"options reconnect_time_wait={wait}, max_reconnect_attempts={attempts}; events {events}: the 5 "
                    "buffered publishes and a new message reached the subscription after the server restarted.")
        finally:
            if isinstance(nc, nats.NATS) and not nc.is_closed:
                try:
                    await asyncio.wait_for(nc.close(), 5)
                except Exception:
                    pass


# ------------------------------------------------------------------------------ 1.9
@exercise("1.9", "drain cleanly", hints=(
    "draining stops new messages, lets the callbacks finish what was already received, then closes; "
    "closing drops that backlog (lesson 01.5, 'drain versus close').",
    "nc.drain() is a coroutine: it returns when the connection is closed, so await it before returning.",
    "await nc.drain()",
))
async def drain_cleanly(stop_worker):
    subject = f"work.{token()}"
    total = 80
    async with scratch_server(jetstream=False) as srv, client(srv) as chk, \
            learner_client(srv, name="worker") as nc:
        done = []

        async def handle(msg):
            await asyncio.sleep(0.005)
            done.append(msg.data)

        sub = await nc.subscribe(subject, cb=handle)
        await interest(srv, subject)
        for i in range(total):
            await chk.publish(subject, f"{i}".encode())
        await chk.flush()
        await until(lambda: sub.delivered >= total, "the worker to receive the backlog", timeout=10, error=False)
        expect(sub.delivered >= total, "checker set-up: the worker did not receive the backlog.",
               expected=total, seen=sub.delivered)
        in_progress = total - len(done)
        await call_learner(stop_worker, nc, what="stop_worker(nc)")
        at_return, closed_at_return = len(done), nc.is_closed
        if not closed_at_return:
            # did something keep going after the function returned (a drain not awaited)?
            await until(lambda: nc.is_closed, "the connection to close", timeout=5, error=False)
            expect(not nc.is_closed, "stop_worker() returned before the worker had stopped.",
                   expected="the connection closed when stop_worker() returns",
                   seen=f"{at_return} of {total} processed and the connection still open at return; "
                        f"closed {'later' if nc.is_closed else 'never'}",
                   hint="a drain that is started but not awaited is still running when the function returns.")
            expect(False, "the connection is still open after stop_worker().", expected="closed",
                   seen=f"open ({'connected' if nc.is_connected else 'not connected'}), {at_return} of {total} "
                        "processed", hint="stopping the worker ends with the connection closed.")
        expect(at_return == total, "messages the worker had already received were thrown away.",
               expected=f"all {total} processed", seen=f"{at_return} processed; the connection closed with "
                                                      f"{total - at_return} received but not processed",
               hint="close() drops what is waiting in the subscription; a drain lets the callbacks finish it first.")
        gone = await until(lambda: "worker" not in [c.get("name") for c in
                                                    srv.monitor("connz").get("connections", [])],
                           "the server to drop the connection", timeout=5, error=False)
        expect(gone, "the server still lists the worker's connection.", expected="no connection named worker",
               seen="still in /connz", hint="await the drain (or close) before returning.")
        return (f"{in_progress} messages were still waiting when stop_worker() began; all {total} were processed "
                "before it returned, and the connection closed (gone from /connz).")
