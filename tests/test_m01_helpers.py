"""Module 01 helpers (natslab.subjects, natslab.fanout) against a real server, on both backends."""
from __future__ import annotations

import asyncio
import itertools

import pytest

import natslab
from conftest import BACKENDS
from natslab.lessons import subjects
from natslab.lessons.fanout import RawClient, Spread

PATTERNS = ["orders.>", "orders.*", "orders.*.created", "*.eu.>", ">", "orders.eu.created"]
SUBJECTS = ["orders", "orders.eu", "orders.eu.created", "orders.us.created", "orders.eu.created.v2",
            "billing.eu.paid", "Orders.eu.created"]


@pytest.fixture(scope="module", params=BACKENDS)
def srv(request):
    server = natslab.server("m01-helpers", jetstream=False, backend=request.param,
                            config={"max_pending": 1048576})
    yield server
    server.group.close()


def with_client(srv, body):
    """Run ``await body(nc)`` with a fresh connection to ``srv``, closed afterwards."""
    async def main():
        nc = await natslab.connect(srv, quiet=True)
        try:
            await body(nc)
        finally:
            await nc.close()
    asyncio.run(main())


# ------------------------------------------------------------------------------ pure rules
@pytest.mark.parametrize("text,pattern,ok", [
    ("orders.eu.created", False, True),
    ("orders", False, True),
    ("", False, False),
    ("orders eu", False, False),
    ("orders..eu", False, False),
    (".orders", False, False),
    ("orders.", False, False),
    ("orders.*", False, False),
    ("orders.>", False, False),
    ("orders.*", True, True),
    ("orders.>", True, True),
    ("orders.>.created", True, False),
    ("*.*.>", True, True),
])
def test_check_says_what_is_valid(text, pattern, ok):
    verdict = subjects.check(text, pattern=pattern)
    assert verdict.ok is ok, str(verdict)
    assert bool(verdict.problems) is (not ok)


def test_check_warns_about_conventions_without_rejecting():
    assert subjects.check("$SYS.hello").ok and subjects.check("$SYS.hello").warnings
    assert subjects.check("orders.a*b").ok and "literal" in subjects.check("orders.a*b").warnings[0]


@pytest.mark.parametrize("pattern,subject,expected", [
    ("orders.*.created", "orders.eu.created", True),
    ("orders.*", "orders.eu.created", False),
    ("orders.>", "orders", False),
    ("orders.>", "orders.eu.created.v2", True),
    (">", "a", True),
    ("orders.eu", "Orders.eu", False),
    ("orders.>.x", "orders.a.x", False),  # invalid pattern: never a match
])
def test_match_and_its_explanation(pattern, subject, expected):
    m = subjects.match(pattern, subject)
    assert m.matched is expected
    assert m.steps and str(m).startswith(repr(pattern))


# ------------------------------------------------------------------------------ against the server
def test_rules_agree_with_the_server(srv):
    async def body(nc):
        for p, s in itertools.product(PATTERNS, SUBJECTS):
            assert await subjects.server_delivers(nc, p, s) is subjects.matches(p, s), (p, s)
        table = await subjects.compare(nc, PATTERNS[:2], SUBJECTS[:3])
        assert "disagreed with the rules 0 times" in table
    with_client(srv, body)


def test_the_server_drops_an_invalid_subject_silently(srv):
    async def body(nc):
        assert await subjects.server_delivers(nc, ">", "orders..eu") is False
        assert nc.is_connected
    with_client(srv, body)


def test_matcher_widget_updates_from_code(srv):
    async def body(nc):
        m = subjects.SubjectMatcher(nc, subject="orders.eu.created", pattern="orders.*.created")
        first = await m.settled()
        assert "MATCHES" in first and "received" in first and "agrees" in first
        second = await m.set("orders.eu.created.v2")
        assert "does NOT match" in second and "did not receive" in second and "agrees" in second
        assert "does NOT match" in m.output.value
        bad = await m.set(pattern="orders.>.v2")
        assert "INVALID" in bad and "not asked" in bad
    with_client(srv, body)


def test_a_natslab_flush_means_the_server_has_the_subscription(srv):
    """natslab.connect's flush is queued behind pending commands (nats-py 2.16 writes it first)."""
    async def body(pub):
        svc = await natslab.connect(srv, quiet=True)
        try:
            async def answer(msg):
                await msg.respond(b"ok")
            for i in range(100):
                await svc.subscribe(f"ready.{i}", cb=answer)
                await svc.flush()
                assert (await pub.request(f"ready.{i}", b"", timeout=5)).data == b"ok"
        finally:
            await svc.close()
    with_client(srv, body)


def test_the_servers_view_holds_for_a_plain_client(srv):
    """With plain nats.connect, waiting on /subsz (what checkers and lessons do) never loses a request."""
    import nats

    from natslab.grading.exercises import interest

    async def body(pub):
        svc = await nats.connect(srv.url)
        try:
            async def answer(msg):
                await msg.respond(b"ok")
            for i in range(30):
                await svc.subscribe(f"plain.{i}", cb=answer)
                assert await interest(srv, f"plain.{i}") >= 1
                assert (await pub.request(f"plain.{i}", b"", timeout=5)).data == b"ok"
        finally:
            await svc.close()
    with_client(srv, body)


def test_raw_client_sees_headers_on_the_wire(srv):
    async def body(nc):
        with RawClient(srv, "wire.>", name="wire") as raw:
            await nc.publish("wire.a", b"body", headers={"Trace-Id": "t1"})
            await nc.publish("wire.b", b"plain")
            await nc.flush()
            text = raw.read()
        assert "HMSG wire.a 1" in text and "NATS/1.0\r\nTrace-Id: t1\r\n\r\nbody" in text
        assert "MSG wire.b 1 5\r\nplain" in text
    with_client(srv, body)


def test_a_client_that_stops_reading_is_cut_off(srv):
    async def body(nc):
        before = srv.monitor("varz")["slow_consumers"]
        with RawClient(srv, "bulk", name="frozen-test"):
            sent = 0
            while srv.monitor("varz")["slow_consumers"] == before and sent < 8000:
                for _ in range(100):
                    await nc.publish("bulk", b"x" * 8192)
                await nc.flush()
                sent += 100
        closed = [c for c in srv.monitor("connz", state="closed")["connections"] if c.get("name") == "frozen-test"]
        assert closed and "Slow Consumer" in closed[0]["reason"]
        assert nc.is_connected
    with_client(srv, body)


# ------------------------------------------------------------------------------ spread view
def test_spread_counts_timeline_and_views():
    import matplotlib

    matplotlib.use("Agg")
    spread = Spread(["a", "b"], every=2)
    box = spread.widget()
    for i, m in enumerate("abab", 1):
        spread.record(m, i)
    spread.mark("b left")
    spread.record("a", 5)
    spread.record("c", 6)  # a member that joins late is added
    assert spread.total == 6 and spread.counts == {"a": 3, "b": 2, "c": 1}
    assert spread.between(4) == {"a": 1, "c": 1}
    assert "6 messages over 3 members" in spread.summary()
    assert box is not None and spread._bars["a"][0].value >= 2
    fig = spread.plot()
    assert len(fig.axes) == 2
    import matplotlib.pyplot as plt

    plt.close(fig)
