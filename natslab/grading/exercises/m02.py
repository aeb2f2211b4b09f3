"""Module 02 (JetStream streams and consumers): each checker starts its own JetStream server,
publishes its own randomized messages, calls the learner's function, and reads the stream and
consumer state back from the server."""
from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid

from nats.js.api import ConsumerConfig
from nats.js.errors import NotFoundError

from ..checks import Mismatch, call_learner, exercise, expect
from . import client, scratch_server


def _token(n: int = 6) -> str:
    return uuid.uuid4().hex[:n]


def _value(v):
    return getattr(v, "value", v)


@contextlib.asynccontextmanager
async def _jetstream(learners: int = 1):
    """A scratch JetStream server, the checker's own connection, and one per learner role."""
    async with scratch_server(jetstream=True) as srv, contextlib.AsyncExitStack() as stack:
        nc = await stack.enter_async_context(client(srv))
        js_learners = [(await stack.enter_async_context(client(srv))).jetstream() for _ in range(learners)]
        yield nc, nc.jetstream(), js_learners


async def _eventually(get, ok, timeout: float = 3.0):
    """The server applies acks and copies asynchronously: poll ``get()`` until ``ok`` (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await get()
        if ok(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


TIMEOUT_HINT = ("a fetch with nothing to deliver raises a timeout, and nats-py 2.16 raises the plain "
                "asyncio.TimeoutError on some paths instead of nats.errors.TimeoutError: catch "
                "asyncio.TimeoutError (it covers both) and treat it as \"nothing left\".")


async def _call(fn, *args, what: str, known: dict[str, str] | None = None):
    """call_learner, with precise hints for errors this exercise is known to provoke.

    call_learner already reports a TimeoutError escaping the learner's code as raised, not as a
    hang; here it gets the hint about nats-py's two timeout classes.
    """
    try:
        return await call_learner(fn, *args, what=what)
    except Mismatch as m:
        for needle, hint in {"raised TimeoutError": TIMEOUT_HINT, **(known or {})}.items():
            if needle in m.problem:
                m.hint = hint
        raise


async def _stream(js, name: str, hint: str):
    try:
        return await js.stream_info(name)
    except NotFoundError:
        expect(False, f"there is no stream named {name} on the server.", expected=f"stream {name}",
               seen="no such stream (the server's stream list)", hint=hint)


def _summary(items) -> str:
    if not isinstance(items, list):
        return repr(items)[:120]
    return f"{len(items)} messages" + (f": {items[0]!r} ... {items[-1]!r}" if items else "")


def _text(items) -> list[str]:
    return [bytes(i).decode(errors="replace") if isinstance(i, (bytes, bytearray)) else i for i in (items or [])]


async def _no_durables_left(js, stream: str, what: str) -> None:
    durables = [c.name for c in await js.consumers_info(stream) if c.config.durable_name]
    expect(not durables, f"{what} left a durable consumer on the stream.", expected="no durable consumers afterwards",
           seen=f"durable consumers: {durables}",
           hint="a one-off replay needs no durable: use an ephemeral or ordered consumer, or delete yours "
                "with js.delete_consumer(stream, name) when done.")


# ------------------------------------------------------------------------------------- 2.1
@exercise("2.1", "design a stream for a workload",
          hints=("js.add_stream(name=..., subjects=[f\"{prefix}.>\"], storage=StorageType.MEMORY, "
               "max_msgs_per_subject=3, max_age=600, max_bytes=10 * 1024 * 1024)",))
async def design_stream(create_readings_stream):
    name, prefix = f"SENSORS_{_token().upper()}", f"plant{_token(4)}"
    async with _jetstream() as (nc, js, (learner,)):
        await _call(create_readings_stream, learner, name, prefix,
                           what=f"create_readings_stream(js, {name!r}, {prefix!r})")
        info = await _stream(js, name, "create the stream with the name you are given: js.add_stream(name=name, ...).")
        c = info.config
        settings = [
            ("retention", _value(c.retention), "limits", _value(c.retention) == "limits",
             "the dashboard re-reads readings, so consuming must not delete them: keep retention=limits (the default)."),
            ("storage", _value(c.storage), "memory", _value(c.storage) == "memory",
             "readings may be lost on a restart and should be fast: storage=StorageType.MEMORY."),
            ("max_msgs_per_subject", c.max_msgs_per_subject, 3, c.max_msgs_per_subject == 3,
             "each sensor has its own subject; keep its latest 3 readings with max_msgs_per_subject=3."),
            ("max_age", c.max_age, "600 (seconds)", c.max_age is not None and abs(c.max_age - 600) < 0.001,
             "nothing older than 10 minutes: max_age=600 (nats-py takes seconds)."),
            ("max_bytes", c.max_bytes, "at most 10485760 (10 MiB)", c.max_bytes is not None and 1_000_000 <= c.max_bytes <= 10 * 1024 * 1024,
             "bound the total size: max_bytes=10 * 1024 * 1024."),
            ("discard", _value(c.discard), "old", _value(c.discard) == "old",
             "when full, drop the oldest readings: discard=DiscardPolicy.OLD (the default)."),
        ]
        for key, seen, want, ok, hint in settings:
            expect(ok, f"the stream's {key} does not fit the workload.", expected=f"{key}: {want}",
                   seen=f"{key}: {seen}", hint=hint)

        sensor, other = f"{prefix}.north.t{_token(3)}", f"{prefix}.south.h{_token(3)}"
        for subject, count in ((sensor, 5), (other, 2)):
            for i in range(1, count + 1):
                try:
                    await js.publish(subject, f"{subject}={i}".encode(), timeout=2)
                except Exception as exc:
                    expect(False, f"the stream does not capture the subject {subject}.",
                           expected=f"readings on {prefix}.<site>.<sensor> are stored", seen=f"{type(exc).__name__}: {exc}",
                           hint=f"capture everything below the prefix: subjects=[f\"{{prefix}}.>\"] (here {prefix}.>).")
        kept = (await js.stream_info(name, subjects_filter=">")).state.subjects or {}
        expect(kept.get(sensor) == 3 and kept.get(other) == 2,
               "the stream does not keep the latest 3 readings per sensor.",
               expected={sensor: 3, other: 2}, seen={sensor: kept.get(sensor), other: kept.get(other)},
               hint="max_msgs_per_subject=3 keeps 3 per subject; max_msgs would count all sensors together.")
        last = await js.get_last_msg(name, sensor)
        expect(last.data == f"{sensor}=5".encode(), "the newest reading is not the one kept last.",
               expected=f"{sensor}=5", seen=last.data, hint="discard=old keeps the newest readings.")
        return (f"{name} on {', '.join(c.subjects or [])}: memory, limits, 3 per sensor, 600 s, "
                f"{c.max_bytes} bytes; 5 readings on one sensor left 3, the newest last.")


# ------------------------------------------------------------------------------------- 2.2
@exercise("2.2", "publish exactly once",
          hints=('ack = await js.publish(subject, data, headers={"Nats-Msg-Id": reading_id}); return bool(ack.duplicate)',))
async def dedup(publish_reading_once):
    tok = _token()
    stream, subject = f"READINGS_{tok.upper()}", f"r{tok}.boiler"
    ids = [f"rd-{_token(8)}" for _ in range(3)]
    async with _jetstream() as (nc, js, (learner,)):
        await js.add_stream(name=stream, subjects=[f"r{tok}.>"], duplicate_window=60)
        # the checker publishes ids[2] itself, as another copy of the same publisher would
        await js.publish(subject, b"from another publisher", headers={"Nats-Msg-Id": ids[2]})
        plan = [(ids[0], False), (ids[0], True), (ids[1], False), (ids[0], True), (ids[2], True)]
        for reading_id, want_dup in plan:
            data = f"reading {reading_id}".encode()
            before = (await js.stream_info(stream)).state.messages
            got = await _call(publish_reading_once, learner, subject, reading_id, data,
                                     what=f"publish_reading_once(js, {subject!r}, {reading_id!r}, data)")
            after = (await js.stream_info(stream)).state.messages
            stored_new = after - before
            when = ("after another publisher (the checker) had sent it with Nats-Msg-Id " + reading_id
                    if reading_id == ids[2] else "again" if want_dup else "for the first time")
            expect(stored_new == (0 if want_dup else 1),
                   f"publishing reading {reading_id} {when} {'stored a copy' if stored_new else 'stored nothing'}.",
                   expected=f"{0 if want_dup else 1} new message in the stream", seen=f"{stored_new} new",
                   hint="the stream drops a message whose Nats-Msg-Id it saw within its duplicate window; "
                        "send the reading id itself as that header: headers={\"Nats-Msg-Id\": reading_id}.")
            expect(bool(got) == want_dup, f"publish_reading_once returned {got!r} for reading {reading_id}.",
                   expected=f"{want_dup} (the stream {'did' if want_dup else 'did not'} report a duplicate)",
                   seen=repr(got), hint="return the PubAck's duplicate flag: bool(ack.duplicate).")
        total = (await js.stream_info(stream)).state.messages
        return (f"{len(plan)} publishes of 3 reading ids (one of them first sent by the checker) left "
                f"{total} messages; the duplicate flag matched the server each time.")


# ------------------------------------------------------------------------------------- 2.3
@exercise("2.3", "process with a pull consumer and explicit acks",
          hints=("create the durable once (js.add_consumer with durable_name, or js.pull_subscribe(..., durable=)), "
               "fetch in batches until a fetch times out (except asyncio.TimeoutError), ack each message.",))
async def pull_explicit(total_amount):
    tok = _token()
    stream, durable = f"ORDERS_{tok.upper()}", f"billing-{_token(4)}"
    async with _jetstream() as (nc, js, (learner,)):
        await js.add_stream(name=stream, subjects=[f"o{tok}.orders.>"])
        seen_totals = []
        for round_, count in enumerate((random.randint(11, 23), random.randint(3, 7)), start=1):
            amounts = [random.randint(1, 500) for _ in range(count)]
            for i, amount in enumerate(amounts):
                region = random.choice(["eu", "us", "apac"])
                await js.publish(f"o{tok}.orders.{region}", json.dumps({"order": f"{round_}-{i}", "amount": amount}).encode())
            got = await _call(total_amount, learner, stream, durable,
                                     what=f"total_amount(js, {stream!r}, {durable!r})")
            want = sum(amounts)
            if round_ == 2:
                expect(got != want + seen_totals[0], "the second call processed the first orders again.",
                       expected=f"{want} (only the {count} orders published since the first call)", seen=repr(got),
                       hint="use a durable consumer with the name you are given: it remembers what was acknowledged; "
                            "an ephemeral consumer starts from the beginning every time.")
            expect(got == want, f"call {round_}: the total differs from the sum of the orders the checker published.",
                   expected=f"{want} ({count} orders)", seen=repr(got),
                   hint="fetch until a fetch times out (except asyncio.TimeoutError), and add every message's \"amount\".")
            seen_totals.append(got)
            try:
                info = await _eventually(lambda: js.consumer_info(stream, durable),
                                         lambda i: i.num_ack_pending == 0 and i.num_pending == 0)
            except NotFoundError:
                expect(False, f"there is no consumer named {durable} on {stream}.", expected=f"durable consumer {durable}",
                       seen=[c.name for c in await js.consumers_info(stream)],
                       hint="pass durable=durable (or durable_name in the ConsumerConfig): a durable outlives your function.")
            expect(_value(info.config.ack_policy) == "explicit", "the consumer does not use explicit acks.",
                   expected="ack_policy: explicit", seen=f"ack_policy: {_value(info.config.ack_policy)}",
                   hint="ack_policy=AckPolicy.EXPLICIT (the default for pull consumers), then msg.ack() per message.")
            expect(info.num_ack_pending == 0, "some delivered orders were never acknowledged.",
                   expected="num_ack_pending: 0", seen=f"num_ack_pending: {info.num_ack_pending}",
                   hint="call await msg.ack() for every message you processed.")
            expect(info.num_pending == 0, "some orders were never fetched.", expected="num_pending: 0",
                   seen=f"num_pending: {info.num_pending}", hint="keep fetching until a fetch times out.")
            last = (await js.stream_info(stream)).state.last_seq
            expect(info.ack_floor.stream_seq == last, "not every order is acknowledged.",
                   expected=f"ack floor at stream seq {last}", seen=f"ack floor {info.ack_floor.stream_seq}",
                   hint="ack each message, including the last batch, before returning.")
        return (f"two calls returned {seen_totals[0]} and {seen_totals[1]}; the durable {durable} has "
                f"everything acknowledged (ack floor = last seq, nothing pending).")


# ------------------------------------------------------------------------------------- 2.4
@exercise("2.4", "terminate a poison message",
          hints=("try: json.loads(msg.data) except ValueError: await msg.term(); otherwise record the id and ack.",))
async def terminate_poison(process_payments):
    tok = _token()
    stream, durable = f"PAYMENTS_{tok.upper()}", "payments"
    async with _jetstream() as (nc, js, (learner,)):
        await js.add_stream(name=stream, subjects=[f"p{tok}.>"])
        await js.add_consumer(stream, ConsumerConfig(durable_name=durable, max_deliver=5, ack_wait=2.0))
        terminated: dict[int, int] = {}

        async def on_term(msg):
            event = json.loads(msg.data)
            terminated[event["stream_seq"]] = event.get("deliveries")
        sub = await nc.subscribe(f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{stream}.{durable}", cb=on_term)
        count = random.randint(8, 12)
        poison_at = set(random.sample(range(2, count + 1), 2))
        good, poison_seqs = [], set()
        for i in range(1, count + 1):
            if i in poison_at:
                data = random.choice([b"{payment: oops", b"<payment>not json</payment>", b"payment=7;amount=3"])
            else:
                pid = f"pay-{_token(5)}"
                good.append(pid)
                data = json.dumps({"payment": pid, "amount": random.randint(1, 99)}).encode()
            ack = await js.publish(f"p{tok}.card", data)
            if i in poison_at:
                poison_seqs.add(ack.seq)
        try:
            got = await _call(process_payments, learner, stream, durable,
                                     what=f"process_payments(js, {stream!r}, {durable!r})")
            async def terminated_so_far():
                return dict(terminated)
            await _eventually(terminated_so_far, lambda t: set(t) >= poison_seqs)
        finally:
            await sub.unsubscribe()
        expect(_text(got) == good, "the returned payment ids are not the valid payments, in order.",
               expected=good, seen=got, hint="return the \"payment\" field of each valid message in delivery order.")
        wrong = set(terminated) - poison_seqs
        expect(not wrong, "valid payments were terminated.", expected=f"only seqs {sorted(poison_seqs)}",
               seen=f"terminated seqs {sorted(terminated)}", hint="term() only the messages that are not valid JSON.")
        missing = poison_seqs - set(terminated)
        expect(not missing, "a poison message was not terminated (no MSG_TERMINATED advisory from the server).",
               expected=f"term() for stream seqs {sorted(poison_seqs)}", seen=f"terminated: {sorted(terminated)}",
               hint="a message that is not valid JSON will never succeed: answer it with await msg.term().")
        retried = {s: n for s, n in terminated.items() if n != 1}
        expect(not retried, "a poison message was retried before it was terminated.",
               expected="terminated at its first delivery", seen=f"deliveries before term: {retried}",
               hint="do not nak a message that can never succeed: term() it the first time you see it.")
        info = await _eventually(lambda: js.consumer_info(stream, durable), lambda i: i.num_ack_pending == 0)
        expect(info.num_ack_pending == 0 and info.num_pending == 0, "messages are left unanswered.",
               expected="num_ack_pending 0, num_pending 0",
               seen=f"num_ack_pending {info.num_ack_pending}, num_pending {info.num_pending}",
               hint="ack every valid payment and fetch until a fetch times out.")
        return (f"{len(good)} payments acked in order; the server reported MSG_TERMINATED for seqs "
                f"{sorted(poison_seqs)}, each at its first delivery.")


# ------------------------------------------------------------------------------------- 2.5
async def _real_advisories(nc, js, stream: str, subject: str):
    """Make the server give up on two messages: one by max deliveries, one terminated."""
    durable = "worker"
    await js.add_consumer(stream, ConsumerConfig(durable_name=durable, max_deliver=2, ack_wait=0.5))
    maxed = await nc.subscribe(f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{durable}")
    termed = await nc.subscribe(f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{stream}.{durable}")
    seqs = {}
    for kind in ("ok", "flaky", "broken", "ok"):
        ack = await js.publish(f"{subject}.{_token(4)}", f"{kind} {_token(8)}".encode())
        seqs.setdefault(kind, ack.seq)
    psub = await js.pull_subscribe_bind(durable=durable, stream=stream)
    adv_max = None
    deadline = time.monotonic() + 10
    try:
        while adv_max is None and time.monotonic() < deadline:
            try:
                for msg in await psub.fetch(4, timeout=0.5):
                    kind = msg.data.split(b" ")[0]
                    await (msg.nak() if kind == b"flaky" else msg.term() if kind == b"broken" else msg.ack())
            except Exception:
                pass
            try:
                adv_max = await maxed.next_msg(timeout=0.05)
            except asyncio.TimeoutError:
                pass
        adv_term = await termed.next_msg(timeout=2)
    finally:
        await psub.unsubscribe()
        await maxed.unsubscribe()
        await termed.unsubscribe()
    if adv_max is None:
        raise RuntimeError("the checker could not produce a MAX_DELIVERIES advisory")
    return adv_max, adv_term


@exercise("2.5", "move poison messages to a dead-letter stream",
          hints=("event = json.loads(advisory_msg.data); original = await js.get_msg(event[\"stream\"], event[\"stream_seq\"]); "
               "publish original.data to dlq_subject with the Dlq-* headers and a Nats-Msg-Id made of stream and seq.",))
async def dead_letters(move_to_dead_letters):
    tok = _token()
    stream, dlq, dlq_subject = f"WORK_{tok.upper()}", f"DLQ_{tok.upper()}", f"dlq{tok}.work"
    async with _jetstream() as (nc, js, (learner,)):
        await js.add_stream(name=stream, subjects=[f"w{tok}.>"])
        await js.add_stream(name=dlq, subjects=[f"dlq{tok}.>"])
        adv_max, adv_term = await _real_advisories(nc, js, stream, f"w{tok}.jobs")
        calls = [("MAX_DELIVERIES", adv_max), ("MSG_TERMINATED", adv_term), ("MAX_DELIVERIES (again)", adv_max)]
        for label, adv in calls:
            await _call(move_to_dead_letters, learner, adv, dlq_subject,
                               what=f"move_to_dead_letters(js, <{label} advisory>, {dlq_subject!r})")
        expected = []
        for adv in (adv_max, adv_term):
            seq = json.loads(adv.data)["stream_seq"]
            orig = await js.get_msg(stream, seq)
            expected.append((seq, orig))
        held = (await js.stream_info(dlq)).state.messages
        expect(held == 2, "the dead-letter stream does not hold exactly one copy of each poison message.",
               expected="2 messages (the same advisory moved twice must be stored once)", seen=f"{held} messages",
               hint="publish to dlq_subject, and set Nats-Msg-Id from the origin stream and sequence "
                    "(e.g. f\"{stream}-{seq}\") so a repeated advisory is recognised as a duplicate.")
        copies = [await js.get_msg(dlq, s) for s in range(1, 3)]
        for (seq, orig), copy in zip(expected, copies):
            h = copy.headers or {}
            expect(copy.subject == dlq_subject, "the dead letter went to another subject.",
                   expected=dlq_subject, seen=copy.subject, hint="publish to the dlq_subject you are given.")
            expect((copy.data or b"") == (orig.data or b""), f"the dead letter for seq {seq} has other data than the original.",
                   expected=orig.data, seen=copy.data,
                   hint="fetch the original with js.get_msg(event[\"stream\"], event[\"stream_seq\"]) and copy its data.")
            for key, want in (("Dlq-Stream", stream), ("Dlq-Seq", str(seq)), ("Dlq-Subject", orig.subject)):
                expect(h.get(key) == want, f"the dead letter for seq {seq} lacks the header {key}.",
                       expected=f"{key}: {want}", seen=f"{key}: {h.get(key)}",
                       hint="Dlq-Stream and Dlq-Seq come from the advisory (stream, stream_seq); "
                            "Dlq-Subject is the original message's subject.")
        return (f"two real advisories (max deliveries, terminated) and a repeat produced 2 dead letters on "
                f"{dlq_subject} with the original data and Dlq-Stream/Dlq-Seq/Dlq-Subject headers.")


# ------------------------------------------------------------------------------------- 2.6 / 2.7
async def _history(js, stream: str, subject_root: str, count: int) -> list[str]:
    out = []
    for i in range(count):
        data = f"event-{i}-{_token(5)}"
        await js.publish(f"{subject_root}.{random.choice(['created', 'paid', 'shipped'])}", data.encode())
        out.append(data)
    return out


@exercise("2.6", "replay from a sequence",
          hints=("an ephemeral consumer with deliver_policy=DeliverPolicy.BY_START_SEQUENCE and opt_start_seq=seq; "
               "fetch until a fetch times out; decode each message's data.",))
async def replay_sequence(replay_from):
    tok = _token()
    stream = f"EVENTS_{tok.upper()}"
    async with _jetstream() as (nc, js, (learner,)):
        await js.add_stream(name=stream, subjects=[f"e{tok}.>"])
        data = await _history(js, stream, f"e{tok}.order", random.randint(20, 30))
        gone = random.randint(15, len(data) - 2)     # one deleted message inside the replayed range
        await js.delete_msg(stream, gone)
        held = {i + 1: d for i, d in enumerate(data) if i + 1 != gone}
        for seq in (random.randint(5, 12), random.randint(13, gone)):
            want = [d for s, d in sorted(held.items()) if s >= seq]
            got = await _call(replay_from, learner, stream, seq, what=f"replay_from(js, {stream!r}, {seq})", known={
                "no message found": f"a deleted message leaves a gap (seq {gone} here): get_msg raises NotFoundError "
                                    "for it. Skip gaps, or read with a consumer, which skips them for you.",
                "can not be updated": "a durable consumer keeps its start position: the second replay found your "
                                      "first one. Use an ephemeral consumer (no durable name) or delete it afterwards."})
            got = _text(got) if isinstance(got, (list, tuple)) else got
            expect(got == want, f"replay_from(js, stream, {seq}) returned other messages than the stream holds from seq {seq}.",
                   expected=_summary(want), seen=_summary(got),
                   hint="start at the sequence you are given (opt_start_seq), read to the end, return data as text; "
                        f"seq {gone} was deleted, so it is not in the stream.")
        await _no_durables_left(js, stream, "replay_from")
        return f"two replays from random sequences matched the stream (one deleted message skipped), no durable left."


@exercise("2.7", "replay from a point in time",
          hints=("deliver_policy=DeliverPolicy.BY_START_TIME with opt_start_time=since; fetch until a timeout.",))
async def replay_time(replay_since):
    tok = _token()
    stream = f"AUDIT_{tok.upper()}"
    async with _jetstream() as (nc, js, (learner,)):
        await js.add_stream(name=stream, subjects=[f"a{tok}.>"])
        before = await _history(js, stream, f"a{tok}.login", random.randint(5, 9))
        last_before = (await js.get_msg(stream, len(before))).time
        # a clear gap between the two batches, on the server's clock
        await asyncio.sleep(0.05)
        after = await _history(js, stream, f"a{tok}.login", random.randint(4, 8))
        first_after = (await js.get_msg(stream, len(before) + 1)).time
        since = last_before + (first_after - last_before) / 2
        expect(last_before < since <= first_after, "the checker could not separate the batches in time (try again).",
               expected="a gap between batches", seen=f"{last_before} / {first_after}")
        got = await _call(replay_since, learner, stream, since,
                                 what=f"replay_since(js, {stream!r}, {since.isoformat()})")
        got = _text(got) if isinstance(got, (list, tuple)) else got
        expect(got == after, "replay_since returned other messages than those stored at or after `since`.",
               expected=_summary(after), seen=_summary(got),
               hint="use the datetime you are given as opt_start_time (DeliverPolicy.BY_START_TIME); "
                    "the server compares it with each message's stored timestamp.")
        await _no_durables_left(js, stream, "replay_since")
        return f"replay_since returned exactly the {len(after)} messages stored after the given time, not the {len(before)} before."


# ------------------------------------------------------------------------------------- 2.8
@exercise("2.8", "a work queue shared by two workers",
          hints=("work-queue retention on the stream; both workers bind the same durable pull consumer \"workers\".",))
async def work_queue(create_job_queue, worker):
    tok = _token()
    stream, subject = f"JOBS_{tok.upper()}", f"j{tok}.jobs.>"
    async with _jetstream(learners=3) as (nc, js, (setup, js_a, js_b)):
        await _call(create_job_queue, setup, stream, subject,
                           what=f"create_job_queue(js, {stream!r}, {subject!r})")
        info = await _stream(js, stream, "create the stream with the name you are given.")
        expect(_value(info.config.retention) == "workqueue", "the stream is not a work queue.",
               expected="retention: workqueue", seen=f"retention: {_value(info.config.retention)}",
               hint="retention=RetentionPolicy.WORK_QUEUE removes each job once a worker acknowledges it.")
        rounds = []
        for count in (40, random.randint(6, 12)):
            jobs = [f"job-{_token(8)}" for _ in range(count)]
            for job in jobs:
                await js.publish(f"j{tok}.jobs.{random.choice(['resize', 'encode'])}", job.encode())
            done_a, done_b = [], []
            shared = {"non-filtered consumers": "a work queue allows one consumer per subject: both workers must "
                                                "bind the same durable consumer named \"workers\"."}
            outcomes = await asyncio.gather(  # both run to the end, even when one fails
                _call(worker, js_a, stream, done_a, what=f"worker(js, {stream!r}, done) [worker A]", known=shared),
                _call(worker, js_b, stream, done_b, what=f"worker(js, {stream!r}, done) [worker B]", known=shared),
                return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            done = _text(done_a) + _text(done_b)
            twice = sorted({j for j in done if done.count(j) > 1})
            expect(not twice, "some jobs were processed by both workers.", expected="each job exactly once",
                   seen=f"done twice: {twice[:5]}",
                   hint="both workers must share ONE durable consumer (\"workers\"); two consumers would each get every job.")
            missing = sorted(set(jobs) - set(done))
            expect(not missing, "some jobs were never processed.", expected=f"all {count} jobs",
                   seen=f"{len(missing)} missing, e.g. {missing[:3]}",
                   hint="keep fetching until a fetch times out; append msg.data.decode() to done for each job.")
            left = await _eventually(lambda: js.stream_info(stream), lambda i: i.state.messages == 0)
            expect(left.state.messages == 0, "jobs are still in the work queue after both workers finished.",
                   expected="0 messages in the stream", seen=f"{left.state.messages} messages",
                   hint="ack every job: a work queue removes a job only when it is acknowledged.")
            rounds.append((len(done_a), len(done_b)))
        names = [c.name for c in await js.consumers_info(stream)]
        return (f"two rounds of jobs ({sum(rounds[0])} and {sum(rounds[1])}) were each done exactly once "
                f"(worker A/B: {rounds[0][0]}/{rounds[0][1]}, then {rounds[1][0]}/{rounds[1][1]}) through "
                f"consumer(s) {names}; the work queue emptied.")


# ------------------------------------------------------------------------------------- 2.9
@exercise("2.9", "aggregate two streams with sources",
          hints=("js.add_stream(name=name, sources=[StreamSource(name=first), StreamSource(name=second)])",))
async def aggregate_sources(aggregate):
    tok = _token()
    first, second, name = f"SHOP_A_{tok.upper()}", f"SHOP_B_{tok.upper()}", f"ALL_SHOPS_{tok.upper()}"
    async with _jetstream() as (nc, js, (learner,)):
        await js.add_stream(name=first, subjects=[f"a{tok}.sales.>"])
        await js.add_stream(name=second, subjects=[f"b{tok}.sales.>"])
        sent = []
        for shop, n in ((f"a{tok}", random.randint(3, 6)), (f"b{tok}", random.randint(3, 6))):
            for _ in range(n):
                data = f"{shop}-sale-{_token(6)}"
                await js.publish(f"{shop}.sales.web", data.encode())
                sent.append(data)
        await _call(aggregate, learner, name, first, second,
                           what=f"aggregate(js, {name!r}, {first!r}, {second!r})")
        info = await _stream(js, name, "create the aggregate stream with the name you are given.")
        sources = sorted(s.name for s in (info.config.sources or []))
        expect(sources == sorted([first, second]), "the stream does not source from both streams.",
               expected=f"sources: {sorted([first, second])}",
               seen=f"sources: {sources}" + (f", mirror: {info.config.mirror.name}" if info.config.mirror else ""),
               hint="a mirror copies one stream; sources=[StreamSource(name=first), StreamSource(name=second)] takes several.")

        async def held():
            i = await js.stream_info(name)
            return i.state.messages
        for phase in ("existing", "new"):
            if phase == "new":  # the server must keep copying, not a one-off copy by the client
                for shop in (f"a{tok}", f"b{tok}"):
                    data = f"{shop}-late-{_token(6)}"
                    await js.publish(f"{shop}.sales.app", data.encode())
                    sent.append(data)
            count = await _eventually(held, lambda n: n >= len(sent), timeout=10)
            expect(count == len(sent), f"the aggregate does not hold all {phase} messages of both streams.",
                   expected=f"{len(sent)} messages", seen=f"{count} messages",
                   hint="let the server copy with sources; messages published later must arrive too.")
        state = (await js.stream_info(name)).state
        copied = [((await js.get_msg(name, s)).data or b"").decode() for s in range(state.first_seq, state.last_seq + 1)]
        expect(sorted(copied) == sorted(sent), "the aggregate holds other messages than the two streams.",
               expected=f"{len(sent)} sales from both shops", seen=f"{len(copied)} messages",
               hint="source both streams without filters.")
        return (f"{name} sources {first} and {second}; it received all {len(sent)} sales, "
                f"including 2 published after it was created.")
