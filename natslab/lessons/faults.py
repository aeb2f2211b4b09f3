"""A catalogue of ways to break a real deployment, for lesson 08.6 and the module 08 checkers.

Each ``break_<x>(...)`` breaks a running natslab server (or topology) the way production breaks,
and returns a :class:`Broken` saying what it did (and how to undo it where that is just a call).
The diagnosis is never here: the lesson and the learner find each fault from its symptoms, with
the server's own diagnostics (``/varz``, ``/connz``, ``/jsz``, ``/routez``, ``/leafz``, the log).

``reload(srv)`` writes the server's config again and sends it SIGHUP, the signal
``nats-server --signal reload`` sends, then waits for the server's "Reloaded server configuration"
log line.  ``Ops`` is the operator's handle on one server that the lab hands to learner code:
the config file to edit, ``reload()`` and ``restart()`` (which keep the file as edited).
"""
from __future__ import annotations

import asyncio
import signal
import socket
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import NatslabError
from ..runtime import confgen, ports as portlib
from ..runtime.waiting import until_sync
from .fanout import RawClient

RELOADED = "Reloaded server configuration"


@dataclass
class Broken:
    """What a ``break_*`` function did: the fault's name, a sentence, and an undo (or None)."""

    fault: str
    did: str
    undo: Callable[[], Any] | None = None
    details: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"<Broken {self.fault}: {self.did}>"


# ------------------------------------------------------------------------------ operating a server
def _reloads(srv) -> int:
    return srv.logs().count(RELOADED)


def send_reload(srv) -> None:
    """SIGHUP to the server (what ``nats-server --signal reload=<pid>`` does); no waiting."""
    srv.handle.signal(signal.SIGHUP)


def reload(srv, text: str | None = None, timeout: float = 15.0) -> str:
    """Write ``text`` (default: the config natslab renders now) and reload; return the log lines.

    Raises NatslabError with the server's own words if it refused the new config.
    """
    before = _reloads(srv)
    start = len(srv.logs())
    srv.config_path.write_text(srv.render_config() if text is None else text)
    send_reload(srv)

    def done():
        new = srv.logs()[start:]
        return _reloads(srv) > before or ("[ERR]" in new and "reload" in new.lower())
    until_sync(done, f"{srv.name} to reload its configuration", timeout=timeout, every=0.05)
    new = srv.logs()[start:]
    if _reloads(srv) <= before:
        errs = [l.split("[ERR] ", 1)[1] for l in new.splitlines() if "[ERR] " in l]
        raise NatslabError(f"{srv.name} refused the new configuration: {errs[-1] if errs else 'see its log'}",
                           "the server keeps running on its old config. Correct the file and reload again; "
                           "a setting a reload cannot change (a lower JetStream limit, "
                           "listen ports; a new cluster name is ignored) needs a restart of that server.")
    return new


class Ops:
    """The operator's handle on one running server: its config file, reload and restart.

    ``config_path`` is the file the server reads; edit it (text), then ``reload()`` (SIGHUP:
    clients stay connected) or ``restart()`` (stop and start with the edited file: every client
    is disconnected).  ``url``, ``monitor_url`` and ``logs()`` are there to check the result.
    """

    def __init__(self, srv):
        self._srv = srv
        self.name = srv.name
        self.url = srv.url
        self.monitor_url = srv.monitor_url
        self.config_path = srv.config_path
        self.reloads = 0
        self.restarts = 0

    def logs(self) -> str:
        return self._srv.logs()

    def reload(self) -> str:
        """Reload the config file as it is now; return the server's log lines about it."""
        self.reloads += 1
        return reload(self._srv, self.config_path.read_text())

    def restart(self, timeout: float = 30.0) -> None:
        """Stop the server and start it again on the config file as it is now."""
        self.restarts += 1
        restart_as_is(self._srv, timeout)

    def __repr__(self) -> str:
        return f"<Ops {self.name} {self.url} config {self.config_path}>"


def restart_as_is(srv, timeout: float = 30.0) -> None:
    """Stop ``srv`` and start it on its config file as edited (natslab's restart writes it afresh)."""
    srv.stop()
    srv.handle.start()
    srv.wait_ready(timeout)


def restart_with(srv, timeout: float = 30.0) -> None:
    """Stop ``srv`` and start it on the config natslab renders from its settings now; return once it
    answers on its monitoring port (a node its peers refuse never reports healthy)."""
    from ..runtime.monitor import NOT_ANSWERING

    srv.stop()
    srv.config_path.write_text(srv.render_config())
    srv.handle.start()
    until_sync(lambda: srv.running and srv.monitor("varz", timeout=2), f"{srv.name} to answer again",
               timeout=timeout, every=0.05, retry=NOT_ANSWERING)


# ------------------------------------------------------------------------------ client-side faults
def break_port(srv) -> Broken:
    """A client configured with the wrong port: nothing listens there (connection refused)."""
    port = portlib.reserve(1)[0]  # held by natslab, so no server takes it meanwhile
    url = f"nats://127.0.0.1:{port}"
    return Broken("wrong_port", f"the client's URL names port {port}, where nothing listens "
                                f"(the server is on {srv.ports['client']})",
                  undo=lambda: portlib.release([port]), details={"url": url})


def break_pause(srv) -> Broken:
    """A hung server: the process is frozen (SIGSTOP); TCP still accepts, nothing answers."""
    srv.pause()
    return Broken("server_paused", f"{srv.name} is frozen: connections open but nothing answers "
                                   "(connect and HTTP time out)", undo=srv.resume)


def _users(conf: dict):
    yield from (conf.get("authorization") or {}).get("users", [])
    for account in (conf.get("accounts") or {}).values():
        yield from account.get("users", [])


def break_permission(srv, user: str, subject: str) -> Broken:
    """Take publish permission on ``subject`` away from ``user`` (a deny rule; config reload, so
    clients stay connected).  ``undo()`` removes the rule and reloads again."""
    for u in _users(srv.extra):
        if u.get("user") == user:
            publish = u.setdefault("permissions", {}).setdefault("publish", {})
            publish["deny"] = list(publish.get("deny", [])) + [subject]
            break
    else:
        raise NatslabError(f"{srv.name} has no user {user!r} in its config.",
                           "start the server with users in config={'authorization': ...} or {'accounts': ...}.")

    def undo():
        publish["deny"].remove(subject)
        if not publish["deny"]:
            del publish["deny"]
        reload(srv)
    reload(srv)
    return Broken("not_authorized", f"user {user!r} may no longer publish to {subject!r} (reloaded)", undo=undo)


async def break_responders(sub, srv=None, account: str | None = None) -> Broken:
    """The service is gone: its subscription ends, so requests meet no responders.

    With ``srv`` (and the subscriber's ``account`` where there are accounts), return only once the
    server itself no longer routes the subject to anyone (a request sent sooner could still reach
    the old subscription and time out instead)."""
    from ..runtime.waiting import until

    subject = sub.subject
    await sub.unsubscribe()
    if srv is not None:
        where = {"acc": account} if account else {}
        await until(lambda: not srv.monitor("subsz", subs=True, test=subject, **where).get("total"),
                    f"the server to drop the subscription to {subject!r}", timeout=15)
    return Broken("no_responders", f"nobody subscribes to {subject!r} any more")


def break_client_tls(srv, server_cert, timeout: float = 30.0) -> Broken:
    """The server now requires TLS (a ``tls`` block); clients that dial plain nats:// fail."""
    srv.extra["tls"] = {"cert_file": str(server_cert.cert), "key_file": str(server_cert.key), "timeout": 2}
    srv.restart(timeout)
    return Broken("tls_required", f"{srv.name} requires TLS from clients now")


# ------------------------------------------------------------------------------ server-side faults
async def break_slow_consumer(srv, pub, subject: str, name: str = "stuck-reader",
                              max_messages: int = 40_000, size: int = 8192, user: str | None = None,
                              password: str | None = None) -> Broken:
    """A subscriber that stops reading while ``pub`` keeps publishing: the server cuts it off.

    Bounded: at most ``max_messages`` are sent, and sending stops as soon as /varz counts it.
    Works fastest on a server with a small ``max_pending`` (e.g. 256KB) and ``write_deadline``.
    """
    before = srv.monitor("varz").get("slow_consumers", 0)
    raw = await asyncio.to_thread(RawClient, srv, subject, name, user=user, password=password)
    sent = 0
    try:
        while srv.monitor("varz").get("slow_consumers", 0) <= before and sent < max_messages:
            for _ in range(200):
                await pub.publish(subject, b"p" * size)
            await pub.flush()
            sent += 200
    finally:
        await asyncio.to_thread(raw.close)
    now = srv.monitor("varz").get("slow_consumers", 0)
    if now <= before:
        raise NatslabError("the server never cut the stuck subscriber off.",
                           "give the server a small max_pending (256KB) and write_deadline (2s).")
    return Broken("slow_consumer", f"{name} stopped reading {subject!r}; the server closed it as a slow "
                                   f"consumer after {sent} messages", details={"sent": sent})


async def break_consumer_lag(js, subject: str, n: int = 500, size: int = 64) -> Broken:
    """Publish ``n`` messages that the stream's consumers do not read: consumer lag."""
    for i in range(n):
        await js.publish(subject, f"{i:0{size}d}".encode())
    return Broken("consumer_lag", f"{n} messages published to {subject!r} and nobody consumes them",
                  details={"n": n})


def break_storage(srv, limit: str = "1MB", timeout: float = 30.0) -> Broken:
    """Shrink the server's JetStream file storage (``max_file_store``) and restart it (a reload may
    raise the limit but not lower it: "config reload not supported for decreasing jetstream max
    memory and store").  Stored data stays; clients reconnect."""
    old = dict(srv.jetstream) if isinstance(srv.jetstream, dict) else {}
    srv.jetstream = {**old, "max_file_store": confgen.Raw(limit)}
    srv.restart(timeout)
    return Broken("storage_full", f"{srv.name} restarted with max_file_store {limit}", details={"limit": limit})


async def fill_storage(js, subject: str, size: int = 4096, max_messages: int = 5000) -> int:
    """Publish until JetStream refuses (its storage is full); return how many were acknowledged.

    A publish that merely times out (a busy machine) is tried again; a refusal ends the filling."""
    import nats

    stored = timeouts = 0
    for _ in range(max_messages):
        try:
            await js.publish(subject, b"f" * size, timeout=2)
            stored += 1
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            timeouts += 1
            if timeouts > 20:
                return stored
        except Exception:
            return stored
    raise NatslabError(f"JetStream stored {max_messages} messages without running out of storage.",
                       "shrink max_file_store first (break_storage).")


async def break_memory(srv, subject: str, pub, messages: int = 1000, size: int = 16384,
                       name: str = "hoarder", user: str | None = None, password: str | None = None) -> Broken:
    """Memory growth: a client that stops reading under a generous max_pending; the server buffers
    what it owes that client.  ``undo()`` closes that client (the server frees its buffer)."""
    raw = await asyncio.to_thread(RawClient, srv, subject, name, user=user, password=password)
    for i in range(messages):
        await pub.publish(subject, b"m" * size)
        if i % 200 == 199:
            await pub.flush()
    await pub.flush()
    return Broken("memory_growth", f"{name} reads nothing; the server buffers {messages} x {size} B for it",
                  undo=raw.close)


# ------------------------------------------------------------------------------ topology faults
def break_cluster_name(srv, name: str = "wrong-name", timeout: float = 30.0) -> Broken:
    """Restart one cluster node under another cluster name: its peers refuse its routes."""
    good = srv.cluster_name
    srv.cluster_name = name
    restart_with(srv, timeout)
    return Broken("cluster_name_mismatch", f"{srv.name} restarted with cluster name {name!r} "
                                           f"(its peers are in {good!r})", details={"good": good})


def break_route_tls(srv, server_cert, ca, timeout: float = 30.0) -> Broken:
    """Turn on TLS for one node's routes only: the handshake fails both ways."""
    srv.extra.setdefault("cluster", {})["tls"] = {"cert_file": str(server_cert.cert),
                                                  "key_file": str(server_cert.key),
                                                  "ca_file": str(ca.path), "timeout": 2}
    restart_with(srv, timeout)
    return Broken("route_tls_mismatch", f"{srv.name} requires TLS on its routes; its peers do not speak it")


def break_leaf_credentials(leaf, hub, user: str, password: str, timeout: float = 30.0) -> Broken:
    """Restart a leaf node with credentials the hub does not accept: the leaf link is refused."""
    host = leaf.runner.peer_host(hub)
    leaf.leaf_remotes[0]["urls"] = [f"nats-leaf://{user}:{password}@{host}:{hub.ports['leafnode']}"]
    restart_with(leaf, timeout)
    return Broken("leaf_credentials", f"{leaf.name} dials {hub.name} as {user!r} with a wrong password")


def closed_port_refuses(port: int) -> bool:
    """True if nothing accepts TCP on 127.0.0.1:``port`` (a sanity check for break_port)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except OSError:
        return True


# ------------------------------------------------------------------------------ a small deployment
def cluster_with_leaf(cluster_name: str = "core", leaf_user: str = "edge", leaf_password: str = "edge-pw",
                      backend: str | None = None, timeout: float = 30.0):
    """Two clustered nodes (``n1``, ``n2``) accepting leaf nodes with a user and password, and a leaf
    node (``leaf``) connected to them: the deployment the topology faults break.  Returns the
    natslab group (``group.close()`` stops everything) and the three servers by name."""
    from ..runtime import session
    from ..runtime.server import Server
    from ..runtime.topology import PEER_PINGS, _start_all, _wait_for

    group = session.ServerGroup("cluster", backend)
    try:
        auth = {"leafnodes": {"authorization": {"user": leaf_user, "password": leaf_password}}}
        nodes = [Server(group, f"n{i}", jetstream=False, extra={**PEER_PINGS, **auth},
                        roles=("cluster", "leafnode")) for i in (1, 2)]
        for s in nodes:
            s.cluster_name, s.route_peers, s.networks = cluster_name, nodes, [group]
        _start_all(nodes, timeout)
        _wait_for("routes did not connect", lambda: all(s.monitor("routez").get("num_routes", 0) >= 1
                                                         for s in nodes), nodes, timeout)
        leaf = Server(group, "leaf", jetstream=False, extra=dict(PEER_PINGS))
        leaf.networks = [group]
        hosts = [leaf.runner.peer_host(h) for h in nodes]
        leaf.leaf_remotes = [{"hubs": nodes, "urls": [f"nats-leaf://{leaf_user}:{leaf_password}@{h}:"
                                                      f"{n.ports['leafnode']}" for h, n in zip(hosts, nodes)]}]
        leaf.start(timeout)
        _wait_for("the leaf node did not connect", lambda: leaf.monitor("leafz").get("leafnodes", 0) >= 1,
                  nodes + [leaf], timeout)
        return group, {s.name: s for s in nodes + [leaf]}
    except BaseException:
        group.close()
        raise


def server_with_profiling(name: str = "profiled", backend: str | None = None, **settings):
    """A server with its profiling port open (``prof_port``); ``srv.prof_url`` is its address
    (``/debug/pprof/``).  Like every natslab port it listens on 127.0.0.1 only."""
    from ..runtime import session
    from ..runtime.server import Server

    group = session.ServerGroup("server", backend)
    try:
        srv = Server(group, name, jetstream=False, roles=("prof",), extra=settings)
        srv.extra["prof_port"] = srv.ports["prof"]
        srv.prof_url = f"http://127.0.0.1:{srv.ports['prof']}"
        return srv.start()
    except BaseException:
        group.close()
        raise
