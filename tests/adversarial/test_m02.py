"""Module 02 exercises, answered as learners would: correct answers written differently from the
solutions must pass, plausible wrong ones must fail with a verdict naming the mistake.

Every answer receives the JetStream context of a plain ``nats.connect`` connection (the checker
hands one), so every answer here is plain nats-py code.
"""
from __future__ import annotations

import asyncio
import json
import uuid

from nats.js.api import (AckPolicy, ConsumerConfig, DeliverPolicy, DiscardPolicy, RetentionPolicy,
                         StorageType, StreamConfig, StreamSource)
from nats.js.errors import NotFoundError

from .harness import fails, passes

MIB10 = 10 * 1024 * 1024


async def _drain_fetch(psub, batch=10, timeout=0.5):
    out = []
    while True:
        try:
            out += await psub.fetch(batch, timeout=timeout)
        except asyncio.TimeoutError:
            return out


# ------------------------------------------------------------------------------------- 2.1
def _readings(**overrides):
    async def create(js, name, prefix):
        kw = dict(name=name, subjects=[f"{prefix}.>"], storage=StorageType.MEMORY, max_msgs_per_subject=3,
                  max_age=600, max_bytes=MIB10)
        kw.update(overrides)
        await js.add_stream(**kw)
    return create


def test_2_1_correct_keywords_and_defaults():
    passes("2.1", _readings())


def test_2_1_correct_stream_config_object_all_explicit():
    async def create(js, name, prefix):
        cfg = StreamConfig(name=name, subjects=[f"{prefix}.*.*"], retention=RetentionPolicy.LIMITS,
                           storage=StorageType.MEMORY, max_msgs_per_subject=3, max_age=10 * 60.0,
                           max_bytes=10 * 1024 ** 2, discard=DiscardPolicy.OLD)
        await js.add_stream(config=cfg)
    passes("2.1", create)


def test_2_1_wrong_file_storage():
    fails("2.1", _readings(storage=StorageType.FILE), says=("storage", "memory"))


def test_2_1_wrong_max_msgs_instead_of_per_subject():
    fails("2.1", _readings(max_msgs_per_subject=None, max_msgs=3), says="max_msgs_per_subject")


def test_2_1_wrong_max_age_in_nanoseconds():
    fails("2.1", _readings(max_age=600 * 1_000_000_000), says="max_age")


def test_2_1_wrong_subject_one_level_only():
    async def create(js, name, prefix):
        await js.add_stream(name=name, subjects=[f"{prefix}.*"], storage=StorageType.MEMORY,
                            max_msgs_per_subject=3, max_age=600, max_bytes=MIB10)
    fails("2.1", create, says="does not capture the subject")


def test_2_1_wrong_work_queue_retention():
    fails("2.1", _readings(retention=RetentionPolicy.WORK_QUEUE), says="retention")


# ------------------------------------------------------------------------------------- 2.2
def test_2_2_correct_is_true():
    async def publish(js, subject, reading_id, data):
        ack = await js.publish(subject, data, headers={"Nats-Msg-Id": reading_id})
        return ack.duplicate is True
    passes("2.2", publish)


def test_2_2_correct_duplicate_or_false():
    async def publish(js, subject, reading_id, data):
        ack = await js.publish(subject, payload=data, timeout=5, headers={"Nats-Msg-Id": str(reading_id)})
        return ack.duplicate or False
    passes("2.2", publish)


def test_2_2_wrong_remembers_ids_client_side():
    seen = set()

    async def publish(js, subject, reading_id, data):
        if reading_id in seen:
            return True
        seen.add(reading_id)
        await js.publish(subject, data)
        return False
    fails("2.2", publish, says="another publisher")


def test_2_2_wrong_no_header():
    async def publish(js, subject, reading_id, data):
        ack = await js.publish(subject, data)
        return bool(ack.duplicate)
    fails("2.2", publish, says=("stored a copy", "Nats-Msg-Id"))


def test_2_2_wrong_returns_duplicate_field_none():
    async def publish(js, subject, reading_id, data):
        return (await js.publish(subject, data, headers={"Nats-Msg-Id": reading_id})).duplicate
    fails("2.2", publish, says=("returned None", "None, not False"))


def test_2_2_wrong_random_message_id():
    async def publish(js, subject, reading_id, data):
        ack = await js.publish(subject, data, headers={"Nats-Msg-Id": uuid.uuid4().hex})
        return bool(ack.duplicate)
    fails("2.2", publish, says="stored a copy")


# ------------------------------------------------------------------------------------- 2.3
def test_2_3_correct_pull_subscribe_durable():
    async def total_amount(js, stream, durable):
        psub = await js.pull_subscribe(">", durable=durable, stream=stream)
        total = 0
        for m in await _drain_fetch(psub, 7):
            total += json.loads(m.data)["amount"]
            await m.ack()
        await psub.unsubscribe()
        return total
    passes("2.3", total_amount)


def test_2_3_correct_add_consumer_fetch_one_at_a_time():
    async def total_amount(js, stream, durable):
        try:
            await js.consumer_info(stream, durable)
        except NotFoundError:
            await js.add_consumer(stream, ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT))
        psub = await js.pull_subscribe_bind(durable, stream)
        total = 0
        while True:
            try:
                [m] = await psub.fetch(1, timeout=0.3)
            except asyncio.TimeoutError:
                break
            total += int(json.loads(m.data.decode())["amount"])
            await m.ack_sync()
        return total
    passes("2.3", total_amount)


def test_2_3_wrong_ephemeral_consumer():
    async def total_amount(js, stream, durable):
        psub = await js.pull_subscribe(">", stream=stream)
        total = 0
        for m in await _drain_fetch(psub):
            total += json.loads(m.data)["amount"]
            await m.ack()
        return total
    fails("2.3", total_amount, says=("no consumer named", "durable consumer"))


def test_2_3_wrong_no_acks():
    async def total_amount(js, stream, durable):
        psub = await js.pull_subscribe(">", durable=durable, stream=stream)
        return sum(json.loads(m.data)["amount"] for m in await _drain_fetch(psub))
    fails("2.3", total_amount, says="never acknowledged")


def test_2_3_wrong_single_fetch():
    async def total_amount(js, stream, durable):
        psub = await js.pull_subscribe(">", durable=durable, stream=stream)
        total = 0
        for m in await psub.fetch(10, timeout=1):
            total += json.loads(m.data)["amount"]
            await m.ack()
        return total
    fails("2.3", total_amount, says=("total differs", "keep fetching"))


def test_2_3_wrong_ack_policy_none():
    async def total_amount(js, stream, durable):
        psub = await js.pull_subscribe(">", durable=durable, stream=stream,
                                       config=ConsumerConfig(ack_policy=AckPolicy.NONE))
        return sum(json.loads(m.data)["amount"] for m in await _drain_fetch(psub))
    fails("2.3", total_amount, says="explicit acks")


def test_2_3_wrong_does_not_catch_the_empty_fetch():
    async def total_amount(js, stream, durable):
        psub = await js.pull_subscribe(">", durable=durable, stream=stream)
        total = 0
        while True:  # the empty fetch at the end raises, and nothing catches it
            for m in await psub.fetch(10, timeout=0.5):
                total += json.loads(m.data)["amount"]
                await m.ack()
    fails("2.3", total_amount, says=("raised TimeoutError", "catch asyncio.TimeoutError"))


def test_2_3_wrong_acks_twice():
    async def total_amount(js, stream, durable):
        psub = await js.pull_subscribe(">", durable=durable, stream=stream)
        total = 0
        for m in await _drain_fetch(psub):
            await m.ack()
            total += json.loads(m.data)["amount"]
            await m.ack()  # "to be sure"
        return total
    fails("2.3", total_amount, says=("MsgAlreadyAckdError", "acknowledged twice"))


def test_2_3_wrong_returns_text():
    async def total_amount(js, stream, durable):
        psub = await js.pull_subscribe(">", durable=durable, stream=stream)
        total = 0
        for m in await _drain_fetch(psub):
            total += json.loads(m.data)["amount"]
            await m.ack()
        return f"total: {total}"
    fails("2.3", total_amount, says="returned str")


# ------------------------------------------------------------------------------------- 2.4
def _payments(on_poison, on_good="ack", batch=5, result=list):
    async def process(js, stream, durable):
        psub = await js.pull_subscribe_bind(durable, stream)
        paid = []
        while True:
            try:
                msgs = await psub.fetch(batch, timeout=0.5)
            except asyncio.TimeoutError:
                break
            for msg in msgs:
                try:
                    pid = json.loads(msg.data.decode())["payment"]
                except json.JSONDecodeError:
                    await on_poison(msg)
                    continue
                paid.append(pid)
                await getattr(msg, on_good)()
        return result(paid)
    return process


async def _term(msg):
    await msg.term()


def test_2_4_correct_term_at_once():
    passes("2.4", _payments(_term))


def test_2_4_correct_one_by_one_with_is_valid_helper():
    def valid(data):
        try:
            return json.loads(data)
        except ValueError:
            return None

    async def process(js, stream, durable):
        psub = await js.pull_subscribe("", durable=durable, stream=stream)
        out = []
        while True:
            try:
                msg = (await psub.fetch(1, timeout=0.3))[0]
            except asyncio.TimeoutError:
                return out
            body = valid(msg.data)
            if body is None:
                await msg.term()
            else:
                out.append(body["payment"])
                await msg.ack_sync()
    passes("2.4", process)


def test_2_4_wrong_nak_poison():
    async def nak(msg):
        await msg.nak()
    fails("2.4", _payments(nak), says="not terminated")


def test_2_4_wrong_ack_poison():
    async def ack(msg):
        await msg.ack()
    fails("2.4", _payments(ack), says="not terminated")


def test_2_4_wrong_nak_first_then_term():
    async def retry_once(msg):
        await (msg.term() if msg.metadata.num_delivered > 1 else msg.nak())
    fails("2.4", _payments(retry_once), says="retried before it was terminated")


def test_2_4_wrong_returns_a_set():
    fails("2.4", _payments(_term, result=set), says="returned set")


def test_2_4_wrong_returns_raw_data():
    async def process(js, stream, durable):
        psub = await js.pull_subscribe_bind(durable, stream)
        out = []
        for msg in await _drain_fetch(psub, 5):
            try:
                json.loads(msg.data)
            except ValueError:
                await msg.term()
                continue
            out.append(msg.data)
            await msg.ack()
        return out
    fails("2.4", process, says="bytes")


# ------------------------------------------------------------------------------------- 2.5
def _mover(msg_id=lambda stream, seq: f"{stream}-{seq}", data_from="original"):
    async def move(js, advisory_msg, dlq_subject):
        event = json.loads(advisory_msg.data)
        stream, seq = event["stream"], event["stream_seq"]
        original = await js.get_msg(stream, seq)
        headers = {"Dlq-Stream": stream, "Dlq-Seq": str(seq), "Dlq-Subject": original.subject}
        mid = msg_id(stream, seq)
        if mid is not None:
            headers["Nats-Msg-Id"] = mid
        data = original.data if data_from == "original" else advisory_msg.data
        await js.publish(dlq_subject, data, headers=headers)
    return move


def test_2_5_correct_colon_id():
    passes("2.5", _mover(lambda stream, seq: f"{stream}:{seq}"))


def test_2_5_correct_prefixed_id_and_keyword_seq():
    async def move(js, advisory_msg, dlq_subject):
        adv = json.loads(advisory_msg.data.decode())
        orig = await js.get_msg(adv["stream"], seq=adv["stream_seq"])
        await js.publish(dlq_subject, orig.data or b"", headers={
            "Nats-Msg-Id": "dlq.{}.{}".format(adv["stream"], adv["stream_seq"]),
            "Dlq-Stream": adv["stream"], "Dlq-Seq": f"{adv['stream_seq']}", "Dlq-Subject": orig.subject})
    passes("2.5", move)


def test_2_5_wrong_id_of_sequence_only():
    fails("2.5", _mover(lambda stream, seq: f"seq-{seq}"), says=("fewer copies", "stream and sequence"))


def test_2_5_wrong_id_of_stream_only():
    fails("2.5", _mover(lambda stream, seq: stream), says="fewer copies")


def test_2_5_wrong_no_message_id():
    fails("2.5", _mover(lambda stream, seq: None), says="more copies")


def test_2_5_wrong_random_id():
    fails("2.5", _mover(lambda stream, seq: uuid.uuid4().hex), says="more copies")


def test_2_5_wrong_copies_the_advisory():
    fails("2.5", _mover(data_from="advisory"), says="other data than the original")


# ------------------------------------------------------------------------------------- 2.6
def test_2_6_correct_ephemeral_by_start_sequence():
    async def replay_from(js, stream, seq):
        psub = await js.pull_subscribe(">", stream=stream, config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=seq, ack_policy=AckPolicy.NONE))
        try:
            return [m.data.decode() for m in await _drain_fetch(psub, 100)]
        finally:
            await psub.unsubscribe()
    passes("2.6", replay_from)


def test_2_6_correct_get_msg_skipping_gaps():
    async def replay_from(js, stream, seq):
        last = (await js.stream_info(stream)).state.last_seq
        out = []
        for s in range(seq, last + 1):
            try:
                out.append((await js.get_msg(stream, s)).data.decode("utf-8"))
            except NotFoundError:
                pass
        return out
    passes("2.6", replay_from)


def test_2_6_correct_ordered_consumer():
    async def replay_from(js, stream, seq):
        sub = await js.subscribe(">", stream=stream, ordered_consumer=True, config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=seq))
        out = []
        try:
            while True:
                msg = await sub.next_msg(timeout=2)
                out.append(msg.data.decode())
                if msg.metadata.num_pending == 0:
                    return out
        finally:
            await sub.unsubscribe()
    passes("2.6", replay_from)


def _all_then(pick):
    async def replay_from(js, stream, seq):
        psub = await js.pull_subscribe(">", stream=stream, config=ConsumerConfig(ack_policy=AckPolicy.NONE))
        msgs = await _drain_fetch(psub, 100)
        await psub.unsubscribe()
        first = (await js.stream_info(stream)).state.first_seq
        return [m.data.decode() for m in pick(msgs, seq, first)]
    return replay_from


def test_2_6_wrong_slices_by_position():
    fails("2.6", _all_then(lambda msgs, seq, first: msgs[seq - 1:]), says="a position in a list is not a sequence")


def test_2_6_wrong_slices_from_first_sequence():
    fails("2.6", _all_then(lambda msgs, seq, first: msgs[seq - first:]), says="returned other messages")


def test_2_6_wrong_returns_bytes():
    async def replay_from(js, stream, seq):
        psub = await js.pull_subscribe(">", stream=stream, config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=seq))
        return [m.data for m in await _drain_fetch(psub, 100)]
    fails("2.6", replay_from, says="bytes")


def test_2_6_wrong_get_msg_without_gaps():
    async def replay_from(js, stream, seq):
        last = (await js.stream_info(stream)).state.last_seq
        return [(await js.get_msg(stream, s)).data.decode() for s in range(seq, last + 1)]
    fails("2.6", replay_from, says="deleted message leaves a gap")


def test_2_6_wrong_leaves_a_durable():
    async def replay_from(js, stream, seq):
        psub = await js.pull_subscribe(">", durable=f"replay-{seq}", stream=stream, config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=seq))
        msgs = await _drain_fetch(psub, 100)
        for m in msgs:
            await m.ack()
        return [m.data.decode() for m in msgs]
    fails("2.6", replay_from, says="left a durable consumer")


# ------------------------------------------------------------------------------------- 2.7
def test_2_7_correct_by_start_time():
    async def replay_since(js, stream, since):
        psub = await js.pull_subscribe(">", stream=stream, config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since, ack_policy=AckPolicy.NONE))
        try:
            return [m.data.decode() for m in await _drain_fetch(psub, 50)]
        finally:
            await psub.unsubscribe()
    passes("2.7", replay_since)


def test_2_7_correct_filter_on_metadata_timestamp():
    async def replay_since(js, stream, since):
        psub = await js.pull_subscribe(">", stream=stream, config=ConsumerConfig(ack_policy=AckPolicy.NONE))
        msgs = await _drain_fetch(psub, 50)
        await psub.unsubscribe()
        return [m.data.decode() for m in msgs if m.metadata.timestamp >= since]
    passes("2.7", replay_since)


def test_2_7_wrong_returns_everything():
    async def replay_since(js, stream, since):
        psub = await js.pull_subscribe(">", stream=stream)
        return [m.data.decode() for m in await _drain_fetch(psub, 50)]
    fails("2.7", replay_since, says="other messages than those stored at or after")


def test_2_7_wrong_returns_bytes():
    async def replay_since(js, stream, since):
        psub = await js.pull_subscribe(">", stream=stream, config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since))
        return [m.data for m in await _drain_fetch(psub, 50)]
    fails("2.7", replay_since, says="bytes")


def test_2_7_wrong_leaves_a_durable():
    async def replay_since(js, stream, since):
        psub = await js.pull_subscribe(">", durable="audit-replay", stream=stream, config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since))
        return [m.data.decode() for m in await _drain_fetch(psub, 50)]
    fails("2.7", replay_since, says="left a durable consumer")


def test_2_7_wrong_last_only():
    async def replay_since(js, stream, since):
        psub = await js.pull_subscribe(">", stream=stream, config=ConsumerConfig(deliver_policy=DeliverPolicy.LAST))
        return [m.data.decode() for m in await _drain_fetch(psub, 50)]
    fails("2.7", replay_since, says="other messages")


# ------------------------------------------------------------------------------------- 2.8
async def _work_queue(js, name, subject):
    await js.add_stream(name=name, subjects=[subject], retention=RetentionPolicy.WORK_QUEUE)


def _worker(batch=5, durable="workers", ack=True, as_text=True):
    async def worker(js, stream, done):
        psub = await js.pull_subscribe(">", durable=durable, stream=stream)
        try:
            while True:
                try:
                    msgs = await psub.fetch(batch, timeout=0.5)
                except asyncio.TimeoutError:
                    return
                for m in msgs:
                    done.append(m.data.decode() if as_text else m.data)
                    if ack:
                        await m.ack()
        finally:
            await psub.unsubscribe()
    return worker


def test_2_8_correct_pull_subscribe_batches_of_5():
    passes("2.8", _work_queue, _worker())


def test_2_8_correct_stream_config_and_one_at_a_time():
    async def create(js, name, subject):
        await js.add_stream(StreamConfig(name=name, subjects=[subject], retention="workqueue",
                                         storage=StorageType.FILE))

    async def worker(js, stream, done):
        await js.add_consumer(stream, ConsumerConfig(durable_name="workers", ack_policy=AckPolicy.EXPLICIT,
                                                     max_ack_pending=100))
        psub = await js.pull_subscribe_bind("workers", stream)
        while True:
            try:
                msgs = await psub.fetch(1, timeout=0.3)
            except asyncio.TimeoutError:
                break
            done.append(str(msgs[0].data, "utf-8"))
            await msgs[0].ack_sync()
    passes("2.8", create, worker)


def test_2_8_wrong_limits_retention():
    async def create(js, name, subject):
        await js.add_stream(name=name, subjects=[subject])
    fails("2.8", create, _worker(), says="not a work queue")


def test_2_8_wrong_batches_of_10():
    fails("2.8", _work_queue, _worker(batch=10), says="batches of more than 5")


def test_2_8_wrong_one_consumer_per_worker():
    fails("2.8", _work_queue, _worker(durable=None), says="same durable consumer")


def test_2_8_wrong_consumer_name():
    fails("2.8", _work_queue, _worker(durable="worker"), says='named "workers"')


def test_2_8_wrong_no_ack():
    fails("2.8", _work_queue, _worker(ack=False), says="still in the work queue")


def test_2_8_wrong_appends_bytes():
    fails("2.8", _work_queue, _worker(as_text=False), says="bytes")


# ------------------------------------------------------------------------------------- 2.9
def test_2_9_correct_sources():
    async def aggregate(js, name, first, second):
        await js.add_stream(name=name, sources=[StreamSource(name=first), StreamSource(name=second)])
    passes("2.9", aggregate)


def test_2_9_correct_one_source_then_update():
    async def aggregate(js, name, first, second):
        info = await js.add_stream(StreamConfig(name=name, storage=StorageType.FILE, sources=[StreamSource(name=first)]))
        cfg = info.config
        cfg.sources = [*cfg.sources, StreamSource(name=second)]
        await js.update_stream(cfg)
    passes("2.9", aggregate)


def test_2_9_wrong_mirror():
    async def aggregate(js, name, first, second):
        await js.add_stream(name=name, mirror=StreamSource(name=first))
    fails("2.9", aggregate, says="does not source from both")


def test_2_9_wrong_one_source():
    async def aggregate(js, name, first, second):
        await js.add_stream(name=name, sources=[StreamSource(name=second)])
    fails("2.9", aggregate, says="does not source from both")


def test_2_9_wrong_filtered_sources_drop_new_sales():
    async def aggregate(js, name, first, second):
        await js.add_stream(name=name, sources=[StreamSource(name=s, filter_subject="*.sales.web")
                                                for s in (first, second)])
    fails("2.9", aggregate, says="does not hold all new messages")


def test_2_9_wrong_client_side_copy():
    async def aggregate(js, name, first, second):
        await js.add_stream(name=name, subjects=[f"copy.{name.lower()}"])
        for src in (first, second):
            state = (await js.stream_info(src)).state
            for s in range(state.first_seq, state.last_seq + 1):
                await js.publish(f"copy.{name.lower()}", (await js.get_msg(src, s)).data)
    fails("2.9", aggregate, says="does not source from both")
