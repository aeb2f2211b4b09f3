"""Key-value buckets and object stores made visible (module 03).

- ``await history_table(kv, key)`` and ``await bucket_table(kv)``: entries as a table
  (revision, key, operation, value) that prints as text and renders as HTML.
- ``await value_of(kv, key)``: the key's current value and revision, ``(None, None)`` when absent.
- The stream under a bucket is an ordinary stream (``KV_<bucket>``, ``OBJ_<bucket>``): read it with
  ``js.stream_info`` or ``natslab.lessons.streams`` (``stream_info``, ``stored``), as in module 02.
- ``await follow(kv, "svc.>", widgets={...})``: a watcher running in the background that keeps a
  dict, a table widget and any bound widgets equal to the latest values of the keys.
- ``await race(kvs, key, step, times)``: writers on separate connections racing on a counter.
- ``digest_of(data)``, ``await object_table(obs)``, ``await add_link(js, ...)``: object store helpers.
"""
from __future__ import annotations

import asyncio
import base64
import datetime as _dt
import hashlib
import html
import inspect
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import nats.js.errors as jserr
from nats.js import api
from nats.js.kv import KeyValue
from nats.nuid import NUID

_MARKERS = ("DEL", "PURGE")


# ------------------------------------------------------------------------------ display
def show(value: bytes | None, limit: int = 40) -> str:
    """Bytes as short readable text: decoded when they are text, ``<N bytes>`` otherwise."""
    if value is None:
        return ""
    try:
        text = bytes(value).decode()
    except UnicodeDecodeError:
        return f"<{len(value)} bytes>"
    if not text.isprintable():
        return f"<{len(value)} bytes>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Table(list):
    """A list of row dicts that prints as an aligned text table and renders as HTML."""

    def __init__(self, rows: Iterable[Mapping] = (), title: str = ""):
        super().__init__(dict(r) for r in rows)
        self.title = title

    def columns(self) -> list[str]:
        cols: list[str] = []
        for row in self:
            cols += [k for k in row if k not in cols]
        return cols

    def __repr__(self) -> str:
        cols = self.columns()
        if not self:
            return f"{self.title}: (empty)" if self.title else "(empty)"
        cells = [[str(r.get(c, "")) for c in cols] for r in self]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()
        out = ([self.title] if self.title else []) + [line(cols), line(["-" * w for w in widths])]
        return "\n".join(out + [line(row) for row in cells])

    def _repr_html_(self) -> str:
        cols = self.columns()
        head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td><code>{html.escape(str(r.get(c, '')))}</code></td>" for c in cols)
                       + "</tr>" for r in self)
        cap = f"<caption style='text-align:left'><b>{html.escape(self.title)}</b></caption>" if self.title else ""
        return f"<table>{cap}<tr>{head}</tr>{body}</table>" if self else f"<p>{html.escape(repr(self))}</p>"


def _clock(when) -> str:
    if isinstance(when, _dt.datetime):
        return when.astimezone().strftime("%H:%M:%S.%f")[:-3]
    return ""


def entry_row(entry) -> dict:
    """One KV entry as a readable row: revision, key, operation (PUT/DEL/PURGE), value, time."""
    op = entry.operation or "PUT"
    return {"revision": entry.revision, "key": entry.key, "op": op,
            "value": "" if op in _MARKERS else show(entry.value), "created": _clock(entry.created)}


# ------------------------------------------------------------------------------ KV views
# These read the bucket's stream directly (message get by subject) rather than through a
# watcher: a watcher's end-of-initial-values marker is decided by the client from the
# consumer's pending count, which can briefly read 0 while entries are still on their way.
async def _kv_parts(kv):
    """(js, stream, subject prefix, bucket) of a KeyValue handle.

    The bucket's name comes from the public ``kv.status()``; the stream is ``KV_<bucket>`` and the
    subjects ``$KV.<bucket>.<key>`` by the KV convention.  nats-py 2.16 has no public accessor for the
    JetStream context a KeyValue was made from (the missing API: ``KeyValue.js``), so this is the one
    place that reads it (``kv._js``).
    """
    bucket = (await kv.status()).bucket
    return kv._js, f"KV_{bucket}", f"$KV.{bucket}.", bucket


def _operation(headers) -> str | None:
    headers = headers or {}
    if headers.get("KV-Operation") in _MARKERS:
        return headers["KV-Operation"]
    reason = headers.get("Nats-Marker-Reason")  # markers the server writes itself (2.11+)
    return {"MaxAge": "PURGE", "Purge": "PURGE", "Remove": "DEL"}.get(reason)


def _entry(pre: str, bucket: str, msg) -> KeyValue.Entry:
    op = _operation(msg.headers)
    return KeyValue.Entry(bucket=bucket, key=msg.subject[len(pre):], value=b"" if op else (msg.data or b""),
                          revision=msg.seq, delta=None, created=msg.time, operation=op)


async def history_entries(kv, key: str) -> list:
    """Every revision the bucket still keeps for ``key``, oldest first, markers included."""
    js, stream, pre, bucket = await _kv_parts(kv)
    entries, seq = [], 1
    while True:
        try:
            msg = await js.get_msg(stream, seq=seq, subject=pre + key, next=True)
        except jserr.NotFoundError:
            return entries
        entries.append(_entry(pre, bucket, msg))
        seq = msg.seq + 1


async def history_table(kv, key: str) -> Table:
    """Every revision the bucket still keeps for ``key``, oldest first."""
    return Table((entry_row(e) for e in await history_entries(kv, key)), title=f"history of {key!r}")


async def latest_entries(kv, keys: str = ">") -> list:
    """The latest entry of every key matching ``keys``, delete and purge markers included."""
    js, stream, pre, bucket = await _kv_parts(kv)
    info = await js.stream_info(stream, subjects_filter=pre + keys)
    entries = []
    for subject in info.state.subjects or {}:
        try:
            entries.append(_entry(pre, bucket, await js.get_msg(stream, subject=subject)))
        except jserr.NotFoundError:
            pass  # expired between the two requests
    return sorted(entries, key=lambda e: e.revision)


async def bucket_table(kv, keys: str = ">", include_deletes: bool = True) -> Table:
    """The latest entry of each key, ordered by revision (markers shown unless excluded)."""
    rows = [entry_row(e) for e in await latest_entries(kv, keys)
            if include_deletes or (e.operation or "PUT") not in _MARKERS]
    return Table(rows, title=f"latest entry of each key matching {keys!r}")


async def bucket_state(kv, keys: str = ">") -> dict[str, bytes]:
    """Current values of the live keys (deleted and purged keys left out)."""
    return {e.key: e.value for e in await latest_entries(kv, keys) if (e.operation or "PUT") not in _MARKERS}


async def value_of(kv, key: str) -> tuple[bytes | None, int | None]:
    """The key's current value and revision as the server has them; ``(None, None)`` when the key is
    absent (never written, deleted, purged, expired, or expired with a server-written marker).

    It reads the key's latest message and its headers itself: nats-py 2.16's ``kv.get`` raises
    KeyNotFoundError for delete and purge markers, but returns a marker the server wrote on expiry
    (``Nats-Marker-Reason``, buckets with ``limit_marker_ttl``) as an entry with an empty value.
    """
    js, stream, pre, _ = await _kv_parts(kv)
    try:
        msg = await js.get_msg(stream, subject=pre + key)
    except jserr.NotFoundError:
        return None, None
    if _operation(msg.headers):
        return None, None
    return msg.data or b"", msg.seq


# ------------------------------------------------------------------------------ follower
class Follower:
    """A KV watcher that keeps running: latest values in ``values``, a table widget, bound widgets.

    Create it with ``await follow(kv, keys, widgets=..., on_change=...)``.  ``wait_for`` waits
    (with a time limit) until a revision has been applied; ``stop`` ends the watch.
    """

    def __init__(self, kv, keys: str = ">", widgets: Mapping[str, Any] | None = None,
                 parse: Callable[[bytes], Any] | None = None, on_change: Callable | None = None):
        self.kv, self.keys = kv, keys
        self.parse = parse or (lambda b: b.decode())
        self.on_change = on_change
        self.values: dict[str, Any] = {}
        self.revisions: dict[str, int] = {}
        self.revision = 0
        self.log: list[tuple[int, str, str, str]] = []
        self.initial: list[str] = []
        self.bound = dict(widgets or {})
        self._watcher = None
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self._initial_due = True
        self._changed = asyncio.Condition()
        self.error: BaseException | None = None
        self._finished = False
        self.table = None
        try:
            import ipywidgets

            self.table = ipywidgets.HTML()
            self.box = ipywidgets.VBox([self.table, *self.bound.values()])
        except ImportError:  # widgets are a view; the follower works without them
            self.box = None
        self._render()

    async def start(self, timeout: float = 5.0) -> "Follower":
        js, stream, pre, _ = await _kv_parts(self.kv)
        # The initial values end with the entry that has nothing pending after it (delta 0), or
        # at once when nothing matches: do not rely on the client's None marker alone (see above).
        self._initial_due = bool((await js.stream_info(stream, subjects_filter=pre + self.keys)).state.subjects)
        self._watcher = await self.kv.watch(self.keys)
        self._task = asyncio.ensure_future(self._run())
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            await self.stop()
            raise
        return self

    async def _run(self) -> None:
        try:
            none_seen = False
            async for entry in self._watcher:
                if entry is not None:
                    await self._apply(entry)
                    if entry.delta == 0:
                        self._initial_due = False
                none_seen = none_seen or entry is None
                if none_seen and not self._initial_due and not self._ready.is_set():
                    self.initial = sorted(self.values)
                    self._ready.set()
        except Exception as exc:  # shown in the summary instead of vanishing in a task
            self.error = exc
        finally:
            self._finished = True
            async with self._changed:
                self._changed.notify_all()

    async def _apply(self, entry) -> None:
        op = entry.operation or "PUT"
        old = self.values.get(entry.key)
        if op in _MARKERS:
            self.values.pop(entry.key, None)
            new = None
        else:
            try:
                new = self.parse(entry.value)
            except Exception:
                new = show(entry.value)
            self.values[entry.key] = new
            widget = self.bound.get(entry.key)
            if widget is not None:
                try:
                    widget.value = type(widget.value)(new) if widget.value is not None else new
                except Exception:  # a value the widget cannot hold: the table still shows it
                    pass
        self.revisions[entry.key] = entry.revision
        self.revision = max(self.revision, entry.revision)
        self.log.append((entry.revision, entry.key, op, "" if new is None else str(new)))
        self._render()
        if self.on_change is not None and self._ready.is_set():
            result = self.on_change(entry.key, old, new)
            if inspect.isawaitable(result):
                await result
        async with self._changed:
            self._changed.notify_all()

    def _render(self) -> None:
        if self.table is None:
            return
        rows = "".join(f"<tr><td><code>{html.escape(k)}</code></td><td><b>{html.escape(str(v))}</b></td>"
                       f"<td>rev {self.revisions.get(k, '')}</td></tr>" for k, v in sorted(self.values.items()))
        self.table.value = (f"<div><b>live view of <code>{html.escape(self.keys)}</code></b> "
                            f"(last revision {self.revision})<table>{rows}</table></div>")

    async def wait_for(self, revision: int | None = None, timeout: float = 5.0, *, key: str | None = None,
                       value: Any = None) -> "Follower":
        """Wait until ``revision`` is applied (or ``key`` holds ``value``); TimeoutError after ``timeout``."""
        def done():
            if revision is not None and self.revision < revision:
                return False
            return key is None or self.values.get(key) == value

        async def wait():
            async with self._changed:
                await self._changed.wait_for(lambda: done() or self._finished)
        await asyncio.wait_for(wait(), timeout)
        if not done():
            raise RuntimeError(f"the watcher stopped before revision {revision} arrived: {self.error!r}")
        return self

    async def stop(self) -> None:
        if self._watcher is not None:
            try:
                await self._watcher.stop()
            except Exception:
                pass
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 2)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._task.cancel()

    def summary(self) -> str:
        vals = ", ".join(f"{k}={v!r}" for k, v in sorted(self.values.items())) or "(no keys)"
        err = f"; error: {self.error!r}" if self.error else ""
        return f"following {self.keys!r}: {vals} (last revision {self.revision}, {len(self.log)} entries applied{err})"

    def __repr__(self) -> str:
        return self.summary()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.box if self.box is not None else self.summary())


async def follow(kv, keys: str = ">", *, widgets: Mapping[str, Any] | None = None,
                 parse: Callable[[bytes], Any] | None = None, on_change: Callable | None = None,
                 timeout: float = 5.0) -> Follower:
    """Start a background watcher on ``keys``; returns once the initial values are in.

    ``widgets`` binds keys to ipywidgets (their ``value`` follows the key, converted to the
    widget's value type); ``parse`` turns bytes into values (default: decode as text);
    ``on_change(key, old, new)`` (sync or async) runs for every change after the initial values.
    """
    return await Follower(kv, keys, widgets=widgets, parse=parse, on_change=on_change).start(timeout)


# ------------------------------------------------------------------------------ race
@dataclass
class RaceResult:
    name: str
    start: int
    final: int
    writers: int
    times: int
    conflicts: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def expected(self) -> int:
        return self.start + self.writers * self.times

    @property
    def lost(self) -> int:
        return self.expected - self.final

    def __repr__(self) -> str:
        verdict = "correct" if self.lost == 0 else f"{self.lost} increments LOST"
        writers = f"{self.writers} writer{'s' if self.writers != 1 else ''}"
        return (f"{self.name}: {writers} x {self.times} increments from {self.start}: "
                f"final {self.final}, expected {self.expected} -> {verdict}; "
                f"conflicts retried per writer: {self.conflicts} ({self.seconds:.2f} s)")


async def counter_value(kv, key: str) -> int:
    try:
        return int((await kv.get(key)).value or 0)
    except jserr.KeyNotFoundError:
        return 0


async def race(kvs: list, key: str, step: Callable, times: int = 25, name: str | None = None) -> RaceResult:
    """Each KeyValue handle in ``kvs`` (one per connection) runs ``await step(kv, key)`` ``times`` times, all at once.

    ``step`` returns how many conflicts it retried (or None).  The result compares the final
    value, read back from the server, with the number of increments that were made.
    """
    start = await counter_value(kvs[0], key)
    conflicts = [0] * len(kvs)

    async def writer(i, kv):
        for _ in range(times):
            conflicts[i] += int(await step(kv, key) or 0)

    t0 = time.perf_counter()
    await asyncio.gather(*(writer(i, kv) for i, kv in enumerate(kvs)))
    seconds = time.perf_counter() - t0
    final = await counter_value(kvs[0], key)
    return RaceResult(name or getattr(step, "__name__", "race"), start, final, len(kvs), times, conflicts, seconds)


def plot_races(*results: RaceResult):
    """Bar chart: increments expected versus found on the server, and conflicts retried, per race."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.4, 1.8 + 1.6 * len(results)), 3.2))
    xs = range(len(results))
    ax.bar([x - 0.27 for x in xs], [r.expected for r in results], 0.27, label="increments made", color="#8c959f")
    ax.bar(list(xs), [r.final for r in results], 0.27, label="counter on the server", color="#1a7f37")
    ax.bar([x + 0.27 for x in xs], [sum(r.conflicts) for r in results], 0.27, label="conflicts retried", color="#bf8700")
    ax.set_xticks(list(xs), [r.name for r in results])
    top = max(max(r.expected, r.final, sum(r.conflicts)) for r in results)
    ax.set_ylim(0, top * 1.3)
    ax.legend(loc="upper center", ncol=3, fontsize="small", frameon=False)
    ax.set_title("lost updates: final value versus increments made")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------ object store
def digest_of(data: bytes) -> str:
    """The object store's digest format for ``data``: ``SHA-256=`` and the URL-safe base64 hash."""
    return "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()


def _headers(headers) -> str:
    """Object headers (values are lists of strings) as ``Name=value, ...``."""
    items = ((k, ",".join(v) if isinstance(v, list) else str(v)) for k, v in (headers or {}).items())
    return show(", ".join(f"{k}={v}" for k, v in items).encode(), 60)


def object_row(info) -> dict:
    link = info.options.link if info.options is not None else None
    return {"name": info.name, "size": info.size, "chunks": info.chunks,
            "digest": (info.digest or "")[:20] + ("…" if info.digest else ""),
            "description": info.description or "", "headers": _headers(info.headers),
            "link": f"-> {link.bucket}/{link.name or '*'}" if link else "", "deleted": bool(info.deleted)}


async def object_table(obs, include_deleted: bool = True) -> Table:
    try:
        infos = await obs.list(ignore_deletes=not include_deleted)
    except jserr.NotFoundError:
        infos = []
    return Table((object_row(i) for i in infos), title="objects")


def meta_subject(bucket: str, name: str) -> str:
    """The subject that holds an object's metadata: ``$O.<bucket>.M.<base64 of the name>``."""
    return f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"


async def add_link(js, bucket: str, name: str, target_bucket: str, target_name: str) -> api.ObjectInfo:
    """Store ``name`` in ``bucket`` as a link to the object ``target_bucket/target_name``.

    nats-py 2.16 has no ``add_link``; a link is only a metadata message whose options name the
    target, so this writes that message (what other clients' AddLink does).  ``get`` follows it.
    """
    target = await (await js.object_store(target_bucket)).get_info(target_name)
    if target.is_link():
        raise ValueError(f"{target_bucket}/{target_name} is itself a link; link to the object it names.")
    info = api.ObjectInfo(name=name, bucket=bucket, nuid=NUID().next().decode(), size=0, chunks=0,
                          mtime=_dt.datetime.now(_dt.timezone.utc).isoformat(), digest="",
                          options=api.ObjectMetaOptions(link=api.ObjectLink(bucket=target_bucket, name=target_name)))
    await js.publish(meta_subject(bucket, name), json.dumps(info.as_dict()).encode(),
                     headers={api.Header.ROLLUP: "sub"})
    return info


__all__ = ["Table", "show", "entry_row", "history_entries", "history_table", "latest_entries", "bucket_table", "bucket_state", "value_of",
           "Follower", "follow", "RaceResult", "counter_value", "race", "plot_races",
           "digest_of", "object_row", "object_table", "meta_subject", "add_link"]
