"""Module 02 (JetStream streams and consumers): each checker starts its own JetStream server,
publishes its own randomized messages, calls the learner's function with a JetStream context on
a plain ``nats.connect`` connection (the kind a learner's own program opens), and reads the
stream and consumer state back from the server.

Each scenario is built so that the plausible mistake shows: a message id published first by the
checker (2.2), a second call with new orders (2.3), advisories from two streams whose sequences
overlap (2.5), a stream that starts after a purge and has gaps before and inside the replayed
range (2.6), pull requests read off the wire (2.8), sales published after the aggregate exists
(2.9).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import random

from nats.js.api import ConsumerConfig
from nats.js.errors import NotFoundError

from ...runtime.waiting import until
from ..checks import Mismatch, call_learner, exercise, expect
from . import client, learner_client, of_type, scratch_server, text_result, token


def _enum(value):
    """An enum setting as the server's text (``RetentionPolicy.LIMITS`` -> ``"limits"``)."""
    return getattr(value, "value", value)


@contextlib.asynccontextmanager
async def _jetstream(learners: int = 1):
    """A scratch JetStream server, the checker's own connection, and one plain JetStream
    context per learner role (``nats.connect(srv.url).jetstream()``, as a learner writes it)."""
    async with scratch_server(jetstream=True) as srv, contextlib.AsyncExitStack() as stack:
        nc = await stack.enter_async_context(client(srv))
        js_learners = [(await stack.enter_async_context(learner_client(srv))).jetstream()
                       for _ in range(learners)]
        yield nc, nc.jetstream(), js_learners


TIMEOUT_HINT = ("a fetch with nothing to deliver raises a timeout, and nats-py 2.16 raises the plain "
                "asyncio.TimeoutError on some paths instead of nats.errors.TimeoutError: catch "
                "asyncio.TimeoutError (it covers both) and treat it as \"nothing left\" (lesson 02.3).")
JS_HINTS = {"TimeoutError": TIMEOUT_HINT}


async def _call(fn, *args, what: str, known: dict[str, str] | None = None):
    """call_learner with this module's exception hints, plus hints keyed by a phrase of the
    server's error text (``known``), for errors that share one class but mean different things."""
    try:
        return await call_learner(fn, *args, what=what, hints=JS_HINTS)
    except Mismatch as m:
        for needle, hint in (known or {}).items():
            if needle in m.problem:
                m.hint = hint
        raise


async def _stream(js, name: str, hint: str):
    try:
        return await js.stream_info(name)
    except NotFoundError:
        expect(False, f"there is no stream named {name} on the server.", expected=f"stream {name}",
               seen="no such stream (the server's stream list)", hint=hint)


def _texts(value, what: str) -> list[str]:
    """A list of texts, as the exercise asks: other containers, bytes items and non-str fail."""
    items = of_type(value, (list, tuple), what, "a list of str")
    return [text_result(item, f"{what} (item {i})") for i, item in enumerate(items)]


def _summary(items) -> str:
    if not isinstance(items, list):
        return repr(items)[:120]
    return f"{len(items)} messages" + (f": {items[0]!r} ... {items[-1]!r}" if items else "")


async def _no_durables_left(js, stream: str, what: str) -> None:
    durables = [c.name for c in await js.consumers_info(stream) if c.config.durable_name]
    expect(not durables, f"{what} left a durable consumer on the stream.", expected="no durable consumers afterwards",
           seen=f"durable consumers: {durables}",
           hint="a one-off replay is what ephemeral and ordered consumers are for (lesson 02.3): a durable "
                "outlives your function unless you delete it.")


# ------------------------------------------------------------------------------------- 2.1
@exercise("2.1", "design a stream for a workload", hints=(
    "each requirement maps to one stream setting: retention, storage, per-subject limit, age, size, discard "
    "(lesson 02.1, \"limits and discard\").",
    "js.add_stream(name=..., subjects=[...], storage=StorageType.MEMORY, max_msgs_per_subject=..., "
    "max_age=<seconds>, max_bytes=<bytes>); retention LIMITS and discard OLD are the defaults.",
    "await js.add_stream(name=name, subjects=[f\"{prefix}.>\"], storage=StorageType.MEMORY, "
    "max_msgs_per_subject=3, max_age=600, max_bytes=10 * 1024 * 1024)",
))
async def design_stream(create_readings_stream):
    name, prefix = f"SENSORS_{token().upper()}", f"plant{token(4)}"
    async with _jetstream() as (nc, js, (learner,)):
        await _call(create_readings_stream, learner, name, prefix,
                    what=f"create_readings_stream(js, {name!r}, {prefix!r})")
        info = await _stream(js, name, "create the stream with the name you are given (js.add_stream(name=name, ...)).")
        c = info.config
        mib10 = 10 * 1024 * 1024
        settings = [
            ("retention", _enum(c.retention), "limits", _enum(c.retention) == "limits",
             "the dashboard re-reads readings, so consuming must not delete them: that is limits retention "
             "(work-queue and interest retention remove consumed messages)."),
            ("storage", _enum(c.storage), "memory", _enum(c.storage) == "memory",
             "readings may be lost on a restart and should be fast: that is memory storage, not file."),
            ("max_msgs_per_subject", c.max_msgs_per_subject, 3, c.max_msgs_per_subject == 3,
             "each sensor has its own subject, and the limit is per sensor: a per-subject message limit."),
            ("max_age", c.max_age, "600 (seconds)", c.max_age is not None and abs(c.max_age - 600) < 0.001,
             "nothing older than 10 minutes: an age limit; nats-py takes max_age in seconds."),
            ("max_bytes", c.max_bytes, f"{mib10} (10 MiB)", c.max_bytes == mib10,
             "the stream gets 10 MiB and never more: a size limit in bytes (10 * 1024 * 1024)."),
            ("discard", _enum(c.discard), "old", _enum(c.discard) == "old",
             "when full, the oldest readings go: the discard policy decides what goes when a limit is hit."),
        ]
        for key, seen, want, ok, hint in settings:
            expect(ok, f"the stream's {key} does not fit the workload.", expected=f"{key}: {want}",
                   seen=f"{key}: {seen}", hint=hint)

        sensor, other = f"{prefix}.north.t{token(3)}", f"{prefix}.south.h{token(3)}"
        for subject, count in ((sensor, 5), (other, 2)):
            for i in range(1, count + 1):
                try:
                    await js.publish(subject, f"{subject}={i}".encode(), timeout=2)
                except Exception as exc:
                    expect(False, f"the stream does not capture the subject {subject}.",
                           expected=f"readings on {prefix}.<site>.<sensor> are stored", seen=f"{type(exc).__name__}: {exc}",
                           hint=f"a stream stores what its subjects capture: the readings are two tokens below "
                                f"{prefix}, so the pattern needs a wildcard that spans both (lesson 01.1).")
        kept = (await js.stream_info(name, subjects_filter=">")).state.subjects or {}
        expect(kept.get(sensor) == 3 and kept.get(other) == 2,
               "the stream does not keep the latest 3 readings per sensor.",
               expected={sensor: 3, other: 2}, seen={sensor: kept.get(sensor), other: kept.get(other)},
               hint="a per-subject limit counts each sensor on its own; max_msgs would count all sensors together.")
        last = await js.get_last_msg(name, sensor)
        expect(last.data == f"{sensor}=5".encode(), "the newest reading is not the one kept last.",
               expected=f"{sensor}=5", seen=last.data, hint="discard old keeps the newest readings.")
        return (f"{name} on {', '.join(c.subjects or [])}: memory, limits, 3 per sensor, 600 s, "
                f"{c.max_bytes} bytes; 5 readings on one sensor left 3, the newest last.")


# ------------------------------------------------------------------------------------- 2.2
@exercise("2.2", "publish exactly once", hints=(
    "the stream, not your code, drops a message whose message id it has seen within its duplicate window; "
    "other publishers use the same ids (lesson 02.2, deduplication).",
    "js.publish(subject, data, headers={\"Nats-Msg-Id\": ...}) returns a PubAck whose .duplicate says "
    "whether the stream dropped it.",
    "ack = await js.publish(subject, data, headers={\"Nats-Msg-Id\": reading_id}); return bool(ack.duplicate)",
))
async def dedup(publish_reading_once):
    tok = token()
    stream, subject = f"READINGS_{tok.upper()}", f"r{tok}.boiler"
    ids = [f"rd-{token(8)}" for _ in range(3)]
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
                   hint="the stream drops a message whose Nats-Msg-Id header it saw within its duplicate window, "
                        "and other publishers use the reading id as that header: remembering ids in your "
                        "program cannot know what they sent.")
            if got is None:
                expect(False, f"publish_reading_once returned None for reading {reading_id}.",
                       expected=f"{want_dup} (a bool)", seen="None",
                       hint="return a bool; note that PubAck.duplicate is None, not False, when the stream "
                            "stored the message.")
            of_type(got, bool, "publish_reading_once", "True or False")
            expect(got == want_dup, f"publish_reading_once returned {got!r} for reading {reading_id}.",
                   expected=f"{want_dup} (the stream {'did' if want_dup else 'did not'} report a duplicate)",
                   seen=repr(got), hint="the answer is the stream's: the PubAck says whether it was a duplicate.")
        total = (await js.stream_info(stream)).state.messages
        return (f"{len(plan)} publishes of 3 reading ids (one of them first sent by the checker) left "
                f"{total} messages; the returned flag matched the server each time.")


# ------------------------------------------------------------------------------------- 2.3
@exercise("2.3", "process with a pull consumer and explicit acks", hints=(
    "a durable consumer remembers on the server what was acknowledged, so the next call resumes; explicit "
    "acks tell it message by message (lessons 02.3 and 02.4).",
    "js.pull_subscribe(subject, durable=durable, stream=stream) or js.add_consumer + pull_subscribe_bind; "
    "psub.fetch(n, timeout=...) until asyncio.TimeoutError; await msg.ack().",
    "psub = await js.pull_subscribe(\">\", durable=durable, stream=stream); then loop: try: batch = await "
    "psub.fetch(10, timeout=0.5) except asyncio.TimeoutError: break; for m in batch: total += "
    "json.loads(m.data)[\"amount\"]; await m.ack()",
))
async def pull_explicit(total_amount):
    tok = token()
    stream, durable = f"ORDERS_{tok.upper()}", f"billing-{token(4)}"
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
            of_type(got, (int, float), "total_amount", "a number (the total)")
            want = sum(amounts)
            if round_ == 2:
                expect(got != want + seen_totals[0], "the second call processed the first orders again.",
                       expected=f"{want} (only the {count} orders published since the first call)", seen=repr(got),
                       hint="a consumer that starts from the beginning each call is ephemeral (or was deleted); "
                            "a durable consumer with the name you are given resumes after what was acknowledged.")
            expect(got == want, f"call {round_}: the total differs from the sum of the orders the checker published.",
                   expected=f"{want} ({count} orders)", seen=repr(got),
                   hint="every order not yet processed counts once: keep fetching until a fetch times out, and "
                        "add each message's \"amount\".")
            seen_totals.append(got)
            try:
                info = await until(lambda: js.consumer_info(stream, durable), f"consumer {durable}",
                                   timeout=3, error=False, retry=(NotFoundError,))
                if info and (info.num_ack_pending or info.num_pending):  # acks are applied asynchronously
                    async def settled():
                        i = await js.consumer_info(stream, durable)
                        return i if i.num_ack_pending == 0 and i.num_pending == 0 else None
                    info = await until(settled, "acks applied", timeout=3, error=False) or \
                        await js.consumer_info(stream, durable)
            except NotFoundError:
                info = None
            if info is None:
                expect(False, f"there is no consumer named {durable} on {stream}.", expected=f"durable consumer {durable}",
                       seen=[c.name for c in await js.consumers_info(stream)] or "no consumers",
                       hint="a durable consumer outlives your function and carries the name you are given; an "
                            "ephemeral one (or one you delete) is gone when the server stops tracking it.")
            expect(not info.config.deliver_subject, "the consumer is a push consumer.",
                   expected="a pull consumer (no deliver subject)", seen=f"deliver_subject: {info.config.deliver_subject}",
                   hint="a pull consumer delivers only when your code asks (fetch); a push consumer has a deliver "
                        "subject (lesson 02.3).")
            expect(_enum(info.config.ack_policy) == "explicit", "the consumer does not use explicit acks.",
                   expected="ack_policy: explicit", seen=f"ack_policy: {_enum(info.config.ack_policy)}",
                   hint="with ack policy none or all the server does not track each message: the exercise asks for "
                        "explicit acks, one per message.")
            expect(info.num_ack_pending == 0, "some delivered orders were never acknowledged.",
                   expected="num_ack_pending: 0", seen=f"num_ack_pending: {info.num_ack_pending}",
                   hint="a delivered message stays pending until it is acknowledged; ack each one you processed.")
            expect(info.num_pending == 0, "some orders were never fetched.", expected="num_pending: 0",
                   seen=f"num_pending: {info.num_pending}",
                   hint="one fetch returns at most one batch: keep fetching until a fetch times out.")
            last = (await js.stream_info(stream)).state.last_seq
            expect(info.ack_floor.stream_seq == last, "not every order is acknowledged.",
                   expected=f"ack floor at stream seq {last}", seen=f"ack floor {info.ack_floor.stream_seq}",
                   hint="ack each message, including the last batch, before returning.")
        return (f"two calls returned {seen_totals[0]} and {seen_totals[1]}; the durable pull consumer {durable} "
                f"uses explicit acks and has everything acknowledged (ack floor = last seq, nothing pending).")


# ------------------------------------------------------------------------------------- 2.4
@exercise("2.4", "terminate a poison message", hints=(
    "a message that can never be processed should be terminated, not nak'd (redelivered) or acked "
    "(counted as done): lesson 02.4, ack/nak/term.",
    "json.loads raises ValueError on invalid JSON; await msg.term() tells the server to stop delivering it, "
    "await msg.ack() marks a payment done.",
    "try: payment = json.loads(msg.data) except ValueError: await msg.term(); continue  -- then "
    "paid.append(payment[\"payment\"]); await msg.ack()",
))
async def terminate_poison(process_payments):
    tok = token()
    stream, durable = f"PAYMENTS_{tok.upper()}", "payments"
    async with _jetstream() as (nc, js, (learner,)):
        await js.add_stream(name=stream, subjects=[f"p{tok}.>"])
        await js.add_consumer(stream, ConsumerConfig(durable_name=durable, max_deliver=5, ack_wait=10.0))
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
                pid = f"pay-{token(5)}"
                good.append(pid)
                data = json.dumps({"payment": pid, "amount": random.randint(1, 99)}).encode()
            ack = await js.publish(f"p{tok}.card", data)
            if i in poison_at:
                poison_seqs.add(ack.seq)
        try:
            got = await _call(process_payments, learner, stream, durable,
                              what=f"process_payments(js, {stream!r}, {durable!r})")
            await until(lambda: set(terminated) >= poison_seqs, "MSG_TERMINATED advisories", timeout=3, error=False)
        finally:
            await sub.unsubscribe()
        got = _texts(got, "process_payments")
        expect(got == good, "the returned payment ids are not the valid payments, in order.",
               expected=good, seen=got,
               hint="the list holds the \"payment\" field of each valid message, in the order they were delivered.")
        wrong = set(terminated) - poison_seqs
        expect(not wrong, "valid payments were terminated.", expected=f"only seqs {sorted(poison_seqs)}",
               seen=f"terminated seqs {sorted(terminated)}", hint="terminate only the messages that are not valid JSON.")
        missing = poison_seqs - set(terminated)
        expect(not missing, "a poison message was not terminated (no MSG_TERMINATED advisory from the server).",
               expected=f"term() for stream seqs {sorted(poison_seqs)}", seen=f"terminated: {sorted(terminated)}",
               hint="acking a poison message counts it as done, and a nak asks for it again; neither tells the "
                    "server it can never succeed.")
        retried = {s: n for s, n in terminated.items() if n != 1}
        expect(not retried, "a poison message was retried before it was terminated.",
               expected="terminated at its first delivery", seen=f"deliveries before term: {retried}",
               hint="retrying cannot fix invalid JSON: terminate it the first time you see it.")

        async def settled():
            i = await js.consumer_info(stream, durable)
            return i if i.num_ack_pending == 0 and i.num_pending == 0 else None
        info = await until(settled, "acks applied", timeout=3, error=False) or await js.consumer_info(stream, durable)
        expect(info.num_ack_pending == 0 and info.num_pending == 0, "messages are left unanswered.",
               expected="num_ack_pending 0, num_pending 0",
               seen=f"num_ack_pending {info.num_ack_pending}, num_pending {info.num_pending}",
               hint="every delivered message needs an answer (ack or term), and fetching goes on until a fetch "
                    "times out.")
        return (f"{len(good)} payments acked and returned in order; the server reported MSG_TERMINATED for seqs "
                f"{sorted(poison_seqs)}, each at its first delivery.")


# ------------------------------------------------------------------------------------- 2.5
async def _real_advisories(nc, js, stream: str, subject: str):
    """Make the server give up on two messages of ``stream``: seq 2 by max deliveries, seq 3 terminated."""
    durable = "worker"
    await js.add_consumer(stream, ConsumerConfig(durable_name=durable, max_deliver=2, ack_wait=0.5))
    seen: dict[str, object] = {}

    async def on_advisory(msg):
        seen.setdefault(msg.subject.split(".")[4], msg)  # $JS.EVENT.ADVISORY.CONSUMER.<KIND>.<stream>.<consumer>
    adv = await nc.subscribe(f"$JS.EVENT.ADVISORY.CONSUMER.*.{stream}.{durable}", cb=on_advisory)
    for kind in ("ok", "flaky", "broken", "ok"):
        await js.publish(f"{subject}.{token(4)}", f"{kind} {token(8)}".encode())
    psub = await js.pull_subscribe_bind(durable=durable, stream=stream)

    async def one_round():
        try:
            msgs = await psub.fetch(4, timeout=0.5)
        except asyncio.TimeoutError:
            msgs = []
        for msg in msgs:
            kind = msg.data.split(b" ")[0]
            await (msg.nak() if kind == b"flaky" else msg.term() if kind == b"broken" else msg.ack())
        return "MAX_DELIVERIES" in seen and "MSG_TERMINATED" in seen
    try:
        await until(one_round, f"the server to give up on two messages of {stream}", timeout=20, every=0)
    finally:
        await psub.unsubscribe()
        await adv.unsubscribe()
    return seen["MAX_DELIVERIES"], seen["MSG_TERMINATED"]


@exercise("2.5", "move poison messages to a dead-letter stream", hints=(
    "an advisory carries only where the message was (stream and sequence); the message itself is still in "
    "its stream, and deduplication by message id makes a repeated move harmless (lessons 02.5 and 02.2).",
    "json.loads(advisory_msg.data) gives \"stream\" and \"stream_seq\"; js.get_msg(stream, seq) reads the "
    "original; js.publish(dlq_subject, data, headers={...}) with a Nats-Msg-Id.",
    "event = json.loads(advisory_msg.data); original = await js.get_msg(event[\"stream\"], event[\"stream_seq\"]); "
    "await js.publish(dlq_subject, original.data, headers={\"Nats-Msg-Id\": f\"{stream}-{seq}\", "
    "\"Dlq-Stream\": stream, \"Dlq-Seq\": str(seq), \"Dlq-Subject\": original.subject})",
))
async def dead_letters(move_to_dead_letters):
    tok = token()
    work = [f"WORK_A_{tok.upper()}", f"WORK_B_{tok.upper()}"]
    dlq, dlq_subject = f"DLQ_{tok.upper()}", f"dlq{tok}.work"
    async with _jetstream() as (nc, js, (learner,)):
        for i, stream in enumerate(work):
            await js.add_stream(name=stream, subjects=[f"w{i}{tok}.>"])
        await js.add_stream(name=dlq, subjects=[f"dlq{tok}.>"])
        # two streams laid out alike: their poison messages have the same sequences (2 and 3), so a
        # message id made of the sequence alone collides, and one made of the stream alone too
        (a_max, a_term), (b_max, b_term) = await asyncio.gather(
            *(_real_advisories(nc, js, stream, f"w{i}{tok}.jobs") for i, stream in enumerate(work)))
        calls = [(f"MAX_DELIVERIES, {work[0]}", a_max), (f"MSG_TERMINATED, {work[0]}", a_term),
                 (f"MAX_DELIVERIES, {work[1]}", b_max), (f"MSG_TERMINATED, {work[1]}", b_term),
                 (f"MAX_DELIVERIES, {work[0]}, handed again", a_max)]
        for label, adv in calls:
            await _call(move_to_dead_letters, learner, adv, dlq_subject,
                        what=f"move_to_dead_letters(js, <{label} advisory>, {dlq_subject!r})")
        expected = []
        for adv in (a_max, a_term, b_max, b_term):
            event = json.loads(adv.data)
            expected.append((event["stream"], event["stream_seq"], await js.get_msg(event["stream"], event["stream_seq"])))
        state = (await js.stream_info(dlq)).state
        copies = []
        for s in range(state.first_seq, state.last_seq + 1):
            with contextlib.suppress(NotFoundError):
                copies.append(await js.get_msg(dlq, s))
        by_origin = {((c.headers or {}).get("Dlq-Stream"), (c.headers or {}).get("Dlq-Seq")): c for c in copies}
        overlap = ", ".join(f"{s} seq {q}" for s, q, _ in expected)
        expect(len(copies) == 4, "the dead-letter stream does not hold exactly one copy of each poison message.",
               expected=f"4 messages ({overlap}; the advisory handed twice stored once)",
               seen=f"{len(copies)} messages" + (f" from {sorted(k for k in by_origin if k != (None, None))}"
                                                 if copies else ""),
               hint=("fewer copies: different messages got the same Nats-Msg-Id, so the stream dropped one as a "
                     "duplicate; the two work streams here use the same sequence numbers, so the id must tell "
                     "stream and sequence apart." if len(copies) < 4 else
                     "more copies: the repeated advisory was stored again; its message id must be the same each "
                     "time the same message is moved (derived from where it came from, not random or a time)."))
        for stream, seq, orig in expected:
            copy = by_origin.get((stream, str(seq)))
            if copy is None:
                expect(False, f"no dead letter carries Dlq-Stream {stream} and Dlq-Seq {seq}.",
                       expected=f"Dlq-Stream: {stream}, Dlq-Seq: {seq}",
                       seen=[dict(c.headers or {}) for c in copies][:4],
                       hint="Dlq-Stream and Dlq-Seq come from the advisory's \"stream\" and \"stream_seq\" fields; "
                            "header values are text.")
            h = copy.headers or {}
            expect(copy.subject == dlq_subject, "the dead letter went to another subject.",
                   expected=dlq_subject, seen=copy.subject, hint="publish to the dlq_subject you are given.")
            expect((copy.data or b"") == (orig.data or b""), f"the dead letter for {stream} seq {seq} has other data than the original.",
                   expected=orig.data, seen=copy.data,
                   hint="the advisory is JSON about the message, not the message: read the original from its stream.")
            expect(h.get("Dlq-Subject") == orig.subject, f"the dead letter for {stream} seq {seq} lacks the header Dlq-Subject.",
                   expected=f"Dlq-Subject: {orig.subject}", seen=f"Dlq-Subject: {h.get('Dlq-Subject')}",
                   hint="Dlq-Subject is the original message's subject (the advisory does not carry it).")
            msg_id = h.get("Nats-Msg-Id") or ""
            expect(stream in msg_id and str(seq) in msg_id,
                   f"the dead letter for {stream} seq {seq} has a Nats-Msg-Id not made of stream and sequence.",
                   expected=f"a Nats-Msg-Id containing {stream} and {seq}", seen=f"Nats-Msg-Id: {msg_id or None}",
                   hint="the id must name the original message uniquely and the same way every time: its stream "
                        "together with its sequence there.")
        return (f"four real advisories from two streams with overlapping sequences, and one repeat, produced 4 dead "
                f"letters on {dlq_subject} with the original data, Dlq-Stream/Dlq-Seq/Dlq-Subject headers and a "
                f"Nats-Msg-Id made of stream and sequence.")


# ------------------------------------------------------------------------------------- 2.6 / 2.7
async def _history(js, subject_root: str, count: int) -> list[tuple[int, str]]:
    out = []
    for i in range(count):
        data = f"event-{i}-{token(5)}"
        ack = await js.publish(f"{subject_root}.{random.choice(['created', 'paid', 'shipped'])}", data.encode())
        out.append((ack.seq, data))
    return out


REPLAY_KNOWN = {
    "no message found": "a deleted message leaves a gap: get_msg raises NotFoundError for its sequence. Skip gaps, "
                        "or read with a consumer, which skips them for you.",
    "can not be updated": "a durable consumer keeps its start position: the second replay found your first one. "
                          "A one-off replay needs no durable (lesson 02.3).",
}


@exercise("2.6", "replay from a sequence", hints=(
    "a consumer can start at a given stream sequence; the stream's own numbering survives purges and "
    "deletions, positions in a list do not (lesson 02.3, start positions).",
    "js.add_consumer(stream, ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=seq, "
    "...)) without a durable name (or js.subscribe(..., ordered_consumer=True, config=...)), fetch until a timeout.",
    "info = await js.add_consumer(stream, ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, "
    "opt_start_seq=seq, ack_policy=AckPolicy.NONE)); psub = await js.pull_subscribe_bind(consumer=info.name, "
    "stream=stream); fetch until asyncio.TimeoutError; return [m.data.decode() for m in msgs]",
))
async def replay_sequence(replay_from):
    tok = token()
    stream = f"EVENTS_{tok.upper()}"
    async with _jetstream() as (nc, js, (learner,)):
        await js.add_stream(name=stream, subjects=[f"e{tok}.>"])
        # earlier events were purged: the stream's first sequence is not 1
        await _history(js, f"e{tok}.order", random.randint(4, 9))
        await js.purge_stream(stream)
        history = await _history(js, f"e{tok}.order", random.randint(22, 30))
        first = history[0][0]
        before = first + random.randint(1, 3)                  # a gap before the first replay's start
        start1 = before + random.randint(2, 5)
        inside = random.randint(start1 + 3, history[-1][0] - 3)  # a gap inside it; the second replay starts there
        for seq in (before, inside):
            await js.delete_msg(stream, seq)
        held = {s: d for s, d in history if s not in (before, inside)}
        for start in (start1, inside):
            want = [d for s, d in sorted(held.items()) if s >= start]
            got = await _call(replay_from, learner, stream, start, what=f"replay_from(js, {stream!r}, {start})",
                              known=REPLAY_KNOWN)
            got = _texts(got, f"replay_from(js, stream, {start})")
            expect(got == want, f"replay_from(js, stream, {start}) returned other messages than the stream holds "
                                f"from sequence {start}.",
                   expected=_summary(want), seen=_summary(got),
                   hint=f"this stream starts at sequence {first} (earlier messages were purged) and has gaps at "
                        f"{before} and {inside} (deleted): a position in a list is not a sequence. Let the server "
                        f"start at the sequence (or compare each message's own sequence).")
        await _no_durables_left(js, stream, "replay_from")
        return (f"two replays (from seq {start1}, and from deleted seq {inside}) of a stream starting at seq {first} "
                f"with gaps before and inside the range matched the stream as text; no durable left.")


@exercise("2.7", "replay from a point in time", hints=(
    "a consumer can start at a point in time: the server compares it with each message's stored timestamp "
    "(lesson 02.3, start positions).",
    "ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since) on an ephemeral consumer; "
    "fetch until a timeout.",
    "info = await js.add_consumer(stream, ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, "
    "opt_start_time=since, ack_policy=AckPolicy.NONE)); fetch until asyncio.TimeoutError; return the data decoded",
))
async def replay_time(replay_since):
    tok = token()
    stream = f"AUDIT_{tok.upper()}"
    async with _jetstream() as (nc, js, (learner,)):
        await js.add_stream(name=stream, subjects=[f"a{tok}.>"])
        before = await _history(js, f"a{tok}.login", random.randint(5, 9))
        last_before = (await js.get_msg(stream, before[-1][0])).time
        # a clear gap between the two batches, on the server's clock

        async def later():
            ack = await js.publish(f"a{tok}.tick", b"")
            t = (await js.get_msg(stream, ack.seq)).time
            await js.delete_msg(stream, ack.seq)
            return t > last_before
        await until(later, "the server clock to move on", timeout=5, every=0.01)
        later_batch = await _history(js, f"a{tok}.login", random.randint(4, 8))
        after = [d for _, d in later_batch]
        first_after = (await js.get_msg(stream, later_batch[0][0])).time
        since = last_before + (first_after - last_before) / 2
        expect(last_before < since <= first_after, "the checker could not separate the batches in time (try again).",
               expected="a gap between batches", seen=f"{last_before} / {first_after}")
        got = await _call(replay_since, learner, stream, since,
                          what=f"replay_since(js, {stream!r}, {since.isoformat()})", known=REPLAY_KNOWN)
        got = _texts(got, "replay_since")
        expect(got == after, "replay_since returned other messages than those stored at or after `since`.",
               expected=_summary(after), seen=_summary(got),
               hint="the time you are given is a point on the server's clock; the messages stored from then on "
                    "are the ones to return (a sequence or your own clock is another question).")
        await _no_durables_left(js, stream, "replay_since")
        return (f"replay_since returned, as text, exactly the {len(after)} messages stored after the given time, "
                f"not the {len(before)} before; no durable left.")


# ------------------------------------------------------------------------------------- 2.8
@exercise("2.8", "a work queue shared by two workers", hints=(
    "work-queue retention removes a job once it is acknowledged, and the workers share one durable pull "
    "consumer so each job goes to one of them (lessons 02.1 and 02.3).",
    "js.add_stream(..., retention=RetentionPolicy.WORK_QUEUE); js.pull_subscribe(subject, durable=\"workers\", "
    "stream=stream) or add_consumer + pull_subscribe_bind; psub.fetch(5, timeout=...).",
    "psub = await js.pull_subscribe(\">\", durable=\"workers\", stream=stream); loop: try: batch = await "
    "psub.fetch(5, timeout=0.5) except asyncio.TimeoutError: return; for m in batch: "
    "done.append(m.data.decode()); await m.ack()",
))
async def work_queue(create_job_queue, worker):
    tok = token()
    stream, subject = f"JOBS_{tok.upper()}", f"j{tok}.jobs.>"
    async with _jetstream(learners=3) as (nc, js, (setup, js_a, js_b)):
        await _call(create_job_queue, setup, stream, subject,
                    what=f"create_job_queue(js, {stream!r}, {subject!r})")
        info = await _stream(js, stream, "create the stream with the name you are given.")
        expect(_enum(info.config.retention) == "workqueue", "the stream is not a work queue.",
               expected="retention: workqueue", seen=f"retention: {_enum(info.config.retention)}",
               hint="limits retention keeps acknowledged jobs; the retention policy that removes a job once a "
                    "worker acknowledges it is the work-queue one.")
        # every pull request a worker sends goes to $JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>, with the
        # batch size in its JSON body: the checker's own subscription reads them off the wire
        pulls: list[tuple[str, object]] = []

        async def on_pull(msg):
            try:
                body = json.loads(msg.data) if msg.data else {}
                batch = body.get("batch", 1) if isinstance(body, dict) else body
            except ValueError:
                batch = msg.data[:20]
            pulls.append((msg.subject.rsplit(".", 1)[-1], batch))
        tap = await nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.*", cb=on_pull)
        await nc.flush()
        rounds = []
        shared = {"non-filtered consumers": "a work queue allows one consumer per subject: both workers must "
                                            "bind the same durable consumer named \"workers\".",
                  "filtered consumer not unique": "a work queue allows one consumer per subject: both workers "
                                                  "must bind the same durable consumer named \"workers\"."}
        try:
            for count in (40, random.randint(6, 12)):
                jobs = [f"job-{token(8)}" for _ in range(count)]
                for job in jobs:
                    await js.publish(f"j{tok}.jobs.{random.choice(['resize', 'encode'])}", job.encode())
                done_a, done_b = [], []
                outcomes = await asyncio.gather(  # both run to the end, even when one fails
                    _call(worker, js_a, stream, done_a, what=f"worker(js, {stream!r}, done) [worker A]", known=shared),
                    _call(worker, js_b, stream, done_b, what=f"worker(js, {stream!r}, done) [worker B]", known=shared),
                    return_exceptions=True)
                for outcome in outcomes:
                    if isinstance(outcome, BaseException):
                        raise outcome
                done = _texts(done_a, "done [worker A]") + _texts(done_b, "done [worker B]")
                twice = sorted({j for j in done if done.count(j) > 1})
                expect(not twice, "some jobs were processed by both workers.", expected="each job exactly once",
                       seen=f"done twice: {twice[:5]}",
                       hint="two consumers each get every job; workers that share one durable consumer split them.")
                missing = sorted(set(jobs) - set(done))
                expect(not missing, "some jobs were never processed.", expected=f"all {count} jobs",
                       seen=f"{len(missing)} missing, e.g. {missing[:3]}",
                       hint="a worker returns only when a fetch times out (nothing left), and records every job "
                            "it was given in done.")

                async def emptied():
                    return (await js.stream_info(stream)).state.messages == 0
                if not await until(emptied, "the work queue to empty", timeout=3, error=False):
                    left = (await js.stream_info(stream)).state.messages
                    expect(False, "jobs are still in the work queue after both workers finished.",
                           expected="0 messages in the stream", seen=f"{left} messages",
                           hint="a work queue removes a job only when it is acknowledged.")
                rounds.append((len(done_a), len(done_b)))
            await nc.flush()  # every pull request the server routed to the tap is read
        finally:
            await tap.unsubscribe()
        consumers = await js.consumers_info(stream)
        described = [(c.name, bool(c.config.durable_name), "push" if c.config.deliver_subject else "pull")
                     for c in consumers]
        expect(described == [("workers", True, "pull")], "the workers do not share one durable pull consumer "
                                                         "named \"workers\".",
               expected="[('workers', durable, pull)]", seen=described,
               hint="one durable pull consumer, created by whichever worker comes first, bound by both "
                    "(lesson 02.3).")
        sizes = [b for _, b in pulls]
        expect(bool(pulls), "the checker saw no pull requests for the stream.",
               expected="pull requests on $JS.API.CONSUMER.MSG.NEXT", seen="none",
               hint="a pull consumer delivers when asked with fetch.")
        too_big = [b for b in sizes if not isinstance(b, int) or b > 5]
        expect(not too_big, "a worker asked for batches of more than 5 jobs.",
               expected="every pull request's batch <= 5", seen=f"batch sizes asked: {sorted(set(map(str, sizes)))}",
               hint="the batch size is the number of messages one fetch asks the server for.")
        return (f"two rounds of jobs ({sum(rounds[0])} and {sum(rounds[1])}) were each done exactly once, as text "
                f"(worker A/B: {rounds[0][0]}/{rounds[0][1]}, then {rounds[1][0]}/{rounds[1][1]}) through the one "
                f"durable pull consumer \"workers\"; {len(pulls)} pull requests seen on the wire, the largest "
                f"asking for {max(sizes)}; the work queue emptied.")


# ------------------------------------------------------------------------------------- 2.9
@exercise("2.9", "aggregate two streams with sources", hints=(
    "a stream can be filled by the server from other streams: a mirror copies one, sources take several "
    "(lesson 02.6).",
    "js.add_stream(name=..., sources=[StreamSource(name=...), ...]) (nats.js.api.StreamSource).",
    "await js.add_stream(name=name, sources=[StreamSource(name=first), StreamSource(name=second)])",
))
async def aggregate_sources(aggregate):
    tok = token()
    first, second, name = f"SHOP_A_{tok.upper()}", f"SHOP_B_{tok.upper()}", f"ALL_SHOPS_{tok.upper()}"
    async with _jetstream() as (nc, js, (learner,)):
        await js.add_stream(name=first, subjects=[f"a{tok}.sales.>"])
        await js.add_stream(name=second, subjects=[f"b{tok}.sales.>"])
        sent = []
        for shop, n in ((f"a{tok}", random.randint(3, 6)), (f"b{tok}", random.randint(3, 6))):
            for _ in range(n):
                data = f"{shop}-sale-{token(6)}"
                await js.publish(f"{shop}.sales.web", data.encode())
                sent.append(data)
        await _call(aggregate, learner, name, first, second,
                    what=f"aggregate(js, {name!r}, {first!r}, {second!r})")
        info = await _stream(js, name, "create the aggregate stream with the name you are given.")
        sources = sorted(s.name for s in (info.config.sources or []))
        expect(sources == sorted([first, second]), "the stream does not source from both streams.",
               expected=f"sources: {sorted([first, second])}",
               seen=f"sources: {sources}" + (f", mirror: {info.config.mirror.name}" if info.config.mirror else ""),
               hint="a mirror copies exactly one stream; copying several is what sources are for.")

        async def held():
            return (await js.stream_info(name)).state.messages
        for phase in ("existing", "new"):
            if phase == "new":  # the server must keep copying, not a one-off copy by the client
                for shop in (f"a{tok}", f"b{tok}"):
                    data = f"{shop}-late-{token(6)}"
                    await js.publish(f"{shop}.sales.app", data.encode())
                    sent.append(data)

            async def caught_up():
                n = await held()
                return n if n >= len(sent) else None
            count = await until(caught_up, "the aggregate to catch up", timeout=10, error=False) or await held()
            expect(count == len(sent), f"the aggregate does not hold all {phase} messages of both streams.",
                   expected=f"{len(sent)} messages", seen=f"{count} messages",
                   hint="copying by the server goes on after your function returns; a copy made by your code "
                        "does not.")
        state = (await js.stream_info(name)).state
        copied = []
        for s in range(state.first_seq, state.last_seq + 1):
            with contextlib.suppress(NotFoundError):
                copied.append(((await js.get_msg(name, s)).data or b"").decode(errors="replace"))
        expect(sorted(copied) == sorted(sent), "the aggregate holds other messages than the two streams.",
               expected=f"{len(sent)} sales from both shops", seen=f"{len(copied)} messages",
               hint="source both streams whole, without filters or transforms that drop messages.")
        return (f"{name} sources {first} and {second}; it received all {len(sent)} sales, "
                f"including 2 published after it was created.")
