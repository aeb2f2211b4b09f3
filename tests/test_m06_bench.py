"""natslab.lessons.bench (module 06 performance) against real servers, and the bench scripts' pieces.

Every measurement is checked against the server's own counters, not against a figure: rates
depend on the machine, counts do not.
"""
from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import matplotlib
import nats
import numpy as np
import pytest

import natslab
from natslab.lessons import bench

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def srv():
    s = natslab.server("bench-test")
    yield s
    s.close()


def in_msgs(srv) -> int:
    return srv.monitor("varz")["in_msgs"]


def test_raw_publish_delivers_every_message_to_the_server(srv):
    before = in_msgs(srv)
    rate = bench.raw_publish(srv, "t.raw", 256, 50_001)  # not a multiple of the buffer
    assert in_msgs(srv) - before == 50_001 == rate.count
    assert rate.size == 256 and rate.msgs_per_s > 0 and rate.ratio(rate) == 1.0


def test_raw_publish_refuses_other_hosts_and_unbounded_counts(srv):
    with pytest.raises(natslab.NatslabError, match="only to this machine"):
        bench.raw_publish("nats://example.com:4222", count=10)
    for bad in (0, -5, 10**9, 1.5, True):
        with pytest.raises(natslab.NatslabError, match="whole number"):
            bench.raw_publish(srv, count=bad)
    with pytest.raises(natslab.NatslabError, match="bytes or a size"):
        bench.raw_publish(srv, payload="text", count=10)


def test_raw_round_trip_measures_each_ping(srv):
    lat = bench.raw_round_trip(srv, 200)
    assert lat.shape == (200,) and (lat > 0).all()


def test_publish_and_pubsub_count_on_the_server(srv):
    async def go():
        before = in_msgs(srv)
        one = await bench.publish(srv, "t.py", 64, 5_000, pending_size=64 * 1024)
        every = await bench.publish(srv, "t.py", 64, 300, flush_every=50)
        ps = await bench.pubsub(srv, "t.ps", 64, 3_000)
        return before, one, every, ps
    before, one, every, ps = asyncio.run(go())
    assert in_msgs(srv) - before == 5_000 + 300 + 3_000
    assert "flush every 50" in every.label and one.count == 5_000
    assert ps.count == 3_000  # the subscriber received every one


def test_js_publish_sync_and_windowed_store_every_message(srv):
    async def go():
        return await bench.js_publish(srv, 32, 300), await bench.js_publish(srv, 32, 2_000, window=64)
    sync, windowed = asyncio.run(go())
    assert sync.count == 300 and windowed.count == 2_000 and "64 in flight" in windowed.label


def test_request_reply_latencies_and_percentiles(srv):
    rate, lat = asyncio.run(bench.request_reply(srv, "t.rr", 16, 300, in_flight=4))
    assert rate.count == 300 and lat.shape == (300,) and (lat > 0).all()
    p = bench.percentiles(lat)
    assert p["p50"] <= p["p90"] <= p["p99"] <= p["p99.9"] <= p["max"]


def test_percentiles_are_exact_in_milliseconds():
    p = bench.percentiles(np.arange(1, 1001) / 1000)  # 1 ms .. 1000 ms
    assert p["p50"] == pytest.approx(500.5) and p["p99"] == pytest.approx(990.01) and p["max"] == 1000
    with pytest.raises(natslab.NatslabError):
        bench.percentiles([])


def test_open_loop_sees_a_stall_the_closed_loop_hides(srv):
    async def go():
        out = {}
        async with bench.responder(srv, "t.lat"):
            nc = await nats.connect(srv.url)
            try:
                for open_loop in (True, False):
                    stall = asyncio.ensure_future(bench.stall(srv, 0.4, after=0.4))
                    lat = await bench.latencies(nc, "t.lat", rate=200, count=300, open_loop=open_loop)
                    frozen, resumed = await stall
                    out[open_loop] = (bench.percentiles(lat), (resumed - frozen) * 1e3)
            finally:
                await nc.close()
        return out
    out = asyncio.run(go())
    (open_p, froze1), (closed_p, froze2) = out[True], out[False]
    assert open_p["p99"] >= 0.6 * froze1, open_p
    assert closed_p["p99"] < 0.3 * froze2, closed_p  # coordinated omission: one slow sample in 300
    assert closed_p["max"] >= 0.6 * froze2          # ... which only the max shows


def test_latencies_and_stall_refuse_unbounded_runs(srv):
    async def go():
        with pytest.raises(natslab.NatslabError, match="more than"):
            await bench.latencies(None, "x", rate=1, count=1_000)
        with pytest.raises(natslab.NatslabError, match="stall"):
            await bench.stall(srv, 60)
    asyncio.run(go())


def test_publish_processes_counts_every_message(srv):
    before = in_msgs(srv)
    rate = asyncio.run(bench.publish_processes(srv, 2, "t.procs", 64, 4_000))
    assert rate.count == 4_000 and in_msgs(srv) - before == 4_000


def test_plots_draw_ratios_and_percentiles():
    raw = bench.Rate("raw", 1000, 8, 0.001)
    ax = bench.plot_ratios([bench.Rate("a", 100, 8, 0.001)], raw)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["raw", "a"]
    ax = bench.plot_ratios([bench.Rate("a", 100, 8, 0.001), bench.Rate("b", 50, 8, 0.001)], [raw, raw])
    assert len(ax.patches) == 2
    with pytest.raises(natslab.NatslabError):
        bench.plot_ratios([bench.Rate("a", 1, 8, 1)], [raw, raw])
    ax = bench.plot_latency({"x": np.linspace(0.001, 0.01, 100)})
    assert ax.get_legend() is not None


@pytest.mark.parametrize("ex_id", ["6.7", "6.8", "6.9"])
def test_the_lab_stub_is_not_yet_solved(ex_id):
    import natslab.grading.exercises.m06_perf  # noqa: F401

    async def stub(*args):
        raise NotImplementedError("exercise is not solved yet")
    with pytest.raises(natslab.ExerciseFailed, match="not yet solved"):
        asyncio.run(natslab.check(ex_id, stub))


def test_6_9_a_config_the_server_refuses_gets_its_error():
    import natslab.grading.exercises.m06_perf  # noqa: F401

    def tenant_limits(max_mem, max_file, max_streams):
        return {"accounts": {"APP": {"jetstream": {"max_mem": "plenty"}, "users": [{"user": "app"}]}}}
    with pytest.raises(natslab.ExerciseFailed, match="did not start with your configuration"):
        asyncio.run(natslab.check("6.9", tenant_limits))


def _startup():
    spec = importlib.util.spec_from_file_location("bench_startup", ROOT / "benchmarks" / "startup.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_startup", module)
    spec.loader.exec_module(module)
    return module


def test_bare_local_cluster_config_listens_on_loopback_only():
    text = _startup()._cluster_conf(0, 4222, 8222, [6222, 6223, 6224], "127.0.0.1", "127.0.0.1", "/tmp/x")
    assert "0.0.0.0" not in text and text.count("nats-route://127.0.0.1:") == 2 and '"127.0.0.1:6222"' in text


def test_bare_server_is_ready_and_removed():
    from natslab.runtime.backends.local import find_binary

    startup = _startup()
    bare = startup.bare_server(find_binary())
    proc = bare.procs[0]
    assert proc.poll() is None
    bare.close()
    assert proc.poll() is not None and not bare.dir.exists()
