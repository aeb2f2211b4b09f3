"""Small views for the monitoring lessons: lag over time, a table of /connz.

A client that stops reading is ``natslab.lessons.fanout.RawClient`` (lesson 01.6's frozen client).

- ``Sampler``: samples something every few tenths of a second while ``async with`` runs (the base
  of ``LagRecorder`` and of ``eventstore.ReadModelLag``).
- ``LagRecorder``: samples a consumer's pending / ack pending / redelivered counts from the
  server (``js.consumer_info``) while something runs, and plots them with matplotlib.
- ``connz_table(srv, ...)``: the columns of /connz an operator reads, one row per connection.
"""
from __future__ import annotations

import asyncio
import time

import nats.errors


def connz_table(target, **params) -> list[dict]:
    """/connz reduced to what tells connections apart: cid, name, subs, pending, in/out, reason."""
    from ..runtime.monitor import monitor

    rows = []
    for c in monitor(target, "connz", **params).get("connections") or []:
        rows.append({k: c.get(k) for k in ("cid", "name", "subscriptions", "pending_bytes", "in_msgs",
                                          "out_msgs", "reason") if k in c or k in ("cid", "name")})
    return rows


class Sampler:
    """Call ``sample()`` every ``every`` seconds while ``async with`` runs, and once more at the end.

    Subclasses append to ``self.samples`` in ``sample()`` (time since the start: ``self.elapsed()``).
    A sample that times out under load is skipped.  A flag, not only cancellation, ends the loop:
    on Python 3.11 ``asyncio.wait_for`` (inside nats-py's request) can swallow a cancellation that
    arrives together with its answer, and the loop would go on sampling forever.
    """

    SKIPPED = (asyncio.TimeoutError, nats.errors.Error)

    def __init__(self, every: float):
        self.every = every
        self.samples: list[tuple] = []
        self._task = None
        self._running = False
        self._t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    async def sample(self) -> None:
        raise NotImplementedError

    async def __aenter__(self):
        self._t0 = time.monotonic()
        self._running = True

        async def loop():
            while self._running:
                try:
                    await self.sample()
                except self.SKIPPED:
                    pass
                await asyncio.sleep(self.every)
        self._task = asyncio.ensure_future(loop())
        return self

    async def __aexit__(self, *exc):
        self._running = False
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        await self.sample()


class LagRecorder(Sampler):
    """Sample a consumer's state every ``every`` seconds while ``async with`` runs; then ``plot()``."""

    def __init__(self, js, stream: str, consumer: str, every: float = 0.2):
        super().__init__(every)
        self.js, self.stream, self.consumer = js, stream, consumer
        self.samples: list[tuple[float, int, int, int]] = []  # (t, num_pending, num_ack_pending, redelivered)

    async def sample(self) -> None:
        info = await self.js.consumer_info(self.stream, self.consumer)
        self.samples.append((self.elapsed(), info.num_pending or 0, info.num_ack_pending or 0,
                             info.num_redelivered or 0))

    def peak(self) -> int:
        return max((p + a for _, p, a, _ in self.samples), default=0)

    def plot(self, threshold: int | None = None, title: str = ""):
        """Pending, ack pending and their sum (the lag) over time; a red line at ``threshold``."""
        import matplotlib.pyplot as plt

        t = [s[0] for s in self.samples]
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.plot(t, [s[1] for s in self.samples], label="num_pending (not delivered)")
        ax.plot(t, [s[2] for s in self.samples], label="num_ack_pending (not acknowledged)")
        ax.plot(t, [s[1] + s[2] for s in self.samples], label="lag", linewidth=2)
        ax.plot(t, [s[3] for s in self.samples], label="num_redelivered", linestyle=":")
        if threshold is not None:
            ax.axhline(threshold, color="red", linestyle="--", label=f"page at {threshold}")
        ax.set_xlabel("seconds")
        ax.set_ylabel("messages")
        ax.set_title(title or f"{self.stream}/{self.consumer}, as the server reported it")
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig
