"""Benchmarking honestly (module 06): rates as a ratio to the raw limit, latency without coordinated omission.

Every figure a machine gives depends on the machine and on what else runs on it.  So nothing here
is reported alone: ``raw_publish`` measures the raw limit of this machine and this server (a plain
socket writing the NATS protocol, ``PUB subject n\\r\\n<payload>\\r\\n``, in big pre-built buffers,
then ``PING`` and waiting for ``PONG`` so the server has it all), and every other figure is shown as
a ratio to a raw run made in the same session, back to back.

Throughput (each returns a ``Rate``): ``raw_publish`` (sync; ``raw_round_trip`` is the latency
floor, PING/PONG on a plain socket), ``publish`` (one nats-py connection,
with a flush strategy and buffer sizes to tune), ``publish_processes`` (several processes, one
connection each), ``pubsub`` (until a subscriber has every message), ``request_reply``,
``js_publish`` (JetStream, each ack awaited, or ``window=N`` acks in flight with ``publish_async``).

Latency: ``latencies(nc, subject, rate=, count=, open_loop=)`` sends requests on a fixed schedule.
Open loop (the honest way): request i is due at ``t0 + i/rate`` whatever happened before, and its
latency runs from that intended time.  Closed loop (the common mistake): each request waits for the
previous reply and its latency runs from when it was actually sent, so a stall delays the requests
that should have been sent during it and they are never measured: coordinated omission.
``stall(srv, seconds, after=)`` freezes the server for a known time to show the difference;
``percentiles`` and ``plot_latency`` read the result.  Every run is bounded in count and time, and
talks only to the server it is given (127.0.0.1).
"""
from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import socket
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Sequence
from urllib.parse import urlparse

import nats
import numpy as np

from ..errors import NatslabError
from ..runtime.waiting import until

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
MAX_SECONDS = 60.0  # no single run in this module lasts longer


# ------------------------------------------------------------------------------ results
@dataclass
class Rate:
    """``count`` messages of ``size`` bytes in ``seconds``; ``ratio(raw)`` compares with the raw limit."""
    label: str
    count: int
    size: int
    seconds: float

    @property
    def msgs_per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")

    @property
    def mb_per_s(self) -> float:
        return self.msgs_per_s * self.size / 1e6

    def ratio(self, raw: "Rate") -> float:
        return self.msgs_per_s / raw.msgs_per_s

    def __str__(self) -> str:
        return (f"{self.label}: {self.msgs_per_s:,.0f} msgs/s ({self.mb_per_s:,.1f} MB/s, "
                f"{self.count:,} x {self.size} B in {self.seconds:.3f} s)")

    __repr__ = __str__


def _url(target) -> str:
    return target if isinstance(target, str) else target.url


def _payload(payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return b"x" * payload
    if not isinstance(payload, (bytes, bytearray)):
        raise NatslabError(f"payload must be bytes or a size in bytes, not {type(payload).__name__}.",
                           "pass b'...' or an int such as 1024.")
    return bytes(payload)


def _bounded(count: int, what: str = "count") -> int:
    if not isinstance(count, int) or isinstance(count, bool) or count < 1 or count > 20_000_000:
        raise NatslabError(f"{what} must be a whole number between 1 and 20,000,000, not {count!r}.",
                           "every load in the course is bounded: pick a count.")
    return count


# ------------------------------------------------------------------------------ the raw limit
@contextlib.contextmanager
def _raw_connection(target, name: str, time_limit: float):
    """A plain socket to a server on this machine, past INFO and CONNECT (PONG received): (sock, reader)."""
    url = urlparse(_url(target))
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise NatslabError(f"the raw clients talk only to this machine, not {url.hostname}.",
                           "pass a natslab server (its url is on 127.0.0.1).")
    with socket.create_connection((url.hostname, url.port or 4222), timeout=time_limit) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = sock.makefile("rb")
        if not reader.readline().startswith(b"INFO"):
            raise NatslabError("the server did not greet with INFO.", "is that a NATS client port?")
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"name":"%s"}\r\nPING\r\n' % name.encode())
        _pong(reader)
        yield sock, reader


def raw_publish(target, subject: str = "bench.raw", payload: bytes | int = 128, count: int = 200_000,
                *, buffer_bytes: int = 1 << 20, time_limit: float = 20.0) -> Rate:
    """The raw limit: ``count`` PUBs over a plain socket, timed until the server's PONG.

    Buffers of about ``buffer_bytes`` hold many pre-built ``PUB`` commands, so the client costs
    next to nothing and the figure is what this server on this machine can take in.  Blocking;
    from a notebook run it as ``await asyncio.to_thread(bench.raw_publish, srv, ...)``.
    """
    payload, count = _payload(payload), _bounded(count)
    one = b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(payload), payload)
    per = max(1, buffer_bytes // len(one))
    block = one * per
    deadline = time.monotonic() + time_limit
    with _raw_connection(target, "raw-publisher", time_limit) as (sock, reader):
        sent, t0 = 0, time.perf_counter()
        while sent + per <= count:
            sock.sendall(block)
            sent += per
            if time.monotonic() > deadline:
                break
        if sent < count and time.monotonic() <= deadline:
            sock.sendall(one * (count - sent))
            sent = count
        sock.sendall(b"PING\r\n")
        _pong(reader)
        seconds = time.perf_counter() - t0
    return Rate("raw socket (the limit)", sent, len(payload), seconds)


def _pong(reader) -> None:
    while True:
        line = reader.readline()
        if not line:
            raise NatslabError("the server closed the raw connection.", "read srv.logs() for why.")
        if line.startswith(b"PONG"):
            return
        if line.startswith(b"-ERR"):
            raise NatslabError(f"the server refused the raw publisher: {line.decode().strip()}",
                               "raw_publish needs a server without authentication.")


def raw_round_trip(target, count: int = 2_000, *, time_limit: float = 20.0) -> np.ndarray:
    """The raw latency floor: ``count`` PING/PONG round trips over a plain socket, in seconds each.

    The least any request through this server can take on this machine; request latencies are
    shown as multiples of it.  Blocking (run it with asyncio.to_thread from a notebook).
    """
    count = _bounded(count)
    out = np.empty(count)
    deadline = time.monotonic() + time_limit
    with _raw_connection(target, "raw-pinger", time_limit) as (sock, reader):
        for i in range(count):
            t = time.perf_counter()
            sock.sendall(b"PING\r\n")
            _pong(reader)
            out[i] = time.perf_counter() - t
            if time.monotonic() > deadline:
                return out[: i + 1]
    return out


# ------------------------------------------------------------------------------ nats-py throughput
async def publish(target, subject: str = "bench.py", payload: bytes | int = 128, count: int = 100_000, *,
                  flush_every: int | None = None, label: str | None = None, **connect_options) -> Rate:
    """One nats-py connection publishing ``count`` messages, then one flush (or one every ``flush_every``).

    ``connect_options`` go to ``nats.connect`` (``pending_size``, ``flusher_queue_size``, ...).
    The clock stops when the final flush returns.
    """
    payload, count = _payload(payload), _bounded(count)
    nc = await nats.connect(_url(target), **connect_options)
    try:
        pub = nc.publish
        t0 = time.perf_counter()
        if flush_every:
            for i in range(1, count + 1):
                await pub(subject, payload)
                if i % flush_every == 0:
                    await nc.flush()
        else:
            for _ in range(count):
                await pub(subject, payload)
        await nc.flush()
        seconds = time.perf_counter() - t0
    finally:
        await nc.close()
    name = label or ("nats-py publish" + (f", flush every {flush_every}" if flush_every else ", one flush"))
    return Rate(name, count, len(payload), seconds)


def _process_publisher(url: str, subject: str, payload: bytes, count: int, start_at: float,
                       options: dict) -> tuple[float, float]:
    """One publisher process (module level, so a spawned process can import it)."""
    async def go():
        nc = await nats.connect(url, **options)
        try:
            while time.time() < start_at:
                await asyncio.sleep(0.001)
            pub, t0 = nc.publish, time.time()
            for _ in range(count):
                await pub(subject, payload)
            await nc.flush()
            return t0, time.time()
        finally:
            await nc.close()
    return asyncio.run(go())


async def publish_processes(target, processes: int = 2, subject: str = "bench.procs",
                            payload: bytes | int = 128, count: int = 100_000, **connect_options) -> Rate:
    """``processes`` Python processes, one connection each, ``count`` messages in all.

    They start together (a shared start time, after the interpreters are up), and the rate is
    every message over the time from the first start to the last flush.
    """
    payload, count = _payload(payload), _bounded(count)
    if not isinstance(processes, int) or not 1 <= processes <= 8:
        raise NatslabError(f"processes must be 1 to 8, not {processes!r}.", "this machine has few cores.")
    each = count // processes
    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context("spawn")  # notebooks and threads: never fork
    with ProcessPoolExecutor(processes, mp_context=ctx) as pool:
        await asyncio.gather(*[loop.run_in_executor(pool, abs, 0) for _ in range(processes)])  # warm up
        start_at = time.time() + 0.3
        jobs = [loop.run_in_executor(pool, _process_publisher, _url(target), subject, payload, each,
                                     start_at, connect_options) for _ in range(processes)]
        spans = await asyncio.wait_for(asyncio.gather(*jobs), MAX_SECONDS)
    seconds = max(e for _, e in spans) - min(s for s, _ in spans)
    return Rate(f"{processes} processes, nats-py", each * processes, len(payload), seconds)


async def pubsub(target, subject: str = "bench.ps", payload: bytes | int = 128, count: int = 50_000,
                 **connect_options) -> Rate:
    """Publish ``count`` messages; the clock stops when a subscriber (another connection) has them all."""
    payload, count = _payload(payload), _bounded(count)
    url = _url(target)
    sub_nc = await nats.connect(url)
    pub_nc = await nats.connect(url, **connect_options)
    got = 0
    done = asyncio.Event()

    async def on_msg(_msg):
        nonlocal got
        got += 1
        if got >= count:
            done.set()
    try:
        await sub_nc.subscribe(subject, cb=on_msg, pending_msgs_limit=count + 1, pending_bytes_limit=-1)
        await sub_nc.flush()
        await _wait_interest(target, subject)
        t0 = time.perf_counter()
        for _ in range(count):
            await pub_nc.publish(subject, payload)
        await pub_nc.flush()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(done.wait(), MAX_SECONDS)
        seconds = time.perf_counter() - t0
    finally:
        await pub_nc.close()
        await sub_nc.close()
    return Rate("publish/subscribe (all received)", got, len(payload), seconds)


async def _wait_interest(target, subject: str) -> None:
    """The server routes ``subject`` to a subscriber (its own /subsz), when we know the server."""
    if hasattr(target, "monitor"):
        await until(lambda: target.monitor("subsz", subs=1, test=subject).get("total"),
                    f"a subscriber on {subject}", timeout=5)


@contextlib.asynccontextmanager
async def responder(target, subject: str = "bench.echo"):
    """A service on its own connection that answers every request on ``subject`` with its data."""
    nc = await nats.connect(_url(target))

    async def echo(msg):
        await nc.publish(msg.reply, msg.data)
    try:
        await nc.subscribe(subject, cb=echo, pending_msgs_limit=-1, pending_bytes_limit=-1)
        await nc.flush()
        await _wait_interest(target, subject)
        yield nc
    finally:
        await nc.close()


async def request_reply(target, subject: str = "bench.rr", payload: bytes | int = 128, count: int = 5_000,
                        *, in_flight: int = 1) -> tuple[Rate, np.ndarray]:
    """``count`` requests, ``in_flight`` at a time, to an echo responder; the rate and each latency (s)."""
    payload, count = _payload(payload), _bounded(count)
    lat = np.empty(count)
    async with responder(target, subject):
        nc = await nats.connect(_url(target))
        try:
            await nc.request(subject, payload, timeout=5)  # warm the response subscription
            index = iter(range(count))

            async def worker():
                for i in index:
                    t = time.perf_counter()
                    await nc.request(subject, payload, timeout=10)
                    lat[i] = time.perf_counter() - t
            t0 = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(*[worker() for _ in range(in_flight)]), MAX_SECONDS)
            seconds = time.perf_counter() - t0
        finally:
            await nc.close()
    name = "request/reply" + (f", {in_flight} in flight" if in_flight > 1 else ", one at a time")
    return Rate(name, count, len(payload), seconds), lat


async def js_publish(target, payload: bytes | int = 128, count: int = 5_000, *, window: int | None = None,
                     stream: str = "BENCH") -> Rate:
    """JetStream publishes into a memory stream: each ack awaited, or ``window`` acks in flight.

    ``window=N`` uses ``publish_async`` with ``jetstream(publish_async_max_pending=N)``: at most N
    publishes wait for their ack, and ``publish_async_completed()`` waits for the last ones.  The
    stream is created for the run and deleted afterwards.
    """
    payload, count = _payload(payload), _bounded(count)
    nc = await nats.connect(_url(target))
    subject = f"{stream.lower()}.in"
    try:
        js = nc.jetstream(publish_async_max_pending=window or 1)
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)
        await js.add_stream(name=stream, subjects=[subject], storage="memory")
        t0 = time.perf_counter()
        if window:
            futures = [await js.publish_async(subject, payload) for _ in range(count)]
            await asyncio.wait_for(js.publish_async_completed(), MAX_SECONDS)
            for f in futures:
                f.result()  # a refused publish raises here
        else:
            for _ in range(count):
                await js.publish(subject, payload)
        seconds = time.perf_counter() - t0
        stored = (await js.stream_info(stream)).state.messages
        if stored != count:
            raise NatslabError(f"the stream holds {stored} of {count} messages.", "look at the stream's limits.")
        await js.delete_stream(stream)
    finally:
        await nc.close()
    name = "JetStream publish, " + (f"async, {window} in flight" if window else "each ack awaited")
    return Rate(name, count, len(payload), seconds)


# ------------------------------------------------------------------------------ latency
async def latencies(nc, subject: str, *, rate: float, count: int, open_loop: bool = True,
                    payload: bytes = b"ping", timeout: float = 10.0) -> np.ndarray:
    """Request latencies in seconds at ``rate`` requests per second on the connection ``nc``.

    open_loop=True: request i is sent at its intended time ``t0 + i/rate`` (its own task, whatever
    the earlier ones are doing) and its latency is measured from that intended time.
    open_loop=False: the classic closed loop: wait for each reply before the next request, and
    measure from the actual send, which hides every stall (coordinated omission).
    """
    count = _bounded(count)
    if not rate > 0 or count / rate > MAX_SECONDS:
        raise NatslabError(f"rate {rate!r} with count {count} would run for more than {MAX_SECONDS:g} s.",
                           "lower count or raise rate.")
    loop = asyncio.get_running_loop()
    out = np.empty(count)
    t0 = loop.time() + 0.01

    async def one(i: int, intended: float):
        await nc.request(subject, payload, timeout=timeout)
        out[i] = loop.time() - intended

    if open_loop:
        tasks = []
        for i in range(count):
            intended = t0 + i / rate
            delay = intended - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(i, intended)))
        await asyncio.gather(*tasks)
    else:
        for i in range(count):
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await one(i, loop.time())  # measured from the actual send: the mistake, on purpose
    return out


def percentiles(samples: Sequence[float], unit: float = 1e3, at: Iterable[float] = PERCENTILES) -> dict:
    """{"p50": ..., "p90": ..., "p99": ..., "p99.9": ..., "max": ...} in milliseconds (unit=1e3)."""
    arr = np.asarray(samples, dtype=float)
    if arr.size == 0:
        raise NatslabError("no samples to take percentiles of.", "run a measurement first.")
    out = {f"p{p:g}": float(np.percentile(arr, p)) * unit for p in at}
    out["max"] = float(arr.max()) * unit
    return out


async def stall(srv, seconds: float, *, after: float = 0.0) -> tuple[float, float]:
    """Freeze ``srv`` for ``seconds`` (after ``after`` s); returns (frozen from, resumed at) loop times."""
    if not 0 < seconds <= 5:
        raise NatslabError(f"a stall of {seconds!r} s is not allowed.", "stall between 0 and 5 seconds.")
    loop = asyncio.get_running_loop()
    await asyncio.sleep(after)
    await asyncio.to_thread(srv.pause)
    frozen = loop.time()
    try:
        await asyncio.sleep(seconds)
    finally:
        await asyncio.to_thread(srv.resume)
    return frozen, loop.time()


# ------------------------------------------------------------------------------ plots
def plot_ratios(rates: Sequence[Rate], raw: "Rate | Sequence[Rate]", *, title: str = "", ax=None):
    """Horizontal bars: each rate as a share of the raw limit, labelled with msgs/s.

    ``raw`` is one raw run for all, or one per rate (each measured right before it).
    """
    import matplotlib.pyplot as plt

    raws = [raw] * len(rates) if isinstance(raw, Rate) else list(raw)
    if len(raws) != len(rates):
        raise NatslabError("plot_ratios needs one raw run, or one per rate.", "pass raw=[...] of the same length.")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.45 * (len(rates) + 1) + 1))
    rows = ([raws[0]] if isinstance(raw, Rate) else []) + list(rates)
    ratios = ([1.0] if isinstance(raw, Rate) else []) + [r.ratio(q) for r, q in zip(rates, raws)]
    colors = (["#888"] if isinstance(raw, Rate) else []) + ["#1f77b4"] * len(rates)
    bars = ax.barh(range(len(rows)), ratios, color=colors)
    ax.set_yticks(range(len(rows)), [r.label for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, max(1.15, max(ratios) * 1.15))
    ax.axvline(1.0, color="#888", lw=1, ls="--")
    for bar, r, q in zip(bars, rows, ratios):
        ax.text(bar.get_width() + 0.01, bar.get_y() + bar.get_height() / 2,
                f"{q:.1%}  ({r.msgs_per_s:,.0f}/s)", va="center", fontsize=8)
    ax.set_xlabel("share of the raw limit measured in the same run")
    ax.set_title(title or f"{raws[0].size}-byte messages, raw limit {raws[0].msgs_per_s:,.0f} msgs/s")
    plt.tight_layout()
    return ax


def plot_latency(runs: dict[str, Sequence[float]], *, title: str = "", ax=None, unit: float = 1e3):
    """Latency by percentile (the HdrHistogram way: the tail spread out on a log axis), in ms."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    for label, samples in runs.items():
        arr = np.sort(np.asarray(samples, dtype=float)) * unit
        q = (np.arange(arr.size) + 0.5) / arr.size
        ax.plot(1.0 / (1.0 - q), arr, label=label)
    ax.set_xscale("log")
    ticks = [2, 10, 100, 1000]
    ax.set_xticks(ticks, ["p50", "p90", "p99", "p99.9"])
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title or "request latency by percentile")
    ax.legend()
    plt.tight_layout()
    return ax
