"""Module 08 (operations), exercises 8.1-8.8.

8.1-8.3 diagnose: each checker breaks a real deployment in one of several ways (every way once, in
a random order: a constant answer cannot pass) and hands the learner's function only what an
operator has (URLs, monitoring, logs), never the fault.  8.4-8.6 fix: the checker breaks, the
learner repairs through the config file and a reload or restart, and the checker verifies the
deployment recovered (and kept what it must keep: clients, data, the healthy nodes).  8.7 backs a
stream up with the JetStream snapshot API and restores it elsewhere, consumer state included.
8.8 is a rolling upgrade (2.14.6 -> 2.15.1) under a publishing load, every stop watched.
The fault catalogue is natslab/lessons/faults.py.
"""
from __future__ import annotations

import asyncio
import contextlib
import random

import nats
from nats.js.api import AckPolicy, ConsumerConfig

from ...lessons import faults
from ...runtime.confgen import Raw
from ...runtime.server import server
from ...runtime.topology import cluster
from ...runtime.waiting import until
from ..checks import Mismatch, call_learner, exercise, expect
from . import client, scenario_ready, scratch_server, text_result, token


DIAG_HINTS = {
    "URLError": "a monitoring request failed (refused or timed out). That is a symptom to interpret, not "
                "an error to raise: catch it (OSError covers it) and ask what it tells you.",
    "TimeoutError": "something your code waited for timed out. A timeout is a symptom: catch it and decide "
                    "what it means (a frozen server? a request the server dropped?).",
    "NoServersError": "the connection attempt failed. That is a symptom to interpret: catch it (and pass "
                      "connect_timeout= so it fails fast) and decide why it failed.",
    "NoRespondersError": "the request met no responders. That is a symptom to interpret: catch it and "
                         "return the label it points to.",
    "ConnectionRefusedError": "nothing accepted the TCP connection. That is a symptom: catch it and interpret it.",
}


def _label(value, labels: tuple[str, ...], what: str) -> str:
    text = text_result(value, what)
    expect(text in labels, f"{what} returned {text!r}, which is not one of the labels.",
           expected=" / ".join(labels), seen=repr(text)[:80],
           hint="return exactly one of the labels the exercise lists, as written.")
    return text


async def _rounds(fn, labels, build, what, symptoms, timeout=40.0):
    """One round per label, in a random order: build the broken scene, ask, compare."""
    order = random.sample(labels, len(labels))
    for n, truth in enumerate(order, 1):
        async with build(truth) as scene:
            got = await call_learner(fn, scene, what=what, timeout=timeout, hints=DIAG_HINTS)
        got = _label(got, tuple(labels), what)
        if got != truth:
            raise Mismatch(f"round {n} of {len(order)}: you diagnosed {got!r}, but the deployment's fault "
                           f"was {truth!r}.", expected=truth, seen=got, hint=symptoms[truth])
    return order


# ------------------------------------------------------------------------------------- 8.1
CLIENT_LABELS = ("wrong_port", "server_paused", "not_authorized", "no_responders")
CLIENT_SYMPTOMS = {
    "wrong_port": "a wrong port: the connection is refused at once, while the server's monitoring port "
                  "answers and /healthz says ok (the server is fine; the client dials the wrong place).",
    "server_paused": "a frozen server: the TCP connection opens but the server never sends its INFO, so "
                     "the connect times out, and its monitoring port times out too.",
    "not_authorized": "an authorization error: the connection works, but the request is dropped; the "
                      "client gets a 'Permissions Violation' error (error_cb) and the server logs a "
                      "'Publish Violation' line naming the user and subject.",
    "no_responders": "no responders: the connection works and the request fails at once with a "
                     "no-responders status (nats.errors.NoRespondersError): nobody subscribes to it.",
}


@exercise("8.1", "diagnose a client's trouble",
          hints=("each fault has its own symptom: a refused connect, a connect that times out, an "
                 "error from the server about permissions, a no-responders status; the server's "
                 "monitoring port and its log tell the rest (lesson 08.6, connection problems).",
                 "try nats.connect(url, user=, password=, connect_timeout=2, allow_reconnect=False, "
                 "error_cb=...) and nc.request(subject, ..., timeout=2); catch NoRespondersError and "
                 "TimeoutError; read natslab.monitor(monitor_url, 'healthz') (it times out on a frozen "
                 "server) and scene['logs']() for 'Permissions Violation'.",
                 "connect fails -> 'wrong_port' if /healthz answers else 'server_paused'; request raises "
                 "NoRespondersError -> 'no_responders'; a 'Permissions Violation' (error_cb or log) -> "
                 "'not_authorized'"))
async def diagnose_client(diagnose):
    password = token(8)

    @contextlib.asynccontextmanager
    async def build(fault):
        subject = f"orders{token(4)}.new"
        config = {"authorization": {"users": [
            {"user": "app", "password": password, "permissions": {"publish": {"allow": [">"]}}},
            {"user": "svc", "password": password}]}}
        async with scratch_server(jetstream=False, config=config) as srv, \
                client(srv, user="svc", password=password) as svc:
            async def answer(msg):
                await msg.respond(b"ok")
            sub = await svc.subscribe(subject, cb=answer)
            await svc.flush()
            scene = {"url": srv.url, "monitor_url": srv.monitor_url, "user": "app", "password": password,
                     "subject": subject, "logs": srv.logs}
            broken = None
            if fault == "wrong_port":
                broken = faults.break_port(srv)
                scene["url"] = broken.details["url"]
            elif fault == "server_paused":
                broken = await asyncio.to_thread(faults.break_pause, srv)
            elif fault == "not_authorized":
                await asyncio.to_thread(faults.break_permission, srv, "app", subject)
            else:
                await faults.break_responders(sub, srv)
            try:
                yield scene
            finally:
                if broken is not None and broken.undo is not None:
                    await asyncio.to_thread(broken.undo)

    order = await _rounds(diagnose, CLIENT_LABELS, build, "diagnose_client(scene)", CLIENT_SYMPTOMS)
    return f"{len(order)} rounds, each fault once in a random order ({', '.join(order)}): every one diagnosed."


# ------------------------------------------------------------------------------------- 8.2
SERVER_LABELS = ("slow_consumer", "consumer_lag", "storage_full")
SERVER_SYMPTOMS = {
    "slow_consumer": "a slow consumer: the server cut a subscriber off because it stopped reading; /varz "
                     "counts it in slow_consumers and /connz?state=closed gives the reason.",
    "consumer_lag": "consumer lag: a consumer owes many messages; /jsz?consumers=true shows its "
                    "num_pending (and num_ack_pending) far above zero.",
    "storage_full": "JetStream out of storage: /jsz shows storage used at the server's max_storage "
                    "(config), publishes fail, and the log says 'resource limits exceeded'.",
}


@exercise("8.2", "diagnose a server's trouble",
          hints=("each fault leaves its trace in the server's own counters: /varz slow_consumers, a "
                 "consumer's num_pending in /jsz, JetStream storage used against its limit (lesson "
                 "08.6; lesson 06.4 for lag and slow consumers).",
                 "read natslab.monitor(monitor_url, 'varz')['slow_consumers'], natslab.monitor(monitor_url, "
                 "'jsz', consumers=True) (account_details -> stream_detail -> consumer_detail -> num_pending) "
                 "and jsz['storage'] against jsz['config']['max_storage'].",
                 "if varz['slow_consumers']: 'slow_consumer'; elif jsz['storage'] >= 0.9 * "
                 "jsz['config']['max_storage']: 'storage_full'; elif any consumer num_pending > 0: "
                 "'consumer_lag'"))
async def diagnose_server(diagnose):
    @contextlib.asynccontextmanager
    async def build(fault):
        config = {"max_pending": 256 * 1024, "max_payload": 64 * 1024, "write_deadline": "2s"}
        small = {"max_file_store": Raw("1MB")} if fault == "storage_full" else True  # a reload cannot lower it
        async with scratch_server(jetstream=small, config=config) as srv, client(srv) as nc:
            js = nc.jetstream()
            await js.add_stream(name="ORDERS", subjects=["orders.>"])
            await js.add_stream(name="AUDIT", subjects=["audit.>"])
            for i in range(20):
                await js.publish("orders.new", f"order {i}".encode())
                await js.publish("audit.log", f"entry {i}".encode())
            psub = await js.pull_subscribe("orders.>", durable="shipper")
            for m in await psub.fetch(20, timeout=5):
                await m.ack_sync()
            if fault == "slow_consumer":
                await faults.break_slow_consumer(srv, nc, "feed.prices")
            elif fault == "consumer_lag":
                await faults.break_consumer_lag(js, "orders.new", n=300)
            else:
                await faults.fill_storage(js, "audit.log")
            yield {"url": srv.url, "monitor_url": srv.monitor_url, "logs": srv.logs,
                   "stream": "ORDERS", "consumer": "shipper"}

    order = await _rounds(diagnose, SERVER_LABELS, build, "diagnose_server(scene)", SERVER_SYMPTOMS)
    return f"{len(order)} rounds, each fault once in a random order ({', '.join(order)}): every one diagnosed."


# ------------------------------------------------------------------------------------- 8.3
TOPOLOGY_LABELS = ("cluster_name_mismatch", "route_tls_mismatch", "leaf_credentials")
TOPOLOGY_SYMPTOMS = {
    "cluster_name_mismatch": "a cluster name mismatch: /routez shows no routes and the log says "
                             "'Rejecting connection, cluster name ... does not match'.",
    "route_tls_mismatch": "a TLS mismatch on routes: /routez shows no routes and the log says 'TLS route "
                          "handshake error' (one side requires TLS, the other speaks plain text).",
    "leaf_credentials": "a leaf node with wrong credentials: the routes are fine, /leafz on the leaf is "
                        "empty and its log says \"Leafnode Error 'Authorization Violation'\".",
}


@exercise("8.3", "diagnose a broken topology",
          hints=("routes and leaf links each show in their own endpoint (/routez, /leafz), and the reason "
                 "a link is refused is in the servers' logs (lesson 08.6, topology problems).",
                 "for each server read natslab.monitor(url, 'routez')['num_routes'] and "
                 "natslab.monitor(url, 'leafz')['leafnodes'], then search scene['logs'][name]() for "
                 "'cluster name', 'TLS' and 'Authorization Violation'.",
                 "logs = ' '.join(f() for f in scene['logs'].values()); return 'cluster_name_mismatch' if "
                 "'does not match' in logs else 'route_tls_mismatch' if 'TLS route handshake' in logs else "
                 "'leaf_credentials'"))
async def diagnose_topology(diagnose):
    from ...lessons.security.tls import CertificateAuthority

    ca = await asyncio.to_thread(CertificateAuthority, f"m08-{token(4)}")

    @contextlib.asynccontextmanager
    async def build(fault):
        group, s = await asyncio.to_thread(faults.cluster_with_leaf, f"core{token(3)}")
        try:
            if fault == "cluster_name_mismatch":
                await asyncio.to_thread(faults.break_cluster_name, s["n2"], f"other{token(3)}")
            elif fault == "route_tls_mismatch":
                await asyncio.to_thread(faults.break_route_tls, s["n2"], ca.server_cert(), ca)
            else:
                await asyncio.to_thread(faults.break_leaf_credentials, s["leaf"], s["n1"], "edge", "wrong")
            # the symptom is in place: the refusal is logged
            marks = {"cluster_name_mismatch": "does not match", "route_tls_mismatch": "TLS route handshake",
                     "leaf_credentials": "Authorization Violation"}
            await scenario_ready(lambda: any(marks[fault] in x.logs() for x in s.values()), "the refusal to be logged")
            if fault != "leaf_credentials":  # the leaf stays linked to n1 meanwhile
                await scenario_ready(lambda: s["leaf"].monitor("leafz").get("leafnodes", 0) >= 1, "the leaf link")
            yield {"monitor_urls": {n: x.monitor_url for n, x in s.items()},
                   "logs": {n: x.logs for n, x in s.items()}}
        finally:
            await asyncio.to_thread(group.close)

    order = await _rounds(diagnose, TOPOLOGY_LABELS, build, "diagnose_topology(scene)", TOPOLOGY_SYMPTOMS)
    return f"{len(order)} rounds, each fault once in a random order ({', '.join(order)}): every one diagnosed."


# ------------------------------------------------------------------------------------- 8.4
async def _cids_alive(srv, held: dict) -> list[str]:
    """Names of held connections that the server no longer lists under their original cid."""
    open_cids = {c["cid"] for c in srv.monitor("connz", limit=1024)["connections"]}
    return [name for name, (nc, cid) in held.items()
            if cid not in open_cids or nc.stats.get("reconnects", 0) or not nc.is_connected]


@exercise("8.4", "grant a missing permission by reload",
          hints=("a permission is part of the server's config; a config reload (SIGHUP) applies it to "
                 "connected clients without disconnecting them, a restart drops every client (lesson 08.2, "
                 "lesson 08.6 authorization errors).",
                 "read ops.config_path (pathlib.Path.read_text), add the subject to the user's publish "
                 "allow list, write it back (write_text), then ops.reload().",
                 "text = ops.config_path.read_text(); ops.config_path.write_text(text.replace('allow: "
                 "[\"orders.>\"]', f'allow: [\"orders.>\", \"{subject}\"]')); ops.reload()"))
async def grant_by_reload(fix_permission):
    password = token(8)
    subject = f"billing{token(3)}.charge"
    config = {"authorization": {"users": [
        {"user": "app", "password": password, "permissions": {"publish": {"allow": ["orders.>"]}}},
        {"user": "svc", "password": password}]}}
    async with scratch_server(jetstream=False, config=config) as srv, contextlib.AsyncExitStack() as stack:
        svc = await stack.enter_async_context(client(srv, user="svc", password=password, name="billing-svc"))
        got_admin = []

        async def answer(msg):
            await msg.respond(b"charged")

        async def admin(msg):
            got_admin.append(msg.subject)
        await svc.subscribe(subject, cb=answer)
        await svc.subscribe("admin.>", cb=admin)
        await svc.flush()
        held = {}
        for name in ("app-1", "app-2"):
            nc = await stack.enter_async_context(client(srv, user="app", password=password, name=name))
            held[name] = (nc, nc.client_id)
        held["billing-svc"] = (svc, svc.client_id)
        before = await _try_request(held["app-1"][0], subject)
        expect(before == "refused", "the check could not set up its scenario: the permission was not missing.",
               expected="refused", seen=before, hint="run the check again.")
        ops = faults.Ops(srv)
        await call_learner(fix_permission, ops, "app", subject, what="fix_permission(ops, user, subject)",
                           timeout=60, hints={"NatslabError": "the server refused the new config: the "
                                              "reload error above names the line."})
        expect(srv.running, "the server is not running after your fix.", expected="the server running",
               seen="stopped", hint="edit the file and reload; do not stop the server.")
        gone = await _cids_alive(srv, held)
        expect(not gone, f"connections were dropped by your fix: {', '.join(gone)} lost its connection "
                         "(a new client id or a reconnect).", expected="every client still on its connection",
               seen=f"{ops.restarts} restart(s), {ops.reloads} reload(s)",
               hint="a restart disconnects every client; a config reload (ops.reload()) applies the change "
                    "to connected clients and keeps them.")
        after = await _try_request(held["app-1"][0], subject)
        expect(after == "ok", f"user 'app' still cannot publish to {subject!r} on its existing connection.",
               expected="the request answered", seen=after,
               hint="after editing the file the server must reload it (ops.reload()); and the subject must be "
                    "in the app user's publish allow list." if ops.reloads == 0 else
                    "the reload did not give the permission: the subject must be in the app user's publish "
                    "allow list (read the file back after your edit).")
        # nothing more than the missing permission: the app user still may not publish to admin.>
        app2 = held["app-2"][0]
        await app2.publish(f"admin.shutdown{token(3)}", b"now")
        await app2.flush()
        marker = await _try_request(app2, subject)  # travels behind the admin publish
        await until(lambda: got_admin, "an admin message", timeout=1, error=False)
        expect(not got_admin, "user 'app' can now publish to admin subjects: your fix granted more than the "
                              "missing permission.", expected="app may publish only orders.> and the new subject",
               seen=f"a message on {got_admin[0] if got_admin else ''} arrived",
               hint="add the one subject to the allow list; do not remove the user's permissions.")
        expect(marker == "ok", "the check could not confirm the result.", expected="ok", seen=marker)
        return (f"after your change and {ops.reloads} reload(s), 'app' publishes to {subject} on its existing "
                f"connection, {len(held)} held connections kept their client ids, and admin.> is still refused.")


async def _try_request(nc, subject: str) -> str:
    try:
        await nc.request(subject, b"x", timeout=1.5)
        return "ok"
    except nats.errors.NoRespondersError:
        return "no responders"
    except (nats.errors.TimeoutError, asyncio.TimeoutError):
        return "refused"


# ------------------------------------------------------------------------------------- 8.5
LIMIT_MB = 16


@exercise("8.5", "give JetStream room again",
          hints=("JetStream refuses to store more than the server's max_file_store; raise that limit in the "
                 "config (a reload applies it) instead of deleting data (lesson 08.6, out of storage; lesson "
                 "08.5 capacity).",
                 "edit the jetstream block's max_file_store in ops.config_path (e.g. re.sub), then ops.reload(); "
                 "natslab.monitor(ops.monitor_url, 'jsz')['config']['max_storage'] shows the limit in force.",
                 "ops.config_path.write_text(re.sub(r'max_file_store: \\S+', 'max_file_store: 64MB', "
                 "ops.config_path.read_text())); ops.reload()"))
async def storage_room(fix_storage):
    stream = f"EVENTS_{token(4).upper()}"
    async with scratch_server(jetstream={"max_file_store": Raw("1MB")}) as srv, client(srv, name="producer") as nc:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"ev{stream[-4:]}.>"])
        subject = f"ev{stream[-4:]}.log"
        await faults.fill_storage(js, subject)
        stored = (await js.stream_info(stream)).state.messages  # the server's count, whatever a timeout hid
        cid = nc.client_id
        ops = faults.Ops(srv)
        await call_learner(fix_storage, ops, stream, what="fix_storage(ops, stream)", timeout=60,
                           hints={"NatslabError": "the server refused the new config: the reload error "
                                                  "names the line."})
        expect(srv.running, "the server is not running after your fix.", expected="running", seen="stopped",
               hint="edit the file and reload.")
        info = await scenario_ready(lambda: _stream_state(js, stream), "the stream to answer")
        expect(info != "missing", f"stream {stream} is gone: you deleted the data instead of making room.",
               expected=f"{stream} with its {stored} messages", seen="no such stream",
               hint="the messages are the business's data; raise the server's storage limit instead.")
        expect(info.messages == stored, f"stream {stream} lost messages: {info.messages} of {stored} remain.",
               expected=f"{stored} messages", seen=f"{info.messages}",
               hint="purging or trimming makes room by destroying data; raise the server's max_file_store "
                    "instead.")
        limit = srv.monitor("jsz")["config"]["max_storage"]
        expect(limit >= LIMIT_MB * 1024 * 1024,
               f"the server's JetStream storage limit in force is {limit // 1024} KB.",
               expected=f"at least {LIMIT_MB} MB", seen=f"{limit / 1024 / 1024:.1f} MB",
               hint="edit max_file_store in the file AND reload: the server reads the file only then."
               if ops.reloads == 0 and ops.restarts == 0 else
               f"raise max_file_store to at least {LIMIT_MB}MB: a limit just above what is stored fills up again.")
        reconnected = nc.stats.get("reconnects", 0) or cid not in {
            c["cid"] for c in srv.monitor("connz", limit=1024)["connections"]}
        expect(not reconnected, "the producer's connection was dropped by your fix.",
               expected="the producer still on its connection", seen=f"{ops.restarts} restart(s)",
               hint="a restart disconnects every client; a reload (ops.reload()) applies a new "
                    "max_file_store without that.")
        for _ in range(4 * 256):  # 4 MB more must fit
            await js.publish(subject, b"f" * 4096, timeout=5)
        return (f"{stored} messages kept, limit now {limit // (1024 * 1024)} MB, 4 MB more accepted, and the "
                f"producer kept its connection.")


async def _stream_state(js, stream):
    try:
        return (await js.stream_info(stream)).state
    except nats.js.errors.NotFoundError:
        return "missing"


# ------------------------------------------------------------------------------------- 8.6
@exercise("8.6", "repair a cluster name mismatch",
          hints=("a node with another cluster name is refused by its peers (the log says so); the cluster "
                 "name cannot change by reload, so fix that node's config and restart that node only "
                 "(lesson 08.6, cluster name mismatch).",
                 "find the odd node: natslab.monitor(ops.monitor_url, 'varz')['cluster']['name'] (or its log); "
                 "edit the name in its ops.config_path, then ops.restart() on that node.",
                 "good = most common cluster name; for odd in nodes whose name differs: "
                 "odd.config_path.write_text(odd.config_path.read_text().replace(f'name: \"{bad}\"', "
                 "f'name: \"{good}\"')); odd.restart()"))
async def cluster_name(fix_cluster):
    name = f"prod{token(3)}"
    c = await asyncio.to_thread(cluster, 3, name=name, jetstream=True, replace=False)
    try:
        odd = random.choice(c.servers)
        await asyncio.to_thread(faults.break_cluster_name, odd, f"prod{token(3)}")
        await scenario_ready(lambda: "does not match" in odd.logs(), "the peers to refuse the renamed node")
        starts = {s.name: s.monitor("varz")["start"] for s in c.servers if s is not odd}
        nodes = {s.name: faults.Ops(s) for s in c.servers}
        await call_learner(fix_cluster, nodes, what="fix_cluster(nodes)", timeout=120,
                           hints={"NatslabError": "the server refused that: a reload cannot change the cluster name, "
                                                  "and a node that does not come back says why in its log; "
                                                  "edit the file, then restart that node."})
        down = [s.name for s in c.servers if not s.running]
        expect(not down, f"{', '.join(down)} is not running after your fix.", expected="all three nodes running",
               seen=f"{down} stopped", hint="restart the node you fixed (ops.restart()).")
        restarted = [n for n, t in starts.items() if c[n].monitor("varz")["start"] != t]
        names = {s.name: (s.monitor("varz").get("cluster") or {}).get("name") for s in c.servers}
        expect(set(names.values()) == {name}, "the nodes do not all carry the cluster's name.",
               expected=f"every node in cluster {name!r}", seen=names,
               hint=f"the odd node is {odd.name}: edit the name in its config file AND restart it (a reload "
                    "does not change the cluster name)" if list(names.values()).count(name) == 2 else
               "keep the name the healthy majority uses; renaming the healthy nodes makes an outage of a "
               "one-node problem.")
        expect(not restarted, f"you restarted healthy node(s) {', '.join(restarted)}.",
               expected=f"only {odd.name} restarted", seen=f"{restarted} restarted too",
               hint="restart only the node whose config was wrong; the others kept serving.")
        await scenario_ready(lambda: all(s.monitor("routez").get("num_routes", 0) >= 2 for s in c.servers),
                    "routes between all three nodes", timeout=30)
        leader = await asyncio.to_thread(c.wait_for_meta_leader, 30)
        return (f"{odd.name} rejoined cluster {name!r}: every node has routes to both others, the healthy nodes "
                f"were not restarted, and the JetStream meta leader ({leader}) counts all three.")
    finally:
        await asyncio.to_thread(c.close)


# ------------------------------------------------------------------------------------- 8.7
@exercise("8.7", "back up a stream and restore it elsewhere",
          hints=("a JetStream snapshot carries the stream's messages AND its consumers' state; restoring it "
                 "recreates both (lesson 08.3). Copying messages by republishing loses the consumers.",
                 "request $JS.API.STREAM.SNAPSHOT.<stream> with {\"deliver_subject\": inbox, \"chunk_size\": n} "
                 "and answer every chunk; restore with $JS.API.STREAM.RESTORE.<stream> {\"config\", \"state\"}, "
                 "send each chunk as a request to the deliver_subject it answers, then an empty message.",
                 "meta = json.loads((await src.request(f'$JS.API.STREAM.SNAPSHOT.{stream}', json.dumps({"
                 "'deliver_subject': inbox, 'chunk_size': 65536}).encode())).data); ... "
                 "dst.request(deliver_subject, chunk) for each chunk, then dst.request(deliver_subject, b'')"))
async def backup_restore(backup):
    stream = f"ORDERS_{token(4).upper()}"
    subject = f"o{stream[-4:].lower()}"
    n, delivered, acked = random.choice((60, 80)), 40, random.choice((20, 25, 30))
    async with scratch_server(jetstream=True) as src, contextlib.AsyncExitStack() as stack:
        dst = await stack.enter_async_context(_second_server())
        nc = await stack.enter_async_context(client(src))
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{subject}.>"])
        sent = []
        for i in range(n):
            data = f"order {i} {token(6)}".encode() + b"." * random.randint(0, 400)
            await js.publish(f"{subject}.{i % 3}", data)
            sent.append(data)
        await js.add_consumer(stream, ConsumerConfig(durable_name="shipper", ack_policy=AckPolicy.EXPLICIT))
        psub = await js.pull_subscribe_bind("shipper", stream)
        msgs = []
        while len(msgs) < delivered:
            msgs += await psub.fetch(delivered - len(msgs), timeout=5)
        for m in msgs[:acked]:
            await m.ack_sync()
        truth = await js.consumer_info(stream, "shipper")
        expect(truth.ack_floor.stream_seq == acked, "the check could not set up its consumer.",
               expected=acked, seen=truth.ack_floor.stream_seq, hint="run the check again.")
        await call_learner(backup, src.url, dst.url, stream, what="backup(source_url, target_url, stream)",
                           timeout=60, hints={"TimeoutError": "a snapshot waits for each chunk to be answered "
                                              "(flow control), and a restore for each chunk to be sent as a "
                                              "request; did your code reply to every chunk?"})
        dc = await stack.enter_async_context(client(dst))
        djs = dc.jetstream()
        state = await _stream_state(djs, stream)
        expect(state != "missing", f"there is no stream {stream} on the target server.",
               expected=f"{stream} restored", seen="no such stream",
               hint="restore on the target server ($JS.API.STREAM.RESTORE.<stream>), finishing with an empty message.")
        got = []
        for seq in range(1, n + 1):
            try:
                got.append((await djs.get_msg(stream, seq)).data)
            except Exception:
                got.append(None)
        missing = [i + 1 for i, (a, b) in enumerate(zip(sent, got)) if a != b]
        expect(not missing, f"the restored stream does not hold every message at its sequence: {len(missing)} "
                            f"of {n} differ or are missing (first: {missing[:1]}).",
               expected=f"{n} messages, same data, same sequences", seen=f"{state.messages} messages",
               hint="restore every chunk of the snapshot, in order; a stream rebuilt by republishing gets new "
                    "sequence numbers and timestamps.")
        try:
            ci = await djs.consumer_info(stream, "shipper")
        except nats.js.errors.NotFoundError:
            raise Mismatch("the restored stream has no consumer 'shipper': its delivery state is lost.",
                           expected="consumer 'shipper' with its ack floor", seen="no such consumer",
                           hint="a snapshot includes the consumers unless you ask it not to "
                                "(\"no_consumers\"); copying messages never carries them.") from None
        expect(ci.ack_floor.stream_seq == acked and ci.delivered.stream_seq == delivered,
               "the restored consumer does not remember where it was.",
               expected=f"ack floor {acked}, delivered {delivered}",
               seen=f"ack floor {ci.ack_floor.stream_seq}, delivered {ci.delivered.stream_seq}",
               hint="restore the consumer from the snapshot instead of creating it anew.")
        return (f"{n} messages restored at their sequences, consumer 'shipper' with ack floor {acked} and "
                f"{delivered} delivered, on the target server.")


@contextlib.asynccontextmanager
async def _second_server():
    srv = await asyncio.to_thread(server, "checker-target", jetstream=True, replace=False)
    try:
        yield srv
    finally:
        await asyncio.to_thread(srv.group.close)


# ------------------------------------------------------------------------------------- 8.8
FROM_RELEASE, TO_RELEASE = "2.14.6", "2.15.1"


class UpgradeNode:
    """One cluster node as an operator drives it during an upgrade (exercise 8.8).

    ``await node.stop()`` (graceful), ``node.switch_release("2.15.1")`` (while stopped), ``await
    node.start()`` (returns once the process runs, as ``systemctl start`` does: it does NOT wait for
    the node to be healthy or caught up).  ``name``, ``url``, ``monitor_url`` and ``release``
    (what the node runs) are there to check.  Every stop is watched: the rest of the cluster must
    be healthy and every replica of the stream current at that moment.
    """

    def __init__(self, srv, watch, started):
        self._srv, self._watch, self._started = srv, watch, started
        self.name, self.url, self.monitor_url = srv.name, srv.url, srv.monitor_url

    @property
    def release(self) -> str:
        return self._srv.release

    async def stop(self) -> None:
        await self._watch(self._srv)
        await asyncio.to_thread(self._srv.stop)

    def switch_release(self, release: str) -> None:
        self._srv.switch_release(release)

    async def start(self) -> None:
        from ...runtime.monitor import NOT_ANSWERING
        srv = self._srv

        def up():
            if not srv.running:
                srv.launch()
            return srv.running and srv.monitor("varz", timeout=2)
        await until(lambda: asyncio.to_thread(up), f"{srv.name} to start", timeout=30, retry=NOT_ANSWERING)
        self._started()

    def __repr__(self) -> str:
        return f"<UpgradeNode {self.name} {self.url}>"


async def _replicas_current(js, stream) -> tuple[bool, str]:
    try:
        info = await js.stream_info(stream)
    except Exception as exc:
        return False, f"the stream did not answer ({type(exc).__name__})"
    cl = info.cluster
    if cl is None or not cl.leader:
        return False, "the stream had no leader"
    behind = [r.name for r in cl.replicas or [] if not r.current]
    if len(cl.replicas or []) < 2 or behind:
        return False, f"replica(s) {', '.join(behind) or 'missing'} not current"
    return True, ""


@exercise("8.8", "upgrade a cluster without losing a message",
          hints=("a rolling upgrade takes one node at a time, and takes the next only when the previous is "
                 "back, healthy and caught up, so the stream never loses its majority (lesson 08.4).",
                 "for each node: await node.stop(); node.switch_release(target); await node.start(); then wait "
                 "until every node's /healthz is ok and js.stream_info(stream).cluster shows every replica "
                 "current (natslab.until).",
                 "for n in nodes: await n.stop(); n.switch_release(target); await n.start(); await "
                 "natslab.until(lambda: all_healthy_and_current(), 'caught up', timeout=60)"))
async def rolling_upgrade(upgrade):
    stream = f"PAYMENTS_{token(4).upper()}"
    subject = f"pay{stream[-4:].lower()}"
    c = await asyncio.to_thread(cluster, 3, name=f"up{token(3)}", release=FROM_RELEASE, replace=False)
    try:
        async with client(c.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2) as nc:
            js = nc.jetstream(timeout=3)
            await js.add_stream(name=stream, subjects=[f"{subject}.>"], num_replicas=3)
            await scenario_ready(lambda: _replicas_current(js, stream), "the stream's replicas to be current", retry=())
            acked: list[bytes] = []
            stop = asyncio.Event()

            async def publisher():
                i = 0
                while not stop.is_set() and i < 5000:
                    data = f"payment {i}".encode()
                    try:
                        await js.publish(f"{subject}.in", data, headers={"Nats-Msg-Id": data.decode()})
                        acked.append(data)
                        i += 1
                    except Exception:
                        pass
                    await asyncio.sleep(0.05)
            pub = asyncio.ensure_future(publisher())
            await scenario_ready(lambda: len(acked) >= 5, "the first payments")
            problems: list[str] = []
            loop = asyncio.get_running_loop()
            times = {"good": loop.time(), "started": 0.0}

            async def cluster_state() -> str:
                """'' when every node is healthy and every replica current, else what is not."""
                unhealthy = []
                for s in c.servers:
                    try:
                        if not s.running or s.monitor("healthz", timeout=2).get("status") != "ok":
                            unhealthy.append(s.name)
                    except OSError:
                        unhealthy.append(s.name)
                if unhealthy:
                    return f"{', '.join(unhealthy)} was not healthy yet"
                ok, why = await _replicas_current(js, stream)
                return "" if ok else why

            async def observer():  # the last moment the whole cluster was caught up
                while not stop.is_set():
                    if not await cluster_state():
                        times["good"] = loop.time()
                    await asyncio.sleep(0.1)
            watcher = asyncio.ensure_future(observer())

            async def watch(srv):
                others = [s for s in c.servers if s is not srv]
                down = [s.name for s in others if not s.running]
                if down:
                    problems.append(f"you stopped {srv.name} while {', '.join(down)} was stopped too: the stream "
                                    "lost its majority")
                    return
                if times["good"] > times["started"]:  # caught up since the last node came back
                    return
                why = await cluster_state()
                if why:
                    problems.append(f"you stopped {srv.name} while {why} (not caught up)")

            def started():
                times["started"] = loop.time()
            nodes = [UpgradeNode(s, watch, started) for s in c.servers]
            try:
                await call_learner(upgrade, nodes, TO_RELEASE, c.url, stream,
                                   what="upgrade(nodes, target, url, stream)", timeout=180,
                                   hints={"NatslabError": "a natslab call refused: switch a release only while "
                                                          "the node is stopped (await node.stop() first)."})
            finally:
                stop.set()
                await pub
                await watcher
            down = [s.name for s in c.servers if not s.running]
            expect(not down, f"{', '.join(down)} is not running after your upgrade.", expected="all three nodes running",
                   seen=f"{down} stopped", hint="start every node again after switching its release (await node.start()).")
            expect(not problems, problems[0] if problems else "", expected="one node down at a time, the next only "
                   "when the cluster is healthy and every replica current", seen=f"{len(problems)} unsafe stop(s)",
                   hint="between two nodes, wait until every node's /healthz is ok and the stream's replicas are "
                        "all current; stopping a node before that risks the stream's majority and acknowledged data.")
            versions = {s.name: s.release for s in c.servers}
            old = [n for n, v in versions.items() if v != TO_RELEASE]
            expect(not old, f"{', '.join(old)} still runs another release than {TO_RELEASE}.",
                   expected=f"every node on {TO_RELEASE}", seen=versions,
                   hint="upgrade every node: stop, switch_release(target), start.")
            await scenario_ready(lambda: _replicas_current(js, stream), "the stream's replicas to be current", retry=(),
                        timeout=60)
            info = await js.stream_info(stream)
            stored = set()
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    stored.add((await js.get_msg(stream, seq)).data)
                except nats.js.errors.NotFoundError:
                    pass
            lost = [d for d in acked if d not in stored]
            expect(not lost, f"{len(lost)} acknowledged payment(s) are missing from the stream after the upgrade.",
                   expected=f"all {len(acked)} acknowledged payments", seen=f"first missing: {lost[:1]}",
                   hint="an acknowledged message may be lost only if a majority of replicas went away; take one node "
                        "at a time and let it catch up.")
            return (f"all three nodes run {TO_RELEASE}; each stop happened with the rest of the cluster healthy and "
                    f"the stream's replicas current; all {len(acked)} payments acknowledged during the upgrade are "
                    "in the stream.")
    finally:
        await asyncio.to_thread(c.close)
