"""Module 06 monitoring helpers against real servers and a real Prometheus: the fleet exporter,
the Prometheus process and its clean-up, promtool and natslab's evaluator agreeing, the stalled
subscriber."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import nats
import pytest

import natslab
from natslab.lessons import fleet, monitoring, prometheus
from natslab.lessons.fanout import RawClient
from natslab.runtime import session

ACCOUNTS = {"accounts": {"SYS": {"users": [{"user": "sys", "password": "sys"}]},
                         "APP": {"jetstream": "enabled", "users": [{"user": "app", "password": "app"}]}},
            "system_account": "SYS"}
needs_prometheus = pytest.mark.skipif(not prometheus.available(),
                                      reason="Prometheus/promtool not installed (apt-get install prometheus)")

SERIES = {
    'gnatsd_varz_slow_consumers{server_id="a"}': "0x2 2x27",
    'gnatsd_varz_slow_consumers{server_id="b"}': "0x13 1 3x16",
    'gnatsd_varz_slow_consumers{server_id="c"}': "5x9 0x20",
}
EXPRESSIONS = [
    "increase(gnatsd_varz_slow_consumers[5m]) > 0",
    "sum by (server_id) (increase(gnatsd_varz_slow_consumers[5m])) > 0",
    "gnatsd_varz_slow_consumers > 0",
    "delta(gnatsd_varz_slow_consumers[5m]) != 0",
    "changes(gnatsd_varz_slow_consumers[5m]) > 0",
    "rate(gnatsd_varz_slow_consumers[5m]) > 0.005",
    "increase(gnatsd_varz_slow_consumers[1m]) > 0",
    "max(increase(gnatsd_varz_slow_consumers[5m])) > 0",
    'gnatsd_varz_slow_consumers{server_id="c"} >= 5',
]


def test_series_notation():
    assert prometheus.expand("0x3 5 5+1x2 _") == [0, 0, 0, 0, 5, 5, 6, 7, None]


def test_evaluator_refuses_what_it_does_not_know():
    with pytest.raises(prometheus.Unsupported):
        prometheus.evaluate("histogram_quantile(0.9, x)", SERIES, "5m")
    with pytest.raises(prometheus.Unsupported):
        prometheus.evaluate("x > bool 1", SERIES, "5m")


@needs_prometheus
@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_evaluator_agrees_with_promtool(expr):
    for at in ("4m", "12m", "16m", "25m"):
        mine = [{"alertname": "NatslabAlert", **labels} for labels in prometheus.alerts_at(expr, SERIES, at)]
        result = prometheus.test_rules(expr, SERIES, [(at, [{k: v for k, v in m.items() if k != "alertname"}
                                                            for m in mine])])[0]
        assert result["ok"], f"{expr} at {at}: natslab says {mine}, promtool says {result['got']}"


@needs_prometheus
def test_promtool_rejects_bad_promql():
    with pytest.raises(ValueError):
        prometheus.test_rules("slow consumers went up", SERIES, [("5m", [])])


def _fleet_cluster(backend):
    return natslab.cluster(3, name="f6", config=ACCOUNTS, backend=backend)


def test_fleet_polls_every_server_and_exports_the_leaders_figures(backend):
    c = _fleet_cluster(backend)

    async def go():
        app = await nats.connect(c.servers[0].url, user="app", password="app")
        sys_nc = await nats.connect(c.servers[1].url, user="sys", password="sys")
        try:
            js = app.jetstream(timeout=15)
            await js.add_stream(name="F", subjects=["f.>"], num_replicas=3)

            async def has_leader():
                return (await js.stream_info("F")).cluster.leader
            await natslab.until(has_leader, "the stream's leader elected", timeout=30, retry=(Exception,))
            for i in range(7):
                await js.publish("f.x", b"%d" % i)
            await js.pull_subscribe("f.>", durable="reader", stream="F")
            f = fleet.Fleet(sys_nc)
            snap = await natslab.until(lambda: _complete(f), "a snapshot of all 3 servers", timeout=20)
            assert sorted(snap["varz"]) == sorted(s.name for s in c.servers)
            text = f.exposition()
            for s in c.servers:
                assert f'gnatsd_varz_connections{{cluster="f6",server_id="{s.name}"}}' in text
            pending = [l for l in text.splitlines() if l.startswith("jetstream_consumer_num_pending{")]
            assert len(pending) == 1 and pending[0].endswith(" 7.0"), pending  # the leader's figure, once
            target = await f.serve()
            import urllib.request
            with urllib.request.urlopen(f"http://{target}/metrics", timeout=5) as r:
                assert b"gnatsd_varz_slow_consumers" in r.read()
            await f.close()
        finally:
            await app.close()
            await sys_nc.close()

    async def _complete(f):
        snap = await f.poll()
        return len(snap["varz"]) == 3 and len(snap["jsz"]) == 3 and snap
    try:
        asyncio.run(go())
    finally:
        c.close()


@needs_prometheus
def test_prometheus_scrapes_fires_and_is_stopped_by_stop_all():
    c = natslab.cluster(3, name="p6", config=ACCOUNTS, backend="local")

    async def go():
        sys_nc = await nats.connect(c.servers[0].url, user="sys", password="sys")
        f = fleet.Fleet(sys_nc)
        target = await f.serve()
        prom = prometheus.prometheus([target], [{"alert": "Few", "expr": "count(gnatsd_varz_connections) < 3",
                                                 "for": "0s"}])
        try:
            await asyncio.to_thread(prometheus.wait_scraped, prom)
            assert len(prom.query("gnatsd_varz_connections")) == 3
            c.servers[2].kill()
            await natslab.until(lambda: any(a["state"] == "firing" for a in prom.alerts()), "the alert firing",
                                timeout=30, retry=(OSError,))
            return prom
        finally:
            await f.close()
            await sys_nc.close()
    prom = asyncio.run(go())
    pid = prom.proc.pid
    natslab.stop_all()
    assert prom.proc.poll() is not None and not os.path.exists(f"/proc/{pid}")
    assert prom.id not in [g.id for g in session.groups()]


@needs_prometheus
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to see the process gone")
def test_prometheus_dies_with_a_killed_kernel(tmp_path):
    script = textwrap.dedent("""
        import sys, time
        from natslab.lessons import prometheus
        p = prometheus.prometheus(["127.0.0.1:9"])
        print(p.proc.pid, flush=True)
        time.sleep(60)
    """)
    kernel = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(kernel.stdout.readline())
        assert os.path.exists(f"/proc/{pid}")
        kernel.send_signal(signal.SIGKILL)
        kernel.wait(10)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), "Prometheus outlived the process that started it"
    finally:
        if kernel.poll() is None:
            kernel.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_raw_client_that_stops_reading_is_cut_off_as_a_slow_consumer(backend):
    srv = natslab.server("slow6", jetstream=False, backend=backend,
                         config={"max_pending": 256 * 1024, "max_payload": 64 * 1024})

    async def go():
        sock = await asyncio.to_thread(RawClient, srv, "s.>", "stuck")
        nc = await natslab.connect(srv, quiet=True)
        try:
            for _ in range(200):
                for _ in range(50):
                    await nc.publish("s.x", b"x" * 8192)
                await nc.flush()
                closed = monitoring.connz_table(srv, state="closed")
                if any(c["name"] == "stuck" for c in closed):
                    break
            row = next(c for c in monitoring.connz_table(srv, state="closed") if c["name"] == "stuck")
            assert row["reason"].startswith("Slow Consumer")
            assert srv.monitor("varz")["slow_consumers"] == 1
        finally:
            sock.close()
            await nc.close()
    try:
        asyncio.run(go())
    finally:
        srv.group.close()


def test_m06_exercises_are_registered_with_three_hint_levels():
    from natslab.grading import checks

    for ex in ("6.1", "6.2", "6.3", "6.4", "6.5", "6.6"):
        assert len(checks.lookup(ex).hints) >= 3


def test_ping_gathers_until_quiet():
    async def go():
        srv = natslab.server("ping6", jetstream=False, config=ACCOUNTS, backend="local")
        try:
            nc = await nats.connect(srv.url, user="sys", password="sys")
            try:
                replies = await fleet.ping(nc, "HEALTHZ", quiet=0.3)
                assert list(replies) == ["ping6"] and replies["ping6"]["status"] == "ok"
                assert json.dumps(replies)
            finally:
                await nc.close()
        finally:
            srv.group.close()
    asyncio.run(go())


def test_alert_rule_check_works_without_promtool(monkeypatch):
    """Exercise 6.5 where Prometheus is not installed: natslab's evaluator gives the same verdicts."""
    monkeypatch.setattr(prometheus, "binary", lambda name="prometheus": None)
    verdict = asyncio.run(natslab.check("6.5", lambda: "increase(gnatsd_varz_slow_consumers[5m]) > 0"))
    assert verdict.passed and "natslab's evaluator" in verdict.text()
    for wrong, says in (("gnatsd_varz_slow_consumers > 0", "n1"), ("delta(gnatsd_varz_slow_consumers[5m]) != 0", "n3"),
                        ("histogram_quantile(0.9, gnatsd_varz_slow_consumers)", "install Prometheus")):
        with pytest.raises(natslab.ExerciseFailed, match=says):
            asyncio.run(natslab.check("6.5", lambda: wrong))
