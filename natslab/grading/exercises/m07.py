"""Module 07 (patterns), exercises 7.1-7.11: one small order system built across the lab.

Every checker builds the situation in which the pattern's typical mistake shows and injects the
fault itself: it discovers and calls the learner's service through $SRV, races a rival writer
against the learner's append, rebuilds projections into fresh buckets, declines payments and kills
the orchestrator mid-way, kills elected leaders, pauses a lock holder past its TTL, sends late and
out-of-order events, breaks and heals a responder, floods a consumer.  Outcomes are read from the
server (streams, KV, consumer info, the requests on the wire), never from what the learner reports.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time

import nats
import nats.errors
import nats.js.errors as jserr
from nats.js.api import AckPolicy
from nats.micro.service import Service

from ...runtime.waiting import WaitTimeout, until
from ..checks import Mismatch, call_learner, exercise, expect
from . import client, interest, learner_client, of_type, scenario_ready, scratch_server, token


async def _stream_msgs(js, stream: str, subject: str | None = None) -> list:
    """Every message of ``stream`` (on ``subject`` only, if given), in stream order: the checker's own read."""
    info = await js.stream_info(stream)
    out, seq = [], info.state.first_seq
    while info.state.messages and seq <= info.state.last_seq:
        try:
            msg = await js.get_msg(stream, seq=seq, subject=subject, next=True)
        except jserr.NotFoundError:
            break
        out.append(msg)
        seq = msg.seq + 1
    return out


def _json(data, what: str):
    try:
        return json.loads(data)
    except (ValueError, TypeError):
        raise Mismatch(f"{what} is not JSON.", expected="a JSON document", seen=repr(data)[:120],
                       hint="encode the value with json.dumps(...).encode().") from None


WRONG_LAST_SEQ = 10071  # JetStream's "wrong last sequence" error code


# ------------------------------------------------------------------------------------- 7.1
@exercise("7.1", "an order service with the service API",
          hints=("a NATS micro service answers $SRV.PING/INFO/STATS for its name, so clients can discover it "
                 "and read its statistics without knowing where it runs (lesson 07_1).",
                 "nats.micro.add_service(nc, name=..., version=\"1.0.0\"), then await service.add_endpoint(name="
                 "\"place\", subject=subject, handler=...); answer with await req.respond(...) or "
                 "await req.respond_error(\"400\", ...).",
                 "svc = await micro.add_service(nc, name=name, version=\"1.0.0\"); await svc.add_endpoint("
                 "name=\"place\", subject=subject, handler=handle); return svc"))
async def order_service(start_service):
    tag = token(4)
    name, subject = f"orders-{tag}", f"o{tag}.cmd.place"
    async with scratch_server(jetstream=False) as srv, client(srv) as chk, learner_client(srv) as nc:
        svc = await call_learner(start_service, nc, name, subject, what="start_service(nc, name, subject)",
                                 hints={"ValueError": "nats.micro refused a setting: a service name has only "
                                                      "letters, digits, - and _, and its version is semantic "
                                                      "(\"1.0.0\")."})
        try:
            return await _check_service(srv, chk, name, subject, svc)
        finally:
            if isinstance(svc, Service):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(svc.stop(), 5)


async def _ask(chk, subject: str, data: bytes = b"", timeout: float = 3.0):
    try:
        return await chk.request(subject, data, timeout=timeout)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
        return None


async def _reply(chk, subject: str) -> bytes:
    msg = await _ask(chk, subject)
    expect(msg is not None, f"the service answered PING but not {subject}.", expected="a reply", seen="no reply",
           hint="let nats.micro answer the $SRV requests: don't stop the service or unsubscribe its subjects.")
    return msg.data


async def _check_service(srv, chk, name, subject, svc) -> str:
    await interest(srv, f"$SRV.PING.{name}", timeout=5)
    ping = await _ask(chk, f"$SRV.PING.{name}")
    expect(ping is not None, f"no service answered $SRV.PING.{name}: the service cannot be discovered.",
           expected=f"a ping reply from a service named {name!r}", seen="no reply",
           hint="a plain subscription answers requests but is not a service: create it with nats.micro."
                "add_service, under the name the check passes you.")
    ping = _json(ping.data, "the PING reply")
    expect(ping.get("name") == name, "the service answering PING has another name.", expected=name,
           seen=ping.get("name"), hint="use the name the check passes you as the service's name.")
    info = _json(await _reply(chk, f"$SRV.INFO.{name}"), "the INFO reply")
    subjects = [e.get("subject") for e in info.get("endpoints") or []]
    expect(subject in subjects, "the service's INFO lists no endpoint on the subject it was given.",
           expected=f"an endpoint with subject {subject!r}", seen=subjects or "no endpoints",
           hint="an endpoint listens on its name unless you give it a subject: pass subject= to add_endpoint.")
    await interest(srv, subject, timeout=5)
    calls = random.randint(3, 6)
    for i in range(calls):
        order = {"id": f"ord-{token(5)}", "items": [{"sku": f"s{k}", "qty": random.randint(1, 3),
                                                     "price": random.randint(1, 50)} for k in range(random.randint(1, 3))]}
        reply = await _ask(chk, subject, json.dumps(order).encode())
        expect(reply is not None, f"the endpoint did not answer request {i + 1} within 3 s.", expected="a reply",
               seen="no reply", hint="answer every request with await req.respond(...).")
        expect(not (reply.headers or {}).get("Nats-Service-Error-Code"),
               "a valid order was answered with a service error.", expected="a JSON reply",
               seen=reply.headers, hint="answer valid orders with req.respond(json.dumps(...).encode()).")
        got = _json(reply.data, "the endpoint's reply")
        want = {"id": order["id"], "status": "placed",
                "total": sum(it["qty"] * it["price"] for it in order["items"])}
        expect(isinstance(got, dict) and {k: got.get(k) for k in want} == want,
               "the reply to a valid order is not what the exercise asks for.", expected=want, seen=got,
               hint="total is the sum of qty * price over the order's items.")
    bad = await _ask(chk, subject, b"{not json")
    expect(bad is not None, "the endpoint did not answer a request whose body is not JSON.",
           expected="a service error reply", seen="no reply",
           hint="catch the JSON error and answer with await req.respond_error(\"400\", \"...\").")
    code = (bad.headers or {}).get("Nats-Service-Error-Code")
    expect(code == "400", "a request that is not JSON was not answered as a service error with code 400.",
           expected="header Nats-Service-Error-Code: 400", seen=bad.headers or bad.data[:80],
           hint="a service error travels in the Nats-Service-Error and Nats-Service-Error-Code headers: "
                "send it with req.respond_error(code, description), not in the JSON body.")
    stats = _json(await _reply(chk, f"$SRV.STATS.{name}"), "the STATS reply")
    counted = sum(e.get("num_requests", 0) for e in stats.get("endpoints") or [] if e.get("subject") == subject)
    expect(counted == calls + 1, "the service's STATS do not count the check's requests to the endpoint.",
           expected=f"num_requests {calls + 1}", seen=f"num_requests {counted}",
           hint="requests counted by the service are the ones its endpoint handles: answer orders through "
                "the endpoint's handler, not through a subscription of your own.")
    of_type(svc, Service, "start_service", "the nats.micro Service")
    return (f"found {name} through $SRV.PING and INFO (endpoint {subject}), got {calls} correct replies and a "
            f"400 service error for a body that is not JSON, and $SRV.STATS counted all {calls + 1} requests.")


# ------------------------------------------------------------------------------------- 7.2
def _order_stream_config(tag: str):
    return dict(name=f"ORDERS_{tag.upper()}", subjects=[f"o{tag}.evt.>"])


@exercise("7.2", "load an aggregate from its events",
          hints=("an aggregate's state is the fold of its own events: the messages of its subject, in stream "
                 "order; the last one's stream sequence is the version you will write against (lesson 07_3).",
                 "read only that subject: js.get_msg(stream, seq=n, subject=subject, next=True) in a loop, or a "
                 "consumer filtered on the subject (msg.metadata.sequence.stream, msg.metadata.num_pending).",
                 "seq, events, last = 1, [], 0\nwhile True:\n    try: m = await js.get_msg(stream, seq=seq, "
                 "subject=subject, next=True)\n    except nats.js.errors.NotFoundError: return events, last\n"
                 "    events.append(json.loads(m.data)); last = seq = m.seq; seq += 1"))
async def load_aggregate(load):
    tag = token(4)
    cfg = _order_stream_config(tag)
    stream = cfg["name"]
    async with scratch_server() as srv, client(srv) as chk, learner_client(srv) as nc:
        js = chk.jetstream()
        await js.add_stream(**cfg)
        me, other = f"o{tag}.evt.ord7", f"o{tag}.evt.ord70"
        deleted = None
        for i in range(130):  # more than one fetch's worth, interleaved with other orders and a deeper subject
            await js.publish(me, json.dumps({"type": "item_added", "n": i}).encode())
            if i % 3 == 0:
                await js.publish(other, json.dumps({"type": "item_added", "n": -i}).encode())
            if i % 10 == 0:
                await js.publish(f"{me}.audit", json.dumps({"type": "audit", "n": -i}).encode())
            if i == 40:
                deleted = (await js.get_last_msg(stream, me)).seq
        await js.delete_msg(stream, deleted)
        await js.publish(other, json.dumps({"type": "paid"}).encode())  # the stream ends on another order
        truth = await _stream_msgs(js, stream, me)
        want_events, want_last = [json.loads(m.data) for m in truth], truth[-1].seq
        ljs = nc.jetstream()
        hints = {"TimeoutError": "a read waited for a message that never came: stop when the subject has no more "
                                 "messages (num_pending 0, or NotFoundError from get_msg with next=True)."}
        got = await call_learner(load, ljs, stream, me, what="load(js, stream, subject)", hints=hints)
        events, last = _pair(got)
        if events != want_events:
            foreign = [e for e in events if isinstance(e, dict) and isinstance(e.get("n"), int) and e["n"] < 0]
            why = ("events of other subjects came in: read only the aggregate's own subject (a filter on exactly "
                   "that subject, not a wildcard)." if foreign or (events and len(events) > len(want_events)) else
                   "some events are missing: keep reading until the subject has nothing more (one fetch returns "
                   "at most one batch)." if len(events) < len(want_events) else
                   "the events are not in stream order, or not decoded from JSON.")
            raise Mismatch("load returned other events than the aggregate's subject holds.",
                           expected=f"{len(want_events)} events, n = 0..129 without 40",
                           seen=f"{len(events)} events, first {events[:3]}"[:160], hint=why)
        expect(last == want_last, "the version returned is not the stream sequence of the aggregate's last event.",
               expected=want_last, seen=last,
               hint="return the last message's stream sequence (m.seq, or msg.metadata.sequence.stream), not "
                    "a count of events: other orders share the stream.")
        got = await call_learner(load, ljs, stream, f"o{tag}.evt.ord8", what="load(js, stream, subject) for an "
                                 "order with no events", hints=hints)
        events, last = _pair(got)
        expect(events == [] and last == 0, "an order with no events must load as ([], 0).", expected=([], 0),
               seen=(events, last), hint="a new aggregate has no events and version 0.")
        return (f"loaded {len(want_events)} events of one order (out of a stream shared with other orders, "
                f"deeper subjects and a deleted message) with version {want_last}, and ([], 0) for a new order.")


def _pair(got):
    of_type(got, (tuple, list), "load", "a pair (events, last_seq)")
    expect(len(got) == 2, "load must return two things: the events and the last sequence.",
           expected="(events, last_seq)", seen=repr(got)[:120])
    events, last = got
    of_type(events, list, "load (the events)", "a list of dicts")
    of_type(last, int, "load (the last sequence)", "an int")
    return events, last


# ------------------------------------------------------------------------------------- 7.3
@exercise("7.3", "append with optimistic concurrency",
          hints=("an event-sourced write is conditional: append only if nobody appended to the aggregate since "
                 "you loaded it, otherwise load again, decide again and retry (lesson 07_3).",
                 "js.publish(subject, data, headers={\"Nats-Expected-Last-Subject-Sequence\": str(last)}); a "
                 "conflict raises nats.js.errors.BadRequestError with err_code 10071.",
                 "for _ in range(5):\n    events, last = await load(js, stream, subject)\n    event = await "
                 "decide(events, command)\n    try: return (await js.publish(subject, json.dumps(event).encode(), headers={"
                 "\"Nats-Expected-Last-Subject-Sequence\": str(last)})).seq\n    except BadRequestError as e:\n"
                 "        if e.err_code != 10071: raise"))
async def append_event(execute):
    tag = token(4)
    cfg = _order_stream_config(tag)
    stream = cfg["name"]
    async with scratch_server() as srv, client(srv) as chk, learner_client(srv) as nc:
        js = chk.jetstream()
        await js.add_stream(**cfg)
        subject = f"o{tag}.evt.ord{random.randint(10, 99)}"
        for n in (1, 2, 3):
            await js.publish(subject, json.dumps({"type": "item_added", "n": n, "by": "history"}).encode())
        await js.publish(f"o{tag}.evt.other", json.dumps({"type": "placed"}).encode())  # stream seq > subject's
        races = {"cmd-a": 1, "cmd-b": 0, "cmd-c": 2}  # how many rival appends land while each command is decided
        seen: list[tuple[str, int]] = []

        async def decide(events, command):
            if not isinstance(events, list):
                raise TypeError("decide(events, command): events must be the list of the order's events")
            cmd = command["id"]
            seen.append((cmd, len(events)))
            if races[cmd] > 0:  # a rival appends between the learner's load and its append
                races[cmd] -= 1
                await js.publish(subject, json.dumps({"type": "item_added", "n": len(events) + 1,
                                                      "by": "rival"}).encode())
            return {"type": "item_added", "n": len(events) + 1, "by": cmd}

        hints = {"BadRequestError": "the server refused the append: \"wrong last sequence\" means someone appended "
                                    "to this order since you loaded it. Load again, decide again and retry, "
                                    "expecting the last sequence of the order's own subject "
                                    "(Nats-Expected-Last-Subject-Sequence), not of the whole stream.",
                 "APIError": "the server refused the append; print the error's description and err_code."}
        ljs = nc.jetstream()
        for cmd in ("cmd-a", "cmd-b", "cmd-c"):
            # other orders are busy too: the stream's last sequence is never this order's
            await js.publish(f"o{tag}.evt.other", json.dumps({"type": "item_added"}).encode())
            got = await call_learner(execute, ljs, stream, subject, {"id": cmd}, decide,
                                     what=f"execute(js, stream, subject, {{'id': {cmd!r}}}, decide)", hints=hints)
            msgs = await _stream_msgs(js, stream, subject)
            events = [_json(m.data, f"the event at stream sequence {m.seq}") for m in msgs]
            numbers = [e.get("n") if isinstance(e, dict) else e for e in events]
            mine = [m for m, e in zip(msgs, events) if e.get("by") == cmd]
            expect(numbers == list(range(1, len(numbers) + 1)),
                   "the order's events are no longer numbered 1, 2, 3, ...: an append was decided on a stale state "
                   "and got in anyway.", expected=list(range(1, len(numbers) + 1)), seen=numbers,
                   hint="append with the header Nats-Expected-Last-Subject-Sequence set to the version you loaded, "
                        "so the server refuses the append when a rival wrote first.")
            expect(len(mine) == 1, f"command {cmd}'s event is {'missing' if not mine else 'there more than once'}.",
                   expected="exactly one event for the command", seen=f"{len(mine)}",
                   hint="when the server refuses the append (wrong last sequence), load again, decide again and "
                        "retry; don't give up and don't append twice.")
            of_type(got, int, "execute", "the stream sequence of the appended event (an int)")
            expect(got == mine[0].seq, "execute returned another number than the stream sequence of its event.",
                   expected=mine[0].seq, seen=got, hint="return the PubAck's seq.")
        retried = sum(1 for c, _ in seen if c == "cmd-c")
        return (f"three commands, with 0, 1 and 2 rival appends landing between load and append: every stale "
                f"append was refused and retried ({retried} decisions for the last command), and the order's "
                f"{len(numbers)} events stay numbered without gaps or duplicates.")


# ------------------------------------------------------------------------------------- 7.4
def _fold(events) -> dict:
    state: dict = {}
    for subject, e in events:
        oid = subject.rsplit(".", 1)[1]
        if e["type"] == "placed":
            state[oid] = {"status": "placed", "total": 0}
        elif e["type"] == "item_added":
            state[oid]["total"] += e["price"]
        elif e["type"] in ("paid", "cancelled"):
            state[oid]["status"] = e["type"]
    return state


async def _publish_orders(js, tag, orders: dict, count: int) -> None:
    for _ in range(count):
        if not orders or random.random() < 0.15:
            oid = f"ord{len(orders) + 1}"
            orders[oid] = "placed"
            await js.publish(f"o{tag}.evt.{oid}", json.dumps({"type": "placed"}).encode())
            continue
        oid = random.choice([o for o, s in orders.items() if s == "placed"] or list(orders))
        r = random.random()
        if orders[oid] == "placed" and r < 0.1:
            orders[oid] = random.choice(("paid", "cancelled"))
            await js.publish(f"o{tag}.evt.{oid}", json.dumps({"type": orders[oid]}).encode())
        else:
            await js.publish(f"o{tag}.evt.{oid}",
                             json.dumps({"type": "item_added", "price": random.randint(1, 20)}).encode())


@exercise("7.4", "a projection that rebuilds",
          hints=("a read model is a projection of the event stream: folding the same events must give the same "
                 "state, however many times it runs and whatever the bucket held before (lesson 07_4).",
                 "read every event of the stream in order (js.get_msg with next=True, or an ordered consumer), "
                 "fold them into a dict, then kv.put(order_id, json.dumps(state).encode()) for each order.",
                 "state = fold(all events of the stream); for oid, s in state.items(): await kv.put(oid, "
                 "json.dumps(s).encode())"))
async def projection(project):
    tag = token(4)
    cfg = _order_stream_config(tag)
    stream = cfg["name"]
    async with scratch_server() as srv, client(srv) as chk, learner_client(srv) as nc:
        js = chk.jetstream()
        await js.add_stream(**cfg)
        orders: dict = {}
        await _publish_orders(js, tag, orders, 160)
        ljs = nc.jetstream()
        runs = (("first", f"VIEW_{tag}_A", 0), ("again over the same bucket, after new events", f"VIEW_{tag}_A", 40),
                ("into an empty bucket (a rebuild)", f"VIEW_{tag}_B", 0))
        for what, bucket, more in runs:
            await _publish_orders(js, tag, orders, more)
            with contextlib.suppress(jserr.BadRequestError):
                await js.create_key_value(bucket=bucket, history=5)
            lkv = await ljs.key_value(bucket)
            await call_learner(project, ljs, stream, lkv, what=f"project(js, stream, kv) ({what})", timeout=30)
            want = _fold([(m.subject, json.loads(m.data)) for m in await _stream_msgs(js, stream)])
            kv = await js.key_value(bucket)
            # the keys as the server's stream state lists them (nats-py's kv.keys() can answer "no keys"
            # on a loaded machine while its watcher starts; seen once in a CI run)
            info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"$KV.{bucket}.>")
            keys = [subject.split(".", 2)[2] for subject in (info.state.subjects or {})]
            have = {}
            for k in keys:
                if k.startswith("_"):
                    continue
                try:
                    have[k] = _json((await kv.get(k)).value, f"the value of key {k!r}")
                except (jserr.KeyDeletedError, jserr.KeyNotFoundError):
                    continue
            if have != want:
                missing = sorted(set(want) - set(have))
                wrong = sorted(k for k in want if k in have and have[k] != want[k])
                k = (wrong or missing or sorted(set(have) - set(want)) or [None])[0]
                if what.startswith("again") and wrong and all(
                        isinstance(have[x], dict) and isinstance(have[x].get("total"), int)
                        and have[x]["total"] > want[x]["total"] for x in wrong):
                    why = ("running the projection again counted events twice: it is not idempotent. Compute each "
                           "order's state from its events and put it, instead of adding to what the bucket holds.")
                elif what.startswith("into") and missing:
                    why = ("a rebuild into an empty bucket must give the whole read model: don't keep a checkpoint "
                           "in your program (or in a durable consumer) that makes it skip old events.")
                elif missing and len(missing) > len(want) // 3:
                    why = "orders are missing: read every event of the stream, not only the first batch."
                else:
                    why = ("the state of an order differs from the fold of its events: placed starts it at total 0, "
                           "item_added adds its price, paid and cancelled set the status.")
                raise Mismatch(f"the read model after the run {what} is not the fold of the stream.",
                               expected=f"{len(want)} orders; {k}: {want.get(k)}",
                               seen=f"{len(have)} orders; {k}: {have.get(k)}", hint=why)
        return (f"ran the projection three times (fresh, again after 40 new events, into an empty bucket): each "
                f"time the bucket held exactly the fold of the stream ({len(want)} orders).")


# ------------------------------------------------------------------------------------- 7.5 / 7.6
STEPS = ("reserve", "charge", "ship")
SUBJECTS = {"reserve": "inventory.reserve", "charge": "payments.charge", "ship": "shipping.create"}
UNDO = {"reserve": "inventory.release", "charge": "payments.refund"}


class _Services:
    """The checker's inventory, payment and shipping services: idempotent per order, with a ledger."""

    def __init__(self, chk, prefix: str, kv):
        self.chk, self.prefix, self.kv = chk, prefix, kv
        self.effects: dict[str, set] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[tuple[str, str], str] = {}   # (order, step) -> "decline"
        self.hang: dict[tuple[str, str], asyncio.Event] = {}  # (order, step) -> set when the request arrived
        self.saw_state: dict[tuple[str, str], object] = {}
        self.subs = []

    async def start(self):
        for step, subj in SUBJECTS.items():
            self.subs.append(await self.chk.subscribe(f"{self.prefix}.{subj}", cb=self._do(step)))
        for step, subj in UNDO.items():
            self.subs.append(await self.chk.subscribe(f"{self.prefix}.{subj}", cb=self._undo(step)))
        await self.chk.flush()

    def _order(self, msg):
        try:
            return str(json.loads(msg.data)["order"])
        except Exception:
            return None

    def _do(self, step):
        async def handle(msg):
            order = self._order(msg)
            if order is None:
                await msg.respond(json.dumps({"ok": False, "reason": "bad request"}).encode())
                return
            self.calls.append((order, step))
            try:
                self.saw_state[(order, step)] = json.loads((await self.kv.get(order)).value)
            except Exception:
                self.saw_state[(order, step)] = None
            if self.fail.get((order, step)) == "decline":
                await msg.respond(json.dumps({"ok": False, "reason": f"{step} declined"}).encode())
                return
            self.effects.setdefault(order, set()).add(step)
            if (order, step) in self.hang:
                self.hang.pop((order, step)).set()  # done, but the reply never comes: the orchestrator dies now
                return
            await msg.respond(json.dumps({"ok": True}).encode())
        return handle

    def _undo(self, step):
        async def handle(msg):
            order = self._order(msg)
            if order is not None:
                self.calls.append((order, UNDO[step]))
                self.effects.setdefault(order, set()).discard(step)
            await msg.respond(json.dumps({"ok": True}).encode())
        return handle

    def of(self, order):
        return self.effects.get(order, set())


async def _saga_state(kv, order):
    try:
        return _json((await kv.get(order)).value, f"the saga state of {order}")
    except jserr.KeyNotFoundError:
        return None


def _saga_hints():
    return {"TimeoutError": "a step's request got no reply in time: treat that as the step failing, or (in "
                            "recover) as a step that may or may not have happened.",
            "NoRespondersError": "nobody listens on that subject: build it as prefix + \".inventory.reserve\" etc."}


@exercise("7.5", "a saga that compensates",
          hints=("a saga runs local steps one after another and, when a step fails, undoes the steps already "
                 "done with their compensations, in reverse order; its progress is kept in KV so a crash can "
                 "be recovered (lesson 07_5).",
                 "nc.request(f\"{prefix}.inventory.reserve\", json.dumps({\"order\": order_id}).encode(), timeout=2); "
                 "kv.put(order_id, json.dumps({\"done\": done, \"status\": status}).encode()) before each step.",
                 "for step in steps: put state; reply = request(step); if not ok: for s in reversed(done): "
                 "request(undo[s]); put status compensated; return \"compensated\"; else done.append(step)"))
async def saga(place_order):
    tag = token(4)
    prefix = f"s{tag}"
    async with scratch_server() as srv, client(srv) as chk, learner_client(srv) as nc:
        js = chk.jetstream()
        await js.create_key_value(bucket=f"SAGA_{tag}", history=10)
        kv = await js.key_value(f"SAGA_{tag}")
        lkv = await nc.jetstream().key_value(f"SAGA_{tag}")
        svc = _Services(chk, prefix, kv)
        await svc.start()
        cases = (("ord-ok", None, "completed"), ("ord-pay", "charge", "compensated"),
                 ("ord-ship", "ship", "compensated"))
        for order, failing, outcome in cases:
            order = f"{order}-{token(3)}"
            if failing:
                svc.fail[(order, failing)] = "decline"
            got = await call_learner(place_order, nc, lkv, prefix, order, what=f"place_order(nc, kv, prefix, {order!r})",
                                     hints=_saga_hints())
            effects = svc.of(order)
            steps_called = [s for o, s in svc.calls if o == order]
            if failing:
                after = STEPS[STEPS.index(failing) + 1:]
                went_on = [s for s in after if s in steps_called]
                expect(not went_on, f"after {failing} was declined the saga went on with {went_on[:1]}.",
                       expected=f"no {' or '.join(after)}", seen=steps_called,
                       hint="a step that fails ends the forward path: compensate instead.")
                expect(not effects, f"after {failing} was declined, the steps already done were not all undone.",
                       expected="nothing left reserved or charged", seen=sorted(effects),
                       hint="compensate every completed step: release what was reserved, refund what was charged.")
                undos = [s for s in steps_called if s in UNDO.values()]
                want = [UNDO[s] for s in reversed(STEPS[:STEPS.index(failing)])]
                expect(undos == want, "the compensations did not run once each in reverse order of the steps.",
                       expected=want, seen=undos,
                       hint="undo the last completed step first (refund, then release).")
            else:
                expect(effects == set(STEPS), "the saga did not complete every step when they all succeeded.",
                       expected=list(STEPS), seen=sorted(effects), hint="reserve, then charge, then ship.")
            expect(got == outcome, "place_order returned the wrong outcome.", expected=repr(outcome), seen=repr(got),
                   hint="return \"completed\" when every step succeeded, \"compensated\" after undoing.")
            for i, step in enumerate(s for s in STEPS if (order, s) in svc.saw_state):
                state = svc.saw_state[(order, step)]
                expect(isinstance(state, dict) and state.get("done") == list(STEPS[:i])
                       and state.get("status") == "running",
                       f"when the {step} request arrived, the saga state in KV did not list the steps done so far.",
                       expected={"done": list(STEPS[:i]), "status": "running"}, seen=state,
                       hint="persist the saga's progress before each step: kv.put(order_id, json.dumps({\"done\": "
                            "done, \"status\": \"running\"}).encode()); a crashed saga is recovered from it.")
            final = await _saga_state(kv, order)
            expect(isinstance(final, dict) and final.get("status") == outcome,
                   "the saga's final state in KV does not record its outcome.",
                   expected={"status": outcome}, seen=final, hint="put the final status when the saga ends.")
        return ("completed one order; for a declined payment and a failed shipment it stopped, undid the done "
                "steps in reverse order and recorded the outcome; the KV state listed the done steps before "
                "each request.")


@exercise("7.6", "recover a saga after a crash",
          hints=("a saga's orchestrator can die between steps; another process then reads the saga's state from "
                 "KV and drives it to an end: finish it or compensate, never leave it half done (lesson 07_5).",
                 "state = json.loads((await kv.get(order_id)).value); the step after the done ones may have "
                 "happened: retry it (steps are idempotent) or undo it with the others.",
                 "state = ...; if state[\"status\"] in (\"completed\", \"compensated\"): return it; "
                 "for s in reversed(STEPS[:len(state[\"done\"]) + 1]): undo s if it has an undo; put status "
                 "compensated; return \"compensated\""))
async def saga_recovery(place_order, recover):
    tag = token(4)
    prefix = f"s{tag}"
    async with scratch_server() as srv, client(srv) as chk:
        js = chk.jetstream()
        await js.create_key_value(bucket=f"SAGA_{tag}", history=10)
        kv = await js.key_value(f"SAGA_{tag}")
        svc = _Services(chk, prefix, kv)
        await svc.start()
        checked = []
        for kill_at in random.sample(("charge", "ship"), 2):  # the orchestrator dies while this step is in flight
            order = f"ord-{kill_at}-{token(3)}"
            svc.hang[(order, kill_at)] = arrived = asyncio.Event()
            async with learner_client(srv) as nc:
                lkv = await nc.jetstream().key_value(f"SAGA_{tag}")
                run = asyncio.ensure_future(call_learner(place_order, nc, lkv, prefix, order,
                                                         what=f"place_order(nc, kv, prefix, {order!r})",
                                                         hints=_saga_hints(), timeout=30))
                done, _ = await asyncio.wait({run, asyncio.ensure_future(arrived.wait())},
                                             return_when=asyncio.FIRST_COMPLETED, timeout=30)
                if run in done:
                    run.result()  # a verdict from the learner's own failure
                    raise Mismatch(f"place_order finished before the check could kill it at {kill_at}.",
                                   expected=f"it waits for the {kill_at} reply", seen=f"returned {run.result()!r}",
                                   hint="exercise 7.5's place_order must wait for each step's reply.")
                expect(arrived.is_set(), f"the {kill_at} request never arrived.", expected=kill_at,
                       seen=[s for o, s in svc.calls if o == order], hint="solve exercise 7.5 first.")
                run.cancel()  # the orchestrator dies with the step in flight, its connection with it
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await run
            async with learner_client(srv) as nc:  # another process recovers
                lkv = await nc.jetstream().key_value(f"SAGA_{tag}")
                got = await call_learner(recover, nc, lkv, prefix, order, what=f"recover(nc, kv, prefix, {order!r})",
                                         hints=_saga_hints(), timeout=30)
            checked.append(_consistent(svc, order, got, f"the orchestrator died with {kill_at} in flight"))
            expect((await _saga_state(kv, order) or {}).get("status") == got,
                   "after recovery the saga's state in KV does not record the outcome recover returned.",
                   expected={"status": got}, seen=await _saga_state(kv, order),
                   hint="put the final status in KV when recovery ends.")
        # a saga another process crashed in (state written by that process), and one that had finished
        order = f"ord-foreign-{token(3)}"
        await kv.put(order, json.dumps({"done": ["reserve"], "status": "running"}).encode())
        svc.effects[order] = {"reserve"}
        async with learner_client(srv) as nc:
            lkv = await nc.jetstream().key_value(f"SAGA_{tag}")
            got = await call_learner(recover, nc, lkv, prefix, order, what=f"recover(nc, kv, prefix, {order!r})",
                                     hints=_saga_hints(), timeout=30)
            checked.append(_consistent(svc, order, got, "another process crashed after reserve (its state in KV)"))
            order = f"ord-done-{token(3)}"
            lkv2 = await nc.jetstream().key_value(f"SAGA_{tag}")
            await call_learner(place_order, nc, lkv2, prefix, order, what=f"place_order(nc, kv, prefix, {order!r})",
                               hints=_saga_hints())
            before = list(svc.calls)
            got = await call_learner(recover, nc, lkv2, prefix, order, what=f"recover(nc, kv, prefix, {order!r}) "
                                     "for a saga that completed", hints=_saga_hints())
            expect(got == "completed" and svc.of(order) == set(STEPS) and svc.calls == before,
                   "recovering a saga that had completed changed it.", expected="\"completed\", no requests",
                   seen=f"{got!r}, requests {[s for o, s in svc.calls[len(before):]]}",
                   hint="a saga whose state says completed (or compensated) is over: return its status.")
        return (f"killed the orchestrator with charge and with ship in flight, and recovered an order another "
                f"process had left after reserve: each ended {', '.join(checked)} with the services' ledger "
                f"consistent; a completed saga was left alone.")


def _consistent(svc, order, got, when) -> str:
    effects = svc.of(order)
    expect(got in ("completed", "compensated"), f"recover returned {got!r} ({when}).",
           expected="\"completed\" or \"compensated\"", seen=repr(got),
           hint="drive the saga to an end and return which end.")
    if got == "completed":
        expect(effects == set(STEPS), f"recover said completed but not every step took effect ({when}).",
               expected=list(STEPS), seen=sorted(effects),
               hint="to finish a saga, retry the step that was in flight and do the rest.")
    else:
        expect(not effects, f"recover said compensated, but effects remain ({when}).",
               expected="nothing reserved, charged or shipped", seen=sorted(effects),
               hint="the step in flight may have happened even though no reply came: undo it too, along with "
                    "the steps listed as done (compensations are idempotent).")
    return got


# ------------------------------------------------------------------------------------- 7.7
class _Crew:
    """Workers running the learner's ``lead`` on connections of their own; the checker kills them."""

    def __init__(self, srv, bucket, lead, ttl):
        self.srv, self.bucket, self.lead, self.ttl = srv, bucket, lead, ttl
        self.acts: list[tuple[str, float]] = []
        self.active: set = set()
        self.concurrent: list = []
        self.workers: dict = {}
        self.stack = contextlib.AsyncExitStack()

    def act_for(self, name):
        async def act():
            if self.active - {name}:
                self.concurrent.append((name, sorted(self.active)))
            self.active.add(name)
            self.acts.append((name, time.monotonic()))
            try:
                await asyncio.sleep(0.01)
            finally:
                self.active.discard(name)
        return act

    async def start(self, name):
        nc = await self.stack.enter_async_context(learner_client(self.srv))
        kv = await nc.jetstream().key_value(self.bucket)
        task = asyncio.ensure_future(call_learner(self.lead, kv, name, self.act_for(name), self.ttl, timeout=600,
                                                  what=f"lead(kv, {name!r}, act, ttl)"))
        self.workers[name] = (nc, task)

    def trouble(self):
        for name, (_, task) in self.workers.items():
            if task.done():
                task.result()  # the learner's exception, as a verdict
                raise Mismatch(f"lead(...) of {name} returned: a worker must keep running (leading or waiting to "
                               "lead) until it is stopped.", expected="it runs until cancelled",
                               seen=f"returned {task.result()!r}"[:120],
                               hint="loop forever: try to claim, act and refresh while you hold the claim, "
                                    "and try again when you lose it.")

    async def kill(self, name):
        nc, task = self.workers.pop(name)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        with contextlib.suppress(Exception):
            await nc.close()

    async def close(self):
        for name in list(self.workers):
            await self.kill(name)
        await self.stack.aclose()


def _runs(acts):
    runs = []
    for name, _ in acts:
        if not runs or runs[-1] != name:
            runs.append(name)
    return runs


@exercise("7.7", "a leader-elected worker",
          hints=("leader election on KV: the leader is whoever created the leader key; the bucket's TTL removes "
                 "the key of a leader that stops refreshing it, so another worker can take over (lesson 07_6).",
                 "rev = await kv.create(\"leader\", name.encode()) claims (KeyWrongLastSequenceError when someone "
                 "holds it); rev = await kv.update(\"leader\", name.encode(), last=rev) refreshes and fails once "
                 "you lost it.",
                 "while True:\n    try: rev = await kv.create(\"leader\", name.encode())\n    except "
                 "KeyWrongLastSequenceError: await asyncio.sleep(ttl / 4); continue\n    try:\n        while True: "
                 "await act(); await asyncio.sleep(ttl / 4); rev = await kv.update(\"leader\", name.encode(), "
                 "last=rev)\n    except KeyWrongLastSequenceError: pass"))
async def leader(lead):
    tag = token(4)
    ttl = 2.0
    bucket = f"LEAD_{tag}"
    async with scratch_server() as srv, client(srv) as chk:
        js = chk.jetstream()
        await js.create_key_value(bucket=bucket, ttl=ttl, history=1)
        crew = _Crew(srv, bucket, lead, ttl)
        names = [f"worker{i}-{token(3)}" for i in range(3)]
        try:
            for name in names:
                await crew.start(name)
            killed: list[str] = []
            for phase in range(3):
                start = len(crew.acts)
                if phase:  # after a kill: the dead leader's claim expires within ttl, then someone claims it
                    def took_over():
                        crew.trouble()
                        return any(a[0] not in killed for a in crew.acts[start:])
                    try:
                        await until(took_over, "a new leader", timeout=2 * ttl + 4, every=0.1)
                    except WaitTimeout:
                        crew.trouble()
                        raise Mismatch("no worker took over after the leader was killed.",
                                       expected="another worker acting within a few TTLs",
                                       seen=f"no action in {2 * ttl + 4:.0f} s",
                                       hint="a worker that fails to claim must keep trying: the key of a dead "
                                            "leader disappears after the TTL and can be created again.") from None
                # the first leader acts for longer than the TTL: an unrefreshed claim would expire meanwhile
                need, span = (6, 1.5 * ttl) if phase == 0 else (3, 0.0)

                def progress():
                    crew.trouble()
                    new = [a for a in crew.acts[start:] if a[0] not in killed]
                    return len(new) >= need and new[-1][1] - new[0][1] >= span

                try:
                    await until(progress, "a leader acting", timeout=6 * ttl + 10, every=0.1)
                except WaitTimeout:
                    crew.trouble()
                    raise Mismatch("no worker became leader and acted." if phase == 0 else
                                   "the new leader did not keep acting.",
                                   expected="a worker acting about every ttl/4 s",
                                   seen=f"{len(crew.acts) - start} actions in {6 * ttl + 10:.0f} s",
                                   hint="claim the leader key with kv.create, then call act() about every ttl/4 s "
                                        "while you hold it.") from None
                _no_overlap(crew, killed)
                if phase < 2:
                    current = crew.acts[-1][0]
                    killed.append(current)
                    await crew.kill(current)
        finally:
            await crew.close()
        runs = _runs(crew.acts)
        return (f"three workers, the leader killed twice: {len(crew.acts)} actions by {' -> '.join(runs)}, never two "
                f"leaders at a time, and a new leader took over after each kill.")


def _no_overlap(crew, killed):
    runs = _runs(crew.acts)
    if crew.concurrent or len(runs) > len(killed) + 2:
        seen = " -> ".join(runs[:8]) + (" ..." if len(runs) > 8 else "")
        raise Mismatch("two workers acted as leader at the same time.",
                       expected=f"one leader at a time, changing only when one is killed ({len(killed)} so far)",
                       seen=f"actions by {seen}",
                       hint="claim with kv.create (it fails when someone holds the key; kv.put always succeeds), and "
                            "refresh the claim with kv.update(..., last=rev) well within the TTL: an unrefreshed "
                            "claim expires and another worker takes over while you still act.")


# ------------------------------------------------------------------------------------- 7.8
@exercise("7.8", "fencing tokens",
          hints=("a lock with a TTL can expire while its holder is paused; the holder then writes with a stale "
                 "lock. A fencing token (the lock's revision) that only grows lets the storage refuse such writes "
                 "(lesson 07_6).",
                 "entry = await kv.get(key) (KeyNotFoundError when empty); compare the stored token, as an int, "
                 "with yours; kv.put(key, json.dumps({\"token\": token, \"value\": value}).encode()).",
                 "try: stored = json.loads((await kv.get(key)).value)\nexcept KeyNotFoundError: stored = None\n"
                 "if stored and stored[\"token\"] > token: return False\nawait kv.put(key, json.dumps({\"token\": "
                 "token, \"value\": value}).encode()); return True"))
async def fencing(fenced_write):
    tag = token(4)
    async with scratch_server() as srv, client(srv) as chk, learner_client(srv) as nc:
        js = chk.jetstream()
        await js.create_key_value(bucket=f"LOCK_{tag}", ttl=1.0, history=1)
        await js.create_key_value(bucket=f"DATA_{tag}", history=5)
        lock, data = await js.key_value(f"LOCK_{tag}"), await js.key_value(f"DATA_{tag}")
        ldata = await nc.jetstream().key_value(f"DATA_{tag}")
        key = f"stock-{tag}"
        for i in range(8):  # other locks, so the tokens cross from one digit to two
            await lock.put(f"other{i}", b"x")
        ta = await lock.create("stock", b"holder-a")

        async def write(who, value, tok, want: bool, why: str):
            got = await call_learner(fenced_write, ldata, key, value, tok,
                                     what=f"fenced_write(kv, {key!r}, {value!r}, {tok}) by {who}",
                                     hints={"TypeError": "the token is an int: compare it with the stored token "
                                                         "as an int."})
            of_type(got, bool, "fenced_write", "True or False")
            try:
                stored = _json((await data.get(key)).value, f"the value of {key}")
            except jserr.KeyNotFoundError:
                stored = None
            if got != want:
                raise Mismatch(f"fenced_write returned {got} for {who}'s write with token {tok}.", expected=want,
                               seen=got, hint=why)
            return stored

        stored = await write("holder A", "A1", ta, True, "the first write to an empty key must be accepted.")
        expect(stored == {"token": ta, "value": "A1"}, "an accepted write did not store the token and value.",
               expected={"token": ta, "value": "A1"}, seen=stored,
               hint="store json.dumps({\"token\": token, \"value\": value}) under the key.")
        # holder A pauses past the lock's TTL: the lock expires and holder B takes it with a newer token
        await scenario_ready(lambda: _gone(lock, "stock"), "the lock to expire", timeout=20, retry=(OSError, jserr.Error))
        tb = await lock.create("stock", b"holder-b")
        stored = await write("holder B", "B1", tb, True,
                             f"B holds the lock now with token {tb}, newer than the stored {ta}: compare tokens as "
                             "numbers (\"10\" < \"9\" as text).")
        expect(stored == {"token": tb, "value": "B1"}, "B's accepted write is not what the key holds.",
               expected={"token": tb, "value": "B1"}, seen=stored, hint="put the token and value as JSON.")
        stored = await write("holder A, back from its pause", "A2", ta, False,
                             f"A's token {ta} is older than the stored token {tb}: its lock expired while it was "
                             "paused. A fenced write refuses a token smaller than the one stored.")
        expect(stored == {"token": tb, "value": "B1"}, "the stale write was refused but the value changed anyway.",
               expected={"token": tb, "value": "B1"}, seen=stored, hint="refuse means: do not write.")
        stored = await write("holder B again", "B2", tb, True,
                             "a write with the same token as the stored one comes from the current holder: accept it.")
        expect(stored == {"token": tb, "value": "B2"}, "B's second write is not what the key holds.",
               expected={"token": tb, "value": "B2"}, seen=stored, hint="put the token and value as JSON.")
        return (f"A (token {ta}) wrote, paused until its lock expired; B took the lock (token {tb}) and wrote; "
                f"A's stale write was refused and left B's value; B's next write was accepted.")


async def _gone(kv, key) -> bool:
    try:
        await kv.get(key)
    except jserr.KeyNotFoundError:
        return True
    return False


# ------------------------------------------------------------------------------------- 7.9
def _windows(events, width, lateness):
    totals: dict = {}
    late, high = 0, None
    for e in events:
        start = e["ts"] - e["ts"] % width
        if high is not None and start + width <= high - lateness:
            late += 1
        else:
            totals[start] = totals.get(start, 0) + e["amount"]
        high = e["ts"] if high is None else max(high, e["ts"])
    return totals, late


def _window_events(width, lateness):
    while True:
        ts = 1_760_000_000_000 + random.randint(0, 10 ** 7)
        high, events = ts, []
        for i in range(150):
            r = random.random()
            if i > 10 and r < 0.08:
                t = high - random.randint(lateness + width, lateness + 3 * width)   # very late
            elif i > 3 and r < 0.3:
                t = high - random.randint(1, lateness // 2)                         # out of order, in time
            else:
                ts += random.randint(200, 3000)
                t = ts
            high = max(high, t)
            events.append({"ts": t, "amount": random.randint(1, 50)})
        totals, late = _windows(events, width, lateness)
        disordered = sum(1 for a, b in zip(events, events[1:]) if b["ts"] < a["ts"])
        if late >= 3 and disordered - late >= 5:
            return events, totals, late


@exercise("7.9", "windowed totals by event time",
          hints=("stream processing groups events by the time they happened (event time), not by when they "
                 "arrived; a watermark (the highest event time seen minus the allowed lateness) decides when an "
                 "out-of-order event is too late (lesson 07_7).",
                 "read the stream in order; start = ts - ts % width; an event is late when start + width <= "
                 "highest ts seen before it - lateness.",
                 "for e in events: start = e[\"ts\"] - e[\"ts\"] % width; if high is not None and start + width <= "
                 "high - lateness: late += 1 else: totals[start] = totals.get(start, 0) + e[\"amount\"]; high = "
                 "max(high, e[\"ts\"])"))
async def windows(aggregate):
    tag = token(4)
    width, lateness = random.choice((10_000, 15_000)), 5_000
    stream = f"PAYMENTS_{tag.upper()}"
    events, want, want_late = _window_events(width, lateness)
    async with scratch_server() as srv, client(srv) as chk, learner_client(srv) as nc:
        js = chk.jetstream()
        await js.add_stream(name=stream, subjects=[f"p{tag}.>"])
        for i, e in enumerate(events):
            await js.publish(f"p{tag}.evt.paid.ord{i % 17}", json.dumps(e).encode())
        got = await call_learner(aggregate, nc.jetstream(), stream, width, lateness,
                                 what=f"aggregate(js, stream, {width}, {lateness})", timeout=30)
        of_type(got, (tuple, list), "aggregate", "a pair (totals, late)")
        expect(len(got) == 2, "aggregate must return two things: the totals and the number of late events.",
               expected="(totals, late)", seen=repr(got)[:120])
        totals, late = got
        of_type(totals, dict, "aggregate (the totals)", "a dict {window start: total}")
        of_type(late, int, "aggregate (the late count)", "an int")
        if totals != want:
            keys = list(totals)
            if keys and all(isinstance(k, int) for k in keys) and any(k % width for k in keys):
                why = "a window starts at ts - ts % width (the start of its width-long slot), in milliseconds."
            elif len(totals) <= 3 < len(want):
                why = ("the events were grouped by when they arrived in the stream, not by their own ts: "
                       "window by event time.")
            elif late == 0 and want_late:
                why = ("late events were counted into their windows: drop an event whose window ended before the "
                       "watermark (highest ts seen so far minus lateness), and count it as late.")
            elif late > want_late:
                why = ("an out-of-order event that is not late still counts in its own window; only events whose "
                       "window ended before the watermark are dropped.")
            elif sum(totals.values()) < sum(want.values()) and len(totals) < len(want):
                why = "windows are missing: read every event of the stream (more than one fetch's worth)."
            else:
                why = ("an out-of-order event that is not late still counts in its own window; only events whose "
                       "window ended before the watermark are dropped.")
            k = next((k for k in sorted(want) if totals.get(k) != want[k]), None)
            raise Mismatch("the window totals differ from the event-time windows of the stream.",
                           expected=f"{len(want)} windows; {k}: {want.get(k)}",
                           seen=f"{len(totals)} windows; {k}: {totals.get(k)}", hint=why)
        expect(late == want_late, "the number of late events is wrong.", expected=want_late, seen=late,
               hint="count the events you dropped as late (window end at or before the watermark).")
        return (f"{len(events)} events with out-of-order and late event times: your {len(want)} event-time windows "
                f"of {width} ms and {want_late} late events match the check's own computation.")


# ------------------------------------------------------------------------------------- 7.10
@exercise("7.10", "a circuit breaker",
          hints=("a circuit breaker stops calling a failing dependency: after N consecutive failures it opens "
                 "(fails fast), after a cooldown it lets one probe through (half-open), and closes again when "
                 "the probe succeeds (lesson 07_8).",
                 "keep failures (consecutive), state and opened_at; time.monotonic() for the cooldown; "
                 "nc.request(subject, data, timeout=0.5) raises nats.errors.TimeoutError or NoRespondersError.",
                 "if state == \"open\": if now - opened_at < cooldown: return None; state = \"half-open\"\n"
                 "try: reply = await nc.request(...); failures = 0; state = \"closed\"; return reply.data\n"
                 "except (TimeoutError, NoRespondersError): failures += 1; if state == \"half-open\" or failures >= "
                 "threshold: state, opened_at = \"open\", now; return None"))
async def breaker(make_breaker):
    tag = token(4)
    subject, threshold, cooldown = f"b{tag}.inventory.check", 3, 1.0
    async with scratch_server(jetstream=False) as srv, client(srv) as chk, learner_client(srv) as nc:
        reached: list[tuple[float, str]] = []
        state = {"mode": "ok", "plan": []}

        async def responder(msg):
            outcome = state["plan"].pop(0) if state["plan"] else state["mode"]
            reached.append((time.monotonic(), outcome))
            if outcome == "ok":
                await msg.respond(b"ok:" + msg.data)

        await chk.subscribe(subject, cb=responder)
        await chk.flush()
        call = await call_learner(make_breaker, nc, subject, threshold, cooldown,
                                  what=f"make_breaker(nc, subject, {threshold}, {cooldown})")
        expect(callable(call), "make_breaker must return the function that makes calls through the breaker.",
               expected="an async function call(data)", seen=f"{type(call).__name__}: {call!r}"[:120],
               hint="define async def call(data) inside make_breaker and return it.")
        n = 0

        async def one(want_reply: bool | None = None):
            nonlocal n
            n += 1
            data = f"req{n}".encode()
            got = await call_learner(call, data, what=f"call({data!r})", timeout=10,
                                     hints={"TimeoutError": "a failed request is an answer, not an error: return "
                                                            "None when the request fails or the circuit is open.",
                                            "NoRespondersError": "a failed request is an answer: return None."})
            if got is not None:
                of_type(got, (bytes, bytearray), "call", "the reply's data (bytes) or None")
            if want_reply is True:
                expect(got == b"ok:" + data, "a call to the healthy responder did not return its reply's data.",
                       expected=b"ok:" + data, seen=got, hint="return reply.data when the request succeeds.")
            if want_reply is False:
                expect(got is None, "a call that failed (or was refused by the open circuit) did not return None.",
                       expected=None, seen=got, hint="return None when the request fails or the circuit is open.")
            return got

        async def reaching(k, what):
            before = len(reached)
            for _ in range(k):
                await one()
            return len(reached) - before

        # healthy, then flaky: failures that are not consecutive must not open it
        for _ in range(3):
            await one(True)
        state["plan"] = ["fail", "ok", "fail", "ok", "fail"]
        for want in (False, True, False, True, False):
            await one(want)
        got = await reaching(2, "after a flaky phase")
        expect(got == 2, "the circuit opened although the failures were not consecutive.",
               expected="2 requests reach the responder", seen=f"{got}",
               hint="count consecutive failures: a success resets the count to zero.")
        # broken: three failures open it; while open nothing reaches it but one probe per cooldown
        state["mode"] = "fail"
        for _ in range(threshold):
            await one(False)
        opened = len(reached)
        for _ in range(10):
            await one(False)
            _open_quiet(reached, opened, cooldown, "after three consecutive failures")
        await asyncio.sleep(cooldown + 0.5)
        before = len(reached)
        await one(False)
        expect(len(reached) > before, "after the cooldown, no probe reached the responder: the circuit never "
               "half-opens.", expected="one probe request after the cooldown", seen="no request",
               hint="once the cooldown has passed, let the next call through as a probe (half-open).")
        probe = len(reached)
        for _ in range(5):
            await one(False)
            _open_quiet(reached, probe, cooldown, "after a failed probe")
        # healed: the next probe succeeds and the circuit closes
        state["mode"] = "ok"
        await asyncio.sleep(cooldown + 0.5)
        await one(True)
        got = await reaching(3, "after the circuit closed")
        expect(got == 3, "after a successful probe the circuit did not close.", expected="3 requests reach",
               seen=f"{got}", hint="a probe that succeeds closes the circuit and resets the failure count.")
        return (f"{len(reached)} requests reached the responder: the breaker stayed closed through scattered "
                f"failures, opened after {threshold} in a row, sent only one probe per {cooldown:.0f} s cooldown "
                f"while the responder was broken, and closed again after it healed.")


def _open_quiet(reached, since: int, cooldown: float, when: str) -> None:
    """While open, requests that reach the responder are probes at least a cooldown apart."""
    last = reached[since - 1][0]
    for t, _ in reached[since:]:
        if t - last < 0.9 * cooldown:
            raise Mismatch(f"requests kept reaching the broken responder while the circuit should be open ({when}).",
                           expected=f"at most one probe per {cooldown:.0f} s cooldown",
                           seen=f"{len(reached) - since} requests, one {t - last:.2f} s after the previous failure",
                           hint="after the threshold of consecutive failures (or a failed probe), the circuit opens: "
                                "return None without sending until the cooldown has passed.")
        last = t


# ------------------------------------------------------------------------------------- 7.11
@exercise("7.11", "a consumer with backpressure",
          hints=("backpressure: a consumer takes only what it can handle; a pull consumer fetches small batches "
                 "and the server stops delivering at max_ack_pending unacknowledged messages (lesson 07_8; "
                 "lesson 02 on consumers).",
                 "js.pull_subscribe(subject, durable=durable, stream=stream, config=ConsumerConfig("
                 "max_ack_pending=20, ack_policy=AckPolicy.EXPLICIT)); await psub.fetch(10, timeout=1); "
                 "msg.ack() after handle, msg.nak() when it raised.",
                 "while done < total:\n    for msg in await psub.fetch(10, timeout=1):\n        try: await "
                 "handle(msg.data)\n        except Exception: await msg.nak(); continue\n        await msg.ack(); "
                 "done += 1"))
async def backpressure(consume):
    tag = token(4)
    stream, durable, subject = f"JOBS_{tag.upper()}", f"workers_{tag}", f"j{tag}.work"
    first, later = 300, 100
    total = first + later
    async with scratch_server() as srv, client(srv) as chk, learner_client(srv) as nc:
        js = chk.jetstream()
        await js.add_stream(name=stream, subjects=[f"j{tag}.>"])
        for i in range(first):
            await js.publish(subject, f"job-{i}".encode())
        batches: list = []

        async def watch(msg):
            try:
                batches.append(json.loads(msg.data or b"{}").get("batch", 1))
            except ValueError:
                batches.append(None)

        await chk.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}", cb=watch)
        await chk.flush()
        flaky = {f"job-{i}" for i in random.sample(range(first), 3)}
        failed, done = set(), []
        inflight = {"now": 0, "max": 0}
        flood = {"task": None}

        async def publish_later():
            for i in range(first, total):
                await js.publish(subject, f"job-{i}".encode())

        async def handle(data):
            if not isinstance(data, (bytes, bytearray)):
                raise TypeError("handle(data): data is the message's bytes")
            job = bytes(data).decode()
            inflight["now"] += 1
            inflight["max"] = max(inflight["max"], inflight["now"])
            try:
                await asyncio.sleep(0)
                if job in flaky and job not in failed:
                    failed.add(job)
                    raise RuntimeError(f"handler failed on {job}")
                done.append(job)
                if len(done) == first // 2 and flood["task"] is None:  # the flood goes on while you consume
                    flood["task"] = asyncio.ensure_future(publish_later())
            finally:
                inflight["now"] -= 1

        ljs = nc.jetstream()
        run = asyncio.ensure_future(call_learner(consume, ljs, stream, durable, handle, total, timeout=120,
                                                 what=f"consume(js, stream, {durable!r}, handle, {total})"))

        async def info():
            with contextlib.suppress(Exception):
                return await js.consumer_info(stream, durable)

        def big_batch():
            return any(not isinstance(b, int) or b > 10 for b in batches)

        async def settled():  # finished, or nothing left for the server to deliver or to wait an ack for
            if run.done() or big_batch():
                return True
            ci = await info()
            return (ci is not None and ci.num_pending == 0 and ci.num_ack_pending == 0
                    and flood["task"] is not None and flood["task"].done())

        try:
            await until(settled, "consume to finish", timeout=120, every=0.5, error=False)
            if not run.done() and not big_batch():
                await asyncio.wait({run}, timeout=5)
            if not run.done() and not big_batch():
                missing = sorted(set(f"job-{i}" for i in range(total)) - set(done))
                if missing and set(missing) <= flaky and await settled():
                    raise Mismatch("messages whose handler failed were acknowledged anyway: they are lost.",
                                   expected=f"{total} jobs handled", seen=f"never handled: {missing}",
                                   hint="acknowledge a message only after handle(data) returned; when it raises, "
                                        "nak it (msg.nak()) so the server delivers it again.")
                raise Mismatch("consume did not return." if not missing else
                               "consume is still running, but some jobs were never handled.",
                               expected=f"it returns once {total} jobs were handled",
                               seen=f"{len(set(done))} jobs handled" + (f", missing {missing[:5]}" if missing else ""),
                               hint="count the messages handled successfully and return when they reach total; "
                                    "keep fetching until then.")
            if run.done():
                run.result()  # the learner's own failure, as a verdict
        finally:
            if not run.done():
                run.cancel()
                with contextlib.suppress(BaseException):
                    await run
            if flood["task"] is not None:
                with contextlib.suppress(BaseException):
                    await flood["task"]
        ci = await info()
        expect(ci is not None, f"there is no consumer named {durable} on the stream.", expected=durable,
               seen="no such consumer", hint="create a durable pull consumer with the name the check passes.")
        expect(not ci.config.deliver_subject, "the consumer is a push consumer.", expected="a pull consumer",
               seen=f"push to {ci.config.deliver_subject}",
               hint="a push consumer delivers at the server's pace; a pull consumer fetches when the worker is "
                    "ready: use js.pull_subscribe.")
        mack = ci.config.max_ack_pending
        expect(mack is not None and 0 < mack <= 20, "the consumer's max_ack_pending is not bounded to 20.",
               expected="max_ack_pending <= 20", seen=f"max_ack_pending {mack}",
               hint="without a bound the server keeps delivering up to 1000 (the default) unacknowledged messages: "
                    "set max_ack_pending in the ConsumerConfig.")
        expect(ci.config.ack_policy == AckPolicy.EXPLICIT, "the consumer does not use explicit acks.",
               expected="ack_policy explicit", seen=ci.config.ack_policy, hint="use AckPolicy.EXPLICIT.")
        big = [b for b in batches if not isinstance(b, int) or b > 10]
        expect(batches and not big, "fetch asked the server for batches larger than 10.",
               expected="every pull request for at most 10 messages", seen=f"batches {sorted(set(map(str, big)))[:5]}",
               hint="fetch(10) (or fewer) at a time, and handle that batch before fetching again.")
        expect(inflight["max"] <= 10, "more than 10 messages were being handled at once.", expected="<= 10",
               seen=inflight["max"], hint="handle one batch (at most 10 messages) before fetching the next.")
        missing = sorted(set(f"job-{i}" for i in range(total)) - set(done))
        expect(not missing, "some jobs were never handled.", expected=f"{total} jobs", seen=f"missing {missing[:5]}",
               hint="nak a message whose handler raised, so it comes again, and keep fetching until all are handled.")
        ci = await _wait_for_acks(js, stream, durable)
        expect(ci.num_ack_pending == 0 and ci.num_pending == 0,
               "when consume returned, messages were still pending or unacknowledged.",
               expected="num_pending 0, num_ack_pending 0",
               seen=f"num_pending {ci.num_pending}, num_ack_pending {ci.num_ack_pending}",
               hint="ack every message after handling it; return only after all were handled.")
        return (f"{total} jobs (100 published while you consumed), 3 handler failures redelivered; consumer info "
                f"shows a pull consumer with max_ack_pending {mack}, every pull asked for at most "
                f"{max(batches)}, at most {inflight['max']} jobs were in flight, and nothing is left unacknowledged.")


async def _wait_for_acks(js, stream, durable):
    """Acks sent on a plain connection may still be in its buffer: wait for the server to count them."""
    async def acked():
        ci = await js.consumer_info(stream, durable)
        return ci if ci.num_ack_pending == 0 and ci.num_pending == 0 else None
    found = await until(acked, "the acks to arrive", timeout=10, every=0.2, error=False)
    return found or await js.consumer_info(stream, durable)
