"""Clusters, super-clusters and leaf nodes form on both backends; faults act on real servers."""
from __future__ import annotations

import asyncio

import pytest

import natslab
from natslab import until_sync
from natslab.runtime.monitor import NOT_ANSWERING


def wait_until(test, timeout=30.0, what="condition"):
    """The course's own wait (natslab.until_sync); a server still restarting answers nothing yet."""
    until_sync(test, what, timeout=timeout, every=0.1, retry=NOT_ANSWERING)


def test_cluster_routes_meta_leader_and_failover(backend):
    with natslab.cluster(3, backend=backend) as c:
        assert len(c) == 3 and len(c.url.split(",")) == 3
        for s in c:
            assert s.monitor("routez")["num_routes"] >= 2
            assert all(u.startswith("nats://127.0.0.1:") for u in c.urls)
        leader = c.meta_leader()
        assert leader in {s.name for s in c}
        c[leader].kill()
        wait_until(lambda: c.meta_leader() not in (None, leader), what="a new meta leader")
        c[leader].start()
        wait_until(lambda: c[leader].monitor("routez")["num_routes"] >= 2, what="routes back")

        async def clients_see_only_host_urls():
            nc = await natslab.connect(c, quiet=True)
            urls = list(nc.discovered_servers) + [str(nc.connected_url.netloc)]
            await nc.close()
            return urls
        for u in asyncio.run(clients_see_only_host_urls()):
            assert "127.0.0.1" in str(u), f"a server advertised an address the host cannot reach: {u}"


def test_supercluster_gateways(backend):
    with natslab.supercluster({"east": 2, "west": 1}, backend=backend, jetstream=False) as sc:
        assert set(sc.clusters) == {"east", "west"}
        for s in sc:
            assert "west" in s.monitor("gatewayz")["outbound_gateways"] or s.gateway_name == "west"
        west = sc.clusters["west"][0]
        assert "east" in west.monitor("gatewayz")["outbound_gateways"]

        async def across():  # a request answered in the other cluster
            a = await natslab.connect(sc.cluster_urls("east"), quiet=True)
            b = await natslab.connect(sc.cluster_urls("west"), quiet=True)
            async def echo(m):
                await m.respond(m.data)
            sub = await b.subscribe("svc.echo", cb=echo)
            await b.flush()
            reply = None
            for _ in range(50):
                try:
                    reply = await a.request("svc.echo", b"hi", timeout=0.5)
                    break
                except Exception:
                    await asyncio.sleep(0.1)
            await sub.unsubscribe()
            await a.close(); await b.close()
            return reply.data if reply else None
        assert asyncio.run(across()) == b"hi"


def test_leafnode_joins_hub(backend):
    with natslab.leafnode(backend=backend) as lt:
        assert lt.leaf.monitor("leafz")["leafnodes"] == 1
        assert lt.hub.monitor("leafz")["leafnodes"] == 1

        async def through():
            hub = await natslab.connect(lt.hub, quiet=True)
            leaf = await natslab.connect(lt.leaf, quiet=True)
            sub = await hub.subscribe("edge.>")
            await hub.flush()
            got = None
            for _ in range(50):
                await leaf.publish("edge.temp", b"21")
                await leaf.flush()
                try:
                    got = (await sub.next_msg(timeout=0.2)).data
                    break
                except asyncio.TimeoutError:
                    pass
            await hub.close(); await leaf.close()
            return got
        assert asyncio.run(through()) == b"21"
    assert lt.hub.closed and lt.leaf.closed


@pytest.mark.docker
def test_network_cut_and_heal_on_docker():
    with natslab.cluster(3, backend="docker", jetstream=False) as c:
        n3 = c["c1-n3"]
        n3.cut()
        wait_until(lambda: n3.monitor("routez")["num_routes"] == 0, timeout=60, what="routes to drop")
        assert n3.monitor("healthz")["status"] == "ok"  # clients still reach the cut node
        n3.heal()
        wait_until(lambda: n3.monitor("routez")["num_routes"] >= 2, timeout=60, what="routes to return")


def test_network_cut_on_local_explains_itself():
    with natslab.server("solo", backend="local", jetstream=False) as srv:
        with pytest.raises(natslab.NotSupported, match="pause"):
            srv.cut()
