"""Module 04 (clustering and high availability): checkers that build topologies and break them.

Every checker starts its own cluster, super-cluster or hub, injects the faults itself where the
point is survival (kills the stream leader, kills two of three servers, restarts nodes), reads the
servers' monitoring endpoints and stream info, and counts messages.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from nats.js.api import StreamConfig

from ...runtime import backends, session
from ...lessons import failover
from ..checks import Mismatch, call_learner, exercise, expect
from ...errors import NatslabError
from ...runtime.monitor import fetch
from ...runtime.server import Server
from ...runtime.topology import cluster as start_cluster, supercluster as start_supercluster
from . import client, scratch_server

LAME_DUCK = {"lame_duck_duration": "30s", "lame_duck_grace_period": "1s"}


def _token(n: int = 6) -> str:
    return uuid.uuid4().hex[:n]


def _client(topology):
    """A checker's client that rides out the faults the checker injects (fast, endless reconnects)."""
    return client(topology, reconnect_time_wait=0.1, max_reconnect_attempts=-1)


async def _add_stream(js, config: StreamConfig):
    """Create the checker's own stream, retrying while a loaded machine is slow to answer."""
    return await failover.retry(js.add_stream, config, timeout=45)


async def _publish(js, subject: str, count: int):
    """The checker's own acknowledged messages (numbered, retried, stored once)."""
    run = await failover.publish_through_fault(js, subject, count, batch=50, give_up_after=20)
    if run.failed:
        raise NatslabError(f"the checker could not publish its own messages to {subject}.",
                           "run the check again; if it keeps failing, look at the servers' logs.")
    return run


@contextlib.asynccontextmanager
async def _topology(make, *args, **kwargs):
    """A cluster or super-cluster for one check, closed whatever happens."""
    topo = await asyncio.to_thread(make, *args, **kwargs)
    try:
        if getattr(topo, "jetstream", False):
            await failover.jetstream_ready(topo)
        yield topo
    finally:
        await asyncio.to_thread(topo.close)


@contextlib.asynccontextmanager
async def _cleans_up_after_learner():
    """Close any servers the learner's code started during the block (a leaf node, say)."""
    before = set(session._groups)
    try:
        yield
    finally:
        for gid in set(session._groups) - before:
            group = session._groups.get(gid)
            if group is not None:
                await asyncio.to_thread(group.close)


# ---------------------------------------------------------------------------------------- 4.1
@exercise("4.1", "form a cluster from configs",
          hints=('return {"cluster": {"name": cluster_name, "listen": node["listen"], "advertise": '
               'node["advertise"], "routes": [seed["route_url"]]}} (no routes for the seed itself).',))
async def cluster_from_configs(node_config):
    name = f"lab{_token(4)}"
    group = session.Group(backends.get(), kind="cluster")
    try:
        b = group.backend
        servers = [Server(group, f"{name}-n{i}", jetstream=False, roles=("cluster",)) for i in (1, 2, 3)]
        nodes = []
        for s in servers:
            s.networks = [group]
            host, port = b.peer_host(s), s.ports["cluster"]
            nodes.append({"name": s.name, "listen": f"{b.bind_host}:{port}", "advertise": f"{host}:{port}",
                          "route_url": f"nats-route://{host}:{port}"})
        seed = nodes[0]
        for s, node in zip(servers, nodes):
            conf = await call_learner(node_config, name, dict(node), dict(seed),
                                      what=f"node_config({name!r}, {node['name']}, seed)")
            expect(isinstance(conf, dict) and isinstance(conf.get("cluster"), dict),
                   f"node_config must return the settings to add to {node['name']}'s config, with a cluster block.",
                   expected='a dict like {"cluster": {...}}', seen=repr(conf)[:120],
                   hint="return a dict whose key \"cluster\" holds name, listen, advertise and routes.")
            s.extra = conf
        try:
            with ThreadPoolExecutor(max_workers=3) as pool:
                list(pool.map(lambda s: s.start(20), servers))
        except NatslabError as err:
            raise Mismatch("a server would not start with your config.", expected="three running servers",
                           seen=f"{err.what} {err.details}"[:300],
                           hint="read the server's complaint above; the cluster block needs name, listen and routes.")

        def peers_of(s):
            return {r["remote_name"] for r in s.monitor("routez").get("routes") or []}

        want = {s.name: {o.name for o in servers if o is not s} for s in servers}
        try:
            await failover.until(lambda: all(peers_of(s) >= want[s.name] for s in servers),
                                 "every node routes to both others", timeout=15)
        except NatslabError:
            pass
        seen = {s.name: sorted(peers_of(s)) for s in servers}
        expect(all(set(seen[n]) >= want[n] for n in want), "the three servers did not form a full mesh of routes.",
               expected={n: sorted(v) for n, v in want.items()}, seen=seen,
               hint="all three need the same cluster name, their own listen address, and (for the non-seeds) "
                    "a route to the seed's route_url.")
        names = {s.name: (s.monitor("varz").get("cluster") or {}).get("name") for s in servers}
        expect(set(names.values()) == {name}, "the servers report another cluster name.",
               expected=f"cluster name {name!r} on all three (/varz)", seen=names,
               hint="use the cluster_name argument you are given, the same on every node.")
        n2, n3 = servers[1], servers[2]
        configured = [r["is_configured"] for r in n2.monitor("routez")["routes"] if r["remote_name"] == n3.name]
        expect(configured and not any(configured),
               f"{n2.name} was configured with a route to {n3.name}: the exercise asks for seed-only routes.",
               expected=f"{n2.name} learns of {n3.name} by gossip (is_configured: false in /routez)",
               seen=f"is_configured: {configured}",
               hint="list only the seed in routes; the seed tells each node about the others.")
        # the seed dies: the two others keep their route and still carry messages
        await asyncio.to_thread(servers[0].kill)
        subject = f"lab.{_token()}"
        async with client(n3) as sub_nc, client(n2) as pub_nc:
            sub = await sub_nc.subscribe(subject)
            await sub_nc.flush()
            try:
                await failover.until(lambda: subject in _route_subs(n2, n3.name),
                                     "interest crosses n3 -> n2", timeout=10)
                await pub_nc.publish(subject, b"after the seed died")
                await pub_nc.flush()
                msg = await sub.next_msg(timeout=3)
            except (NatslabError, asyncio.TimeoutError):
                msg = None
            expect(msg is not None, "with the seed gone, a message from n2 did not reach a subscriber on n3.",
                   expected="delivery over the n2-n3 route", seen="nothing",
                   hint="every node must keep the same cluster name and listen address; gossip builds the n2-n3 route.")
        return (f"three servers formed cluster {name!r} from your configs; {n2.name} found {n3.name} by gossip "
                f"(/routez), and they kept carrying messages after the seed was killed.")
    finally:
        await asyncio.to_thread(group.close)


def _route_subs(srv, peer: str) -> list[str]:
    subs = []
    for r in srv.monitor("routez", subs=True).get("routes") or []:
        if r["remote_name"] == peer:
            subs += r.get("subscriptions_list") or []
    return subs


# ---------------------------------------------------------------------------------------- 4.2
async def _leader_apart_from_meta(c, nc, js, stream: str) -> str:
    """Make sure the stream leader is not also the meta leader, so killing the wrong one shows."""
    for _ in range(5):
        leader = (await failover.wait_for_leader(js, stream)).cluster.leader
        if leader != c.meta_leader():
            return leader
        try:
            await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=5)
        except Exception:
            pass
        await failover.wait_for_leader(js, stream, other_than=leader)
    return (await failover.wait_for_leader(js, stream)).cluster.leader


@exercise("4.2", "a stream that survives the loss of any one node",
          hints=("await js.add_stream(name=name, subjects=subjects, num_replicas=3)",))
async def survives_one_node(create_stream):
    name, subject = f"ORD_{_token(4).upper()}", f"ord{_token(4)}"
    async with _topology(start_cluster, 3, name="c4x") as c, \
            _client(c) as nc:
        js = nc.jetstream(timeout=10)
        await call_learner(create_stream, js, name, [f"{subject}.>"], what=f"create_stream(js, {name!r}, ...)")
        try:
            info = await failover.wait_for_leader(js, name, timeout=15)
        except NatslabError:
            raise Mismatch(f"there is no stream {name} with a leader in the cluster.", expected=f"stream {name}",
                           seen="no such stream (or no leader)", hint="create the stream with the name you are given.")
        replicas = 1 + len(info.cluster.replicas or [])
        expect(f"{subject}.>" in (info.config.subjects or []), f"stream {name} does not take the subjects given.",
               expected=[f"{subject}.>"], seen=info.config.subjects, hint="pass subjects=subjects.")
        expect(replicas >= 3, f"stream {name} has {replicas} replica(s); losing its leader loses writes.",
               expected="3 replicas (stream info cluster: a leader and two followers)",
               seen=f"{replicas}: leader {info.cluster.leader}, followers {[p.name for p in info.cluster.replicas or []]}",
               hint="R1 dies with its server, R2 has no majority left after one loss: use num_replicas=3.")
        await failover.wait_until_current(js, name)
        leader = await _leader_apart_from_meta(c, nc, js, name)  # one election at a time, not two
        run = await failover.publish_through_fault(js, f"{subject}.new", 300, batch=50, fault=c[leader].kill,
                                                   fault_after=100, fault_label=f"kill {leader}", give_up_after=25)
        expect(not run.failed, f"after the checker killed the stream leader {leader}, writes were refused.",
               expected="all 300 publishes acknowledged (with retries)", seen=f"{len(run.failed)} never acknowledged",
               hint="the stream needs a majority of its replicas after the loss: three replicas.")
        survival = await failover.count_in_stream(js, name, run)
        expect(survival.ok, "acknowledged messages are missing or doubled after the leader was killed.",
               expected="300 messages, each once", seen=survival.as_dict(), hint="use num_replicas=3 (file storage).")
        new = (await failover.wait_for_leader(js, name, other_than=leader)).cluster.leader
        return (f"R{replicas} stream {name}: the checker killed its leader {leader}, {new} took over, and all 300 "
                f"acknowledged messages were found ({run.summary()['longest pause s']} s pause).")


# ---------------------------------------------------------------------------------------- 4.3
@exercise("4.3", "find and kill the stream leader",
          hints=("leader = (await js.stream_info(stream)).cluster.leader; cluster[leader].kill(); then poll "
               "stream_info until cluster.leader is another server, and return it.",))
async def kill_the_leader(fail_over):
    stream, subject = f"PAY_{_token(4).upper()}", f"pay{_token(4)}"
    async with _topology(start_cluster, 3, name="c4y") as c, \
            _client(c) as nc:
        js = nc.jetstream(timeout=10)
        await _add_stream(js, StreamConfig(name=stream, subjects=[f"{subject}.>"], num_replicas=3))
        await _publish(js, f"{subject}.x", 50)
        await failover.wait_until_current(js, stream)
        leader = await _leader_apart_from_meta(c, nc, js, stream)
        meta = c.meta_leader()
        returned = await call_learner(fail_over, c, js, stream, timeout=45, what=f"fail_over(cluster, js, {stream!r})")
        down = [s.name for s in c if not s.running]
        expect(leader in down, f"the stream leader {leader} is still running.",
               expected=f"{leader} (the leader of {stream}) killed",
               seen=f"down: {down or 'nobody'}" + (f" ({meta} led the meta group, not the stream)" if meta in down else ""),
               hint="ask the stream, not the cluster: (await js.stream_info(stream)).cluster.leader.")
        expect(len(down) == 1, "more than one server was stopped.", expected=f"only {leader} down", seen=down,
               hint="kill exactly the stream leader.")
        info = await failover.wait_for_leader(js, stream, other_than=leader, timeout=30)
        expect(returned == info.cluster.leader, "fail_over returned something other than the new leader.",
               expected=f"{info.cluster.leader!r} (stream info after the election)", seen=repr(returned)[:80],
               hint="wait (poll stream_info) until the leader is a server other than the one you killed, and return "
                    "its name; right after the kill there is no leader yet.")
        ack = await failover.until(lambda: js.publish(f"{subject}.x", b"after", headers={"Nats-Msg-Id": "after"}),
                                   "a write after the failover", timeout=30)
        expect(ack.seq == 51, "the stream lost messages.", expected="seq 51 for the next message", seen=ack.seq)
        return f"you killed {leader}, the stream's leader (not the meta leader {meta}), and returned its successor {returned}."


# ---------------------------------------------------------------------------------------- 4.4
@exercise("4.4", "read a stream that has lost its quorum",
          hints=("msg = await js.get_msg(stream, seq=seq, direct=True); return msg.data.decode()",))
async def read_without_quorum(read_message):
    stream, subject = f"LOG_{_token(4).upper()}", f"log{_token(4)}"
    async with _topology(start_cluster, 3, name="c4z") as c:
        async with client(c) as nc:
            js = nc.jetstream(timeout=10)
            await _add_stream(js, StreamConfig(name=stream, subjects=[f"{subject}.>"], num_replicas=3,
                                               allow_direct=True))
            await _publish(js, f"{subject}.e", 30)
            info = await failover.wait_until_current(js, stream)
            seq = 5 + int(uuid.uuid4().int % 20)
            # the answer, read from the leader while there is one
            want = (await failover.until(lambda: js.get_msg(stream, seq=seq), "reading the stream", timeout=20)).data.decode()
        survivor = c[info.cluster.replicas[0].name]
        for s in c:
            if s is not survivor:
                await asyncio.to_thread(s.kill)
        async with client(survivor) as mine, client(survivor) as theirs:
            # the checker first makes sure the lone replica answers direct gets at all
            await failover.until(lambda: mine.jetstream().get_msg(stream, seq=1, direct=True),
                                 "the lone replica answers direct gets", timeout=20)
            try:
                got = await call_learner(read_message, theirs.jetstream(), stream, seq, timeout=20,
                                         what=f"read_message(js, {stream!r}, {seq})")
            except Mismatch as m:
                if type(m) is Mismatch:  # an exception or a hang, not the stub
                    m.hint = ("with no leader, the usual API (stream info, consumers, get_msg) gets no answer; "
                              "a direct get is served by any replica: js.get_msg(stream, seq=seq, direct=True).")
                raise
        if isinstance(got, (bytes, bytearray)):
            got = bytes(got).decode(errors="replace")
        expect(got == want, f"read_message returned something other than message {seq}.",
               expected=repr(want), seen=repr(got)[:80],
               hint="return the data of the message at that sequence number, as text.")
        return (f"with two of three servers killed (no leader, no quorum), your read of seq {seq} was answered "
                f"by the lone replica {survivor.name}.")


# ---------------------------------------------------------------------------------------- 4.5
@exercise("4.5", "place a stream in a chosen cluster",
          hints=("from nats.js.api import Placement; await js.add_stream(name=name, subjects=subjects, "
               "placement=Placement(cluster=cluster))",))
async def place_in_cluster(place_stream):
    regions = [f"r{_token(3)}", f"r{_token(3)}"]
    target, other = regions
    name, subject = f"GEO_{_token(4).upper()}", f"geo{_token(4)}"
    async with _topology(start_supercluster, {target: 3, other: 3}) as sc, \
            client(sc.cluster_urls(other)) as nc:
        js = nc.jetstream(timeout=10)  # the learner's client sits in the *other* cluster
        await call_learner(place_stream, js, name, [f"{subject}.>"], target,
                           what=f"place_stream(js, {name!r}, subjects, {target!r})")
        try:
            info = await failover.wait_for_leader(js, name, timeout=15)
        except NatslabError:
            raise Mismatch(f"there is no stream {name}.", expected=f"stream {name} in cluster {target}",
                           seen="no such stream", hint="create it with the name you are given.")
        peers = [info.cluster.leader] + [p.name for p in info.cluster.replicas or []]
        expect(info.cluster.name == target and all(p.startswith(f"{target}-") for p in peers),
               f"stream {name} is not in cluster {target}.",
               expected=f"cluster {target}, replicas on {target}-n*", seen=f"cluster {info.cluster.name}, replicas {peers}",
               hint="without a placement a stream goes to the cluster of the server that got the request; "
                    "set placement=Placement(cluster=...) (or tags=['cluster:<name>']).")
        await _publish(js, f"{subject}.from-{other}", 20)
        info = await js.stream_info(name)
        expect(info.state.messages == 20, "messages published from the other cluster did not all land.",
               expected=20, seen=info.state.messages)
        return (f"stream {name} lives in {target} (leader {info.cluster.leader}), and 20 messages published from "
                f"{other} reached it across the gateway.")


# ---------------------------------------------------------------------------------------- 4.6
@exercise("4.6", "connect a leaf node and route a request through it",
          hints=("lt = natslab.leafnode(hub); nc = await natslab.connect(lt.leaf); "
               "reply = await nc.request(subject, b'...', timeout=2); await nc.close(); return reply.data.decode()",))
async def request_through_leaf(ask_via_leaf):
    subject, answer = f"svc.{_token()}", f"answer-{_token(8)}"
    seen: dict = {}
    async with scratch_server(jetstream=False, leafnodes=True) as hub, client(hub) as responder:
        async def handle(msg):
            seen.setdefault("leafz", await asyncio.to_thread(fetch, hub.monitor_url, "leafz"))
            await msg.respond(answer.encode())

        await responder.subscribe(subject, cb=handle)
        await responder.flush()
        async with _cleans_up_after_learner():
            got = await call_learner(ask_via_leaf, hub, subject, timeout=30, what=f"ask_via_leaf(hub, {subject!r})")
            clients = [c for c in hub.monitor("connz").get("connections") or []
                       if c.get("kind", "Client") == "Client" and c.get("cid") != responder.client_id]
        if isinstance(got, (bytes, bytearray)):
            got = bytes(got).decode(errors="replace")
        expect("leafz" in seen, "the hub's service never received the request.", expected=f"a request on {subject}",
               seen="none", hint="send the request from a client connected to the leaf node, on the subject given.")
        expect(seen["leafz"].get("leafnodes", 0) >= 1, "no leaf node was connected to the hub when the request came.",
               expected="/leafz on the hub: 1 leaf node", seen=f"leafnodes: {seen['leafz'].get('leafnodes')}",
               hint="start one with natslab.leafnode(hub) and connect your client to lt.leaf.")
        direct = [c.get("name") or f"cid {c.get('cid')}" for c in clients if c.get("in_msgs", 0) > 0]
        expect(not direct, "the request came from a client connected to the hub itself, not through the leaf.",
               expected="the request arriving over the leaf link", seen=f"hub clients that sent messages: {direct}",
               hint="connect to the leaf node (lt.leaf), not to the hub.")
        expect(got == answer, "ask_via_leaf returned something other than the reply.", expected=repr(answer),
               seen=repr(got)[:80], hint="return reply.data.decode().")
        leaf = seen["leafz"]["leafs"][0]
        return f"leaf {leaf.get('name')!r} joined the hub (/leafz) and your request crossed it and came back with the answer."


# ---------------------------------------------------------------------------------------- 4.7
class _OutageWatch:
    """Poll every server from a thread; note when two were out of service at the same time.

    A server's outage starts when it stops answering (or its /varz start time shows it was
    restarted between two polls) and ends the first time its /healthz says ok again, that is once
    it has rejoined and caught up.  Servers in an outage are asked for their health on every
    round (every few milliseconds), so the moment a restarted server is healthy is not missed;
    another server's passing health wobble (a leader change) never opens an outage by itself.
    """

    def __init__(self, servers, every: float = 0.01):
        self.servers, self.every = servers, every
        self.t0 = time.monotonic()
        self.open: dict[str, float] = {}  # server -> when its outage began
        self.outages: dict[str, int] = {s.name: 0 for s in servers}
        self.overlaps: list[tuple[float, list[str]]] = []
        self._start: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _healthy(self, s) -> bool:
        try:
            return fetch(s.monitor_url, "healthz", timeout=1).get("status") == "ok"
        except Exception:
            return False

    def _poll(self, s, now: float) -> None:
        try:
            started = fetch(s.monitor_url, "varz", timeout=1)["start"]
        except Exception:
            started = None
        restarted = started is None or self._start.get(s.name) not in (None, started)
        if started is not None:
            self._start[s.name] = started
        if restarted and s.name not in self.open:
            self.open[s.name] = now
            self.outages[s.name] += 1
            # before calling it an overlap, give the others' outages a last chance to close
            for other in self.servers:
                if other.name in self.open and other is not s and self._healthy(other):
                    del self.open[other.name]
        elif not restarted and s.name in self.open and self._healthy(s):
            del self.open[s.name]

    def _run(self) -> None:
        while not self._stop.is_set():
            now = round(time.monotonic() - self.t0, 2)
            for s in self.servers:
                self._poll(s, now)
            if len(self.open) > 1:
                self.overlaps.append((now, sorted(self.open)))
            self._stop.wait(self.every)

    def __enter__(self):
        for s in self.servers:
            self._poll(s, 0.0)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


@exercise("4.7", "a rolling restart with no lost messages",
          hints=("for srv in cluster: srv.restart() (or lame_duck(), wait until not srv.running, srv.start()); "
               "each start returns once the server is healthy; then wait until every replica is current.",))
async def rolling_restart_check(rolling_restart):
    stream, subject = f"EVT_{_token(4).upper()}", f"evt{_token(4)}"
    async with _topology(start_cluster, 3, name="c4r", config=LAME_DUCK) as c, \
            _client(c) as nc, \
            _client(c) as learner_nc:
        js = nc.jetstream(timeout=10)
        await _add_stream(js, StreamConfig(name=stream, subjects=[f"{subject}.>"], num_replicas=3))
        await failover.wait_until_current(js, stream)
        started = {s.name: s.monitor("varz")["start"] for s in c}
        pub = failover.SteadyPublisher(js, f"{subject}.new", rate=200, give_up_after=25)
        with _OutageWatch(list(c)) as watch:
            async with pub:
                await call_learner(rolling_restart, c, learner_nc.jetstream(timeout=10), stream, timeout=120,
                                   what=f"rolling_restart(cluster, js, {stream!r})")
        not_running = [s.name for s in c if not s.running]
        expect(not not_running, "not every server is running after the rolling restart.",
               expected="all three running", seen=f"down: {not_running}", hint="start each server again after stopping it.")
        again = {s.name: s.monitor("varz")["start"] for s in c}
        same = [n for n in started if again[n] == started[n]]
        expect(not same, "some servers were not restarted.", expected="a new start time in /varz for all three",
               seen=f"unchanged: {same}", hint="restart every server of the cluster, one after the other.")
        expect(not watch.overlaps, "two servers were out of service at the same time.",
               expected="at most one server down or catching up at any moment",
               seen=(f"at {watch.overlaps[0][0]} s: {', '.join(watch.overlaps[0][1])} out together"
                     if watch.overlaps else ""),
               hint="restart one server, wait until it is back and healthy (start() returns then) and the "
                    "stream's replicas are current, then take the next one down.")
        run = pub.run
        expect(len(run.records) >= 20, "the checker's publisher could hardly publish while your function ran.",
               expected="publishing going on during the restart", seen=f"{len(run.records)} message(s) sent",
               hint="your function blocks the event loop; run blocking calls in a thread: "
                    "await asyncio.to_thread(srv.restart).")
        expect(not run.failed, "some publishes were never acknowledged during the restart.",
               expected="every publish acknowledged", seen=f"{len(run.failed)} of {len(run.records)} failed",
               hint="keep a majority of each stream's replicas up and current at all times.")
        survival = await failover.count_in_stream(js, stream, run)
        expect(survival.ok, "acknowledged messages are missing after the rolling restart.",
               expected=f"{survival.expected} messages", seen=survival.as_dict())
        await failover.wait_until_current(js, stream)
        return (f"all three servers restarted one at a time (never two down), while the checker published "
                f"{len(run.acked)} acknowledged messages; all found, longest pause {run.summary()['longest pause s']} s.")
