"""Messaging performance, every figure as a ratio to the raw limit measured in the same run.

    .venv/bin/python benchmarks/perf.py [--backend local|docker]     (./course bench runs it too)

- the raw limit: a raw-socket publisher writing pre-built ``PUB`` commands, timed until the
  server's PONG (lessons.bench.raw_publish), measured before and after the others;
- nats-py publish, publish/subscribe, request/reply, JetStream publish (each ack awaited, and
  publish_async with 256 acks in flight), as ratios to that limit;
- p50/p99 request latency (open loop, a fixed schedule of 500/s), as multiples of the raw round
  trip (PING/PONG on a plain socket);
- the best tuned Python publisher (the tuning of lesson 06.7), as a ratio to its own raw runs.

Every run is bounded in count and time, talks to 127.0.0.1 only, and the server is removed at the
end.  Figures are printed, never asserted: they depend on the machine and on what else runs on it,
which is why each one is a ratio to a raw run made moments before.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

PAYLOAD = 128


def _ratio_line(label: str, rate, raw) -> str:
    return f"  {label:<46} {rate.msgs_per_s:>12,.0f} msgs/s   {rate.ratio(raw):7.2%} of raw"


async def _tuned(srv, bench) -> tuple[str, float]:
    """The best of a few tuned publishers (one connection, one flush), each vs its own raw runs."""
    best = ("", 0.0)
    for size in (1024, 4096):
        for _ in range(2):
            raw1 = await asyncio.to_thread(bench.raw_publish, srv, "bench.raw", size, 100_000)
            rate = await bench.publish(srv, "bench.tuned", size, 30_000)
            raw2 = await asyncio.to_thread(bench.raw_publish, srv, "bench.raw", size, 100_000)
            ratio = rate.msgs_per_s / max(raw1.msgs_per_s, raw2.msgs_per_s)
            if ratio > best[1]:
                best = (f"{size} B, one connection, one flush: {rate.msgs_per_s:,.0f} msgs/s", ratio)
    return best


async def run(backend: str | None = None) -> list[str]:
    import nats

    import natslab
    from natslab.lessons import bench

    srv = await asyncio.to_thread(natslab.server, "perf", backend=backend)
    lines = [f"messaging on the {srv.backend} backend ({PAYLOAD} B messages unless stated)"]
    try:
        raw = await asyncio.to_thread(bench.raw_publish, srv, "bench.raw", PAYLOAD, 1_000_000)
        rates = [("nats-py publish, one flush", await bench.publish(srv, "bench.py", PAYLOAD, 100_000)),
                 ("publish/subscribe, until all received", await bench.pubsub(srv, "bench.ps", PAYLOAD, 50_000)),
                 ("request/reply, one at a time", (await bench.request_reply(srv, "bench.rr", PAYLOAD, 3_000))[0]),
                 ("JetStream publish, each ack awaited", await bench.js_publish(srv, PAYLOAD, 3_000)),
                 ("JetStream publish_async, 256 in flight", await bench.js_publish(srv, PAYLOAD, 20_000, window=256))]
        raw_after = await asyncio.to_thread(bench.raw_publish, srv, "bench.raw", PAYLOAD, 1_000_000)
        raw = max(raw, raw_after, key=lambda r: r.msgs_per_s)  # the stricter ratio
        lines.append(f"  {'raw-socket publish (the limit; best of 2 runs)':<46} {raw.msgs_per_s:>12,.0f} msgs/s   100.00%")
        lines += [_ratio_line(label, rate, raw) for label, rate in rates]

        floor = await asyncio.to_thread(bench.raw_round_trip, srv, 2_000)
        async with bench.responder(srv, "bench.lat"):
            nc = await nats.connect(srv.url)
            try:
                lat = await bench.latencies(nc, "bench.lat", rate=500, count=2_000, open_loop=True)
            finally:
                await nc.close()
        raw_p = bench.percentiles(floor)
        got = bench.percentiles(lat)
        for p in ("p50", "p99"):
            lines.append(f"  {'request latency ' + p + ' (open loop, 500/s)':<46} {got[p]:>9.3f} ms        "
                         f"{got[p] / raw_p[p]:6.1f} x the raw round trip ({raw_p[p]:.3f} ms)")
        label, ratio = await _tuned(srv, bench)
        lines.append(f"  {'best tuned Python publisher':<46} {label}: {ratio:.1%} of raw")
    finally:
        await asyncio.to_thread(srv.close)
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("local", "docker"), default=None, help="default: natslab's choice")
    args = ap.parse_args()
    os.environ.setdefault("NATSLAB_QUIET", "1")
    t0 = time.perf_counter()
    for line in asyncio.run(run(args.backend)):
        print(line, flush=True)
    print(f"  ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
