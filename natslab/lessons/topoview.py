"""See a topology the way its servers see it: nodes, routes, gateways, leaf links, leaders.

``snapshot(topology)`` asks every server of a cluster, super-cluster or leaf topology for its
monitoring endpoints (``/varz``, ``/routez``, ``/gatewayz``, ``/leafz``, ``/jsz``) and returns
what they say: which nodes answer, which links are up, who leads the JetStream meta group and
each stream and consumer.  ``TopologyView(topology)`` draws that snapshot as a picture (SVG) in
a widget with buttons to kill, stop, start, pause and resume nodes, refreshes on demand, and
always has a text form (``view.summary()``) so it also runs headless.

``configs_side_by_side(cluster)`` shows the config files of several servers in columns.
"""
from __future__ import annotations

import asyncio
import html
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..runtime.monitor import fetch

PROBE_TIMEOUT = 1.0  # a paused server must not freeze the picture for long


# ------------------------------------------------------------------------------ the snapshot
@dataclass
class Node:
    name: str
    state: str  # "up", "down" (not running), "silent" (running but not answering: paused)
    cluster: str | None = None  # cluster name, or None for a standalone server
    gateway: str | None = None
    server_id: str = ""
    url: str = ""
    connections: int = 0
    leaf_of: str | None = None  # for a leaf node: the hub it dials


@dataclass
class Group:
    """A RAFT group as the servers report it: a stream or a consumer (or the meta group)."""
    kind: str  # "meta", "stream" or "consumer"
    name: str  # stream name, "stream > consumer", or "_meta_"
    leader: str | None
    peers: list[str] = field(default_factory=list)  # every replica including the leader
    current: dict[str, bool] = field(default_factory=dict)  # follower name -> caught up
    cluster: str | None = None
    messages: int | None = None


@dataclass
class Snapshot:
    nodes: dict[str, Node]
    routes: set[frozenset]  # {a, b} pairs of server names
    gateways: set[frozenset]  # {a, b} pairs of server names joined by a gateway connection
    leafs: set[tuple[str, str]]  # (leaf server, hub server)
    meta: Group | None
    streams: dict[str, Group]
    consumers: dict[str, Group]
    taken_at: float = field(default_factory=time.time)

    # -- questions a lesson or a checker asks ------------------------------------------------
    def route_peers(self, name: str) -> set[str]:
        return {other for pair in self.routes if name in pair for other in pair if other != name}

    def leader_of(self, stream: str) -> str | None:
        g = self.streams.get(stream)
        return g.leader if g else None

    def leads(self, name: str) -> list[str]:
        """What ``name`` leads: "meta", stream names and "stream > consumer" names."""
        out = ["meta"] if self.meta and self.meta.leader == name else []
        out += [g.name for g in self.streams.values() if g.leader == name]
        out += [g.name for g in self.consumers.values() if g.leader == name]
        return out

    def summary(self) -> str:
        """The whole picture as text (for CI logs and headless runs)."""
        up = [n for n in self.nodes.values() if n.state == "up"]
        lines = [f"{len(up)}/{len(self.nodes)} servers answering"
                 + (f"; JetStream meta leader: {self.meta.leader or 'NONE (no quorum)'}" if self.meta else "")]
        for cname, members in _by_site(self.nodes).items():
            lines.append(f"[{cname}]")
            for n in members:
                peers = sorted(self.route_peers(n.name))
                bits = [f"{n.state:<6}"]
                if peers:
                    bits.append("routes to " + ", ".join(peers))
                gws = sorted(o for p in self.gateways if n.name in p for o in p if o != n.name)
                if gws:
                    bits.append("gateway to " + ", ".join(gws))
                hubs = sorted(h for l, h in self.leafs if l == n.name)
                leaves = sorted(l for l, h in self.leafs if h == n.name)
                if hubs:
                    bits.append("leaf of " + ", ".join(hubs))
                if leaves:
                    bits.append("hub for " + ", ".join(leaves))
                lead = self.leads(n.name)
                if lead:
                    bits.append("leads " + ", ".join(lead))
                lines.append(f"  {n.name:<10} " + "; ".join(bits))
        for g in list(self.streams.values()) + list(self.consumers.values()):
            followers = [f"{p}{'' if g.current.get(p, True) else ' (behind)'}" for p in g.peers if p != g.leader]
            where = f" in {g.cluster}" if g.cluster else ""
            msgs = f", {g.messages} msgs" if g.messages is not None else ""
            role = "followers" if g.leader else "replicas"
            lines.append(f"{g.kind} {g.name}{where}: R{len(g.peers) or 1}, leader {g.leader or 'NONE'}"
                         + (f", {role} {', '.join(followers)}" if followers else "") + msgs)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()


def servers_of(target) -> list:
    """Every natslab Server in a topology, a list of topologies/servers, or one server."""
    if isinstance(target, (list, tuple, set)):
        out = []
        for t in target:
            out += [s for s in servers_of(t) if s not in out]
        return out
    if hasattr(target, "servers"):
        out = list(target.servers)
        hub = getattr(target, "hub", None)  # a leaf topology: its hub belongs in the picture
        if hub is not None:
            out = [s for s in servers_of(hub) if s not in out] + out
        return out
    return [target]


def _probe(srv) -> dict | None:
    """All endpoints of one server, or None when it does not answer."""
    if not srv.running:
        return None
    url = srv.monitor_url
    try:
        out = {"varz": fetch(url, "varz", timeout=PROBE_TIMEOUT)}
    except Exception:
        return {"silent": True}
    for ep, params in (("routez", {}), ("gatewayz", {}), ("leafz", {}),
                       ("jsz", {"streams": "true", "consumers": "true"})):
        try:
            out[ep] = fetch(url, ep, timeout=PROBE_TIMEOUT, **params)
        except Exception:
            out[ep] = {}
    return out


def snapshot(target) -> Snapshot:
    """Ask every server of ``target`` for its view and merge the answers."""
    servers = servers_of(target)
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(servers)))) as pool:
        probes = dict(zip([s.name for s in servers], pool.map(_probe, servers)))
    nodes: dict[str, Node] = {}
    ids: dict[str, str] = {}
    for s in servers:
        p = probes[s.name]
        state = "down" if p is None else ("silent" if p.get("silent") else "up")
        node = Node(s.name, state, cluster=getattr(s, "cluster_name", None), gateway=getattr(s, "gateway_name", None),
                    url=s.url)
        if state == "up":
            v = p["varz"]
            node.server_id = v.get("server_id", "")
            node.cluster = (v.get("cluster") or {}).get("name") or node.cluster
            node.gateway = (v.get("gateway") or {}).get("name") or node.gateway
            node.connections = v.get("connections", 0)
            ids[node.server_id] = s.name
        if getattr(s, "leaf_remotes", None):
            node.leaf_of = ", ".join(h.name for r in s.leaf_remotes for h in r["hubs"])
        nodes[s.name] = node

    routes: set[frozenset] = set()
    gateways: set[frozenset] = set()
    leafs: set[tuple[str, str]] = set()
    meta_reports: list[dict] = []
    stream_reports: dict[str, list[tuple[str, dict]]] = {}
    consumer_reports: dict[str, list[tuple[str, dict]]] = {}
    for name, p in probes.items():
        if not p or p.get("silent"):
            continue
        for r in p["routez"].get("routes") or []:
            if r.get("remote_name"):
                routes.add(frozenset((name, r["remote_name"])))
        for gw in (p["gatewayz"].get("outbound_gateways") or {}).values():
            remote = ids.get((gw.get("connection") or {}).get("name", ""))
            if remote:
                gateways.add(frozenset((name, remote)))
        for l in p["leafz"].get("leafs") or []:
            other = l.get("name")
            if other:
                leafs.add((name, other) if l.get("is_spoke") else (other, name))
        js = p["jsz"]
        if js.get("meta_cluster"):
            meta_reports.append(js["meta_cluster"])
        for acc in js.get("account_details") or []:
            for sd in acc.get("stream_detail") or []:
                key = sd["name"] if acc.get("name") in ("$G", None) else f"{acc['name']}/{sd['name']}"
                stream_reports.setdefault(key, []).append((name, sd))
                for cd in sd.get("consumer_detail") or []:
                    consumer_reports.setdefault(f"{key} > {cd['name']}", []).append((name, cd))

    meta = None
    if meta_reports:
        leaders = [m.get("leader") for m in meta_reports if m.get("leader")]
        peers = sorted({r["name"] for m in meta_reports for r in m.get("replicas") or []} | set(leaders))
        meta = Group("meta", "_meta_", _agreed(leaders, nodes), peers, cluster=None)
    streams = {k: _group("stream", k, reps, nodes) for k, reps in sorted(stream_reports.items())}
    consumers = {k: _group("consumer", k, reps, nodes) for k, reps in sorted(consumer_reports.items())}
    return Snapshot(nodes, routes, gateways, leafs, meta, streams, consumers)


def _agreed(claims: list[str], nodes: dict[str, Node]) -> str | None:
    """The leader most servers name, if that server is answering."""
    for leader in sorted(set(claims), key=claims.count, reverse=True):
        if nodes.get(leader) is None or nodes[leader].state == "up":
            return leader
    return None


def _group(kind: str, key: str, reports: list[tuple[str, dict]], nodes: dict[str, Node]) -> Group:
    # trust a server that says it leads AND that most reports agree with: during a partition a
    # cut-off old leader may still name itself until it notices it lost its quorum
    votes: dict[str, int] = {}
    for _, d in reports:
        name = (d.get("cluster") or {}).get("leader")
        if name:
            votes[name] = votes.get(name, 0) + 1
    own = sorted(((srv, d) for srv, d in reports if (d.get("cluster") or {}).get("leader") == srv),
                 key=lambda sd: votes.get(sd[0], 0), reverse=True)
    srv, detail = own[0] if own else reports[0]
    c = detail.get("cluster") or {}
    leader = c.get("leader") if own else None
    peers = ([leader] if leader else []) + [r["name"] for r in c.get("replicas") or []]
    if not c.get("replicas") and not own:  # nobody leads: list the servers that hold a copy
        peers = sorted({s for s, _ in reports})
    current = {r["name"]: bool(r.get("current")) for r in c.get("replicas") or []}
    state = detail.get("state") or {}
    msgs = state.get("messages") if kind == "stream" else None
    return Group(kind, key, leader, peers, current, cluster=c.get("name"), messages=msgs)


def _by_site(nodes: dict[str, Node]) -> dict[str, list[Node]]:
    sites: dict[str, list[Node]] = {}
    for n in nodes.values():
        site = n.cluster or (f"leaf {n.name}" if n.leaf_of else n.name)
        sites.setdefault(site, []).append(n)
    return sites


def remote_interest(srv, endpoint: str = "routez") -> dict[str, list[str]]:
    """Subjects ``srv`` has learned its peers want, per peer: ``routez``, ``leafz`` or ``gatewayz``.

    For gateways the peer is the remote cluster (interest-only mode keeps a list per account).
    Internal subjects (``$SYS``, ``$JS``, ``$NRG``, inboxes) are left out.
    """
    keep = lambda subs: [x for x in subs or [] if not x.startswith(("$", "_INBOX", "_R_"))]  # noqa: E731
    out: dict[str, list[str]] = {}
    if endpoint == "gatewayz":
        reply = srv.monitor("gatewayz", accs=True, subs=True)
        for gw, link in (reply.get("outbound_gateways") or {}).items():
            out[gw] = [x for acc in link.get("accounts") or [] if acc.get("name") != "$SYS"
                       for x in keep(acc.get("subscriptions_list"))]
    else:
        reply = srv.monitor(endpoint, subs=True)
        for link in reply.get("routes") or reply.get("leafs") or []:
            peer = link.get("remote_name") or link.get("name") or "?"
            out.setdefault(peer, []).extend(keep(link.get("subscriptions_list")))
    return {k: sorted(set(v)) for k, v in out.items()}


# ------------------------------------------------------------------------------ drawing
COLORS = {"up": "#2da44e", "down": "#cf222e", "silent": "#bf8700"}
HALO = "stroke='white' stroke-width='3' paint-order='stroke'"  # labels stay readable over lines
LINKS = {"route": ("#57606a", ""), "gateway": ("#0969da", "7,4"), "leaf": ("#8250df", "2,4")}


def svg(snap: Snapshot, width: int = 720, height: int = 420) -> str:
    """The snapshot as an SVG picture: sites (clusters, lone servers) in a row, servers on a ring."""
    sites = _by_site(snap.nodes)
    n_sites = max(1, len(sites))
    cell = width / n_sites
    cy = height / 2 + 14
    ring = max(28.0, min(cell * 0.28, height * 0.27))
    pos: dict[str, tuple[float, float]] = {}
    shapes: list[str] = []
    for k, (site, members) in enumerate(sites.items()):
        sx = cell * (k + 0.5)
        r = ring if len(members) > 1 else 0
        if members[0].cluster:
            shapes.append(f"<circle cx='{sx:.0f}' cy='{cy:.0f}' r='{r + 34:.0f}' fill='#f6f8fa' "
                          f"stroke='#d0d7de' stroke-dasharray='4,3'/>")
        top = cy - (r + 42 if members[0].cluster else 30)
        shapes.append(f"<text x='{sx:.0f}' y='{top:.0f}' text-anchor='middle' font-size='13' "
                      f"font-weight='bold' fill='#24292f'>{html.escape(site)}</text>")
        for i, n in enumerate(members):
            b = -math.pi / 2 + 2 * math.pi * i / max(1, len(members))
            pos[n.name] = (sx + r * math.cos(b), cy + r * math.sin(b))
    lines: list[str] = []
    for kind, pairs in (("route", [tuple(p) for p in snap.routes if len(p) == 2]),
                        ("gateway", [tuple(p) for p in snap.gateways if len(p) == 2]),
                        ("leaf", list(snap.leafs))):
        color, dash = LINKS[kind]
        for a, b in pairs:
            if a in pos and b in pos:
                (x1, y1), (x2, y2) = pos[a], pos[b]
                lines.append(f"<line x1='{x1:.0f}' y1='{y1:.0f}' x2='{x2:.0f}' y2='{y2:.0f}' stroke='{color}' "
                             f"stroke-width='2'" + (f" stroke-dasharray='{dash}'" if dash else "") + "/>")
    dots: list[str] = []
    for name, (x, y) in pos.items():
        n = snap.nodes[name]
        lead = snap.leads(name)
        ring = "stroke='#d4a72c' stroke-width='4'" if "meta" in lead else "stroke='#24292f' stroke-width='1'"
        dots.append(f"<circle cx='{x:.0f}' cy='{y:.0f}' r='16' fill='{COLORS[n.state]}' {ring}>"
                    f"<title>{html.escape(name)}: {n.state}</title></circle>")
        dots.append(f"<text x='{x:.0f}' y='{y + 30:.0f}' text-anchor='middle' font-size='12' fill='#24292f' {HALO}>"
                    f"{html.escape(name)}{' ★' if 'meta' in lead else ''}</text>")
        others = [l for l in lead if l != "meta"]
        if others:
            shown = ", ".join(others[:3]) + (f" +{len(others) - 3}" if len(others) > 3 else "")
            dots.append(f"<text x='{x:.0f}' y='{y + 44:.0f}' text-anchor='middle' font-size='11' "
                        f"fill='#0969da' {HALO}>leads {html.escape(shown)}</text>")
    legend = ("<g font-size='11' fill='#24292f'>"
              f"<circle cx='12' cy='14' r='6' fill='{COLORS['up']}'/><text x='22' y='18'>up</text>"
              f"<circle cx='52' cy='14' r='6' fill='{COLORS['silent']}'/><text x='62' y='18'>not answering</text>"
              f"<circle cx='152' cy='14' r='6' fill='{COLORS['down']}'/><text x='162' y='18'>down</text>"
              "<circle cx='212' cy='14' r='6' fill='#fff' stroke='#d4a72c' stroke-width='3'/>"
              "<text x='222' y='18'>★ meta leader</text>"
              f"<line x1='312' y1='14' x2='332' y2='14' stroke='{LINKS['route'][0]}' stroke-width='2'/>"
              "<text x='336' y='18'>route</text>"
              f"<line x1='378' y1='14' x2='398' y2='14' stroke='{LINKS['gateway'][0]}' stroke-width='2' "
              f"stroke-dasharray='{LINKS['gateway'][1]}'/><text x='402' y='18'>gateway</text>"
              f"<line x1='456' y1='14' x2='476' y2='14' stroke='{LINKS['leaf'][0]}' stroke-width='2' "
              f"stroke-dasharray='{LINKS['leaf'][1]}'/><text x='480' y='18'>leaf link</text></g>")
    stamp = time.strftime("%H:%M:%S", time.localtime(snap.taken_at))
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
            f"viewBox='0 0 {width} {height}' font-family='sans-serif'>{legend}"
            f"<text x='{width - 8}' y='18' text-anchor='end' font-size='11' fill='#57606a'>as of {stamp}</text>"
            + "".join(shapes + lines + dots) + "</svg>")


def groups_table(snap: Snapshot) -> str:
    """Streams and consumers with leader and followers, as an HTML table."""
    rows = []
    for g in list(snap.streams.values()) + list(snap.consumers.values()):
        followers = ", ".join(f"{p}" + ("" if g.current.get(p, True) else " <i>(behind)</i>")
                              for p in g.peers if p != g.leader)
        rows.append(f"<tr><td>{g.kind}</td><td><b>{html.escape(g.name)}</b></td><td>R{len(g.peers) or 1}</td>"
                    f"<td>{html.escape(g.leader or 'none')}</td><td>{followers}</td>"
                    f"<td>{'' if g.messages is None else g.messages}</td></tr>")
    if not rows:
        return ""
    return ("<table><tr><th>kind</th><th>name</th><th>replicas</th><th>leader</th><th>followers</th>"
            "<th>messages</th></tr>" + "".join(rows) + "</table>")


# ------------------------------------------------------------------------------ the widget
class TopologyView:
    """A live picture of a topology with buttons to break and mend it.

    ``view = TopologyView(cluster)`` then ``view`` in a cell shows the widget; ``view.refresh()``
    re-reads the servers (it returns the new ``Snapshot``), ``view.act("kill", "c1-n2")`` does
    what a button does, ``view.summary()`` is the text form and ``view.auto(seconds)`` refreshes
    every two seconds for a while (bounded, so nothing polls forever).
    """

    ACTIONS = ("kill", "stop", "start", "pause", "resume")

    def __init__(self, target, width: int = 720, height: int = 420):
        self.target = target
        self.servers = servers_of(target)
        self.width, self.height = width, height
        self.snap: Snapshot | None = None
        self._widget = None
        self._auto_task: asyncio.Task | None = None
        self._lock = threading.Lock()
        self.refresh()

    # -- data --------------------------------------------------------------------------------
    def refresh(self) -> Snapshot:
        """Ask the servers again and redraw; returns the new snapshot."""
        with self._lock:
            self.snap = snapshot(self.servers)
        self._paint()
        return self.snap

    def summary(self) -> str:
        return self.snap.summary() if self.snap else "(no snapshot yet)"

    def server(self, name: str):
        for s in self.servers:
            if s.name == name:
                return s
        raise KeyError(f"no server named {name!r} in this view; have {[s.name for s in self.servers]}")

    def act(self, action: str, name: str) -> str:
        """``kill``/``stop``/``start``/``pause``/``resume`` server ``name``, then refresh."""
        if action not in self.ACTIONS:
            raise ValueError(f"action must be one of {self.ACTIONS}")
        srv = self.server(name)
        getattr(srv, action)()
        self.refresh()
        return f"{action} {name}: done"

    # -- display -----------------------------------------------------------------------------
    @property
    def widget(self):
        if self._widget is None:
            self._build()
        return self._widget

    def _build(self) -> None:
        import ipywidgets as w

        names = [s.name for s in self.servers]
        self._pick = w.Dropdown(options=names, description="server", layout=w.Layout(width="200px"))
        buttons = []
        for action in self.ACTIONS:
            b = w.Button(description=action, layout=w.Layout(width="72px"),
                         button_style="danger" if action in ("kill", "stop", "pause") else "")
            b.on_click(lambda _b, a=action: self._clicked(a))
            buttons.append(b)
        refresh = w.Button(description="refresh", icon="refresh", layout=w.Layout(width="90px"))
        refresh.on_click(lambda _b: self.refresh())
        self._live = w.ToggleButton(description="live", tooltip="refresh every 2 s for 5 minutes",
                                    layout=w.Layout(width="60px"))
        self._live.observe(lambda change: self.auto(300) if change["new"] else self.stop_auto(), names="value")
        self._status = w.HTML()
        self._picture = w.HTML()
        self._table = w.HTML()
        self._widget = w.VBox([w.HBox([self._pick, *buttons, refresh, self._live]), self._status,
                               self._picture, self._table])
        self._paint()

    def _clicked(self, action: str) -> None:
        name = self._pick.value
        self._status.value = f"<i>{action} {html.escape(name)}…</i>"
        try:
            self._status.value = html.escape(self.act(action, name))
        except Exception as exc:  # a button must not leave a traceback in the log
            self._status.value = f"<span style='color:#cf222e'>{html.escape(action)} {html.escape(name)}: " \
                                 f"{html.escape(str(exc).splitlines()[0])}</span>"

    def _paint(self) -> None:
        if self.snap is None or self._widget is None:
            return
        self._picture.value = svg(self.snap, self.width, self.height)
        self._table.value = groups_table(self.snap)

    def auto(self, seconds: float = 60.0, every: float = 2.0) -> asyncio.Task:
        """Refresh every ``every`` seconds for ``seconds``, in the background of the notebook.

        The servers are asked in a thread; the picture is redrawn on the notebook's own loop.
        """
        self.stop_auto()

        async def loop():
            end = time.monotonic() + seconds
            try:
                while time.monotonic() < end:
                    await asyncio.sleep(every)
                    self.snap = await asyncio.to_thread(snapshot, self.servers)
                    self._paint()
            finally:  # time is up: switch the live button off (unless a newer loop replaced this one)
                if self._auto_task is asyncio.current_task() and self._widget is not None:
                    self._auto_task = None
                    self._live.value = False

        self._auto_task = asyncio.get_event_loop().create_task(loop())
        return self._auto_task

    def stop_auto(self) -> None:
        if self._auto_task is not None and not self._auto_task.done():
            self._auto_task.cancel()

    def _ipython_display_(self):
        from IPython.display import display

        try:
            display(self.widget)
        except ImportError:
            print(self.summary())

    def __repr__(self) -> str:
        return self.summary()


# ------------------------------------------------------------------------------ configs
class SideBySide:
    """Config files in columns: HTML in a notebook, padded text elsewhere."""

    def __init__(self, texts: dict[str, str], width: int | None = None):
        self.texts = texts
        longest = max((len(l) for t in texts.values() for l in self._trimmed(t)), default=20)
        self.width = width or min(64, longest)

    def _trimmed(self, text: str) -> list[str]:
        return [l for l in text.splitlines() if not l.startswith("#")]

    def __repr__(self) -> str:
        cols = {n: self._trimmed(t) for n, t in self.texts.items()}
        height = max(len(c) for c in cols.values())
        w = self.width
        out = ["  ".join(f"{n:<{w}.{w}}" for n in cols)]
        out.append("  ".join("-" * w for _ in cols))
        for i in range(height):
            out.append("  ".join(f"{(c[i] if i < len(c) else ''):<{w}.{w}}" for c in cols.values()).rstrip())
        return "\n".join(out)

    def _repr_html_(self) -> str:
        cells = "".join(
            f"<td style='vertical-align:top;padding:0 8px'><b>{html.escape(n)}</b>"
            f"<pre style='font-size:11px;margin:2px 0'>{html.escape(chr(10).join(self._trimmed(t)))}</pre></td>"
            for n, t in self.texts.items())
        return f"<table><tr>{cells}</tr></table>"


def configs_side_by_side(target, width: int | None = None) -> SideBySide:
    """The config text of every server of ``target``, in columns (comment lines left out)."""
    return SideBySide({s.name: s.config_text for s in servers_of(target)}, width)
