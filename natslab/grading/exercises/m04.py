"""Module 04 (clustering and high availability): checkers that build topologies and break them.

Every checker starts its own cluster, super-cluster or hub, injects the faults itself where the
point is survival (kills the stream leader, kills two of three servers, restarts nodes), reads the
servers' monitoring endpoints and stream info, and counts messages.  Learner code gets plain
``nats.connect`` connections (``learner_client``); the checker verifies on its own connections
and on the servers' own view, so whatever the learner does to the connection it was handed, the
check can go on.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from nats.js.api import StreamConfig

from ...errors import NatslabError
from ...lessons import failover, topoview
from ...runtime import session
from ...runtime.monitor import fetch
from ...runtime.server import Server
from ...runtime.topology import cluster as start_cluster, supercluster as start_supercluster
from ...runtime.waiting import until
from ..checks import Mismatch, call_learner, exercise, expect
from . import client, learner_client, of_type, scratch_server, text_result, token

LAME_DUCK = {"lame_duck_duration": "30s", "lame_duck_grace_period": "1s"}


def _cancelling() -> bool:
    task = asyncio.current_task()
    return bool(task is not None and getattr(task, "cancelling", lambda: 0)())


@contextlib.asynccontextmanager
async def _guarded(connection):
    """A shared client context whose closing may not replace the check's verdict.

    nats-py can raise ``CancelledError`` while closing a connection whose server the check (or
    the learner) killed; unless this task really is being cancelled, that is noise, not a result.
    """
    nc = await connection.__aenter__()
    try:
        yield nc
    except BaseException as exc:
        try:
            await connection.__aexit__(type(exc), exc, exc.__traceback__)
        except asyncio.CancelledError:
            if _cancelling():
                raise
        raise
    else:
        try:
            await connection.__aexit__(None, None, None)
        except asyncio.CancelledError:
            if _cancelling():
                raise


def _client(topology):
    """A checker's client that rides out the faults the checker injects (fast, endless reconnects)."""
    return _guarded(client(topology, reconnect_time_wait=0.1, max_reconnect_attempts=-1))


def _learner_js_client(srv):
    """A plain nats.connect connection for learner code that, like the checker's, rides out faults."""
    return _guarded(learner_client(srv, reconnect_time_wait=0.1, max_reconnect_attempts=-1))


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
    before = {g.id for g in session.groups()}
    try:
        yield
    finally:
        for group in session.groups():
            if group.id not in before:
                await asyncio.to_thread(group.close)


def _group(kind: str, like=None):
    """A new server group (on the backend of ``like``, a server, when given) that the checker closes."""
    return session.ServerGroup(kind, backend=like.backend if like is not None else None)


def _raised(m: Mismatch) -> str:
    """The class name of the exception a learner's code raised (from call_learner's verdict)."""
    return str(m.seen or "").split(":")[0].strip() if type(m) is Mismatch else ""


async def _stream_info(js, name: str, *, timeout: float = 15.0):
    """Stream info from the checker's side, or None when the stream does not exist.

    "Not found" is an answer and ends the wait at once; no answer (an election) is waited out.
    """
    import nats.js.errors

    async def probe():
        try:
            info = await asyncio.wait_for(js.stream_info(name), 2.5)
        except nats.js.errors.NotFoundError:
            return "missing"
        return info if info.cluster and info.cluster.leader else None

    found = await until(probe, f"stream {name} with a leader", timeout=timeout, retry=(Exception,), error=False)
    return None if found in (None, "missing") else found


# ---------------------------------------------------------------------------------------- 4.1
def _peers(srv) -> dict[str, int]:
    """Route connections per remote server, from the server's own /routez."""
    count: dict[str, int] = {}
    for r in srv.monitor("routez").get("routes") or []:
        count[r["remote_name"]] = count.get(r["remote_name"], 0) + 1
    return count


def _pool_complete(servers) -> bool:
    """Every node has its whole route pool (plus the $SYS route) to every other node.

    Routes come up one by one; the seed may only go once every node reaches every other node over
    its complete pool, or killing it could take a half-formed mesh with it.
    """
    for s in servers:
        pool = int((s.monitor("varz").get("cluster") or {}).get("pool_size") or 0)
        want = pool + 1 if pool > 0 else 1
        peers = _peers(s)
        if any(peers.get(o.name, 0) < want for o in servers if o is not s):
            return False
    return True


def _route_subs(srv, peer: str) -> list[str]:
    subs = []
    for r in srv.monitor("routez", subs=True).get("routes") or []:
        if r["remote_name"] == peer:
            subs += r.get("subscriptions_list") or []
    return subs


@exercise("4.1", "form a cluster from configs", hints=(
    "a cluster block names the cluster (the same on every node), where the node listens for routes, and "
    "the routes it dials at start-up; a node that reaches one seed learns the others by gossip (lesson 04.1).",
    'return {"cluster": {"name": ..., "listen": node["listen"], "advertise": node["advertise"], '
    '"routes": [...]}}; the seed has no routes, every other node lists only seed["route_url"].',
    'block = {"name": cluster_name, "listen": node["listen"], "advertise": node["advertise"]}; '
    'if node["name"] != seed["name"]: block["routes"] = [seed["route_url"]]; return {"cluster": block}',
))
async def cluster_from_configs(node_config):
    name = f"lab{token(4)}"
    group = _group("cluster")
    try:
        servers = [Server(group, f"{name}-n{i}", jetstream=False, roles=("cluster",)) for i in (1, 2, 3)]
        b = servers[0].runner
        nodes = []
        for s in servers:
            s.networks = [group]
            host, port = b.peer_host(s), s.ports["cluster"]
            nodes.append({"name": s.name, "listen": f"{b.bind_host}:{port}", "advertise": f"{host}:{port}",
                          "route_url": f"nats-route://{host}:{port}"})
        seed = nodes[0]
        for s, node in zip(servers, nodes):
            conf = await call_learner(node_config, name, dict(node), dict(seed),
                                      what=f"node_config({name!r}, <{node['name']}>, <seed>)")
            of_type(conf, dict, "node_config", 'a dict like {"cluster": {...}}')
            expect(isinstance(conf.get("cluster"), dict),
                   f"the settings for {node['name']} have no cluster block.",
                   expected='{"cluster": {"name": ..., "listen": ..., "routes": [...]}}', seen=repr(conf)[:160],
                   hint="the routes between servers are configured in the cluster block, under the key \"cluster\".")
            routes = conf["cluster"].get("routes") or []
            expect(node is not seed or not routes or routes == [seed["route_url"]],
                   "the seed was given routes to the other nodes.",
                   expected="the seed lists no routes (the others dial it)", seen=f"routes: {routes}"[:200],
                   hint="the seed is where the others start; it learns them when they connect to it.")
            s.extra = conf
        try:
            with ThreadPoolExecutor(max_workers=3) as pool:
                list(pool.map(lambda s: s.start(20), servers))
        except NatslabError as err:
            raise Mismatch("a server would not start with your settings.", expected="three running servers",
                           seen=f"{err.what} {err.details}"[:300],
                           hint="read the server's complaint above: a cluster block takes name, listen, "
                                "advertise and routes, with the values you were handed.")

        want = {s.name: {o.name for o in servers if o is not s} for s in servers}
        names = {s.name: (s.monitor("varz").get("cluster") or {}).get("name") for s in servers}
        expect(set(names.values()) == {name}, "the servers report another cluster name.",
               expected=f"cluster name {name!r} on all three (/varz)", seen=names,
               hint="the cluster name is the one you are handed (cluster_name), the same on every node; "
                    "it is not a node's own name.")
        await until(lambda: _pool_complete(servers), "every node routes to both others over its whole pool",
                    timeout=20, retry=(NatslabError, OSError), error=False)
        seen = {s.name: sorted(_peers(s)) for s in servers}
        expect(all(set(seen[n]) >= want[n] for n in want), "the three servers did not form a full mesh of routes.",
               expected={n: sorted(v) for n, v in want.items()}, seen=seen,
               hint="routes only form between nodes with the same cluster name, each listening where it was told; "
                    "a node that reaches the seed learns the others from it.")
        n2, n3 = servers[1], servers[2]
        configured = {f"{a.name} -> {o.name}": [r["is_configured"] for r in a.monitor("routez")["routes"]
                                                 if r["remote_name"] == o.name]
                      for a, o in ((n2, n3), (n3, n2))}
        dialed = [k for k, v in configured.items() if any(v)]
        expect(not dialed, f"a non-seed node was configured with a route to the other: {', '.join(dialed)}.",
               expected=f"{n2.name} and {n3.name} learn of each other by gossip (is_configured: false in /routez)",
               seen=f"is_configured: {configured}",
               hint="a node needs only one reachable seed; listing every peer in every config is what gossip "
                    "makes unnecessary (lesson 04.1).")
        expect(_pool_complete(servers), "the routes between the servers never all came up.",
               expected="a full route pool between every pair (/routez)", seen=seen,
               hint="routes only form between nodes with the same cluster name, each listening where it was told.")
        # the seed dies once the whole mesh is up: the two others keep their route and carry messages
        await asyncio.to_thread(servers[0].kill)
        subject = f"lab.{token()}"
        async with client(n3) as sub_nc, client(n2) as pub_nc:
            sub = await sub_nc.subscribe(subject)
            await sub_nc.flush()
            crossed = await until(lambda: subject in _route_subs(n2, n3.name), "interest crosses n3 -> n2",
                                  timeout=10, retry=(NatslabError, OSError), error=False)
            msg = None
            if crossed:
                await pub_nc.publish(subject, b"after the seed died")
                await pub_nc.flush()
                with contextlib.suppress(Exception):
                    msg = await sub.next_msg(timeout=3)
            expect(msg is not None, "with the seed gone, a message from n2 did not reach a subscriber on n3.",
                   expected="delivery over the n2-n3 route", seen="nothing",
                   hint="the route between the two non-seeds comes from gossip: each must advertise an address the "
                        "other can reach (advertise) and listen where it was told.")
        return (f"three servers formed cluster {name!r} from your settings; {n2.name} found {n3.name} by gossip "
                f"(/routez), and with the seed killed they still carried a message between them.")
    finally:
        await asyncio.to_thread(group.close)



# ---------------------------------------------------------------------------------------- 4.2
async def _leader_apart_from_meta(c, nc, js, stream: str) -> str:
    """Make sure the stream leader is not also the meta leader, so killing the wrong one shows."""
    for _ in range(5):
        leader = (await failover.wait_for_leader(js, stream)).cluster.leader
        if leader != c.meta_leader():
            return leader
        with contextlib.suppress(Exception):
            await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=5)
        await failover.wait_for_leader(js, stream, other_than=leader)
    return (await failover.wait_for_leader(js, stream)).cluster.leader


def _refusal_hint(m: Mismatch, said: dict[str, str]) -> None:
    """Give a JetStream refusal raised in learner code the hint its description calls for."""
    if type(m) is Mismatch:
        for fragment, hint in said.items():
            if fragment in str(m.seen):
                m.hint = hint
                return


@exercise("4.2", "a stream that survives the loss of any one node", hints=(
    "a stream keeps a copy on as many servers as its replica count says; after a loss the copies left need a "
    "majority of the group to elect a leader and take writes (lesson 04.2).",
    "js.add_stream(name=..., subjects=..., num_replicas=N): which N keeps a majority when one of three dies?",
    "await js.add_stream(name=name, subjects=subjects, num_replicas=3)",
))
async def survives_one_node(create_stream):
    name, subject = f"ORD_{token(4).upper()}", f"ord{token(4)}"
    async with _topology(start_cluster, 3, name="c4x") as c, \
            _client(c) as nc, _learner_js_client(c.servers[1]) as learner_nc:
        try:
            await call_learner(create_stream, learner_nc.jetstream(timeout=10), name, [f"{subject}.>"],
                               what=f"create_stream(js, {name!r}, [{subject + '.>'!r}])")
        except Mismatch as m:
            _refusal_hint(m, {"no suitable peers": "the cluster could not place that many replicas: it has three "
                                                   "servers, and each replica needs a server of its own.",
                              "insufficient resources": "the cluster has no room for the stream as configured "
                                                        "(replicas, storage limits)."})
            raise
        js = nc.jetstream(timeout=10)
        info = await _stream_info(js, name)
        expect(info is not None, f"there is no stream {name} in the cluster.", expected=f"stream {name}",
               seen="no such stream", hint="create the stream under the name you are handed (the name argument).")
        replicas = 1 + len(info.cluster.replicas or [])
        expect(f"{subject}.>" in (info.config.subjects or []), f"stream {name} does not take the subjects given.",
               expected=[f"{subject}.>"], seen=info.config.subjects,
               hint="a stream stores what is published on its subjects: use the subjects you are handed.")
        expect(replicas >= 3, f"stream {name} has {replicas} replica(s); one server lost takes its quorum with it.",
               expected="3 replicas (stream info cluster: a leader and two followers)",
               seen=f"{replicas}: leader {info.cluster.leader}, followers {[p.name for p in info.cluster.replicas or []]}",
               hint="R1 dies with its server, and R2 has no majority left (1 of 2) after one loss: a RAFT group "
                    "needs more than half its members.")
        await failover.wait_until_current(js, name)
        leader = await _leader_apart_from_meta(c, nc, js, name)  # one election at a time, not two
        run = await failover.publish_through_fault(js, f"{subject}.new", 300, batch=50, fault=c[leader].kill,
                                                   fault_after=100, fault_label=f"kill {leader}", give_up_after=25)
        expect(not run.failed, f"after the checker killed the stream leader {leader}, writes were refused.",
               expected="all 300 publishes acknowledged (with retries)", seen=f"{len(run.failed)} never acknowledged",
               hint="the replicas left must be a majority of the stream's group, and its limits must accept the "
                    "messages.")
        survival = await failover.count_in_stream(js, name, run)
        expect(survival.ok, "acknowledged messages are missing or doubled after the leader was killed.",
               expected="300 messages, each once", seen=survival.as_dict(),
               hint="an acknowledged message must stay: no limits (max_msgs, max_age, discard) that drop messages.")
        new = (await failover.wait_for_leader(js, name, other_than=leader)).cluster.leader
        return (f"R{replicas} stream {name}: the checker killed its leader {leader}, {new} took over, and all 300 "
                f"acknowledged messages were found ({run.summary()['longest pause s']} s pause).")


# ---------------------------------------------------------------------------------------- 4.3
@exercise("4.3", "find and kill the stream leader", hints=(
    "every stream has its own RAFT group with its own leader, which is not the JetStream meta leader; the "
    "stream's own info names it, and after a kill its followers elect a new one (lessons 04.2 and 04.3).",
    "(await js.stream_info(stream)).cluster.leader names the leader; cluster[name].kill() kills it; poll "
    "js.stream_info until cluster.leader is set and is another server.",
    "old = (await js.stream_info(stream)).cluster.leader; cluster[old].kill(); then loop: leader = "
    "(await js.stream_info(stream)).cluster.leader; if leader and leader != old: return leader",
))
async def kill_the_leader(fail_over):
    stream, subject = f"PAY_{token(4).upper()}", f"pay{token(4)}"
    async with _topology(start_cluster, 3, name="c4y") as c, \
            _client(c) as nc:
        js = nc.jetstream(timeout=10)
        await _add_stream(js, StreamConfig(name=stream, subjects=[f"{subject}.>"], num_replicas=3))
        await _publish(js, f"{subject}.x", 50)
        await failover.wait_until_current(js, stream)
        leader = await _leader_apart_from_meta(c, nc, js, stream)
        meta = c.meta_leader()
        followers = [p.name for p in (await failover.wait_for_leader(js, stream)).cluster.replicas or []]
        async with _learner_js_client(c[meta]) as learner_nc:
            returned = await call_learner(fail_over, c, learner_nc.jetstream(timeout=5), stream, timeout=45,
                                          what=f"fail_over(cluster, js, {stream!r})")
            returned_at = time.time()
        down = [s.name for s in c if not s.running]
        if leader not in down:
            killed = ", ".join(down) or "nobody"
            if meta in down:
                problem, hint = (f"you stopped {meta}, the JetStream meta leader (and a follower of {stream}); the "
                                 f"leader of {stream} is {leader}.",
                                 "the meta leader runs the cluster's JetStream management (placing streams); each "
                                 "stream elects a leader of its own, named in the stream's info (cluster.leader).")
            elif down:
                problem, hint = (f"you stopped {killed}, a follower of {stream}; its leader {leader} kept running.",
                                 "stream info lists the leader (cluster.leader) apart from its followers "
                                 "(cluster.replicas); it is the leader that has to go.")
            else:
                problem, hint = (f"no server was stopped; the stream leader {leader} is still running.",
                                 "find the leader's name in the stream's info, then kill that server with "
                                 "cluster[name].kill().")
            expect(False, problem, expected=f"{leader} (the leader of {stream}) killed",
                   seen=f"down: {killed}", hint=hint)
        expect(len(down) == 1, "more than one server was stopped.", expected=f"only {leader} down", seen=down,
               hint="with two of three servers down the stream has no majority and cannot elect anyone: stop "
                    "only its leader.")
        of_type(returned, str, "fail_over", "the new leader's name (a str)")
        expect(returned != leader, f"fail_over returned {leader!r}, the leader you killed.",
               expected="the name of the server elected after the kill", seen=repr(returned),
               hint="right after the kill the stream still reports the old leader or none at all: an election "
                    "takes a moment, so keep asking until the leader is another server.")
        info = await failover.wait_for_leader(js, stream, other_than=leader, timeout=30)
        expect(returned == info.cluster.leader, "fail_over returned something other than the new leader.",
               expected=f"{info.cluster.leader!r} (stream info after the election)", seen=repr(returned)[:80],
               hint=("that server is a follower, not the elected leader: naming a follower before the election is "
                     "a guess. The leader is cluster.leader in stream info, once it names a server other than the "
                     "one you killed."
                     if returned in followers else "return the name stream info gives as cluster.leader."))
        since = info.cluster.leader_since.timestamp() if info.cluster.leader_since else None
        expect(since is None or returned_at >= since - 0.25,
               f"fail_over returned {returned!r} {since - returned_at:.1f} s before the stream elected it." if since else "",
               expected="the name stream info gives once the election is over",
               seen=f"returned at {returned_at:.2f}, leader since {since:.2f} (stream info, the server's clock)"
                    if since else "",
               hint="a follower's name is a guess: either may win the election. Keep asking stream info until its "
                    "leader is a server other than the one you killed.")
        ack = await until(lambda: js.publish(f"{subject}.x", b"after", headers={"Nats-Msg-Id": "after"}),
                          "a write after the failover", timeout=30, retry=(Exception,))
        expect(ack.seq == 51, "the stream lost messages.", expected="seq 51 for the next message", seen=ack.seq,
               hint="kill the leader only; do not purge or recreate the stream.")
        return (f"you killed {leader}, the stream's leader (not the meta leader {meta}), and returned its elected "
                f"successor {returned} (the stream's own info).")


# ---------------------------------------------------------------------------------------- 4.4
_NO_QUORUM = ("with two of three servers gone the stream has no leader, so every request a leader must answer "
              "(stream info, a consumer, an ordinary get_msg, anything that waits for a leader) goes unanswered; "
              "a direct get is answered by any replica that holds the message (lesson 04.2).")


@exercise("4.4", "read a stream that has lost its quorum", hints=(
    "without a leader a stream takes no writes and its API goes quiet, but every replica still holds the "
    "messages; a stream with allow_direct lets any replica answer reads (lesson 04.2, a direct get).",
    "js.get_msg(stream, seq=seq, direct=True) asks the replicas, not the leader; the message's .data is bytes.",
    "msg = await js.get_msg(stream, seq=seq, direct=True); return msg.data.decode()",
))
async def read_without_quorum(read_message):
    stream, subject = f"LOG_{token(4).upper()}", f"log{token(4)}"
    async with _topology(start_cluster, 3, name="c4z") as c:
        async with client(c) as nc:
            js = nc.jetstream(timeout=10)
            await _add_stream(js, StreamConfig(name=stream, subjects=[f"{subject}.>"], num_replicas=3,
                                               allow_direct=True))
            await _publish(js, f"{subject}.e", 30)
            info = await failover.wait_until_current(js, stream)
            seq = 5 + int(token(4), 16) % 20
            # the answer, read from the leader while there is one
            want = (await until(lambda: js.get_msg(stream, seq=seq), "reading the stream", timeout=20,
                                retry=(Exception,))).data.decode()
        survivor = c[info.cluster.replicas[0].name]
        for s in c:
            if s is not survivor:
                await asyncio.to_thread(s.kill)
        async with client(survivor) as mine, learner_client(survivor) as theirs:
            # the checker first makes sure the lone replica answers direct gets at all
            await until(lambda: mine.jetstream().get_msg(stream, seq=1, direct=True),
                        "the lone replica answers direct gets", timeout=20, retry=(Exception,))
            try:
                got = await call_learner(read_message, theirs.jetstream(), stream, seq, timeout=20,
                                         what=f"read_message(js, {stream!r}, {seq})")
            except Mismatch as m:
                if type(m) is Mismatch and _raised(m) not in ("", "AttributeError", "UnicodeDecodeError"):
                    m.hint = _NO_QUORUM  # a timeout, a course helper waiting for a leader, no responders
                raise
        got = text_result(got, "read_message")
        expect(got == want, f"read_message returned something other than the data of message {seq}.",
               expected=repr(want), seen=repr(got)[:80],
               hint="the message to read is the one at stream sequence seq (not the last one, not a subject's).")
        return (f"with two of three servers killed (no leader, no quorum), your read of seq {seq} was answered "
                f"by the lone replica {survivor.name}.")


# ---------------------------------------------------------------------------------------- 4.5
@exercise("4.5", "place a stream in a chosen cluster", hints=(
    "a stream lives in the cluster of the server that received the request unless its placement names "
    "another: by cluster name, or by server tags (lesson 04.4).",
    "nats.js.api.Placement(cluster=...) (or Placement(tags=[...]) matching a tag the servers carry, here "
    "\"cluster:<name>\") in js.add_stream(..., placement=...).",
    "await js.add_stream(name=name, subjects=subjects, placement=Placement(cluster=cluster))",
))
async def place_in_cluster(place_stream):
    regions = [f"r{token(3)}", f"r{token(3)}"]
    target, other = regions
    name, subject = f"GEO_{token(4).upper()}", f"geo{token(4)}"
    async with _topology(start_supercluster, {target: 3, other: 3}) as sc, \
            client(sc.cluster_urls(other)) as nc, \
            learner_client(sc.clusters[other][0]) as learner_nc:
        js = nc.jetstream(timeout=10)  # the checker and the learner both sit in the *other* cluster
        try:
            await call_learner(place_stream, learner_nc.jetstream(timeout=10), name, [f"{subject}.>"], target,
                               what=f"place_stream(js, {name!r}, subjects, {target!r})")
        except Mismatch as m:
            _refusal_hint(m, {"tags not matched": f"placement tags must equal tags the servers carry, and here they "
                                                  f"are tagged cluster:{target} and cluster:{other}, the prefix "
                                                  f"included (/varz tags).",
                              "no suitable peers": f"no cluster matched the placement: a placement names a cluster "
                                                   f"that exists here ({target} or {other}), with no more replicas "
                                                   f"than it has servers (3)."})
            raise
        info = await _stream_info(js, name)
        expect(info is not None, f"there is no stream {name}.", expected=f"stream {name} in cluster {target}",
               seen="no such stream", hint="create the stream under the name you are handed (the name argument).")
        peers = [info.cluster.leader] + [p.name for p in info.cluster.replicas or []]
        expect(info.cluster.name == target and all(p.startswith(f"{target}-") for p in peers),
               f"stream {name} is not in cluster {target}.",
               expected=f"cluster {target}, replicas on {target}-n*", seen=f"cluster {info.cluster.name}, replicas {peers}",
               hint=("without a placement a stream goes to the cluster of the server that got the request, "
                     "and your client is in the other cluster." if info.cluster.name == other and
                     not (info.config.placement and (info.config.placement.cluster or info.config.placement.tags))
                     else "the placement must name the cluster you are handed (the cluster argument)."))
        expect(f"{subject}.>" in (info.config.subjects or []), f"stream {name} does not take the subjects given.",
               expected=[f"{subject}.>"], seen=info.config.subjects,
               hint="a stream stores what is published on its subjects: use the subjects you are handed.")
        await _publish(js, f"{subject}.from-{other}", 20)
        info = await js.stream_info(name)
        expect(info.state.messages == 20, "messages published from the other cluster did not all land.",
               expected=20, seen=info.state.messages,
               hint="the stream must keep what it is sent: no limits that drop messages.")
        return (f"stream {name} lives in {target} (leader {info.cluster.leader}, stream info), and 20 messages "
                f"published from {other} reached it across the gateway.")


# ---------------------------------------------------------------------------------------- 4.6
def _leaf_remotes_missing(conf) -> bool:
    if isinstance(conf, str):
        return "remotes" not in conf
    block = conf.get("leafnodes")
    return not (isinstance(block, dict) and block.get("remotes"))


def _hub_clients_that_sent(hub, skip: int) -> list[str]:
    """Client connections of the hub (open or already closed) that published anything: /connz?state=all."""
    conns = hub.monitor("connz", state="all", limit=1024).get("connections") or []
    return [c.get("name") or f"cid {c.get('cid')}" for c in conns
            if c.get("kind", "Client") == "Client" and c.get("cid") != skip and c.get("in_msgs", 0) > 0]


def _clients_on(srv) -> int:
    """Client connections open on ``srv`` (/connz lists leaf node links too, as kind Leafnode)."""
    conns = srv.monitor("connz", limit=1024).get("connections") or []
    return sum(1 for c in conns if c.get("kind", "Client") == "Client")


def _leaf_in_msgs(hub) -> int:
    """Messages the hub received over its leaf node links (its own /leafz)."""
    return sum(int(l.get("in_msgs", 0)) for l in hub.monitor("leafz").get("leafs") or [])


@exercise("4.6", "configure a leaf node and route a request through it", hints=(
    "a leaf node is a server that dials out to a hub and extends it: clients at the edge connect to the leaf, "
    "and subjects flow over the leaf link both ways (lesson 04.5).",
    "a leaf's config has a leafnodes block whose remotes list the hubs to dial: "
    "{\"leafnodes\": {\"remotes\": [{\"urls\": [...]}]}}; then nats.connect(leaf_url) and nc.request(...).",
    "leaf_config: return {\"leafnodes\": {\"remotes\": [{\"urls\": [hub_leaf_url]}]}}; ask_via_leaf: nc = await "
    "nats.connect(leaf_url); reply = await nc.request(subject, b\"hi\", timeout=5); await nc.close(); "
    "return reply.data.decode()",
))
async def request_through_leaf(leaf_config, ask_via_leaf):
    subject, answer = f"svc.{token()}", f"answer-{token(8)}"
    received: list = []
    async with scratch_server(jetstream=False, leafnodes=True) as hub:
        b = hub.runner
        hub_leaf_url = f"nats-leaf://{b.peer_host(hub)}:{hub.ports['leafnode']}"
        conf = await call_learner(leaf_config, hub_leaf_url, what=f"leaf_config({hub_leaf_url!r})")
        of_type(conf, (dict, str), "leaf_config", "the leaf's settings: a dict, or config text")
        expect(not _leaf_remotes_missing(conf), "the leaf's settings have no leafnodes remotes.",
               expected='{"leafnodes": {"remotes": [{"urls": ["nats-leaf://..."]}]}}', seen=repr(conf)[:200],
               hint="a leaf node dials out to its hub, and the hubs it dials are its leafnodes remotes "
                    "(listen is for the other side: a hub accepting leaf nodes).")
        group = _group("leaf", like=hub)
        try:
            leaf = Server(group, f"edge-{token(3)}", jetstream=False,
                          extra=conf if isinstance(conf, dict) else None,
                          extra_text=conf if isinstance(conf, str) else "")
            leaf.networks = [hub.group]
            await asyncio.to_thread(b.join_group, hub.group, hub)
            try:
                await asyncio.to_thread(leaf.start, 20)
            except NatslabError as err:
                raise Mismatch("the leaf would not start with your settings.", expected="a running leaf node",
                               seen=f"{err.what} {err.details}"[:300],
                               hint="read the server's complaint above: remotes is a list of blocks, each with the "
                                    "hub's leaf node address under urls.")
            linked = await until(lambda: hub.monitor("leafz").get("leafnodes", 0) >= 1, "the leaf joins the hub",
                                 timeout=10, retry=(NatslabError, OSError), error=False)
            expect(bool(linked), "the leaf node started but never connected to the hub.",
                   expected="/leafz on the hub: 1 leaf node", seen=f"leafnodes: 0; the leaf's config:\n{leaf.config_text[-400:]}",
                   hint="the remote's urls must hold the hub's leaf node address you were handed "
                        "(nats-leaf://...); a client or route port does not speak the leaf protocol.")
            async with client(hub) as responder:
                async def handle(msg):
                    received.append(msg.subject)
                    await msg.respond(answer.encode())

                await responder.subscribe(subject, cb=handle)
                await responder.flush()
                # the leaf knows the hub wants it (its /leafz; the leaf's /subsz lists only its own clients)
                await until(lambda: any(subject in subs for subs in topoview.remote_interest(leaf, "leafz").values()),
                            "the leaf hears of the hub's service", timeout=10, retry=(NatslabError, OSError),
                            error=False)
                before = _leaf_in_msgs(hub)
                async with _cleans_up_after_learner():
                    got = await call_learner(ask_via_leaf, leaf.url, hub.url, subject, timeout=30,
                                             what=f"ask_via_leaf(leaf_url, hub_url, {subject!r})",
                                             hints={"NoRespondersError": "the server you asked knows nobody who "
                                                    "serves that subject: is your client on the leaf, and is the "
                                                    "leaf linked to the hub?"})
                direct = _hub_clients_that_sent(hub, responder.client_id)
                crossed = _leaf_in_msgs(hub) - before
            expect(not direct, "the request came from a client connected to the hub itself, not through the leaf.",
                   expected="the request arriving over the leaf link (the hub's /leafz in_msgs)",
                   seen=f"hub clients that published (/connz, open and closed): {direct}",
                   hint="edge clients connect to the leaf node, which carries their messages to the hub; the hub's "
                        "own address is for clients in the centre.")
            expect(received and crossed >= 1, "the hub's service never received a request over the leaf link.",
                   expected=f"a request on {subject} through the leaf", seen=f"requests seen: {len(received)}, "
                   f"messages in over the leaf link: {crossed}",
                   hint="send the request on the subject you are handed, from a client connected to the leaf node.")
            got = text_result(got, "ask_via_leaf")
            expect(got == answer, "ask_via_leaf returned something other than the reply's data.", expected=repr(answer),
                   seen=repr(got)[:80], hint="return the data of the reply the service sent back, as text.")
            left_open = await until(lambda: not _clients_on(leaf),
                                    "your connection to the leaf closes", timeout=5, retry=(NatslabError, OSError),
                                    error=False)
            expect(bool(left_open), "your connection to the leaf was still open after ask_via_leaf returned.",
                   expected="no client left on the leaf (its /connz)",
                   seen=f"{_clients_on(leaf)} client connection(s) open on the leaf",
                   hint="a function that opens a connection closes (or drains) it before it returns.")
            name = (hub.monitor("leafz").get("leafs") or [{}])[0].get("name")
            return (f"your leaf config joined leaf {name!r} to the hub (/leafz), your request crossed the leaf link "
                    f"(the hub's /leafz in_msgs, no hub client publishing) and you returned the reply and closed "
                    f"your connection.")
        finally:
            await asyncio.to_thread(group.close)


# ---------------------------------------------------------------------------------------- 4.7
class _OutageWatch:
    """Poll every server from a thread; note when two were out of service at the same time.

    A server's outage starts when it stops answering (three polls in a row) (or its /varz start time shows it was
    restarted between two polls) and ends the first time its /healthz says ok again, that is once
    it has rejoined and caught up.  Servers in an outage are asked for their health on every
    round (every few milliseconds), so the moment a restarted server is healthy is not missed;
    another server's passing health wobble (a leader change) never opens an outage by itself.
    """

    MISSES = 3  # unanswered polls in a row that make a server "out"

    def __init__(self, servers, every: float = 0.01):
        self.servers, self.every = servers, every
        self.t0 = time.monotonic()
        self.open: dict[str, float] = {}  # server -> when its outage began
        self.outages: dict[str, int] = {s.name: 0 for s in servers}
        self.overlaps: list[tuple[float, list[str]]] = []
        self._start: dict[str, str] = {}
        self._misses: dict[str, int] = {}
        self._missed: dict[str, float] = {}  # server -> when its current run of unanswered polls began
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
        # one unanswered poll is not an outage (a loaded machine, a slow Docker port): a server is out
        # when it missed MISSES polls in a row (its outage dated from the first), or restarted between two
        if started is None:
            self._missed.setdefault(s.name, now)
            self._misses[s.name] = self._misses.get(s.name, 0) + 1
        else:
            self._misses[s.name] = 0
        down_since = self._missed.get(s.name, now)
        if started is not None:
            self._missed.pop(s.name, None)
        restarted = (self._misses.get(s.name, 0) >= self.MISSES
                     or (started is not None and self._start.get(s.name) not in (None, started)))
        if started is not None:
            self._start[s.name] = started
        if restarted and s.name not in self.open:
            self.open[s.name] = down_since
            self.outages[s.name] += 1
            # before calling it an overlap, give the others' outages a last chance to close
            for other in self.servers:
                if other.name in self.open and other is not s and self._healthy(other):
                    del self.open[other.name]
        elif started is not None and not restarted and s.name in self.open and self._healthy(s):
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


class _LoopWatch:
    """A task that ticks on the event loop every ``every`` s and records how late each tick came.

    A blocking call in learner code (``srv.restart()`` straight on the loop) holds every task up,
    the checker's publisher and this ticker alike: the longest late tick is how long it blocked.
    """

    def __init__(self, every: float = 0.05):
        self.every, self.longest, self.at = every, 0.0, 0.0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = last = loop.time()
        while True:
            await asyncio.sleep(self.every)
            now = loop.time()
            late = now - last - self.every
            if late > self.longest:
                self.longest, self.at = late, round(now - t0, 2)
            last = now

    async def __aenter__(self):
        self._task = asyncio.ensure_future(self._run())
        return self

    async def __aexit__(self, *exc):
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


BLOCKED_LOOP = 3.0  # s: longer than any pause the loop's own work (or a Docker API call) causes on a loaded machine
BLOCKING = ("start", "stop", "restart")  # Server methods that wait for the server before they return


@contextlib.contextmanager
def _blocking_calls_on_the_loop(servers):
    """Note every ``srv.start()``/``stop()``/``restart()`` made on the event loop's own thread.

    Those calls wait for the server (seconds) without giving the loop back; in a thread
    (``asyncio.to_thread``) they do not hold it up.  The checker's servers get a thin wrapper per
    instance for the length of the learner's call, so the evidence is the call itself, not a timing.
    """
    seen: list[str] = []

    def wrap(srv, name):
        original = getattr(srv, name)

        def wrapped(*args, **kwargs):
            try:
                asyncio.get_running_loop()
                seen.append(f"{srv.name}.{name}()")
            except RuntimeError:  # no loop in this thread: a worker thread, as it should be
                pass
            return original(*args, **kwargs)
        return wrapped

    for srv in servers:
        for name in BLOCKING:
            setattr(srv, name, wrap(srv, name))
    try:
        yield seen
    finally:
        for srv in servers:
            for name in BLOCKING:
                srv.__dict__.pop(name, None)


_RESTART_HINTS = {
    "WaitTimeout": "a wait in your code gave up: was the server you waited on running again, and was only one "
                   "server down at the time? (a stream with two replicas down cannot catch up)",
    "ServerStartError": "a server would not start again: start a server only once the previous process has "
                        "exited (after lame_duck(), wait until srv.running is false).",
    "PortInUse": "a server's port was still taken when you started it again: the old process was still in lame "
                 "duck mode; wait until srv.running is false before srv.start().",
}


@exercise("4.7", "a rolling restart with no lost messages", hints=(
    "a rolling restart takes one server down at a time and lets it rejoin and catch up before the next goes, "
    "so every stream keeps its majority; blocking calls must not hold up the event loop (lesson 04.6).",
    "srv.lame_duck() then wait while srv.running; await asyncio.to_thread(srv.start) (it returns once the server "
    "is healthy); failover.wait_until_current(js, stream) before the next server.",
    "for srv in cluster: srv.lame_duck(); (while srv.running: await asyncio.sleep(0.05)); "
    "await asyncio.to_thread(srv.start); await failover.wait_until_current(js, stream, timeout=60)",
))
async def rolling_restart_check(rolling_restart):
    stream, subject = f"EVT_{token(4).upper()}", f"evt{token(4)}"
    async with _topology(start_cluster, 3, name="c4r", config=LAME_DUCK) as c, \
            _client(c) as nc, \
            _learner_js_client(c.servers[0]) as learner_nc:
        js = nc.jetstream(timeout=10)
        await _add_stream(js, StreamConfig(name=stream, subjects=[f"{subject}.>"], num_replicas=3))
        await failover.wait_until_current(js, stream)
        started = {s.name: s.monitor("varz")["start"] for s in c}
        pub = failover.SteadyPublisher(js, f"{subject}.new", rate=200, give_up_after=25)
        try:
            with _OutageWatch(list(c)) as watch, _blocking_calls_on_the_loop(list(c)) as on_loop:
                async with pub, _LoopWatch() as ticks:
                    await call_learner(rolling_restart, c, learner_nc.jetstream(timeout=10), stream, timeout=120,
                                       what=f"rolling_restart(cluster, js, {stream!r})")
        except Mismatch as m:
            if _raised(m) in _RESTART_HINTS:
                m.hint = _RESTART_HINTS[_raised(m)]
            raise
        not_running = [s.name for s in c if not s.running]
        expect(not not_running, "not every server is running after the rolling restart.",
               expected="all three running", seen=f"down: {not_running}",
               hint="a rolling restart brings every server it takes down back up before it returns.")
        again = {s.name: s.monitor("varz")["start"] for s in c}
        same = [n for n in started if again[n] == started[n]]
        expect(not same, "some servers were not restarted.", expected="a new start time in /varz for all three",
               seen=f"unchanged: {same}", hint="restart every server of the cluster, one after the other.")
        expect(not watch.overlaps, "two servers were out of service at the same time.",
               expected="at most one server down or catching up at any moment",
               seen=f"at {watch.overlaps[0][0]} s: {', '.join(watch.overlaps[0][1])} out together"
                    if watch.overlaps else "",
               hint="the next server may go only once the previous one is running, healthy and caught up: a "
                    "stream with two of three replicas out has no majority.")
        expect(not on_loop, f"your function blocked the event loop: it called {', '.join(on_loop[:3])} on it.",
               expected="start(), stop() and restart() run in a thread (asyncio.to_thread)",
               seen=f"{', '.join(on_loop)} on the event loop's thread; the longest stall of the loop was "
                    f"{ticks.longest:.1f} s, with nothing else (the checker's publisher, a notebook's other tasks) "
                    f"running meanwhile",
               hint="srv.start(), srv.restart() and srv.stop() wait for the server and do not give the event loop "
                    "back meanwhile; run such blocking calls in a thread (lesson 04.6).")
        expect(ticks.longest < BLOCKED_LOOP, "your function blocked the event loop.",
               expected=f"the event loop free to run other tasks (no stall over {BLOCKED_LOOP:g} s)",
               seen=f"a {ticks.longest:.1f} s stall at {ticks.at} s: nothing else (the checker's publisher, "
                    f"a notebook's other tasks) could run",
               hint="srv.start(), srv.restart() and srv.stop() wait for the server and do not give the event loop "
                    "back meanwhile; run such blocking calls in a thread (lesson 04.6).")
        run = pub.run
        expect(not run.failed, "some publishes were never acknowledged during the restart.",
               expected="every publish acknowledged", seen=f"{len(run.failed)} of {len(run.records)} failed",
               hint="a stream takes writes only while a majority of its replicas is up and current.")
        survival = await failover.count_in_stream(js, stream, run)
        expect(survival.ok, "acknowledged messages are missing after the rolling restart.",
               expected=f"{survival.expected} messages", seen=survival.as_dict(),
               hint="a stream keeps every acknowledged message only while a majority of its replicas survives.")
        await failover.wait_until_current(js, stream)
        return (f"all three servers restarted (new /varz start times), never two out of service at once, no "
                f"blocking call on the event loop (longest stall {ticks.longest:.1f} s), and all {len(run.acked)} messages the checker published "
                f"meanwhile were acknowledged and found (longest pause {run.summary()['longest pause s']} s).")
