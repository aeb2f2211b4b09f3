"""Views for the event-sourcing and CQRS lessons (07.3, 07.4).

The pattern code (appending with an expected sequence, folding, snapshots, projectors) is written
out in the notebooks with nats-py calls; this module only shows and measures:

- ``await events_table(js, stream, subjects)``: the messages a stream holds on ``subjects``, in
  stream order, as a table (seq, subject, headers that matter, time, data), read with message gets
  (``js.get_msg(..., next=True)``) so nothing is consumed and no consumer is made.
- ``ReadModelLag(js, stream, applied)``: samples the stream's last sequence and the sequence a read
  model says it has applied (``applied`` is an async callable you pass) while ``async with`` runs;
  ``plot()`` draws both and the gap between them.
- ``await compare_buckets(kv_a, kv_b)``: two KV buckets key by key (current values, markers
  included), as a table; ``.same`` tells whether every key holds the same value in both.
"""
from __future__ import annotations

import json
from typing import Awaitable, Callable

import nats.js.errors as jserr

from .kvstore import Table, latest_entries, show
from .monitoring import Sampler

HEADERS_SHOWN = ("Schema-Version", "Nats-Msg-Id", "Nats-Expected-Last-Subject-Sequence")


def _data(raw: bytes | None, limit: int) -> str:
    try:
        return show(json.dumps(json.loads(raw), separators=(",", ":")).encode(), limit)
    except (TypeError, ValueError):
        return show(raw, limit)


async def events_table(js, stream: str, subjects: str = ">", limit: int = 50, width: int = 60) -> Table:
    """The first ``limit`` messages of ``stream`` on ``subjects`` (wildcards allowed), oldest first.

    Each row: stream sequence, subject, the headers an event store reads (schema version, message
    id, the expectation it was written under), the server's timestamp and the data.  Read with
    message gets (the stream API, so any stream works, with or without ``allow_direct``): the
    table costs no consumer and changes nothing.
    """
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive int, not {limit!r}")
    rows, seq = [], 1
    while len(rows) < limit:
        try:
            msg = await js.get_msg(stream, seq=seq, subject=subjects, next=True)
        except jserr.NotFoundError:
            break
        headers = msg.headers or {}
        row = {"seq": msg.seq, "subject": msg.subject}
        for name in HEADERS_SHOWN:
            if name in headers:
                row[name] = headers[name]
        row["time"] = msg.time.astimezone().strftime("%H:%M:%S.%f")[:-3] if msg.time else ""
        row["data"] = _data(msg.data, width)
        rows.append(row)
        seq = msg.seq + 1
    cols = ["seq", "subject", *HEADERS_SHOWN, "time", "data"]   # one column order for every row
    return Table(({c: r.get(c, "") for c in cols if any(c in x for x in rows)} for r in rows),
                 title=f"{stream} on {subjects}")


class ReadModelLag(Sampler):
    """How far a read model is behind its stream, sampled while ``async with`` runs.

    ``applied`` is an async callable returning the last stream sequence the read model has applied
    (typically read from the read model itself, e.g. a checkpoint key in its KV bucket).  Every
    ``every`` seconds it records (t, stream last_seq, applied); ``plot()`` draws them.
    """

    def __init__(self, js, stream: str, applied: Callable[[], Awaitable[int]], every: float = 0.1):
        if not callable(applied):
            raise TypeError("applied must be an async callable returning the applied stream sequence")
        super().__init__(every)
        self.js, self.stream, self.applied = js, stream, applied
        self.samples: list[tuple[float, int, int]] = []

    async def sample(self) -> tuple[float, int, int]:
        last = (await self.js.stream_info(self.stream)).state.last_seq
        done = int(await self.applied() or 0)
        row = (self.elapsed(), last, done)
        self.samples.append(row)
        return row

    def peak(self) -> int:
        """The largest gap seen, in messages."""
        return max((last - done for _, last, done in self.samples), default=0)

    def plot(self, title: str = ""):
        import matplotlib.pyplot as plt

        t = [s[0] for s in self.samples]
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 4), sharex=True)
        top.plot(t, [s[1] for s in self.samples], label="stream last_seq (written)")
        top.plot(t, [s[2] for s in self.samples], label="read model's applied seq")
        top.set_ylabel("sequence")
        top.legend(fontsize=7)
        bottom.fill_between(t, [s[1] - s[2] for s in self.samples], step="post", alpha=0.4)
        bottom.set_ylabel("behind (msgs)")
        bottom.set_xlabel("seconds")
        top.set_title(title or f"read model lag behind {self.stream}")
        fig.tight_layout()
        return fig


class Comparison(Table):
    same: bool = True


async def compare_buckets(kv_a, kv_b, keys: str = ">") -> Comparison:
    """Every key of either bucket (matching ``keys``) with its current value in each.

    Values are compared as bytes (a key deleted in one and absent in the other counts as the same).
    The result's ``.same`` is True when no key differs.
    """
    a = {e.key: (e.value if not e.operation else None) for e in await latest_entries(kv_a, keys)}
    b = {e.key: (e.value if not e.operation else None) for e in await latest_entries(kv_b, keys)}
    name_a, name_b = (await kv_a.status()).bucket, (await kv_b.status()).bucket
    rows = []
    for key in sorted(set(a) | set(b)):
        same = a.get(key) == b.get(key)
        rows.append({"key": key, name_a: show(a.get(key), 50), name_b: show(b.get(key), 50),
                     "same": "yes" if same else "NO"})
    out = Comparison(rows, title=f"{name_a} vs {name_b}: {len(rows)} keys")
    out.same = all(r["same"] == "yes" for r in rows)
    return out
