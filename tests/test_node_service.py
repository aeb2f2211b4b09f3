"""Lesson 07.1's Node.js service (natslab/lessons/node_service, started by natslab.lessons.services):
it starts, answers $SRV.PING/INFO/STATS and requests from Python (service-protocol errors included),
and is gone after stop(), after natslab.stop_all() and after the kernel that started it is killed
(the clean-up guard).  Without Node.js the tests skip, loudly; with Node.js but without the npm
packages they fail (./course sets them up)."""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
import time

import nats
import pytest

import natslab
from natslab.errors import NatslabError
from natslab.lessons import services
from natslab.runtime import session

needs_node = pytest.mark.skipif(services.node_missing(packages=False) is not None,
                                reason=f"Node.js 18+ not installed: {services.node_missing(packages=False)}")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def _gather(nc, subject: str, expect: int) -> list[dict]:
    inbox = nc.new_inbox()
    replies: list[dict] = []

    async def collect(msg):
        replies.append(json.loads(msg.data))

    sub = await nc.subscribe(inbox, cb=collect)
    await nc.publish(subject, b"", reply=inbox)
    await natslab.until(lambda: len(replies) >= expect, f"{expect} replies on {subject}", timeout=15)
    await sub.unsubscribe()
    return replies


@needs_node
def test_the_packages_are_installed():
    assert services.node_missing() is None, services.node_missing()


@needs_node
def test_node_service_answers_discovery_and_python_requests_then_stops(backend):
    srv = natslab.server("node71", jetstream=False, backend=backend)
    try:
        svc = services.node_service(srv, name="inventory", version="1.2.3", connection_name="inv-node")
        assert svc.running() and svc.service_id
        assert svc.id in [g.id for g in session.groups()]

        async def go():
            nc = await nats.connect(srv.url)
            try:
                pings = await _gather(nc, "$SRV.PING", 1)
                assert [(p["name"], p["id"], p["version"], p["type"]) for p in pings] == \
                    [("inventory", svc.service_id, "1.2.3", "io.nats.micro.v1.ping_response")]
                assert pings[0]["metadata"]["language"] == "javascript"
                info = (await _gather(nc, f"$SRV.INFO.inventory.{svc.service_id}", 1))[0]
                assert {e["subject"] for e in info["endpoints"]} == {"inventory.stock", "inventory.reserve"}
                assert all(e["queue_group"] == "q" for e in info["endpoints"])

                ok = await nc.request("inventory.stock", json.dumps({"sku": "apple"}).encode(), timeout=10)
                assert json.loads(ok.data) == {"sku": "apple", "available": 7, "served_by": "node",
                                               "service_id": svc.service_id}
                bad = await nc.request("inventory.reserve", json.dumps({"sku": "pear", "qty": 1}).encode(), timeout=10)
                assert bad.data == b""
                assert bad.headers["Nats-Service-Error-Code"] == "409"
                assert "not enough stock" in bad.headers["Nats-Service-Error"]

                stats = (await _gather(nc, "$SRV.STATS.inventory", 1))[0]
                assert stats["type"] == "io.nats.micro.v1.stats_response"
                assert {e["name"]: e["num_requests"] for e in stats["endpoints"]} == {"stock": 1, "reserve": 1}
                # the server's own view: a named connection with the endpoints in queue group q
                conns = srv.monitor("connz", subs="detail")["connections"]
                mine = next(c for c in conns if c.get("name") == "inv-node")
                assert {(s["subject"], s.get("qgroup")) for s in mine["subscriptions_list_detail"]} >= \
                    {("inventory.stock", "q"), ("inventory.reserve", "q")}

                pid = svc.pid
                svc.stop()
                assert not _alive(pid) and not svc.running()
                assert svc.id not in [g.id for g in session.groups()]
                with pytest.raises(nats.errors.NoRespondersError):
                    await nc.request("inventory.stock", b'{"sku": "apple"}', timeout=10)
                await natslab.until(lambda: not any(c.get("name") == "inv-node"
                                                    for c in srv.monitor("connz")["connections"]),
                                    "the service's connection gone from /connz", timeout=15)
            finally:
                await nc.close()
        asyncio.run(go())
    finally:
        natslab.stop_all()


@needs_node
def test_stop_all_stops_the_node_service():
    srv = natslab.server("node71b", jetstream=False, backend="local")
    svc = services.node_service(srv)
    pid = svc.pid
    assert _alive(pid)
    natslab.stop_all()
    assert not _alive(pid)
    assert svc.id not in [g.id for g in session.groups()]
    assert srv.closed


@needs_node
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to see the process gone")
def test_node_service_dies_with_a_killed_kernel():
    # The server belongs to this test, not to the killed kernel: it stays up, so the service's
    # connection never breaks and only the clean-up guard can end the service.
    srv = natslab.server("node71k", jetstream=False, backend="local")
    script = textwrap.dedent(f"""
        import time
        from natslab.lessons import services
        svc = services.node_service({srv.url!r})
        print(svc.pid, flush=True)
        time.sleep(120)
    """)
    kernel = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        line = kernel.stdout.readline()
        assert line.strip().isdigit(), f"the kernel did not start the service: {line!r}"
        pid = int(line)
        assert _alive(pid)
        kernel.send_signal(signal.SIGKILL)
        kernel.wait(10)
        deadline = time.monotonic() + 20
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), "the Node.js service outlived the kernel that started it"
    finally:
        if kernel.poll() is None:
            kernel.kill()
            kernel.wait(10)
        natslab.stop_all()


def test_without_node_the_reason_says_how_to_get_it(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent-natslab-path")
    why = services.node_missing(packages=False)
    assert why and "Node.js is not installed" in why and "nodejs.org" in why and "./course open" in why
    with pytest.raises(NatslabError, match="cannot start") as err:
        services.node_service("nats://127.0.0.1:4222")
    assert "apt install nodejs npm" in str(err.value)
    assert not [g for g in session.groups() if getattr(g, "kind", "") == "node-service"]


def test_a_bad_target_is_named():
    with pytest.raises(NatslabError, match="needs a server"):
        services.node_service(42)


@needs_node
def test_a_service_that_cannot_connect_says_so_with_its_output():
    # nothing listens on port 9 of 127.0.0.1: the service exits and its own words are shown
    with pytest.raises(NatslabError, match="exited while starting") as err:
        services.node_service("nats://127.0.0.1:9", timeout=60)
    assert err.value.details
    assert not [g for g in session.groups() if getattr(g, "kind", "") == "node-service"]
