"""Multi-server topologies: a cluster, a super-cluster of clusters, a leaf node on a hub.

Each returns an object holding its servers by name, host-reachable URLs for clients, and
``close()``; all are context managers.  A topology is ready only when the servers themselves
say so: routes and gateways connected, leaf links up, and with JetStream a meta leader elected.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping

from . import session
from ..errors import ServerStartError
from .monitor import NOT_ANSWERING
from .server import Server
from .waiting import until_sync


def _start_all(servers: list[Server], timeout: float) -> None:
    """Launch every server at once (a clustered JetStream node is healthy only with peers)."""
    with ThreadPoolExecutor(max_workers=min(8, len(servers))) as pool:
        list(pool.map(lambda s: s.launch(), servers))
        list(pool.map(lambda s: s.wait_ready(timeout), servers))


def _wait_for(what: str, test, servers: list[Server], timeout: float) -> None:
    """Wait until ``test()`` holds; a server still starting (no answer, half a reply) means "not yet"."""
    if until_sync(test, what, timeout=timeout, every=0.02, retry=NOT_ANSWERING, error=False):
        return
    raise ServerStartError(
        f"The topology did not form: {what} after {timeout:.0f} s.",
        "look at the servers' logs (topology[name].logs()) for errors on routes, gateways "
        "or leaf connections.",
        details="\n".join(f"{s.name}: " + (s.logs().strip().splitlines() or [''])[-1] for s in servers))


def _bring_up(topo, timeout: float, *conditions):
    """Start every server, wait for each (what, test) condition, then for a JetStream meta leader."""
    _start_all(topo.servers, timeout)
    for what, test in conditions:
        _wait_for(what, test, topo.servers, timeout)
    if topo.jetstream:
        topo.wait_for_meta_leader(timeout)
    return topo


class Topology:
    """Servers by name, with URLs for clients and clean-up for all of them."""

    def __init__(self, group: session.ServerGroup, servers: list[Server]):
        self.group = group
        self.servers = servers

    def __getitem__(self, name: str) -> Server:
        for s in self.servers:
            if s.name == name:
                return s
        raise KeyError(f"no server named {name!r}; have {[s.name for s in self.servers]}")

    def __iter__(self):
        return iter(self.servers)

    def __len__(self) -> int:
        return len(self.servers)

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    @property
    def url(self) -> str:
        """All client URLs, comma-joined, as nats.connect(servers=...) and the CLI accept."""
        return ",".join(self.urls)

    @property
    def backend(self) -> str:
        """The backend's name, "docker" or "local"."""
        return self.group.backend

    def running(self) -> list[Server]:
        return [s for s in self.servers if s.running]

    def meta_leader(self) -> str | None:
        """The JetStream meta leader's server name, as a running node reports it."""
        for s in self.running():
            try:
                leader = (s.monitor("jsz").get("meta_cluster") or {}).get("leader")
                if leader:
                    return leader
            except Exception:
                continue
        return None

    def meta_ready(self) -> bool:
        """A meta leader exists and counts every other running server as a current peer.

        Only then can it place streams anywhere (a leader that has not yet heard of a cluster's
        peers answers "no suitable peers for placement").
        """
        leader = self.meta_leader()
        by_name = {s.name: s for s in self.running()}
        if leader not in by_name:
            return False
        meta = by_name[leader].monitor("jsz").get("meta_cluster") or {}
        current = [r for r in meta.get("replicas") or [] if r.get("current")]
        return len(current) >= len(by_name) - 1

    def wait_for_meta_leader(self, timeout: float = 30.0) -> str:
        _wait_for("no JetStream meta leader was elected with all running servers as peers",
                  self.meta_ready, self.running(), timeout)
        return self.meta_leader()

    def close(self) -> None:
        self.group.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.to_thread(self.close)

    def __repr__(self) -> str:
        return f"<natslab {type(self).__name__} {[s.name for s in self.servers]} on {self.backend}>"


class Cluster(Topology):
    def __init__(self, group, servers, name: str, jetstream: bool):
        super().__init__(group, servers)
        self.name = name
        self.jetstream = jetstream

    def routes_formed(self) -> bool:
        want = len(self.servers) - 1
        return all(s.monitor("routez").get("num_routes", 0) >= want for s in self.servers)


# Peers notice a dead or cut link by missed pings: 2 s x 3 instead of the default 2 min x 2,
# so a partition shows up in a lesson within seconds.
PEER_PINGS = {"ping_interval": "2s", "ping_max": 3}


def _make_cluster(group, name: str, size: int, jetstream, extra, prefix: str, roles=(),
                  release: str | None = None) -> list[Server]:
    extra = {**PEER_PINGS, **dict(extra or {})}
    servers = [Server(group, f"{prefix}{i}", jetstream=jetstream, extra=extra, roles=("cluster",) + roles,
                      release=release)
               for i in range(1, size + 1)]
    for s in servers:
        s.cluster_name = name
        s.route_peers = servers
        s.networks = [group]
    return servers


def _replacing(replace: bool | None, kind: str, name: str) -> bool:
    """Replace what a re-run cell started under ``name`` (top-level calls only, unless told)."""
    if replace is None:
        replace = session.top_level(3)
    if replace:
        session.replace_named(kind, name, {"supercluster": "super-cluster", "leaf": "leaf node"}.get(kind, kind))
    return replace


def cluster(size: int = 3, *, name: str = "c1", jetstream: bool | Mapping = True,
            config: Mapping[str, Any] | None = None, backend: str | None = None,
            timeout: float = 60.0, replace: bool | None = None, release: str | None = None,
            before_start: Callable[[list[Server]], None] | None = None) -> Cluster:
    """Start ``size`` servers joined by routes; ready when every route is up (and a meta leader).
    ``release="2.14.6"`` runs that nats-server release on every node instead of the pinned one.
    ``before_start(servers)`` runs once the servers exist (names, ports, the host names their
    peers dial: ``s.runner.peer_host(s)``) and before any starts, e.g. to issue a TLS certificate
    that names them.

    From a cell's top level it first replaces a cluster started the same way under ``name``
    (see ``natslab.server``'s ``replace``)."""
    if size < 2:
        raise ValueError("a cluster needs at least 2 servers; use natslab.server() for one")
    replace = _replacing(replace, "cluster", name)
    group = session.ServerGroup("cluster", backend)
    try:
        servers = _make_cluster(group, name, size, jetstream, config, prefix=f"{name}-n", release=release)
        topo = Cluster(group, servers, name, bool(jetstream))
        if before_start is not None:
            before_start(servers)
        if replace:
            session.mark_named(group, "cluster", name, topo)
        return _bring_up(topo, timeout, ("routes did not all connect", topo.routes_formed))
    except BaseException:
        group.close()
        raise


class SuperCluster(Topology):
    def __init__(self, group, servers, clusters: dict[str, list[Server]], jetstream: bool):
        super().__init__(group, servers)
        self.clusters = clusters
        self.jetstream = jetstream

    def cluster_urls(self, name: str) -> list[str]:
        return [s.url for s in self.clusters[name]]

    def gateways_formed(self) -> bool:
        want = len(self.clusters) - 1
        for s in self.servers:
            gz = s.monitor("gatewayz")
            # every server dials out to each other cluster; inbound links land on any one node
            if len(gz.get("outbound_gateways") or {}) < want:
                return False
        return True

    def routes_formed(self) -> bool:
        return all(s.monitor("routez").get("num_routes", 0) >= len(self.clusters[s.gateway_name]) - 1
                   for s in self.servers)


def supercluster(clusters: Mapping[str, int] | list[str] = ("east", "west"), size: int = 3, *,
                 jetstream: bool | Mapping = True, config: Mapping[str, Any] | None = None,
                 backend: str | None = None, timeout: float = 90.0,
                 replace: bool | None = None) -> SuperCluster:
    """Named clusters joined by gateways, e.g. ``supercluster({"east": 3, "west": 3})``.

    With JetStream every server is tagged with ``cluster:<name>`` so streams can be placed
    by cluster name or tag.
    """
    sizes = dict(clusters) if isinstance(clusters, Mapping) else {c: size for c in clusters}
    if len(sizes) < 2:
        raise ValueError("a super-cluster needs at least two clusters")
    key = "+".join(sizes)
    replace = _replacing(replace, "supercluster", key)
    group = session.ServerGroup("supercluster", backend)
    try:
        by_cluster: dict[str, list[Server]] = {}
        for cname, n in sizes.items():
            js = jetstream
            extra = {**PEER_PINGS, **dict(config or {})}
            if jetstream:
                extra.setdefault("server_tags", [f"cluster:{cname}"])
            if n == 1:
                srv = Server(group, f"{cname}-n1", jetstream=js, extra=extra, roles=("gateway",))
                srv.networks = [group]
                by_cluster[cname] = [srv]
            else:
                by_cluster[cname] = _make_cluster(group, cname, n, js, extra, prefix=f"{cname}-n",
                                                  roles=("gateway",))
        everyone = [s for ss in by_cluster.values() for s in ss]
        for cname, members in by_cluster.items():
            for s in members:
                s.gateway_name = cname
                s.gateway_peers = by_cluster
                if len(members) == 1:
                    s.cluster_name = None
        topo = SuperCluster(group, everyone, by_cluster, bool(jetstream))
        if replace:
            session.mark_named(group, "supercluster", key, topo)
        return _bring_up(topo, timeout, ("routes did not all connect", topo.routes_formed),
                         ("gateways did not all connect", topo.gateways_formed))
    except BaseException:
        group.close()
        raise


class LeafTopology(Topology):
    def __init__(self, group, servers, hub, leaf: Server, owns_hub: bool):
        super().__init__(group, servers)
        self.hub = hub
        self.leaf = leaf
        self.owns_hub = owns_hub

    def connected(self) -> bool:
        return self.leaf.monitor("leafz").get("leafnodes", 0) >= 1

    def close(self) -> None:
        super().close()
        if self.owns_hub:
            self.hub.group.close()


def leafnode(hub: Server | Topology | None = None, *, name: str = "leaf", jetstream: bool | Mapping = False,
             remote: Mapping[str, Any] | None = None, config: Mapping[str, Any] | None = None,
             backend: str | None = None, timeout: float = 30.0,
             replace: bool | None = None) -> LeafTopology:
    """Start a leaf node joined to ``hub`` (a server or topology started with leaf support).

    With no hub, a hub server accepting leaf nodes is started too.  ``remote`` adds settings to
    the leaf's remote block (``account``, ``credentials``); with JetStream on the leaf, give it
    its own domain, e.g. ``jetstream={"domain": "edge"}``.
    """
    replace = _replacing(replace, "leaf", name)
    owns_hub = hub is None
    if owns_hub:
        from .server import server as start_server

        hub = start_server("hub", leafnodes=True, backend=backend, replace=False)
    hubs = list(hub) if isinstance(hub, Topology) else [hub]
    missing = [h.name for h in hubs if "leafnode" not in h.ports]
    if missing:
        raise ServerStartError(
            f"{', '.join(missing)} does not accept leaf nodes (no leafnodes port in its config).",
            "start the hub with natslab.server(..., leafnodes=True), or pass no hub and natslab "
            "starts one for you.")
    group = session.ServerGroup("leaf", hubs[0].backend)
    try:
        leaf = Server(group, name, jetstream=jetstream, extra={**PEER_PINGS, **dict(config or {})})
        leaf.leaf_remotes = [{"hubs": hubs, **dict(remote or {})}]
        leaf.networks = [hubs[0].group]
        for h in hubs:
            group.runner.join_group(h.group, h)
        topo = LeafTopology(group, [leaf], hub, leaf, owns_hub)
        if replace:
            session.mark_named(group, "leaf", name, topo)
        leaf.start(timeout)
        _wait_for("the leaf node did not connect to its hub", topo.connected, [leaf] + hubs, timeout)
        return topo
    except BaseException:
        group.close()
        if owns_hub:
            hub.group.close()
        raise
