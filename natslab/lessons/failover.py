"""Measure what survives a fault: acknowledged publishing, counting, leader changes, a plot.

``publish_through_fault(js, subject, 10_000, fault=srv.kill, fault_after=3_000)`` publishes
numbered messages in concurrent batches, each with a ``Nats-Msg-Id`` so a retried message is
stored once; every message is retried (bounded) until the stream acknowledges it, and its
latency and attempts are recorded.  The fault runs in a thread while publishing goes on.
``count_in_stream`` then reads the stream back and names any message that is missing or
doubled; ``PublishRun.summary()`` gives the figures and ``PublishRun.plot()`` the latency over
time, with the fault and the longest pause marked.

``SteadyPublisher`` keeps publishing in the background while you do something else (a rolling
restart); ``wait_for_leader`` and ``wait_until_current`` wait on the stream's own cluster info;
``isolate``/``rejoin`` cut a server off its peers on Docker and freeze it on the local backend.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, Placement, StorageType, StreamConfig

from ..runtime.client import connect
from ..runtime.waiting import until
from ..errors import NotSupported

RETRYABLE = (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError,
             nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError,
             nats.errors.OutboundBufferLimitError, asyncio.TimeoutError)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, RETRYABLE + (nats.js.errors.ServiceUnavailableError,)):
        return True
    # 503: "JetStream system temporarily unavailable" / no leader yet; 500s during an election
    return isinstance(exc, nats.js.errors.APIError) and (exc.code or 0) >= 500


@dataclass
class Record:
    """One message: when it was first sent and acknowledged (seconds since the run began)."""
    index: int
    sent: float
    acked: float | None = None
    attempts: int = 0
    seq: int | None = None
    duplicate: bool = False
    error: str = ""

    @property
    def latency(self) -> float | None:
        return None if self.acked is None else self.acked - self.sent


@dataclass
class PublishRun:
    subject: str
    run_id: str
    records: list[Record] = field(default_factory=list)
    started_wall: float = 0.0  # time.time() at t=0, to compare with server timestamps
    fault_label: str = ""
    fault_at: float | None = None  # seconds since start when the fault began
    fault_done: float | None = None
    fault_error: str = ""
    elapsed: float = 0.0

    # -- figures ------------------------------------------------------------------------------
    @property
    def acked(self) -> list[Record]:
        return [r for r in self.records if r.acked is not None]

    @property
    def failed(self) -> list[Record]:
        return [r for r in self.records if r.acked is None]

    def longest_pause(self) -> tuple[float, float, float]:
        """(length, start, end): the longest stretch with no acknowledgement arriving."""
        times = sorted(r.acked for r in self.acked)
        if len(times) < 2:
            return 0.0, 0.0, 0.0
        gap, a, b = max((b - a, a, b) for a, b in zip(times, times[1:]))
        return gap, a, b

    def summary(self) -> dict:
        lat = sorted(r.latency for r in self.acked)
        pause, p_from, p_to = self.longest_pause()
        q = (lambda p: round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 2)) if lat else (lambda p: None)
        out = {
            "published": len(self.records),
            "acknowledged": len(self.acked),
            "failed after retries": len(self.failed),
            "retried": sum(1 for r in self.records if r.attempts > 1),
            "stored twice (dedup caught)": sum(1 for r in self.acked if r.duplicate),
            "elapsed s": round(self.elapsed, 2),
            "latency p50 ms": q(0.50),
            "latency p99 ms": q(0.99),
            "latency max ms": round(1000 * lat[-1], 1) if lat else None,
            "longest pause s": round(pause, 3),
            "pause from..to s": (round(p_from, 2), round(p_to, 2)),
        }
        if self.fault_at is not None:
            out["fault"] = self.fault_label
            out["fault at s"] = round(self.fault_at, 2)
            if self.fault_done is not None:
                out["fault took s"] = round(self.fault_done - self.fault_at, 2)
            if self.fault_error:
                out["fault error"] = self.fault_error
        return out

    def plot(self, title: str | None = None):
        """Two panels over time: each message's publish latency, and acknowledgements so far."""
        import matplotlib.pyplot as plt

        fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.2), sharex=True,
                                          gridspec_kw={"height_ratios": [3, 2]})
        first = [r for r in self.acked if r.attempts <= 1]
        retried = [r for r in self.acked if r.attempts > 1]
        top.scatter([r.sent for r in first], [1000 * r.latency for r in first], s=3, color="#0969da",
                    label=f"acked at first try ({len(first)})")
        if retried:
            top.scatter([r.sent for r in retried], [1000 * r.latency for r in retried], s=6, color="#bf8700",
                        label=f"acked after retries ({len(retried)})")
        if self.failed:
            top.scatter([r.sent for r in self.failed], [1] * len(self.failed), s=12, color="#cf222e", marker="x",
                        label=f"never acknowledged ({len(self.failed)})")
        top.set_yscale("log")
        top.set_ylabel("publish → ack (ms)\nby time first sent")
        times = sorted(r.acked for r in self.acked)
        bottom.plot(times, range(1, len(times) + 1), color="#0969da", drawstyle="steps-post")
        bottom.set_ylabel("acknowledged so far")
        bottom.set_xlabel("seconds since the first publish")
        pause, a, b = self.longest_pause()
        for ax in (top, bottom):
            if pause > 0:
                ax.axvspan(a, b, color="#cf222e", alpha=0.08, label=f"no acks for {pause:.2f} s")
            if self.fault_at is not None:
                ax.axvline(self.fault_at, color="#cf222e", linestyle="--", label=self.fault_label or "fault")
        top.legend(loc="upper right", fontsize=8)
        top.set_title(title or f"{len(self.acked)}/{len(self.records)} messages acknowledged")
        fig.tight_layout()
        return fig


class _Publisher:
    """Publishes numbered messages with ids and bounded retries, recording each one."""

    def __init__(self, js, subject: str, timeout: float, give_up_after: float, run_id: str | None):
        self.js, self.subject, self.timeout, self.give_up_after = js, subject, timeout, give_up_after
        self.run = PublishRun(subject, run_id or uuid.uuid4().hex[:8])
        self.t0 = time.perf_counter()
        self.run.started_wall = time.time()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    async def one(self, index: int) -> Record:
        rec = Record(index, self.now())
        self.run.records.append(rec)
        payload = f"{self.run.run_id}:{index}".encode()
        headers = {"Nats-Msg-Id": f"{self.run.run_id}-{index}"}
        delay = 0.05
        while True:
            rec.attempts += 1
            try:
                ack = await self.js.publish(self.subject, payload, timeout=self.timeout, headers=dict(headers))
                rec.acked, rec.seq, rec.duplicate = self.now(), ack.seq, bool(ack.duplicate)
                return rec
            except Exception as exc:
                rec.error = f"{type(exc).__name__}: {exc}"[:120]
                if not _retryable(exc) or self.now() - rec.sent + delay > self.give_up_after:
                    return rec
            await asyncio.sleep(delay)
            delay = min(delay * 1.6, 0.5)


async def publish_through_fault(js, subject: str, count: int = 10_000, *, fault: Callable | None = None,
                                fault_after: int | None = None, fault_label: str = "", batch: int = 250,
                                timeout: float = 2.0, give_up_after: float = 30.0,
                                run_id: str | None = None) -> PublishRun:
    """Publish ``count`` acknowledged messages; start ``fault()`` once ``fault_after`` are acked.

    Messages go out ``batch`` at a time concurrently; a failed publish is retried with back-off
    for at most ``give_up_after`` seconds, under the same ``Nats-Msg-Id`` so the stream stores
    it once even if an earlier attempt did land.  ``fault`` (a plain function such as
    ``server.kill``) runs in a thread while the publishing continues.
    """
    pub = _Publisher(js, subject, timeout, give_up_after, run_id)
    run = pub.run
    run.fault_label = fault_label or (getattr(fault, "__qualname__", "fault") if fault else "")
    fault_task = None
    trigger = count // 3 if fault_after is None else fault_after

    async def do_fault():
        run.fault_at = pub.now()
        try:
            await asyncio.to_thread(fault)
        except Exception as exc:
            run.fault_error = f"{type(exc).__name__}: {exc}"
        run.fault_done = pub.now()

    acked = 0
    for start in range(0, count, batch):
        pending = [asyncio.ensure_future(pub.one(i)) for i in range(start, min(count, start + batch))]
        for fut in asyncio.as_completed(pending):
            rec = await fut
            acked += rec.acked is not None
            if fault is not None and fault_task is None and acked >= trigger:
                fault_task = asyncio.ensure_future(do_fault())  # mid-batch: messages are in flight
    if fault_task is not None:
        await fault_task
    run.records.sort(key=lambda r: r.index)
    run.elapsed = pub.now()
    return run


class SteadyPublisher:
    """Publish acknowledged messages in the background until stopped.

    ``async with SteadyPublisher(js, "orders.new") as pub: ...`` (or ``start()``/``await stop()``);
    ``pub.run`` is a ``PublishRun``.  ``rate`` bounds messages per second; ``window`` is how many
    may be awaiting their ack at once.
    """

    def __init__(self, js, subject: str, *, rate: float = 300.0, window: int = 20, timeout: float = 2.0,
                 give_up_after: float = 30.0, run_id: str | None = None):
        self._pub = _Publisher(js, subject, timeout, give_up_after, run_id)
        self.rate, self.window = rate, window
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._next = 0  # message numbers go on across stop() and start()

    @property
    def run(self) -> PublishRun:
        return self._pub.run

    def now(self) -> float:
        """Seconds since publishing began (the time axis of ``run``)."""
        return self._pub.now()

    def start(self) -> "SteadyPublisher":
        """Start (or start again after ``stop``) publishing in the background."""
        if self._task is not None and not self._task.done():
            return self
        self._stop.clear()
        self._task = asyncio.ensure_future(self._loop())
        return self

    async def _loop(self) -> None:
        slots = asyncio.Semaphore(self.window)
        inflight: set[asyncio.Task] = set()
        while not self._stop.is_set():
            await slots.acquire()
            if self._stop.is_set():
                slots.release()
                break
            task = asyncio.ensure_future(self._pub.one(self._next))
            task.add_done_callback(lambda t: (slots.release(), inflight.discard(t)))
            inflight.add(task)
            self._next += 1
            try:  # pace the sends; waking early on stop
                await asyncio.wait_for(self._stop.wait(), 1.0 / self.rate)
            except asyncio.TimeoutError:
                pass
        if inflight:
            await asyncio.gather(*inflight)

    async def stop(self) -> PublishRun:
        self._stop.set()
        if self._task is not None:
            await self._task
        self.run.records.sort(key=lambda r: r.index)
        self.run.elapsed = self._pub.now()
        return self.run

    async def __aenter__(self) -> "SteadyPublisher":
        return self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()


# ------------------------------------------------------------------------------ counting
@dataclass
class Survival:
    expected: int
    found: int
    missing: list[int]
    doubled: list[int]
    stream_messages: int

    @property
    def ok(self) -> bool:
        return not self.missing and not self.doubled

    def as_dict(self) -> dict:
        return {"acknowledged": self.expected, "found in stream": self.found,
                "missing": len(self.missing), "stored twice": len(self.doubled),
                "stream state.messages": self.stream_messages}


async def count_in_stream(js, stream: str, run: PublishRun, *, timeout: float = 60.0) -> Survival:
    """Read every message of ``run`` back from ``stream`` and compare with what was acknowledged."""
    info = await wait_for_leader(js, stream, timeout=timeout)
    prefix = f"{run.run_id}:".encode()
    seen: dict[int, int] = {}
    if info.state.messages:
        readers = f"count-{run.run_id}-"

        async def make_reader():
            # a fresh name per attempt: an attempt that timed out may still be created later
            name = readers + uuid.uuid4().hex[:6]
            config = ConsumerConfig(name=name, ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL,
                                    inactive_threshold=30.0, filter_subject=run.subject, mem_storage=True,
                                    num_replicas=1)  # an R1 reader needs no RAFT group of its own
            await js.add_consumer(stream, config, timeout=2)
            return name

        # right after a fault the meta group may still be electing a leader: retry, bounded
        name = await until(make_reader, "a consumer to read the stream back", timeout=max(timeout, 60), every=0.05,
                           retry=(Exception,))
        psub = await js.pull_subscribe_bind(name, stream)
        try:
            deadline = time.monotonic() + timeout
            last = info.state.last_seq
            got_to = 0
            while got_to < last and time.monotonic() < deadline:
                try:
                    msgs = await psub.fetch(1000, timeout=2)
                except Exception as exc:  # a reader just created may not answer for a moment
                    if not _retryable(exc):
                        raise
                    await asyncio.sleep(0.1)
                    continue
                for m in msgs:
                    got_to = max(got_to, m.metadata.sequence.stream)
                    if m.data.startswith(prefix):
                        i = int(m.data[len(prefix):])
                        seen[i] = seen.get(i, 0) + 1
                    if m.metadata.num_pending == 0:
                        got_to = last
        finally:
            await psub.unsubscribe()
            try:  # this reader and any that a timed-out attempt created after all
                for ci in await js.consumers_info(stream):
                    if ci.name.startswith(readers):
                        await js.delete_consumer(stream, ci.name)
            except Exception:
                pass  # an idle reader also goes away on its own after 30 s
    acked = [r.index for r in run.acked]
    missing = [i for i in acked if i not in seen]
    doubled = sorted(i for i, n in seen.items() if n > 1)
    return Survival(len(acked), len(seen), missing, doubled, info.state.messages)


# ------------------------------------------------------------------------------ waiting
async def retry(call, *args, timeout: float = 30.0, per_try: float = 5.0, **kwargs):
    """``await call(*args, **kwargs)``, repeated while the cluster is briefly unable to answer.

    JetStream management calls (create a stream or a consumer) are handled by the meta leader;
    one that arrives during an election or on a very busy machine may get no answer at all.
    Creating the same stream or consumer again is harmless, so such calls can simply be repeated:
    on a timeout, "no responders", a 503, or "no suitable peers" (peers not known yet), for at
    most ``timeout`` seconds.  Any other error is raised at once.
    """
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        try:
            return await asyncio.wait_for(call(*args, **kwargs), per_try)
        except Exception as exc:
            placement = isinstance(exc, nats.js.errors.APIError) and exc.err_code == 10005
            if not (_retryable(exc) or placement) or time.monotonic() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def jetstream_ready(topology, *, timeout: float = 30.0) -> str:
    """Wait until JetStream can place replicated streams on every server; returns the meta leader.

    A natslab topology is ready as soon as a meta leader exists, but for a moment after start-up
    that leader may not yet know every peer well enough to place replicas on it: a stream created
    then is refused with "no suitable peers for placement".  This waits until the meta leader
    reports every server current, then proves it by placing (and deleting) a small in-memory
    stream with a replica on every server of each cluster (at most five).
    """
    await until(topology.meta_ready, "the meta leader hears from every server", timeout=timeout,
                retry=(Exception,))
    servers = topology.running()
    clusters = getattr(topology, "clusters", None) or {getattr(topology, "name", None): servers}
    nc = await connect([s.url for s in servers], quiet=True)
    try:
        js = nc.jetstream(timeout=2)
        for cname, members in clusters.items():
            probe = StreamConfig(name=f"natslab_ready_{uuid.uuid4().hex[:8]}", subjects=[f"natslab.ready.{uuid.uuid4().hex[:8]}"],
                                 num_replicas=min(5, len(members)), storage=StorageType.MEMORY,
                                 placement=Placement(cluster=cname) if cname and len(clusters) > 1 else None)

            async def place(probe=probe):
                await js.add_stream(probe)
                await js.delete_stream(probe.name)
                return True

            await until(place, f"JetStream places {probe.num_replicas} replicas in {cname or 'the cluster'}",
                        timeout=timeout, every=0.1, retry=(Exception,))
    finally:
        await nc.close()
    return await until(lambda: topology.meta_ready() and topology.meta_leader(), "a meta leader", timeout=timeout,
                       retry=(Exception,))


async def _info(js, stream: str, timeout: float = 2.5):
    """Stream info, but never waiting long for it: with no leader the request is not answered."""
    return await asyncio.wait_for(js.stream_info(stream), timeout)


async def wait_for_leader(js, stream: str, *, other_than: str | None = None, timeout: float = 30.0):
    """Stream info once the stream has a leader (other than ``other_than``, if given)."""
    async def probe():
        si = await _info(js, stream)
        leader = si.cluster.leader if si.cluster else None
        return si if leader and leader != other_than else None
    return await until(probe, f"a leader for stream {stream}" + (f" other than {other_than}" if other_than else ""),
                       timeout=timeout, every=0.05, retry=(Exception,))


async def wait_until_current(js, stream: str, *, timeout: float = 30.0, samples: list | None = None):
    """Stream info once every replica is current (caught up); ``samples`` collects what was seen."""
    async def probe():
        si = await _info(js, stream)
        reps = (si.cluster.replicas or []) if si.cluster else []
        if samples is not None:
            samples.append({"t": round(time.monotonic() - t0, 3), "leader": si.cluster.leader if si.cluster else None,
                            **{r.name: ("current" if r.current else f"behind, lag {r.lag}") for r in reps}})
        return si if si.cluster and si.cluster.leader and all(r.current for r in reps) else None
    t0 = time.monotonic()
    return await until(probe, f"every replica of stream {stream} catching up", timeout=timeout, every=0.05,
                       retry=(Exception,))


def server_of(topology, nc):
    """The natslab server a client connection is attached to right now."""
    port = nc.connected_url.port if nc.connected_url else None
    for s in getattr(topology, "servers", topology):
        if s.ports.get("client") == port:
            return s
    return None


def isolate(server) -> str:
    """Cut ``server`` off its peers: a network cut on Docker, a frozen process on local.

    Returns which was done ("cut" or "pause"); ``rejoin(server)`` undoes it.
    """
    try:
        server.cut()
        return "cut"
    except NotSupported:
        server.pause()
        return "pause"


def rejoin(server) -> None:
    try:
        server.heal()
    except NotSupported:
        server.resume()
