"""Small views for the monitoring lessons: lag over time, a table of /connz.

A client that stops reading is ``natslab.lessons.fanout.RawClient`` (lesson 01.6's frozen client).

- ``LagRecorder``: samples a consumer's pending / ack pending / redelivered counts from the
  server (``js.consumer_info``) while something runs, and plots them with matplotlib.
- ``connz_table(srv, ...)``: the columns of /connz an operator reads, one row per connection.
"""
from __future__ import annotations

import asyncio
import time


def connz_table(target, **params) -> list[dict]:
    """/connz reduced to what tells connections apart: cid, name, subs, pending, in/out, reason."""
    from ..runtime.monitor import monitor

    rows = []
    for c in monitor(target, "connz", **params).get("connections") or []:
        rows.append({k: c.get(k) for k in ("cid", "name", "subscriptions", "pending_bytes", "in_msgs",
                                          "out_msgs", "reason") if k in c or k in ("cid", "name")})
    return rows


class LagRecorder:
    """Sample a consumer's state every ``every`` seconds while ``async with`` runs; then ``plot()``."""

    def __init__(self, js, stream: str, consumer: str, every: float = 0.2):
        self.js, self.stream, self.consumer, self.every = js, stream, consumer, every
        self.samples: list[tuple[float, int, int, int]] = []  # (t, num_pending, num_ack_pending, redelivered)
        self._task = None

    async def sample(self) -> None:
        info = await self.js.consumer_info(self.stream, self.consumer)
        t = time.monotonic() - self._t0
        self.samples.append((t, info.num_pending or 0, info.num_ack_pending or 0, info.num_redelivered or 0))

    async def __aenter__(self):
        self._t0 = time.monotonic()

        async def loop():
            while True:
                try:
                    await self.sample()
                except Exception:
                    pass
                await asyncio.sleep(self.every)
        self._task = asyncio.ensure_future(loop())
        return self

    async def __aexit__(self, *exc):
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        await self.sample()

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
