"""A fleet view like NATS Surveyor: poll every server of a cluster through the system account and
export what they say as Prometheus metrics.

One request on ``$SYS.REQ.SERVER.PING.<WHAT>`` (VARZ, JSZ, HEALTHZ, STATSZ, CONNZ ...) made by a
system-account user is answered by *every* server the request reaches; ``Fleet.ping`` gathers
replies until none has come for ``quiet`` seconds.  ``Fleet.poll`` takes one snapshot of the
fleet (varz + jsz with accounts, streams and consumers), ``Fleet.serve`` exposes the latest
snapshot on ``http://127.0.0.1:<port>/metrics`` with prometheus_client, refreshing it every
``every`` seconds.

Metric names follow the official prometheus-nats-exporter (github.com/nats-io/prometheus-nats-exporter):
``gnatsd_varz_<field>`` for /varz fields (``gnatsd_varz_connections``, ``gnatsd_varz_in_msgs``,
``gnatsd_varz_slow_consumers`` ...), ``jetstream_server_*`` for a server's JetStream totals and
``jetstream_stream_*`` / ``jetstream_consumer_*`` per stream and consumer
(``jetstream_consumer_num_pending``, ``jetstream_consumer_num_ack_pending`` ...).  The label
``server_id`` carries the server's *name* (the exporter puts its configured id or URL there), and
stream/consumer metrics carry ``account``, ``stream_name`` and ``consumer_name`` as the exporter's
do.  Every figure is exposed as a gauge, without the ``_total`` suffix prometheus_client would add
to a counter, so the names stay the exporter's.
"""
from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

VARZ_FIELDS = ("connections", "total_connections", "subscriptions", "slow_consumers", "in_msgs", "out_msgs",
               "in_bytes", "out_bytes", "mem", "cpu", "routes", "remotes", "leafnodes")
JS_SERVER_FIELDS = {"streams": "total_streams", "consumers": "total_consumers", "messages": "total_messages",
                    "bytes": "total_message_bytes", "memory": "memory_used", "storage": "storage_used"}
CONSUMER_FIELDS = ("num_pending", "num_ack_pending", "num_redelivered", "num_waiting")


async def ping(nc, what: str, options: dict | None = None, *, quiet: float = 0.5, limit: float = 5.0) -> dict[str, dict]:
    """``$SYS.REQ.SERVER.PING.<what>`` from a system-account connection: {server name: data}.

    Gathers replies until none has come for ``quiet`` seconds (or ``limit`` seconds in all); a
    server that is down simply does not answer.
    """
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    replies: dict[str, dict] = {}
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    try:
        await nc.publish(f"$SYS.REQ.SERVER.PING.{what.upper()}", json.dumps(options or {}).encode(), reply=inbox)
        while loop.time() < end:
            try:
                msg = await sub.next_msg(timeout=quiet)
            except Exception:  # nats.errors.TimeoutError: nobody else is answering
                break
            reply = json.loads(msg.data)
            name = (reply.get("server") or {}).get("name", "?")
            replies[name] = reply.get("data", reply.get("statsz", reply))
    finally:
        await sub.unsubscribe()
    return replies


def _leader(asset: dict) -> str | None:
    return (asset.get("cluster") or {}).get("leader")


def _keep(chosen: dict, key: tuple, server: str, asset: dict) -> None:
    """Keep the leader's report of an asset (or the only report of a standalone server's)."""
    leader = _leader(asset)
    if leader == server or (leader is None and not asset.get("cluster") and key not in chosen):
        chosen[key] = (server, asset)


class Fleet:
    """What every server of a cluster says, through one system-account connection ``nc``."""

    def __init__(self, nc, *, quiet: float = 1.0):
        self.nc = nc
        self.quiet = quiet
        self.snapshot: dict[str, Any] = {"varz": {}, "jsz": {}}
        self._lock = threading.Lock()
        self._task: asyncio.Task | None = None
        self._http = None
        self.port: int | None = None

    async def ping(self, what: str, options: dict | None = None) -> dict[str, dict]:
        return await ping(self.nc, what, options, quiet=self.quiet)

    async def poll(self) -> dict[str, Any]:
        """One snapshot: {"varz": {server: varz}, "jsz": {server: jsz with accounts, streams, consumers}}."""
        varz, jsz = await asyncio.gather(
            self.ping("VARZ"),
            self.ping("JSZ", {"accounts": True, "streams": True, "consumer": True}))
        snap = {"varz": varz, "jsz": jsz}
        with self._lock:
            self.snapshot = snap
        return snap

    def table(self) -> list[dict]:
        """One row per server of the latest snapshot: the figures an operator looks at first."""
        rows = []
        with self._lock:
            varz, jsz = self.snapshot["varz"], self.snapshot["jsz"]
        for name in sorted(varz):
            v, j = varz[name], jsz.get(name) or {}
            rows.append({"server": name, "cluster": (v.get("cluster") or {}).get("name", ""),
                         "connections": v.get("connections"), "subscriptions": v.get("subscriptions"),
                         "slow_consumers": v.get("slow_consumers"), "in_msgs": v.get("in_msgs"),
                         "out_msgs": v.get("out_msgs"), "mem_mib": round((v.get("mem") or 0) / 2**20, 1),
                         "streams": j.get("streams"), "consumers": j.get("consumers")})
        return rows

    # -- Prometheus ---------------------------------------------------------------------------
    def collect(self):
        """prometheus_client's collector protocol: metric families from the latest snapshot."""
        from prometheus_client.core import GaugeMetricFamily

        with self._lock:
            varz, jsz = self.snapshot["varz"], self.snapshot["jsz"]
        core = {f: GaugeMetricFamily(f"gnatsd_varz_{f}", f"/varz {f}", labels=["server_id", "cluster"])
                for f in VARZ_FIELDS}
        for name, v in varz.items():
            cluster = (v.get("cluster") or {}).get("name", "")
            for f in VARZ_FIELDS:
                if isinstance(v.get(f), (int, float)):
                    core[f].add_metric([name, cluster], float(v[f]))
        yield from core.values()
        server = {f: GaugeMetricFamily(f"jetstream_server_{m}", f"/jsz {f}", labels=["server_id"])
                  for f, m in JS_SERVER_FIELDS.items()}
        stream_msgs = GaugeMetricFamily("jetstream_stream_total_messages", "messages in the stream",
                                        labels=["server_id", "account", "stream_name"])
        stream_bytes = GaugeMetricFamily("jetstream_stream_total_bytes", "bytes in the stream",
                                         labels=["server_id", "account", "stream_name"])
        consumer = {f: GaugeMetricFamily(f"jetstream_consumer_{f}", f"consumer {f}",
                                         labels=["server_id", "account", "stream_name", "consumer_name"])
                    for f in CONSUMER_FIELDS}
        streams: dict[tuple, tuple] = {}
        consumers: dict[tuple, tuple] = {}
        for name, j in jsz.items():
            for f in JS_SERVER_FIELDS:
                if isinstance(j.get(f), (int, float)):
                    server[f].add_metric([name], float(j[f]))
            for acc in j.get("account_details") or []:
                for s in acc.get("stream_detail") or []:
                    _keep(streams, (acc.get("name", ""), s["name"]), name, s)
                    for c in s.get("consumer_detail") or []:
                        _keep(consumers, (acc.get("name", ""), s["name"], c["name"]), name, c)
        # every replica reports; only the leader's figures are current (followers show 0 pending for
        # consumers), so export each stream and consumer once, from its leader
        for (account, stream), (name, s) in streams.items():
            state = s.get("state") or {}
            stream_msgs.add_metric([name, account, stream], float(state.get("messages", 0)))
            stream_bytes.add_metric([name, account, stream], float(state.get("bytes", 0)))
        for (account, stream, cname), (name, c) in consumers.items():
            for f in CONSUMER_FIELDS:
                consumer[f].add_metric([name, account, stream, cname], float(c.get(f) or 0))
        yield from server.values()
        yield stream_msgs
        yield stream_bytes
        yield from consumer.values()

    def exposition(self) -> str:
        """The /metrics text Prometheus scrapes, from the latest snapshot."""
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry()
        registry.register(self)
        return generate_latest(registry).decode()

    async def serve(self, port: int | None = None, every: float = 1.0) -> str:
        """Serve /metrics on 127.0.0.1 and refresh the snapshot every ``every`` s; returns ``host:port``."""
        from prometheus_client import CollectorRegistry, start_http_server

        from ..runtime import ports as portlib

        await self.poll()
        registry = CollectorRegistry()
        registry.register(self)
        self.port = port or portlib.reserve(1)[0]
        self._http = start_http_server(self.port, addr="127.0.0.1", registry=registry)

        async def refresh():
            while True:
                await asyncio.sleep(every)
                try:
                    await self.poll()
                except Exception:  # a poll during a failover: keep the last snapshot, try again
                    pass
        self._task = asyncio.ensure_future(refresh())
        return f"127.0.0.1:{self.port}"

    async def close(self) -> None:
        """Stop refreshing and serving (the connection stays the caller's)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        if self._http is not None:
            server, thread = self._http if isinstance(self._http, tuple) else (self._http, None)
            server.shutdown()
            server.server_close()
            self._http = None
            from ..runtime import ports as portlib
            portlib.release([self.port])
