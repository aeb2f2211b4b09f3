"""natslab.streams (module 02 helpers) against a real JetStream server, on each backend."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from nats.js.api import ConsumerConfig, RetentionPolicy, StorageType

import natslab
from conftest import BACKENDS
from natslab.lessons import streams, subjects


@pytest.fixture(scope="module", params=BACKENDS)
def srv(request):
    with natslab.server("m02-helpers", backend=request.param) as s:
        yield s


def run(srv, body):
    """Run ``body(js, nc)`` on a fresh connection to ``srv``."""
    async def main():
        nc = await natslab.connect(srv, quiet=True)
        try:
            return await body(nc.jetstream(), nc)
        finally:
            await nc.close()
    return asyncio.run(main())


def name(prefix="S"):
    tok = uuid.uuid4().hex[:6]
    return f"{prefix}_{tok.upper()}", tok


# ------------------------------------------------------------------------------ pure helpers
@pytest.mark.parametrize("pattern,subject,ok", [
    ("a.b", "a.b", True), ("a.*", "a.b", True), ("a.*", "a.b.c", False), ("a.>", "a.b.c", True),
    ("a.>", "a", False), ("*.b.>", "x.b.y", True), ("a.b", "a.c", False), ("a.b.c", "a.b", False),
])
def test_consumer_view_filters_with_the_course_matcher(pattern, subject, ok):
    """The view decides "not for this consumer" with subjects.matches (one matcher in the course)."""
    assert streams.matches is subjects.matches
    assert streams.matches(pattern, subject) is ok


def test_parse_ack_subject_both_layouts_and_garbage():
    v1 = streams.parse_ack_subject("$JS.ACK.ORDERS.worker.3.17.21.1700000000000000000.4")
    assert v1 == {"stream": "ORDERS", "consumer": "worker", "delivered": 3, "stream_seq": 17, "consumer_seq": 21}
    v2 = streams.parse_ack_subject("$JS.ACK.hub.ACCHASH.ORDERS.worker.1.5.6.1700000000000000000.0.xyz")
    assert v2["stream"] == "ORDERS" and v2["stream_seq"] == 5 and v2["delivered"] == 1
    assert streams.parse_ack_subject("_INBOX.abc") is None
    assert streams.parse_ack_subject("$JS.ACK.S.C.x.y.z.t.p") is None


def test_table_aligns_columns(capsys):
    streams.table([{"a": 1, "bb": "xyz"}, {"a": 22, "cc": True}])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["a", "bb", "cc"]
    assert lines[1].index("xyz") == lines[0].index("bb") and lines[2].index("True") == lines[0].index("cc")


# ------------------------------------------------------------------------------ info helpers
def test_stream_info_is_readable_and_keys_select(srv):
    stream, tok = name()

    async def body(js, nc):
        await js.add_stream(name=stream, subjects=[f"{tok}.>"], storage=StorageType.MEMORY,
                            max_msgs_per_subject=2, retention=RetentionPolicy.LIMITS)
        for i in range(3):
            await js.publish(f"{tok}.a", str(i).encode())
        await js.publish(f"{tok}.b", b"x")
        full = await streams.stream_info(js, stream)
        some = await streams.stream_info(js, stream, "messages", "per_subject")
        with pytest.raises(KeyError):
            await streams.stream_info(js, stream, "no_such_key")
        return full, some

    full, some = run(srv, body)
    assert full["storage"] == "memory" and full["retention"] == "limits"
    assert full["max_msgs"] == "unlimited" and full["max_age"] == "unlimited" and full["max_msgs_per_subject"] == 2
    assert (full["messages"], full["first_seq"], full["last_seq"]) == (3, 2, 4)
    assert some == {"messages": 3, "per_subject": {f"{tok}.a": 2, f"{tok}.b": 1}}


def test_consumer_info_and_fetch_all(srv):
    stream, tok = name()

    async def body(js, nc):
        await js.add_stream(name=stream, subjects=[f"{tok}.>"])
        for i in range(7):
            await js.publish(f"{tok}.x", str(i).encode())
        psub = await js.pull_subscribe(f"{tok}.>", durable="d", stream=stream,
                                       config=ConsumerConfig(ack_wait=5, max_deliver=3))
        got = await streams.fetch_all(psub, batch=3, timeout=0.3, ack=True)
        info = await natslab.until(lambda: _acked(js, stream, "d", 7), "acks", timeout=5)
        await psub.unsubscribe()
        return [m.data for m in got], info

    data, info = run(srv, body)
    assert data == [str(i).encode() for i in range(7)]
    assert info["kind"] == "pull" and info["durable"] is True and info["ack_policy"] == "explicit"
    assert info["max_deliver"] == 3 and info["ack_wait"] == 5
    assert info["delivered"] == {"stream_seq": 7, "consumer_seq": 7} and info["num_ack_pending"] == 0


async def _acked(js, stream, consumer, seq):
    info = await streams.consumer_info(js, stream, consumer)
    return info if info["ack_floor"]["stream_seq"] == seq else None


def test_stored_skips_deleted_and_shows_headers(srv):
    stream, tok = name()

    async def body(js, nc):
        await js.add_stream(name=stream, subjects=[f"{tok}.>"])
        for i in range(4):
            await js.publish(f"{tok}.{i}", f"m{i}".encode(), headers={"Nats-Msg-Id": f"id{i}"})
        await js.delete_msg(stream, 2)
        return await streams.stored(js, stream, headers=True), await streams.stored(js, stream, limit=1)

    rows, first = run(srv, body)
    assert [r["seq"] for r in rows] == [1, 3, 4]
    assert rows[1] == {"seq": 3, "subject": f"{tok}.2", "data": "m2", "headers": {"Nats-Msg-Id": "id2"}}
    assert first == [{"seq": 1, "subject": f"{tok}.0", "data": "m0"}]


def test_jsz_condenses_the_servers_view(srv):
    stream, tok = name()

    async def body(js, nc):
        await js.add_stream(name=stream, subjects=[f"{tok}.>"], storage=StorageType.MEMORY)
        await js.publish(f"{tok}.a", b"hello")
        await js.add_consumer(stream, ConsumerConfig(durable_name="c"))

    run(srv, body)
    view = streams.jsz(srv, stream)
    assert list(view["per_stream"]) == [stream]
    mine = view["per_stream"][stream]
    assert mine["messages"] == 1 and mine["storage"] == "memory"
    assert mine["consumers"]["c"] == {"delivered": 0, "ack_floor": 0, "num_ack_pending": 0, "num_pending": 1}
    assert view["streams"] >= 1 and view["memory"] > 0


def test_no_second_wait_or_matcher():
    """streams has no wait of its own (natslab.until is the one) and no matcher of its own."""
    assert not hasattr(streams, "wait_until") and not hasattr(streams, "subject_matches")


# ------------------------------------------------------------------------------ the live view
def test_consumer_view_tracks_acks_naks_terms_and_redeliveries(srv):
    stream, tok = name()

    async def body(js, nc):
        await js.add_stream(name=stream, subjects=[f"{tok}.>"])
        for i in range(4):
            await js.publish(f"{tok}.{'odd' if i % 2 else 'even'}", str(i).encode())
        psub = await js.pull_subscribe(f"{tok}.>", durable="w", stream=stream,
                                       config=ConsumerConfig(ack_wait=0.5, max_deliver=5))
        view = await streams.watch(srv, stream, "w")
        try:
            start = view.states()
            m1, m2, m3, m4 = await psub.fetch(4, timeout=2)
            await m2.nak(delay=5)
            await m3.term()
            await m1.ack_sync()              # the server handles a consumer's acks in order
            await view.refresh()
            after = view.states()
            again = await psub.fetch(1, timeout=3)  # m4 comes back after ack_wait
            assert again[0].metadata.sequence.stream == 4 and again[0].metadata.num_delivered == 2
            await view.refresh()
            redelivered = view.states()[4]
            await again[0].ack_sync()
            await js.publish(f"{tok}.late", b"not delivered yet")
            await view.refresh()
            return start, after, redelivered, view.states(), view.counts(), view.text(), view.html(), view
        finally:
            await psub.unsubscribe()
            await view.close()

    start, after, redelivered, final, counts, text, html, view = run(srv, body)
    assert set(start.values()) == {"waiting"} and list(start) == [1, 2, 3, 4]
    assert after == {1: "acked", 2: "nak", 3: "terminated", 4: "delivered"}
    assert redelivered == "redelivered"
    assert final == {1: "acked", 2: "nak", 3: "terminated", 4: "acked", 5: "waiting"}
    assert counts["stream_msgs"] == 5 and counts["pending"] == 1 and counts["acked_seen"] == 2
    assert text.startswith(f"{stream}/w: 5 in stream") and "3⊘" in text and "1✓" in text
    assert html.count("seq ") == 5 and "terminated" in html
    assert len(view.history) >= 3 and view.closed
    fig = view.plot()
    assert fig.axes[0].get_title() == f"{stream} / w"


def test_consumer_view_marks_filtered_and_removed_messages(srv):
    stream, tok = name()

    async def body(js, nc):
        await js.add_stream(name=stream, subjects=[f"{tok}.>"], retention=RetentionPolicy.WORK_QUEUE)
        for sub in ("a", "b", "a", "b"):
            await js.publish(f"{tok}.{sub}", b"job")
        psub = await js.pull_subscribe(f"{tok}.a", durable="only-a", stream=stream)
        view = await streams.watch(nc, stream, "only-a")   # shares the caller's connection
        try:
            for msg in await psub.fetch(2, timeout=2):
                await msg.ack_sync()
            await view.refresh()
            return view.states(), view.own_connection
        finally:
            await psub.unsubscribe()
            await view.close()

    states, own = run(srv, body)
    assert own is False
    assert states == {1: "acked", 2: "skipped", 3: "acked", 4: "skipped"}
