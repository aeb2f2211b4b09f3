"""JetStream helpers for module 02: readable stream and consumer info, and a live consumer view.

``await streams.stream_info(js, "ORDERS")`` and ``await streams.consumer_info(js, "ORDERS",
"worker")`` return the server's answer as a short dict (limits of -1 read "unlimited",
durations are seconds); pass key names to keep only those.  ``stored(js, "ORDERS")`` lists
what a stream holds right now, ``jsz(srv)`` condenses the server's ``/jsz``, ``table(rows)``
prints rows of dicts side by side, ``fetch_all(psub)`` fetches until a fetch times out.
Waiting for a stream or consumer to reach a state is ``natslab.until`` (the course's one wait).

``view = await streams.watch(srv, "ORDERS", "worker")`` builds a ConsumerView: one box per
stored message coloured by what the consumer did with it (waiting, delivered, redelivered,
acked, terminated, given up), the consumer's counters from the server, and a history of
those counters that ``view.plot()`` draws.  It learns per-message events from the wire:
acks are messages on ``$JS.ACK.<stream>.<consumer>.>``, pull requests arrive on
``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`` (their reply subject is where deliveries
go), and the server announces naks, terminations and given-up messages as advisories.
Every event triggers a refresh from ``consumer_info`` and ``stream_info``; ``await
view.refresh()`` forces one, ``view.text()`` is the same picture as text (for CI logs).
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import html
import json
import time
from typing import Any, Iterable

from nats.js.errors import NotFoundError

from .subjects import matches  # the course's subject matcher, proven against the server in 01.1

UNLIMITED_KEYS = ("max_msgs", "max_bytes", "max_age", "max_msgs_per_subject", "max_msg_size",
                  "max_consumers", "max_deliver", "max_ack_pending")


# ------------------------------------------------------------------------------ readable info
def _plain(value):
    value = getattr(value, "value", value)  # enums read as their text
    if isinstance(value, _dt.datetime):
        return value.isoformat(timespec="milliseconds")
    return value


def _pick(out: dict, keys: tuple[str, ...]) -> dict:
    if not keys:
        return out
    missing = [k for k in keys if k not in out]
    if missing:
        raise KeyError(f"no key {missing}; have {list(out)}")
    return {k: out[k] for k in keys}


def _limit(key: str, value):
    if key in UNLIMITED_KEYS and (value is None or value == -1 or (key in ("max_age", "max_bytes") and value == 0)):
        return "unlimited"
    return value


def describe_stream(info, *keys: str) -> dict:
    """A StreamInfo as a short dict: the settings that matter in this module, then the state."""
    c, s = info.config, info.state
    out: dict[str, Any] = {
        "name": c.name, "subjects": c.subjects, "retention": _plain(c.retention),
        "storage": _plain(c.storage), "discard": _plain(c.discard),
    }
    for k in ("max_msgs", "max_bytes", "max_age", "max_msgs_per_subject"):
        out[k] = _limit(k, getattr(c, k))
    out["duplicate_window"] = c.duplicate_window
    if c.subject_transform:
        out["subject_transform"] = f"{c.subject_transform.src} -> {c.subject_transform.dest}"
    if c.mirror:
        out["mirror"] = c.mirror.name
        out["mirror_lag"] = getattr(info.mirror, "lag", None)
    if c.sources:
        lags = {si.name: si.lag for si in (info.sources or [])}
        out["sources"] = {src.name: {"lag": lags.get(src.name),
                                     **({"filter": src.filter_subject} if src.filter_subject else {})}
                          for src in c.sources}
    out.update({"messages": s.messages, "bytes": s.bytes, "first_seq": s.first_seq,
                "last_seq": s.last_seq, "consumers": s.consumer_count})
    if s.num_deleted:
        out["deleted"] = s.num_deleted
    if s.subjects:
        out["per_subject"] = dict(s.subjects)
    return _pick(out, keys)


def describe_consumer(info, *keys: str) -> dict:
    """A ConsumerInfo as a short dict: how it delivers, then where it stands."""
    c = info.config
    out: dict[str, Any] = {
        "name": info.name, "durable": bool(c.durable_name),
        "kind": "push" if c.deliver_subject else "pull",
        "filter": c.filter_subjects or c.filter_subject,
        "deliver_policy": _plain(c.deliver_policy), "ack_policy": _plain(c.ack_policy),
        "ack_wait": c.ack_wait, "max_deliver": _limit("max_deliver", c.max_deliver),
        "max_ack_pending": _limit("max_ack_pending", c.max_ack_pending),
    }
    if c.opt_start_seq:
        out["opt_start_seq"] = c.opt_start_seq
    if c.opt_start_time:
        out["opt_start_time"] = _plain(c.opt_start_time)
    if c.backoff:
        out["backoff"] = c.backoff
    d, a = info.delivered, info.ack_floor
    out.update({
        "delivered": {"stream_seq": d.stream_seq, "consumer_seq": d.consumer_seq} if d else None,
        "ack_floor": {"stream_seq": a.stream_seq, "consumer_seq": a.consumer_seq} if a else None,
        "num_ack_pending": info.num_ack_pending, "num_redelivered": info.num_redelivered,
        "num_pending": info.num_pending, "num_waiting": info.num_waiting,
    })
    return _pick(out, keys)


async def stream_info(js, name: str, *keys: str) -> dict:
    """The server's view of stream ``name``, readable; e.g. ``stream_info(js, "S", "messages")``."""
    return describe_stream(await js.stream_info(name, subjects_filter=">" if "per_subject" in keys else None), *keys)


async def consumer_info(js, stream: str, consumer: str, *keys: str) -> dict:
    """The server's view of a consumer, readable; pass keys to keep only those."""
    return describe_consumer(await js.consumer_info(stream, consumer), *keys)


async def stored(js, stream: str, limit: int = 50, headers: bool = False) -> list[dict]:
    """The messages stream ``stream`` holds now (oldest first, at most ``limit``), as dicts."""
    state = (await js.stream_info(stream)).state
    out: list[dict] = []
    seq = state.first_seq
    while seq <= state.last_seq and len(out) < limit:
        try:
            m = await js.get_msg(stream, seq)
        except NotFoundError:  # deleted, or removed after an ack
            seq += 1
            continue
        row = {"seq": m.seq, "subject": m.subject, "data": (m.data or b"").decode(errors="replace")}
        if headers:
            row["headers"] = m.headers or {}
        out.append(row)
        seq += 1
    return out


def jsz(srv, *streams_wanted: str) -> dict:
    """The server's ``/jsz`` condensed: totals, then each stream with its consumers."""
    raw = srv.monitor("jsz", streams=True, consumers=True, config=True)
    out = {k: raw.get(k, 0) for k in ("streams", "consumers", "messages", "bytes", "memory", "storage")}
    per: dict[str, dict] = {}
    for acc in raw.get("account_details") or []:
        for st in acc.get("stream_detail") or []:
            if streams_wanted and st["name"] not in streams_wanted:
                continue
            state = st.get("state", {})
            per[st["name"]] = {
                "messages": state.get("messages"), "bytes": state.get("bytes"),
                "storage": (st.get("config") or {}).get("storage", "?"),
                "consumers": {c["name"]: {"delivered": c["delivered"]["stream_seq"],
                                          "ack_floor": c["ack_floor"]["stream_seq"],
                                          "num_ack_pending": c.get("num_ack_pending", 0),
                                          "num_pending": c.get("num_pending", 0)}
                              for c in st.get("consumer_detail") or []},
            }
    out["per_stream"] = per
    return out


def table(rows: Iterable[dict], columns: Iterable[str] | None = None) -> None:
    """Print dicts as an aligned text table (one row each), columns in first-seen order."""
    rows = list(rows)
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


async def fetch_all(psub, batch: int = 10, timeout: float = 0.5, ack: bool = False) -> list:
    """Fetch until the consumer has nothing more to deliver (a fetch times out); ack if asked."""
    got = []
    while True:
        try:
            msgs = await psub.fetch(batch, timeout=timeout)
        except asyncio.TimeoutError:  # nats.errors.TimeoutError is a subclass
            return got
        for m in msgs:
            if ack:
                await m.ack()
            got.append(m)


def parse_ack_subject(subject: str) -> dict | None:
    """The fields of a ``$JS.ACK...`` reply subject (v1 and v2 layouts), or None."""
    t = subject.split(".")
    if len(t) < 9 or t[0] != "$JS" or t[1] != "ACK":
        return None
    if len(t) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
        s, c, rest = t[2], t[3], t[4:]
    else:            # $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>...
        s, c, rest = t[4], t[5], t[6:]
    try:
        return {"stream": s, "consumer": c, "delivered": int(rest[0]), "stream_seq": int(rest[1]),
                "consumer_seq": int(rest[2])}
    except (ValueError, IndexError):
        return None


# ------------------------------------------------------------------------------ live view
STATES = {  # state: (colour, symbol, meaning)
    "waiting": ("#d0d7de", "·", "stored, not delivered yet"),
    "delivered": ("#f2cc60", "…", "delivered, ack pending"),
    "redelivered": ("#fb8f44", "↻", "delivered again, ack pending"),
    "nak": ("#ffb3a7", "✗?", "nak'd, will be redelivered"),
    "acked": ("#2da44e", "✓", "acknowledged"),
    "terminated": ("#cf222e", "⊘", "terminated (term)"),
    "given_up": ("#8250df", "☠", "max deliveries reached"),
    "removed": ("#ffffff", "–", "no longer in the stream"),
    "skipped": ("#f6f8fa", "", "not for this consumer (filter or start position)"),
}


class ConsumerView:
    """A stream's messages and one consumer's position, redrawn on every ack, nak or delivery."""

    def __init__(self, nc, stream: str, consumer: str, *, own_connection: bool = False, max_shown: int = 40):
        self.nc, self.js = nc, nc.jetstream()
        self.stream, self.consumer = stream, consumer
        self.own_connection = own_connection
        self.max_shown = max_shown
        self.events: dict[int, str] = {}       # stream seq -> last event seen on the wire
        self.deliveries: dict[int, int] = {}   # stream seq -> times delivered (seen)
        self.subjects: dict[int, str | None] = {}
        self.history: list[dict] = []
        self.info = None
        self.stream_state = None
        self._subs: list = []
        self._inboxes: set[str] = set()
        self._start_floor: int | None = None
        self._t0 = time.monotonic()
        self._pending_refresh: asyncio.Task | None = None
        self._refresh_lock = asyncio.Lock()
        self.closed = False
        try:
            import ipywidgets

            self.widget = ipywidgets.HTML(value="<i>starting…</i>")
        except ImportError:  # plain Python: text() and plot() still work
            self.widget = None

    # -- wire taps ------------------------------------------------------------------------------
    async def _start(self) -> "ConsumerView":
        s, c = self.stream, self.consumer
        self._subs.append(await self.nc.subscribe(f"$JS.ACK.{s}.{c}.>", cb=self._on_ack))
        self._subs.append(await self.nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{s}.{c}", cb=self._on_pull))
        self._subs.append(await self.nc.subscribe(f"$JS.EVENT.ADVISORY.CONSUMER.*.{s}.{c}", cb=self._on_advisory))
        await self.nc.flush()
        await self.refresh()
        return self

    async def _on_ack(self, msg) -> None:
        meta = parse_ack_subject(msg.subject)
        if not meta:
            return
        kind = msg.data.split(b" ")[0]
        event = {b"": "acked", b"+ACK": "acked", b"+NXT": "acked", b"-NAK": "nak",
                 b"+TERM": "terminated"}.get(kind)
        if event:  # +WPI (in progress) changes nothing visible
            self.events[meta["stream_seq"]] = event
        self._soon()

    async def _on_pull(self, msg) -> None:
        if msg.reply and msg.reply not in self._inboxes and len(self._inboxes) < 32:
            self._inboxes.add(msg.reply)
            self._subs.append(await self.nc.subscribe(msg.reply, cb=self._on_delivery))

    async def _on_delivery(self, msg) -> None:
        meta = parse_ack_subject(msg.reply or "")
        if not meta or meta["consumer"] != self.consumer:
            return  # status messages (no messages, request timeout) carry no ack subject
        seq = meta["stream_seq"]
        self.deliveries[seq] = max(self.deliveries.get(seq, 0), meta["delivered"])
        if self.events.get(seq) == "nak":
            self.events.pop(seq)
        self._soon()

    async def _on_advisory(self, msg) -> None:
        try:
            adv = json.loads(msg.data)
        except ValueError:
            return
        seq = adv.get("stream_seq")
        if seq and ".MAX_DELIVERIES." in msg.subject:
            self.events[seq] = "given_up"
        elif seq and ".MSG_TERMINATED." in msg.subject:
            self.events[seq] = "terminated"
        self._soon()

    def _soon(self) -> None:
        """Coalesce a burst of events into one refresh shortly after."""
        if self.closed or (self._pending_refresh and not self._pending_refresh.done()):
            return

        async def later():
            await asyncio.sleep(0.05)
            try:
                await self.refresh()
            except Exception:
                pass  # the next event or an explicit refresh() tries again
        self._pending_refresh = asyncio.ensure_future(later())

    # -- state -----------------------------------------------------------------------------------
    async def refresh(self) -> "ConsumerView":
        """Read the consumer and the stream from the server and redraw."""
        async with self._refresh_lock:
            await self._settle()
            info = await self.js.consumer_info(self.stream, self.consumer)
            self.stream_state = (await self.js.stream_info(self.stream)).state
            self.info = info
            if self._start_floor is None:
                self._start_floor = info.ack_floor.stream_seq if info.delivered.consumer_seq == 0 else 0
            for seq in self.shown_seqs():
                if seq not in self.subjects:
                    try:
                        self.subjects[seq] = (await self.js.get_msg(self.stream, seq)).subject
                    except NotFoundError:
                        self.subjects[seq] = None
            self.history.append({"t": round(time.monotonic() - self._t0, 3), **self.counts()})
            if self.widget is not None:
                self.widget.value = self.html()
        return self

    async def _settle(self) -> None:
        """Let the taps catch up: everything the server sent us so far is read and handled."""
        await self.nc.flush()
        for _ in range(50):
            if all(sub.pending_msgs == 0 for sub in self._subs):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)

    def _in_stream(self, seq: int) -> bool:
        st = self.stream_state
        return st.first_seq <= seq <= st.last_seq and seq not in set(st.deleted or ())

    def shown_seqs(self) -> range:
        last = self.stream_state.last_seq if self.stream_state else 0
        return range(max(1, last - self.max_shown + 1), last + 1)

    def _filters(self) -> list[str]:
        c = self.info.config
        return c.filter_subjects or ([c.filter_subject] if c.filter_subject else [])

    def state_of(self, seq: int) -> str:
        info = self.info
        subject = self.subjects.get(seq)
        filters = self._filters()
        if subject is not None and filters and not any(matches(f, subject) for f in filters):
            return "skipped"
        if seq <= (self._start_floor or 0) or (info.config.opt_start_seq and seq < info.config.opt_start_seq):
            return "skipped"
        event = self.events.get(seq)
        if event in ("acked", "terminated", "given_up"):
            return event
        if seq <= info.ack_floor.stream_seq:
            return "acked"
        if seq <= info.delivered.stream_seq:
            if not self._in_stream(seq):
                return "removed"
            if event == "nak":
                return "nak"
            return "redelivered" if self.deliveries.get(seq, 1) > 1 else "delivered"
        return "waiting" if self._in_stream(seq) else "removed"

    def states(self) -> dict[int, str]:
        return {seq: self.state_of(seq) for seq in self.shown_seqs()} if self.info else {}

    def counts(self) -> dict:
        """The consumer's counters as the server reports them, plus acks seen on the wire."""
        i, st = self.info, self.stream_state
        states = self.states()
        return {
            "stream_msgs": st.messages,
            "delivered_seq": i.delivered.stream_seq,
            "deliveries": i.delivered.consumer_seq,
            "ack_floor": i.ack_floor.stream_seq,
            "ack_pending": i.num_ack_pending,
            "redelivered": i.num_redelivered,
            "pending": i.num_pending,
            "acked_seen": sum(1 for s in states.values() if s == "acked"),
        }

    # -- rendering -------------------------------------------------------------------------------
    def text(self) -> str:
        if not self.info:
            return f"{self.stream}/{self.consumer}: not read yet"
        c = self.counts()
        head = (f"{self.stream}/{self.consumer}: {c['stream_msgs']} in stream, delivered up to seq "
                f"{c['delivered_seq']} ({c['deliveries']} deliveries), ack floor {c['ack_floor']}, "
                f"ack pending {c['ack_pending']}, redelivered {c['redelivered']}, "
                f"still to deliver {c['pending']}")
        marks = " ".join(f"{seq}{STATES[s][1]}" for seq, s in self.states().items())
        legend = "  ".join(f"{STATES[s][1]} {s}" for s in STATES if STATES[s][1])
        return f"{head}\n  {marks}\n  ({legend})"

    def __repr__(self) -> str:
        return self.text()

    def html(self) -> str:
        boxes = []
        for seq, state in self.states().items():
            colour, sym, meaning = STATES[state]
            subj = self.subjects.get(seq) or "(gone)"
            n = self.deliveries.get(seq)
            tip = f"seq {seq} · {subj} · {meaning}" + (f" · delivered {n}×" if n else "")
            border = "1px dashed #8c959f" if state in ("removed", "skipped") else "1px solid #57606a"
            fg = "#8c959f" if state == "skipped" else "#1f2328"
            boxes.append(
                f"<div title='{html.escape(tip)}' style='display:inline-block;width:2.6em;margin:1px;"
                f"padding:2px 0;text-align:center;background:{colour};border:{border};color:{fg};"
                f"font:11px monospace'>{seq}<br>{sym or '&nbsp;'}</div>")
        c = self.counts()
        cells = "".join(f"<td style='padding:0 8px'><b>{html.escape(k)}</b><br>{v}</td>" for k, v in c.items())
        legend = " ".join(f"<span style='background:{col};border:1px solid #8c959f;padding:0 4px;"
                          f"font:11px monospace'>{sym or '&nbsp;'} {name}</span>"
                          for name, (col, sym, _) in STATES.items())
        return (f"<div><b>{html.escape(self.stream)}</b> / consumer <b>{html.escape(self.consumer)}</b>"
                f"<div style='margin:4px 0'>{''.join(boxes)}</div>"
                f"<table><tr>{cells}</tr></table><div style='margin-top:4px'>{legend}</div></div>")

    def _repr_mimebundle_(self, **kwargs):
        bundle = {"text/plain": self.text()}
        if self.widget is not None:
            bundle.update(self.widget._repr_mimebundle_(**kwargs) or {})
            bundle["text/plain"] = self.text()
        return bundle

    def plot(self, ax=None):
        """Draw the counters' history (one point per refresh); returns the matplotlib figure."""
        import matplotlib.pyplot as plt

        own = ax is None
        if own:
            fig, ax = plt.subplots(figsize=(7, 3))
        else:
            fig = ax.figure
        t = [h["t"] for h in self.history]
        for key, colour in (("pending", "#57606a"), ("ack_pending", STATES["delivered"][0]),
                            ("redelivered", STATES["redelivered"][0]), ("acked_seen", STATES["acked"][0])):
            ax.step(t, [h[key] for h in self.history], where="post", label=key, color=colour, linewidth=2)
        ax.set_xlabel("seconds since watch()")
        ax.set_ylabel("messages")
        ax.set_title(f"{self.stream} / {self.consumer}")
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        if own:
            plt.close(fig)  # returned once, displayed once
        return fig

    async def close(self) -> None:
        self.closed = True
        if self._pending_refresh and not self._pending_refresh.done():
            self._pending_refresh.cancel()
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception:
                pass
        self._subs.clear()
        if self.own_connection and not self.nc.is_closed:
            await self.nc.close()


async def watch(target, stream: str, consumer: str, max_shown: int = 40) -> ConsumerView:
    """A ConsumerView of ``stream``/``consumer``; ``target`` is a server (own connection) or a client."""
    if hasattr(target, "jetstream") and hasattr(target, "subscribe"):
        nc, own = target, False
    else:
        from ..runtime.client import connect

        nc, own = await connect(target, quiet=True, name=f"natslab-view-{stream}-{consumer}"), True
    view = ConsumerView(nc, stream, consumer, own_connection=own, max_shown=max_shown)
    try:
        return await view._start()
    except BaseException:
        await view.close()
        raise
