"""``%nats``: the nats CLI's verbs as IPython magics, against the notebook's server.

    %nats pub orders.new "hello"            %nats stream ls
    %nats sub "orders.>" --count 3          %nats stream info ORDERS
    %nats req time.now ""                   %nats stream view ORDERS --count 5
    %nats reply time.now "12:00"            %nats consumer ls ORDERS
    %nats reply --stop                      %nats consumer info ORDERS worker
    %nats kv put config color blue          %nats kv get config color
    %nats kv watch config --count 3         %nats server list / %nats server info
    %nats use srv                           (a Server or topology variable, a server name or a URL)

Each prints the equivalent ``nats`` CLI command line first, so what a learner does here is what they
will type in production.  "The notebook's server" is the one ``%nats use`` chose, else the most
recently started natslab server or topology in this kernel; ``--server URL`` overrides both.

A line magic cannot ``await`` (the kernel's loop is busy running the cell), so each command runs on a
private event loop in a worker thread, with its own connection, and is bounded in time.  ``reply``
runs in the background until ``%nats reply --stop`` (or its ``--timeout``, or ``natslab.stop_all()``).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import shlex
import sys
import threading
import time
import uuid

from ..errors import NatslabError
from ..runtime import session

DEFAULT_TIMEOUT = 5.0  # seconds a bounded command (sub, watch, view, req) waits at most
DEFAULT_COUNT = 10  # messages a sub/watch/view shows at most
REPLY_LIFETIME = 600.0  # a background responder stops itself after this many seconds


class MagicError(Exception):
    """A problem to report as one line (no traceback)."""


_chosen: dict = {}  # "target": what %nats use chose (a Server/topology object or a URL string)
_responders: dict[str, "Responder"] = {}


# -- where to connect ---------------------------------------------------------------------------
def _live_groups() -> list:
    return [g for g in session.groups() if getattr(g, "servers", None)]


def _running(servers) -> list:
    return [s for s in servers if not getattr(s, "closed", False) and getattr(s, "running", True)]


def _resolve(spec: str, user_ns: dict | None = None):
    """A Server/topology variable name, a natslab server name, or a URL -> a target."""
    if user_ns is not None and spec in user_ns and (hasattr(user_ns[spec], "url") or hasattr(user_ns[spec], "urls")):
        return user_ns[spec]
    if "://" in spec or re.fullmatch(r"[\w.-]+:\d+", spec):
        return spec if "://" in spec else f"nats://{spec}"
    for g in reversed(_live_groups()):
        for s in g.servers:
            if s.name == spec:
                return s
    raise MagicError(f"no server, topology or URL called {spec!r}: pass a variable holding "
                     f"natslab.server(...), a server name, or a URL like nats://127.0.0.1:4222")


def _target(server_opt: str | None, user_ns: dict | None = None):
    """(urls, servers): where to connect, and the natslab Server objects behind them (if known)."""
    if server_opt:
        target = _resolve(server_opt, user_ns)
    elif "target" in _chosen:
        target = _chosen["target"]
    else:
        live = [g for g in _live_groups() if _running(g.servers)]
        if not live:
            raise MagicError("no server running in this notebook: start one with "
                             "srv = natslab.server(\"demo\"), or pass --server nats://HOST:PORT")
        target = live[-1]
    if isinstance(target, str):
        return [u.strip() for u in target.split(",") if u.strip()], []
    servers = list(getattr(target, "servers", None) or (list(target) if hasattr(target, "__iter__") else [target]))
    servers = _running(servers)
    if not servers:
        raise MagicError(f"{_describe(target)} has no running server (stopped or closed): start it again, "
                         f"or go back to the newest server with %nats use --auto")
    return [s.url for s in servers], servers


# -- running a coroutine from a line magic ----------------------------------------------------------
def _run(make, timeout: float):
    """Run ``await make()`` on a private event loop in a thread; at most ``timeout`` (+ grace) seconds."""
    box: dict = {}
    state: dict = {}

    def work():
        async def main():
            state["task"] = asyncio.current_task()
            state["loop"] = asyncio.get_running_loop()
            return await asyncio.wait_for(make(), timeout)
        try:
            box["value"] = asyncio.run(main())
        except BaseException as exc:  # reported by the caller
            box["error"] = exc

    worker = threading.Thread(target=work, name="natslab-magic", daemon=True)
    worker.start()
    deadline = time.monotonic() + timeout + 10
    try:
        while worker.is_alive() and time.monotonic() < deadline:
            worker.join(0.2)  # short waits: the kernel's interrupt (SIGINT) is seen at once
    except KeyboardInterrupt:
        try:
            state["loop"].call_soon_threadsafe(state["task"].cancel)
        except (KeyError, RuntimeError):  # not started yet, or already finished
            pass
        worker.join(5)
        raise MagicError("interrupted") from None
    if worker.is_alive():
        raise MagicError(f"no answer within {timeout + 10:.0f} s (the server may be paused or unreachable)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


async def _connect(urls: list[str]):
    from ..runtime.client import connect

    async def quiet(exc):
        pass
    return await connect(urls, quiet=True, timeout=5, allow_reconnect=False, error_cb=quiet)


def _with_nc(urls, body, timeout: float):
    async def go():
        nc = await _connect(urls)
        try:
            return await body(nc)
        finally:
            try:
                await asyncio.wait_for(nc.drain(), 3)
            except Exception:
                await nc.close()
    return _run(go, timeout)


# -- printing --------------------------------------------------------------------------------------
def _q(arg: str) -> str:
    """Quote one argument the way a shell needs it (double quotes, as the nats docs write them)."""
    if re.fullmatch(r"[\w.@%+=:,/-]+", arg):
        return arg
    return '"' + re.sub(r'(["\\$`])', r"\\\1", arg) + '"'


def _cli(*words, urls) -> None:
    print("$ nats " + " ".join(_q(str(w)) for w in words) + " --server " + ",".join(urls))


def _text(data: bytes, limit: int = 200) -> str:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return f"<{len(data)} bytes of binary data>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _enum(x) -> str:
    return "" if x is None else str(getattr(x, "value", x))


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _table(rows: list[dict], empty: str) -> None:
    if not rows:
        print(empty)
        return
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(width[c]) for c in cols).rstrip())
    print("  ".join("-" * width[c] for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(width[c]) for c in cols).rstrip())


def _pairs(pairs) -> None:
    width = max(len(k) for k, _ in pairs)
    for k, v in pairs:
        print(f"  {k.rjust(width)}: {v}")


def _show(msg, i: int) -> None:
    extra = f" reply {msg.reply}" if getattr(msg, "reply", None) else ""
    print(f"[#{i}] {msg.subject}{extra}: {_text(msg.data)}")
    for k, v in (getattr(msg, "headers", None) or {}).items():
        print(f"      {k}: {v}")


# -- argument parsing ------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):
        usage = " ".join(self.format_usage().split()).removeprefix("usage: ")
        raise MagicError(f"{message} (usage: {usage})")

    def exit(self, status=0, message=None):
        raise _Done()


class _Done(Exception):
    pass


def _parser(prog: str, *positional, count=False, timeout=None) -> _Parser:
    p = _Parser(prog=f"%nats {prog}", add_help=True)
    for name, kw in positional:
        p.add_argument(name, **kw)
    p.add_argument("--server", "-s", help="a URL, a server name or a variable holding a natslab server")
    if count:
        p.add_argument("--count", type=int, default=DEFAULT_COUNT, help=f"stop after N messages (default {DEFAULT_COUNT})")
    if timeout is not None:
        p.add_argument("--timeout", type=float, default=timeout, help=f"seconds to wait at most (default {timeout:g})")
    return p


def _bounded(args) -> None:
    if getattr(args, "count", 1) < 1:
        raise MagicError("--count must be at least 1")
    if getattr(args, "timeout", 1) <= 0 or getattr(args, "timeout", 1) > 3600:
        raise MagicError("--timeout must be between 0 and 3600 seconds")


# -- verbs -----------------------------------------------------------------------------------------
def _pub(argv, ns, cell):
    p = _parser("pub", ("subject", {}), ("body", {"nargs": "*", "default": []}))
    p.add_argument("--count", type=int, default=1, help="publish the message N times")
    p.add_argument("--header", "-H", action="append", default=[], help="a header as Key:Value")
    a = p.parse_args(argv)
    body = cell.rstrip("\n") if cell is not None else " ".join(a.body)
    if a.count < 1 or a.count > 100_000:
        raise MagicError("--count must be between 1 and 100000")
    headers = {}
    for h in a.header:
        if ":" not in h:
            raise MagicError(f"header {h!r} is not Key:Value")
        k, v = h.split(":", 1)
        headers[k.strip()] = v.strip()
    urls, _ = _target(a.server, ns)
    words = ["pub", a.subject, body] + [w for h in a.header for w in ("-H", h)] + (["--count", a.count] if a.count > 1 else [])
    _cli(*words, urls=urls)

    async def body_(nc):
        for _ in range(a.count):
            await nc.publish(a.subject, body.encode(), headers=headers or None)
        await nc.flush()
    _with_nc(urls, body_, DEFAULT_TIMEOUT + a.count / 1000)
    times = f" {a.count} times" if a.count > 1 else ""
    print(f"Published {len(body.encode())} bytes to {a.subject}{times}")


def _sub(argv, ns, cell):
    p = _parser("sub", ("subject", {}), count=True, timeout=DEFAULT_TIMEOUT)
    p.add_argument("--queue", help="join this queue group")
    a = p.parse_args(argv)
    _bounded(a)
    urls, _ = _target(a.server, ns)
    _cli("sub", a.subject, *(["--queue", a.queue] if a.queue else []), "--count", a.count, urls=urls)

    async def body(nc):
        got = 0
        sub = await nc.subscribe(a.subject, queue=a.queue or "")
        await nc.flush()
        print(f"Listening on {a.subject} for {a.count} message(s), at most {a.timeout:g} s")
        deadline = time.monotonic() + a.timeout
        while got < a.count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                msg = await sub.next_msg(timeout=left)
            except Exception:
                break
            got += 1
            _show(msg, got)
        return got
    got = _with_nc(urls, body, a.timeout + 5)
    if got < a.count:
        print(f"Stopped after {a.timeout:g} s: {got} message(s) received")


def _req(argv, ns, cell):
    p = _parser("req", ("subject", {}), ("body", {"nargs": "*", "default": []}), timeout=2.0)
    a = p.parse_args(argv)
    _bounded(a)
    body = cell.rstrip("\n") if cell is not None else " ".join(a.body)
    urls, _ = _target(a.server, ns)
    _cli("req", a.subject, body, "--timeout", f"{a.timeout:g}s", urls=urls)
    from nats.errors import NoRespondersError, TimeoutError as NatsTimeout

    async def go(nc):
        t0 = time.perf_counter()
        try:
            msg = await nc.request(a.subject, body.encode(), timeout=a.timeout)
        except NoRespondersError:
            raise MagicError(f"no responders on {a.subject}: nobody subscribes to it (start one with %nats reply {a.subject} ...)")
        except (NatsTimeout, asyncio.TimeoutError):
            raise MagicError(f"no reply on {a.subject} within {a.timeout:g} s")
        print(f"Received reply in {(time.perf_counter() - t0) * 1000:.1f} ms: {_text(msg.data)}")
        for k, v in (msg.headers or {}).items():
            print(f"  {k}: {v}")
    _with_nc(urls, go, a.timeout + 5)


class Responder:
    """A background ``%nats reply``: its own thread, loop and connection; stops with stop_all()."""

    kind = "responder"
    servers: list = []

    def __init__(self, urls, subject, body, echo, queue, lifetime):
        self.id = f"responder-{uuid.uuid4().hex[:8]}"
        self.urls, self.subject, self.body, self.echo, self.queue = urls, subject, body, echo, queue
        self.count = 0
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop = None
        self._stop = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main(lifetime)),
                                        name=f"natslab-{self.id}", daemon=True)

    async def _main(self, lifetime):
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            nc = await _connect(self.urls)
        except BaseException as exc:
            self.error = exc
            self._ready.set()
            return
        try:
            async def handle(msg):
                self.count += 1
                if msg.reply:
                    text = self.body.replace("{{Count}}", str(self.count)).replace("{{Request}}", _text(msg.data, 10_000))
                    await nc.publish(msg.reply, msg.data if self.echo else text.encode())
            await nc.subscribe(self.subject, queue=self.queue or "", cb=handle)
            await nc.flush()
            self._ready.set()
            try:
                await asyncio.wait_for(self._stop.wait(), lifetime)
            except asyncio.TimeoutError:
                pass
        finally:
            self._ready.set()
            try:
                await asyncio.wait_for(nc.drain(), 3)
            except Exception:
                await nc.close()
            _responders.pop(self.id, None)
            session.unregister(self)

    def start(self) -> "Responder":
        _responders[self.id] = self
        session.register(self)
        self._thread.start()
        self._ready.wait(15)
        if self.error is not None:
            self.close()
            raise self.error
        return self

    def close(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(10)
        _responders.pop(self.id, None)
        session.unregister(self)

    def __repr__(self) -> str:
        return f"<natslab responder on {self.subject}, {self.count} request(s) served>"


def _reply(argv, ns, cell):
    p = _parser("reply", ("subject", {"nargs": "?"}), ("body", {"nargs": "*", "default": []}),
                timeout=REPLY_LIFETIME)
    p.add_argument("--echo", action="store_true", help="answer with the request's own body")
    p.add_argument("--queue", help="join this queue group")
    p.add_argument("--stop", action="store_true", help="stop the background responders (all, or this subject's)")
    a = p.parse_args(argv)
    if a.subject == "ls" and not a.body:
        _table([{"subject": r.subject, "served": r.count, "queue": r.queue or ""} for r in list(_responders.values())],
               "No responders running.")
        return
    if a.stop or (a.subject == "stop" and not a.body):
        only = a.subject if a.stop else None
        which = [r for r in list(_responders.values()) if only in (None, r.subject)]
        for r in which:
            r.close()
            print(f"Stopped the responder on {r.subject} after {r.count} request(s)")
        if not which:
            print(f"No responder on {only}." if only else "No responders running.")
        return
    if not a.subject:
        raise MagicError("reply needs a subject (usage: %nats reply SUBJECT BODY, or --stop)")
    _bounded(a)
    body = cell.rstrip("\n") if cell is not None else " ".join(a.body)
    # the CLI's templates; IPython's {var} expansion turns {{Count}} into {Count}: accept both
    body = re.sub(r"\{\{?(Count|Request)\}\}?", r"{{\1}}", body)
    echo = a.echo or not body
    urls, _ = _target(a.server, ns)
    _cli("reply", a.subject, *(["--echo"] if echo else [body]), *(["--queue", a.queue] if a.queue else []), urls=urls)
    Responder(urls, a.subject, body, echo, a.queue, a.timeout).start()
    what = "the request's body" if echo else repr(body)
    print(f"Replying to {a.subject} with {what} in the background for at most {a.timeout:g} s; "
          f"stop with %nats reply --stop")


def _js_errors(exc, what: str):
    from nats.js.errors import NotFoundError, ServiceUnavailableError
    from nats.errors import NoRespondersError
    if isinstance(exc, NotFoundError):
        return MagicError(f"{what} not found")
    if isinstance(exc, (ServiceUnavailableError, NoRespondersError)):
        return MagicError("JetStream is not enabled on this server (start it with natslab.server(..., jetstream=True))")
    return None


def _js(urls, body, what: str, timeout: float = DEFAULT_TIMEOUT):
    async def go(nc):
        try:
            return await body(nc.jetstream(timeout=min(timeout, 5)))
        except MagicError:
            raise
        except Exception as exc:
            mapped = _js_errors(exc, what)
            if mapped is None:
                raise
            raise mapped from None
    return _with_nc(urls, go, timeout + 5)


def _stream(argv, ns, cell):
    if not argv:
        raise MagicError("stream needs a sub-command: ls, info NAME, view NAME")
    sub, rest = argv[0], argv[1:]
    if sub in ("ls", "list"):
        a = _parser("stream ls").parse_args(rest)
        urls, _ = _target(a.server, ns)
        _cli("stream", "ls", urls=urls)

        async def go(js):
            return await js.streams_info()
        infos = _js(urls, go, "streams")
        _table([{"name": i.config.name, "subjects": ", ".join(i.config.subjects or []), "messages": i.state.messages,
                 "bytes": _size(i.state.bytes), "storage": _enum(i.config.storage)}
                for i in sorted(infos, key=lambda i: i.config.name)], "No streams defined.")
    elif sub == "info":
        a = _parser("stream info", ("name", {})).parse_args(rest)
        urls, _ = _target(a.server, ns)
        _cli("stream", "info", a.name, urls=urls)
        i = _js(urls, lambda js: js.stream_info(a.name), f"stream {a.name!r}")
        c, s = i.config, i.state
        print(f"Stream {c.name}")
        _pairs([("subjects", ", ".join(c.subjects or [])), ("storage", _enum(c.storage)),
                ("replicas", c.num_replicas), ("retention", _enum(c.retention)),
                ("discard", _enum(c.discard)),
                ("max msgs", c.max_msgs), ("max bytes", c.max_bytes), ("max age", f"{c.max_age or 0:g} s"),
                ("messages", s.messages), ("bytes", _size(s.bytes)), ("first seq", s.first_seq),
                ("last seq", s.last_seq), ("consumers", s.consumer_count)])
        if i.cluster is not None and i.cluster.name:
            peers = ", ".join(f"{r.name}{'' if r.current else ' (behind)'}" for r in i.cluster.replicas or [])
            print(f"  cluster {i.cluster.name}: leader {i.cluster.leader}" + (f", followers {peers}" if peers else ""))
    elif sub == "view":
        p = _parser("stream view", ("name", {}), count=True)
        p.add_argument("--subject", help="only messages on this subject")
        a = p.parse_args(rest)
        _bounded(a)
        urls, _ = _target(a.server, ns)
        _cli("stream", "view", a.name, *(["--subject", a.subject] if a.subject else []), "--count", a.count, urls=urls)

        async def go(js):
            from nats.js.errors import NotFoundError
            info = await js.stream_info(a.name)
            seq, shown = info.state.first_seq, []
            while len(shown) < a.count and seq <= info.state.last_seq:
                try:
                    m = await js.get_msg(a.name, seq=seq, subject=a.subject, next=True)
                except NotFoundError:
                    break
                shown.append(m)
                seq = m.seq + 1
            return info, shown
        info, shown = _js(urls, go, f"stream {a.name!r}")
        for m in shown:
            print(f"[{m.seq}] {m.subject}: {_text(m.data or b'')}")
        if not shown:
            print(f"Stream {a.name} has no messages" + (f" on {a.subject}" if a.subject else ""))
        elif shown[-1].seq < info.state.last_seq:
            print(f"... showing {len(shown)}; the stream holds {info.state.messages} (use --count)")
    else:
        raise MagicError(f"unknown stream sub-command {sub!r}: use ls, info NAME or view NAME")


def _consumer(argv, ns, cell):
    if not argv:
        raise MagicError("consumer needs a sub-command: ls STREAM, info STREAM NAME")
    sub, rest = argv[0], argv[1:]
    if sub in ("ls", "list"):
        a = _parser("consumer ls", ("stream", {})).parse_args(rest)
        urls, _ = _target(a.server, ns)
        _cli("consumer", "ls", a.stream, urls=urls)
        infos = _js(urls, lambda js: js.consumers_info(a.stream), f"stream {a.stream!r}")
        _table([{"name": i.name, "pending": i.num_pending, "ack pending": i.num_ack_pending,
                 "redelivered": i.num_redelivered, "delivered": i.delivered.stream_seq if i.delivered else 0}
                for i in sorted(infos, key=lambda i: i.name)], f"No consumers on stream {a.stream}.")
    elif sub == "info":
        a = _parser("consumer info", ("stream", {}), ("name", {})).parse_args(rest)
        urls, _ = _target(a.server, ns)
        _cli("consumer", "info", a.stream, a.name, urls=urls)
        i = _js(urls, lambda js: js.consumer_info(a.stream, a.name), f"consumer {a.name!r} on stream {a.stream!r}")
        c = i.config
        print(f"Consumer {i.name} on stream {i.stream_name}")
        _pairs([("durable", c.durable_name or "(ephemeral)"), ("filter", c.filter_subject or ", ".join(c.filter_subjects or []) or "(all)"),
                ("deliver policy", _enum(c.deliver_policy)),
                ("ack policy", _enum(c.ack_policy)), ("ack wait", f"{c.ack_wait or 0:g} s"),
                ("max deliver", c.max_deliver), ("pull" if not c.deliver_subject else "push to", c.deliver_subject or "yes"),
                ("delivered (stream seq)", i.delivered.stream_seq if i.delivered else 0),
                ("acked floor (stream seq)", i.ack_floor.stream_seq if i.ack_floor else 0),
                ("pending", i.num_pending), ("ack pending", i.num_ack_pending), ("redelivered", i.num_redelivered),
                ("waiting pulls", i.num_waiting)])
    else:
        raise MagicError(f"unknown consumer sub-command {sub!r}: use ls STREAM or info STREAM NAME")


def _kv(argv, ns, cell):
    if not argv:
        raise MagicError("kv needs a sub-command: get BUCKET KEY, put BUCKET KEY VALUE, watch BUCKET [KEY]")
    sub, rest = argv[0], argv[1:]
    if sub == "get":
        a = _parser("kv get", ("bucket", {}), ("key", {})).parse_args(rest)
        urls, _ = _target(a.server, ns)
        _cli("kv", "get", a.bucket, a.key, urls=urls)

        async def go(js):
            from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError
            try:
                kv = await js.key_value(a.bucket)
            except BucketNotFoundError:
                raise MagicError(f"bucket {a.bucket!r} not found") from None
            try:
                return await kv.get(a.key)
            except KeyDeletedError:
                raise MagicError(f"key {a.key!r} was deleted from bucket {a.bucket}") from None
            except KeyNotFoundError:
                raise MagicError(f"key {a.key!r} not found in bucket {a.bucket}") from None
        e = _js(urls, go, f"bucket {a.bucket!r}")
        print(f"{a.bucket} > {e.key} revision {e.revision}: {_text(e.value or b'')}")
    elif sub == "put":
        p = _parser("kv put", ("bucket", {}), ("key", {}), ("value", {"nargs": "*", "default": []}))
        a = p.parse_args(rest)
        value = cell.rstrip("\n") if cell is not None else " ".join(a.value)
        urls, _ = _target(a.server, ns)
        _cli("kv", "put", a.bucket, a.key, value, urls=urls)

        async def go(js):
            from nats.js.errors import BucketNotFoundError
            try:
                kv = await js.key_value(a.bucket)
            except BucketNotFoundError:
                raise MagicError(f"bucket {a.bucket!r} not found (create it with "
                                 f"await js.create_key_value(bucket={a.bucket!r}) or nats kv add {a.bucket})") from None
            return await kv.put(a.key, value.encode())
        rev = _js(urls, go, f"bucket {a.bucket!r}")
        print(f"Stored {a.key} in {a.bucket}: revision {rev}")
    elif sub == "watch":
        p = _parser("kv watch", ("bucket", {}), ("key", {"nargs": "?", "default": ">"}), count=True, timeout=DEFAULT_TIMEOUT)
        a = p.parse_args(rest)
        _bounded(a)
        urls, _ = _target(a.server, ns)
        _cli("kv", "watch", a.bucket, *([a.key] if a.key != ">" else []), urls=urls)

        async def go(js):
            from nats.js.errors import BucketNotFoundError
            try:
                kv = await js.key_value(a.bucket)
            except BucketNotFoundError:
                raise MagicError(f"bucket {a.bucket!r} not found") from None
            w = await kv.watch(a.key)
            print(f"Watching {a.bucket}{'' if a.key == '>' else ' > ' + a.key} for {a.count} update(s), at most {a.timeout:g} s "
                  f"(current values first)")
            got, deadline = 0, time.monotonic() + a.timeout
            try:
                while got < a.count and time.monotonic() < deadline:
                    try:
                        e = await w.updates(timeout=max(0.05, deadline - time.monotonic()))
                    except Exception:
                        break
                    if e is None:  # end of the initial values
                        continue
                    got += 1
                    op = (f" {e.operation}" if e.operation else "")
                    print(f"[{e.revision}]{op} {e.key}: {_text(e.value or b'')}")
            finally:
                await w.stop()
            return got
        got = _js(urls, go, f"bucket {a.bucket!r}", a.timeout + 5)
        if got < a.count:
            print(f"Stopped after {a.timeout:g} s: {got} update(s)")
    else:
        raise MagicError(f"unknown kv sub-command {sub!r}: use get, put or watch")


def _since(stamp: str) -> str:
    """'2026-11-30T15:46:40.72Z' -> '3m12s' (how the server's /varz writes uptime)."""
    from datetime import datetime, timezone
    try:
        start = datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", stamp).replace("Z", "+00:00"))
    except ValueError:
        return ""
    secs = int((datetime.now(timezone.utc) - start).total_seconds())
    parts = [(secs // 86400, "d"), (secs // 3600 % 24, "h"), (secs // 60 % 60, "m"), (secs % 60, "s")]
    return "".join(f"{n}{u}" for n, u in parts if n) or "0s"


def _varz_row(v: dict) -> dict:
    return {"name": v.get("server_name", ""), "version": v.get("version", ""), "cluster": (v.get("cluster") or {}).get("name", ""),
            "conns": v.get("connections", 0), "subs": v.get("subscriptions", 0),
            "js": "yes" if v.get("jetstream", {}).get("config") else "no", "uptime": v.get("uptime", ""),
            "mem": _size(v.get("mem", 0))}


def _server(argv, ns, cell):
    if not argv:
        raise MagicError("server needs a sub-command: list, info")
    sub, rest = argv[0], argv[1:]
    if sub in ("list", "ls"):
        p = _parser("server list", timeout=1.0)
        a = p.parse_args(rest)
        _bounded(a)
        urls, servers = _target(a.server, ns)
        _cli("server", "list", urls=urls)

        async def ping(nc):
            inbox, rows = nc.new_inbox(), []
            sub = await nc.subscribe(inbox)
            await nc.flush()
            await nc.publish("$SYS.REQ.SERVER.PING", b"", reply=inbox)
            deadline = time.monotonic() + a.timeout
            while time.monotonic() < deadline:
                try:
                    m = await sub.next_msg(timeout=max(0.05, deadline - time.monotonic()))
                except Exception:
                    break
                try:
                    answer = json.loads(m.data)
                except ValueError:  # "no responders" status: no system account on this connection
                    break
                who, stats = answer.get("server") or {}, answer.get("statsz") or {}
                start = stats.get("start", "")
                rows.append({"name": who.get("name", ""), "version": who.get("ver", ""), "cluster": who.get("cluster", ""),
                             "conns": stats.get("connections", 0), "subs": stats.get("subscriptions", 0),
                             "js": "yes" if who.get("jetstream") else "no",
                             "uptime": _since(start) if start else "", "mem": _size(stats.get("mem", 0))})
            return rows
        rows = _with_nc(urls, ping, a.timeout + 3)
        if rows:
            print("(from $SYS.REQ.SERVER.PING: every server of the system answered)")
        else:
            if not servers:
                raise MagicError("no server answered $SYS.REQ.SERVER.PING (that needs a system-account user) and "
                                 "this URL is not a natslab server whose /varz I can read")
            print("(no system account here: the notebook's servers' /varz)")
            rows = [_varz_row(s.monitor("varz")) for s in servers]
        _table(sorted(rows, key=lambda r: r["name"]), "No servers answered.")
    elif sub == "info":
        a = _parser("server info", ("name", {"nargs": "?"})).parse_args(rest)
        urls, servers = _target(a.server, ns)
        if a.name:
            pick = [s for s in servers if s.name == a.name]
            if not pick:
                raise MagicError(f"no server called {a.name!r} here (servers: {', '.join(s.name for s in servers) or 'none known'})")
            servers = pick
            urls = [pick[0].url]
        _cli("server", "info", *([a.name] if a.name else []), urls=urls)
        if servers:
            v = servers[0].monitor("varz")
        else:
            async def info(nc):
                return dict(nc._server_info)
            v = _with_nc(urls, info, DEFAULT_TIMEOUT)
        js = v.get("jetstream", {}).get("config") or ({"enabled": True} if v.get("jetstream") is True else None)
        print(f"Server {v.get('server_name', '')} ({v.get('server_id', '')[:12]}…)")
        _pairs([("version", v.get("version", "")), ("go", v.get("go", "")), ("host", f"{v.get('host', '')}:{v.get('port', '')}"),
                ("cluster", (v.get("cluster") or {}).get("name") or v.get("cluster", "") or "(none)"),
                ("jetstream", "enabled" if js else "disabled"), ("max payload", _size(v.get("max_payload", 0))),
                ("connections", v.get("connections", "n/a")), ("subscriptions", v.get("subscriptions", "n/a")),
                ("in / out msgs", f"{v.get('in_msgs', 'n/a')} / {v.get('out_msgs', 'n/a')}"),
                ("uptime", v.get("uptime", "n/a"))])
    else:
        raise MagicError(f"unknown server sub-command {sub!r}: use list or info")


def _use(argv, ns, cell):
    if not argv:
        if "target" in _chosen:
            print(f"Using {_describe(_chosen['target'])} (chosen with %nats use; %nats use --auto to go back)")
        else:
            try:
                urls, _ = _target(None, ns)
                print(f"Using the most recently started server: {', '.join(urls)}")
            except MagicError as exc:
                print(str(exc))
        return
    if argv[0] in ("--auto", "--reset", "auto"):
        _chosen.pop("target", None)
        print("Using the most recently started natslab server or topology")
        return
    target = _resolve(argv[0], ns)
    _chosen["target"] = target
    print(f"Using {_describe(target)}")


def _describe(target) -> str:
    if isinstance(target, str):
        return target
    if hasattr(target, "servers") and not hasattr(target, "url"):  # a server group
        return ", ".join(s.name for s in target.servers) or "the newest server group"
    urls = list(getattr(target, "urls", None) or [target.url])
    return f"{getattr(target, 'name', type(target).__name__)} at {', '.join(urls)}"


VERBS = {"pub": _pub, "sub": _sub, "req": _req, "request": _req, "reply": _reply, "stream": _stream,
         "consumer": _consumer, "kv": _kv, "server": _server, "use": _use}

USAGE = __doc__.split("\n\n")[1]


def nats_magic(line: str, cell: str | None = None, user_ns: dict | None = None) -> None:
    """``%nats VERB ...``: run one nats CLI verb against the notebook's server (``%nats help``)."""
    try:
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise MagicError(f"cannot read the command line: {exc}")
        if not argv or argv[0] in ("help", "--help", "-h"):
            print("%nats mirrors the nats CLI:\n" + USAGE)
            return
        verb = VERBS.get(argv[0])
        if verb is None:
            raise MagicError(f"unknown verb {argv[0]!r}: use one of {', '.join(v for v in VERBS if v != 'request')}")
        verb(argv[1:], user_ns, cell)
    except _Done:
        pass
    except MagicError as exc:
        print(f"nats: error: {exc}", file=sys.stderr)
    except NatslabError as exc:
        print(f"nats: error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
    except (asyncio.TimeoutError, TimeoutError):
        print("nats: error: timed out waiting for the server", file=sys.stderr)
    except Exception as exc:  # nats-py's errors: one line, its class names the cause
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"nats: error: {type(exc).__name__}{': ' + text if text else ''}", file=sys.stderr)


def register(shell) -> None:
    """Register ``%nats`` / ``%%nats`` on an IPython shell."""
    def line_and_cell(line, cell=None):
        return nats_magic(line, cell, shell.user_ns)
    line_and_cell.__doc__ = f"{nats_magic.__doc__}\n\n{USAGE}\n\n``%nats VERB -h`` lists a verb's options."
    shell.register_magic_function(line_and_cell, "line_cell", "nats")


def load_ipython_extension(shell) -> None:  # %load_ext natslab.lessons.magics
    register(shell)


def autoload() -> None:
    """Register the magics if natslab is imported inside IPython (a notebook); do nothing otherwise."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return
    try:
        shell = ipython.get_ipython()
        if shell is not None:
            register(shell)
    except Exception:
        pass
