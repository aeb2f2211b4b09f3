"""natslab.topoview and natslab.failover against real topologies, on both backends."""
from __future__ import annotations

import asyncio

import matplotlib
import pytest
from nats.js.api import StreamConfig

import natslab
from natslab.lessons import failover, topoview

matplotlib.use("Agg")


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def cluster(backend):
    c = natslab.cluster(3, name="t4", backend=backend)
    yield c
    c.close()


async def _stream(c, name="T", replicas=3, **kw):
    await failover.jetstream_ready(c)
    nc = await natslab.connect(c, quiet=True, reconnect_time_wait=0.1, max_reconnect_attempts=-1)
    js = nc.jetstream()
    await failover.retry(js.add_stream, StreamConfig(name=name, subjects=[f"{name.lower()}.>"],
                                                     num_replicas=replicas, **kw))
    await failover.wait_until_current(js, name)
    return nc, js


def test_snapshot_of_a_cluster_names_routes_and_leaders(cluster):
    async def go():
        nc, js = await _stream(cluster)
        try:
            info = await js.stream_info("T")

            def full_mesh():  # a route being replaced (duplicate-route resolution) is missing for a moment
                snap = topoview.snapshot(cluster)
                return all(snap.route_peers(s.name) == {o.name for o in cluster if o is not s}
                           for s in cluster) and snap

            snap = await natslab.until(full_mesh, "every server routing to both others in /routez", timeout=15)
            assert all(n.state == "up" for n in snap.nodes.values())
            for s in cluster:
                assert snap.route_peers(s.name) == {o.name for o in cluster if o is not s}
            assert snap.meta.leader == cluster.meta_leader()
            assert snap.leader_of("T") == info.cluster.leader
            assert sorted(snap.streams["T"].peers) == sorted(s.name for s in cluster)
            assert "T" in snap.leads(info.cluster.leader)

            follower = [p.name for p in info.cluster.replicas][0]
            cluster[follower].kill()
            snap = topoview.snapshot(cluster)
            assert snap.nodes[follower].state == "down"
            assert all(follower not in snap.route_peers(s.name) for s in cluster if s.name != follower)
            assert snap.leader_of("T") == info.cluster.leader
            text = snap.summary()
            assert follower in text and "down" in text and f"leader {info.cluster.leader}" in text
        finally:
            await nc.close()
    run(go())


def test_view_widget_acts_and_draws_headless(cluster):
    view = topoview.TopologyView(cluster)
    widget = view.widget  # builds the ipywidgets tree without a browser
    assert widget.children
    assert view.act("pause", "t4-n2") == "pause t4-n2: done"
    assert view.snap.nodes["t4-n2"].state == "silent"
    assert "t4-n2      silent" in view.summary()
    view.act("resume", "t4-n2")
    assert view.snap.nodes["t4-n2"].state == "up"
    picture = topoview.svg(view.snap)
    assert picture.startswith("<svg") and all(s.name in picture for s in cluster)
    with pytest.raises(ValueError):
        view.act("explode", "t4-n1")


def test_configs_side_by_side_has_every_server(cluster):
    side = topoview.configs_side_by_side(cluster)
    text = repr(side)
    assert all(s.name in text.splitlines()[0] for s in cluster)
    assert text.count('name: "t4"') == 3
    assert "<table>" in side._repr_html_()


def test_remote_interest_sees_a_subscription_cross_a_route(cluster):
    async def go():
        sub_nc = await natslab.connect(cluster["t4-n1"], quiet=True)
        try:
            await sub_nc.subscribe("watch.me")
            await sub_nc.flush()
            await natslab.until(lambda: "watch.me" in topoview.remote_interest(cluster["t4-n3"]).get("t4-n1", []),
                                "interest reaches t4-n3", timeout=10)
        finally:
            await sub_nc.close()
    run(go())


@pytest.mark.slow
def test_publish_through_a_leader_kill_loses_nothing(cluster):
    async def go():
        nc, js = await _stream(cluster)
        try:
            leader = (await js.stream_info("T")).cluster.leader
            result = await failover.publish_through_fault(js, "t.x", 2000, batch=200, fault=cluster[leader].kill,
                                                          fault_after=500, fault_label="kill")
            assert not result.failed and len(result.acked) == 2000
            figures = result.summary()
            assert figures["acknowledged"] == 2000 and figures["fault"] == "kill"
            assert figures["longest pause s"] > 0  # an election happened while publishing
            survival = await failover.count_in_stream(js, "T", result)
            assert survival.ok and survival.found == 2000 and survival.stream_messages == 2000
            info = await failover.wait_for_leader(js, "T", other_than=leader)
            assert info.cluster.leader != leader
            fig = result.plot()
            assert len(fig.axes) == 2
            # the reader consumer is gone again
            assert not [ci for ci in await js.consumers_info("T") if ci.name.startswith("count-")]
        finally:
            await nc.close()
    run(go())


def test_count_in_stream_names_a_missing_message(cluster):
    async def go():
        nc, js = await _stream(cluster, replicas=1)
        try:
            result = await failover.publish_through_fault(js, "t.x", 100, batch=25)
            victim = result.records[42]
            await js.delete_msg("T", victim.seq)
            survival = await failover.count_in_stream(js, "T", result)
            assert not survival.ok and survival.missing == [42] and survival.found == 99
        finally:
            await nc.close()
    run(go())


def test_steady_publisher_numbers_on_across_restarts(cluster):
    async def go():
        nc, js = await _stream(cluster, replicas=1)
        try:
            pub = failover.SteadyPublisher(js, "t.x", rate=500)
            async with pub:
                await natslab.until(lambda: len(pub.run.acked) >= 20, "some acks", timeout=10)
            first = len(pub.run.records)
            async with pub:
                await natslab.until(lambda: len(pub.run.acked) >= first + 20, "more acks", timeout=10)
            indexes = [r.index for r in pub.run.records]
            assert indexes == list(range(len(indexes)))  # no number used twice
            survival = await failover.count_in_stream(js, "T", pub.run)
            assert survival.ok and survival.found == len(pub.run.acked)
        finally:
            await nc.close()
    run(go())


def test_isolate_cuts_on_docker_and_pauses_on_local(cluster, backend):
    srv = cluster["t4-n3"]
    how = failover.isolate(srv)
    try:
        assert how == ("cut" if backend == "docker" else "pause")
        snap = topoview.snapshot(cluster)
        if how == "pause":
            assert snap.nodes["t4-n3"].state == "silent"
        else:  # still answers its monitoring port, but has no routes
            async def no_routes():
                return not topoview.snapshot(cluster).route_peers("t4-n3")
            run(failover.until(no_routes, "t4-n3 loses its routes", timeout=30))
    finally:
        failover.rejoin(srv)
    run(failover.until(cluster.routes_formed, "routes come back", timeout=30))


def test_leaf_topology_snapshot_shows_the_link(backend):
    hub = natslab.server("t4hub", leafnodes=True, jetstream=False, backend=backend)
    lt = natslab.leafnode(hub, name="t4leaf")
    try:
        snap = topoview.snapshot(lt)
        assert set(snap.nodes) == {"t4hub", "t4leaf"}
        assert snap.leafs == {("t4leaf", "t4hub")}
        assert "leaf of t4hub" in snap.summary() and "hub for t4leaf" in snap.summary()
    finally:
        lt.close()
        hub.group.close()


@pytest.mark.slow
def test_supercluster_snapshot_shows_gateways_and_placement(backend):
    sc = natslab.supercluster({"ta": 2, "tb": 2}, backend=backend)
    try:
        async def go():
            await failover.jetstream_ready(sc)  # a fresh meta leader may not know every peer yet
            nc = await natslab.connect(sc.cluster_urls("ta"), quiet=True)
            try:
                from nats.js.api import Placement
                js = nc.jetstream()
                await failover.retry(js.add_stream, StreamConfig(name="P", subjects=["p.>"],
                                                                 placement=Placement(cluster="tb")))
                snap = topoview.snapshot(sc)
                assert snap.streams["P"].cluster == "tb" and snap.leader_of("P").startswith("tb-")
                for s in sc:
                    other = "tb" if s.name.startswith("ta") else "ta"
                    assert any(o.startswith(other) for p in snap.gateways if s.name in p for o in p)
            finally:
                await nc.close()
        run(go())
    finally:
        sc.close()


def test_live_refresh_runs_in_the_background_and_stops(cluster):
    async def go():
        view = topoview.TopologyView(cluster)
        widget = view.widget
        first = view.snap.taken_at
        view._live.value = True  # what the "live" button does
        task = view._auto_task
        await natslab.until(lambda: view.snap.taken_at > first, "a background refresh", timeout=15)
        view._live.value = False
        await asyncio.sleep(0)
        assert task.cancelled() or task.done()
        short = view.auto(seconds=0.3, every=0.1)
        await short
        assert not view._live.value and widget.children
    run(go())


def test_retry_repeats_only_what_is_worth_repeating(cluster):
    async def go():
        calls = []

        async def flaky():
            calls.append(1)
            if len(calls) < 3:
                raise asyncio.TimeoutError
            return "ok"

        async def broken():
            calls.append(1)
            raise ValueError("a real mistake")

        assert await failover.retry(flaky, timeout=10) == "ok" and len(calls) == 3
        calls.clear()
        with pytest.raises(ValueError):
            await failover.retry(broken, timeout=10)
        assert len(calls) == 1
    run(go())


def test_jetstream_ready_leaves_no_trial_stream_behind(cluster):
    async def go():
        leader = await failover.jetstream_ready(cluster)
        assert leader == cluster.meta_leader()
        nc = await natslab.connect(cluster, quiet=True)
        try:
            assert [n async for n in _names(nc.jetstream())] == []
        finally:
            await nc.close()
    run(go())


async def _names(js):
    for info in await js.streams_info():
        yield info.config.name
