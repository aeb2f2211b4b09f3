"""Module 09 (capstone), exercises 9.1-9.6: an order system on a secured 3-node cluster, and its scorecard.

The contract the checks rely on (the capstone notebook states it) leaves the design to the learner:

- users ``svc`` (the services), ``web`` (the shop's front end: requests on ``shop.cmd.>`` and
  ``$SRV.>`` only, replies on ``_INBOX.>``) and ``rival`` (another tenant, in another account);
- ``create_store(js, replicas)`` returns ``{"stream", "subject", "bucket"}``: the event stream, the
  per-order subject template (with ``{order_id}``) and the read model's KV bucket, named as the learner likes;
- commands go through the service API: an endpoint named ``place`` under ``shop.cmd.``, found with
  ``$SRV.INFO`` (services may be split however the learner likes);
- events are JSON with a ``type`` (``OrderPlaced``, ``OrderConfirmed``, ``OrderCancelled``);
- the read model holds ``order.<id>`` (``status``, ``total``, ``customer``) and ``customer.<name>`` (``orders``);
- the saga calls the partners ``partner.stock.reserve``, ``partner.stock.release`` and ``partner.pay.charge``,
  which the checker plays, declining what it chooses;
- the lag alert is PromQL over ``jetstream_consumer_num_pending`` (labels ``stream_name``, ``consumer_name``).

Every checker builds the fault itself: retried and racing commands, read-model writes refused for a
while, a replay from the start, declined and silent partners, a dead projector, a killed node, and
an attacker's probes (plain text, route port, forbidden subjects, another account).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import random
from dataclasses import dataclass
from typing import Any, Mapping

import nats
import nats.errors
import nats.js.errors as jserr

from ...errors import NatslabError
from ...lessons import capstone
from ...lessons import prometheus as prom
from ...lessons import security as sec
from ...runtime.waiting import WaitTimeout, until
from ..checks import Mismatch, Unsolved, call_learner, exercise, expect
from . import client, learner_client, of_type, scenario_ready, scratch_server, token

PARTNER = "partner"
STATUS = {"OrderPlaced": "placed", "OrderConfirmed": "confirmed", "OrderCancelled": "cancelled"}


# what a read of the cluster may raise while it elects leaders (a timeout, no responders, unavailable)
TRANSIENT = (OSError, nats.errors.Error)


async def _wait(condition, what: str, timeout: float = 30.0):
    """The shared set-up wait, retrying what a cluster electing leaders raises."""
    return await scenario_ready(condition, what, timeout=timeout, retry=TRANSIENT)


def _matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


def _json(data, what: str):
    try:
        return json.loads(data)
    except (ValueError, TypeError):
        raise Mismatch(f"{what} is not JSON.", expected="a JSON document", seen=repr(data)[:120],
                       hint="encode values with json.dumps(...).encode().") from None


# ------------------------------------------------------------------------------ the store
@dataclass
class Store:
    stream: str
    subject: str   # template with {order_id}
    bucket: str

    def of(self, order_id: str) -> str:
        return self.subject.format(order_id=order_id)

    def as_dict(self) -> dict:
        return {"stream": self.stream, "subject": self.subject, "bucket": self.bucket}


def _store_of(value: Any, what: str = "create_store") -> Store:
    of_type(value, Mapping, what, 'a dict {"stream": ..., "subject": ..., "bucket": ...}')
    missing = [k for k in ("stream", "subject", "bucket") if not isinstance(value.get(k), str) or not value.get(k)]
    expect(not missing, f"{what} returned a dict without {', '.join(missing)}.",
           expected='{"stream": name, "subject": "….{order_id}", "bucket": name}', seen=dict(value),
           hint="return the names your system uses, as text: the checks find your stream, subjects and bucket "
                "through them.")
    expect("{order_id}" in value["subject"], "the subject template has no {order_id} placeholder.",
           expected='a template such as "shop.evt.{order_id}"', seen=value["subject"],
           hint="each order's events go on a subject of its own, so it can be loaded and appended to alone.")
    return Store(value["stream"], value["subject"], value["bucket"])


async def _events(js, store: Store) -> list:
    """Every message of the store's stream, in order, as (subject, seq, dict, headers)."""
    info = await js.stream_info(store.stream)
    out, seq = [], info.state.first_seq
    while info.state.messages and seq <= info.state.last_seq:
        try:
            msg = await js.get_msg(store.stream, seq=seq, next=True)
        except jserr.NotFoundError:
            break
        try:
            data = json.loads(msg.data)
        except ValueError:
            data = {"type": "(not JSON)", "raw": msg.data[:60]}
        out.append((msg.subject, msg.seq, data if isinstance(data, dict) else {"type": repr(data)[:40]}, msg.headers))
        seq = msg.seq + 1
    return out


def _fold(events: list) -> tuple[dict, dict]:
    """What the read model must hold: order id -> status/total/customer, customer -> orders placed."""
    orders: dict[str, dict] = {}
    customers: dict[str, int] = {}
    for _subject, _seq, ev, _h in events:
        oid, kind = ev.get("order_id"), ev.get("type")
        if kind not in STATUS or not isinstance(oid, str):
            continue
        if kind == "OrderPlaced":
            orders[oid] = {"status": "placed", "total": ev.get("total"), "customer": ev.get("customer")}
            customers[ev.get("customer")] = customers.get(ev.get("customer"), 0) + 1
        elif oid in orders:
            orders[oid]["status"] = STATUS[kind]
    return orders, customers


def _items():
    return [{"sku": f"sku-{random.randint(1, 9)}", "qty": random.randint(1, 3), "price": random.randint(2, 40)}
            for _ in range(random.randint(1, 3))]


def _placed(oid: str, customer: str, items=None) -> dict:
    items = items or _items()
    return {"type": "OrderPlaced", "order_id": oid, "customer": customer, "items": items,
            "total": sum(i["qty"] * i["price"] for i in items)}


# ------------------------------------------------------------------------------ 9.1 security
USERS_TEXT = "svc (the services), web (the front end) and rival (another tenant)"


async def _security_line(security, cluster_cm):
    """Start the cluster with the learner's settings and attack it; returns (cluster, material, detail)."""
    mat = capstone.material("check")
    config = await call_learner(security, dict(mat.tls), dict(mat.users), what="security(tls, users)")
    expect(isinstance(config, Mapping), "security must return a dict of server settings.",
           expected='a dict such as {"tls": {...}, "cluster": {...}, "accounts": {...}}',
           seen=f"{type(config).__name__}: {config!r}"[:120],
           hint="return the dict each node's configuration gets, not a string.")
    try:
        cluster = await asyncio.to_thread(capstone.secure_cluster, dict(config), mat)
    except NatslabError as exc:
        raise Mismatch("the cluster did not start with your security settings.",
                       expected="three nodes that accept the settings and form routes",
                       seen=(exc.details or exc.what).strip().splitlines()[-1][:240],
                       hint="start capstone.secure_cluster(security(...), mat) yourself and read the nodes' logs; "
                            "routes with TLS need the same ca_file on every node.") from None
    cluster_cm.append(cluster)
    return cluster, mat, await _attack(cluster, mat)


async def _attack(cluster, mat) -> str:
    ctx = mat.context()
    for srv in cluster.servers:
        plain = await sec.attempt(srv, user="web", password=mat.users["web"])
        if plain.ok:
            raise Mismatch(f"{srv.name} accepted a client without TLS.", expected="plain-text clients refused",
                           seen="connected in plain text",
                           hint="a tls block (cert_file, key_file) on every node makes clients use TLS; "
                                "allow_non_tls lets them skip it.")
        info = await asyncio.to_thread(capstone.route_info, srv)
        expect(info is None or info.get("tls_required") is True,
               f"{srv.name}'s route port answers in plain text: routes between nodes are not encrypted.",
               expected="the route port speaks TLS only",
               seen=f"INFO from {(info or {}).get('server_name')} in plain text",
               hint="TLS for clients does not cover routes: the cluster block needs a tls block of its own "
                    "(cert_file, key_file, ca_file).")
    good = {u: await sec.attempt(cluster, tls=ctx, user=u, password=p) for u, p in mat.users.items()}
    bad = [u for u, a in good.items() if not a.ok]
    expect(not bad, f"user {bad[0] if bad else ''} could not connect over TLS with its password.",
           expected=f"{USERS_TEXT} connect over TLS",
           seen=f"refused: {good[bad[0]].cause if bad else ''}",
           hint="declare every user of the specification with the password the check passes you.")
    wrong = await sec.attempt(cluster, tls=ctx, user="web", password=mat.users["rival"])
    expect(not wrong.ok, "web connected with another user's password.", expected="refused", seen="connected",
           hint="each user has its own password: the one in users[name].")

    tag = token(5)
    auth = lambda u: {"tls": ctx, "user": u, "password": mat.users[u]}  # noqa: E731
    async with client(cluster.servers[0], **auth("svc")) as svc, client(cluster.servers[1], **auth("web")) as web, \
            client(cluster.servers[2], **auth("rival")) as rival, client(cluster.servers[0], **auth("rival")) as rival0, \
            client(cluster.servers[2], **auth("svc")) as svc2:
        # svc may use JetStream (an R3 stream), in its own account
        js = svc.jetstream()
        try:
            await js.add_stream(name=f"PROBE_{tag.upper()}", subjects=[f"probe{tag}.>"], num_replicas=3)
            await js.delete_stream(f"PROBE_{tag.upper()}")
        except Exception as exc:  # noqa: BLE001
            raise Mismatch("svc could not create a stream with 3 replicas.", expected="JetStream for svc's account",
                           seen=f"{type(exc).__name__}: {exc}"[:160],
                           hint="JetStream is enabled per account: jetstream: enabled in the account of svc and web.")
        # web may place orders and discover services
        async def answer(msg):
            await msg.respond(b"ok")
        responder = await svc.subscribe(f"shop.cmd.{tag}", cb=answer)
        await svc.flush()
        async def answered():  # the responder's interest reaches web's node over the routes first
            try:
                return (await web.request(f"shop.cmd.{tag}", b"{}", timeout=1)).data == b"ok"
            except Exception:  # noqa: BLE001
                return False
        ok = await until(answered, "web's request answered", timeout=8, every=0.2, error=False)
        expect(ok, "web could not send a request on shop.cmd.> and get the reply.",
               expected=f"web's request on shop.cmd.{tag} answered", seen="no answer reached web",
               hint="web publishes on shop.cmd.> (and $SRV.>) and subscribes to _INBOX.> for replies, in the same "
                    "account as svc.")
        # web must not publish events, use the JetStream API, or read commands
        forbidden = [f"shop.evt.{tag}", f"orders.{tag}", f"{tag}.events", "$JS.API.STREAM.NAMES", f"{PARTNER}.pay.charge"]
        probed = await sec.probe(cluster.servers[1], forbidden + [">", "shop.cmd.>"], **auth("web"))
        allowed_pub = [s for s in forbidden if probed[s]["publish"]]
        expect(not allowed_pub, f"web may publish on {allowed_pub[0] if allowed_pub else ''}: a front end could forge "
               f"events or drive JetStream.", expected="web publishes only on shop.cmd.> and $SRV.>",
               seen=f"allowed: {allowed_pub}",
               hint="least privilege: give web publish allow [\"shop.cmd.>\", \"$SRV.>\"], not > or a deny list.")
        allowed_sub = [s for s in (">", "shop.cmd.>", f"shop.evt.{tag}") if probed[s]["subscribe"]]
        expect(not allowed_sub, f"web may subscribe to {allowed_sub[0] if allowed_sub else ''}: it could read commands "
               f"and events meant for the services.", expected="web subscribes only to _INBOX.>",
               seen=f"allowed: {allowed_sub}", hint="give web subscribe allow [\"_INBOX.>\"] and nothing else.")
        # rival: another account sees nothing of the shop and reaches none of it
        seen: list = []

        controls: list = []

        async def keep(msg):
            if msg.data == b"secret":
                seen.append(msg.subject)
            elif msg.data == b"control":
                controls.append(msg.subject)
        await rival.subscribe(">", cb=keep)
        await rival.flush()
        got: list = []

        async def record(msg):
            got.append(msg.data)
        trap = await svc.subscribe(f"shop.cmd.{tag}.>", cb=record)
        await svc.flush()

        # controls: rival's interest has reached svc's node, and svc's trap has reached rival's node, each
        # proven by a message in the subscriber's own account from the other node (so no leak is missed
        # because interest was still travelling over the routes)
        async def propagated():
            await rival0.publish(f"ctl{tag}", b"control")
            await svc2.publish(f"shop.cmd.{tag}.ctl", b"control")
            await rival0.flush()
            await svc2.flush()
            await asyncio.sleep(0.1)
            return controls and b"control" in got
        await _wait(propagated, "the subscriptions to reach every node", timeout=15)
        for subject in (f"shop.cmd.{tag}.x", f"shop.evt.{tag}", f"{PARTNER}.pay.{tag}"):
            await svc.publish(subject, b"secret")
        await svc.flush()
        await rival.publish(f"shop.cmd.{tag}.x", b"forged")
        await rival.flush()
        # a control behind each: had the secret or the forgery crossed, it would have arrived before it
        before = (len(controls), got.count(b"control"))
        await rival0.publish(f"ctl{tag}", b"control")
        await svc2.publish(f"shop.cmd.{tag}.ctl", b"control")
        await rival0.flush()
        await svc2.flush()
        await _wait(lambda: len(controls) > before[0] and got.count(b"control") > before[1],
                    "the control messages to arrive", timeout=10)
        leaked = [s for s in seen if tag in s]
        expect(not leaked, f"rival (another tenant) saw the shop's traffic on {leaked[0] if leaked else ''}.",
               expected="nothing of the shop's account reaches rival", seen=f"rival received {leaked[:3]}",
               hint="tenants are isolated by accounts: put rival in an account of its own, not beside svc and web.")
        expect(b"forged" not in got, "rival's message reached the shop's services.",
               expected="rival's publishes stay in its own account", seen="a forged command arrived",
               hint="accounts isolate both directions: rival must be in another account.")
        await trap.unsubscribe()
        await responder.unsubscribe()
    return ("every node refused plain-text clients and its route port spoke only TLS; svc, web and rival connected "
            "over TLS; web placed a request but could not publish events, drive JetStream or read commands; "
            "rival saw none of the shop's traffic and reached none of it.")


@exercise("9.1", "a secured 3-node cluster", hints=(
    "TLS for clients (tls block) and for routes (cluster.tls), an account per tenant with JetStream enabled, "
    "and users that may do only their job (lessons 05.1, 05.3, 05.4; the capstone notebook's specification).",
    "return {\"tls\": {...}, \"cluster\": {\"tls\": {...}}, \"accounts\": {\"SHOP\": {\"jetstream\": \"enabled\", "
    "\"users\": [...]}, \"OTHER\": {\"users\": [...]}}}; web's permissions: publish allow [\"shop.cmd.>\", "
    "\"$SRV.>\"], subscribe allow [\"_INBOX.>\"].",
    "tls = dict(tls); return {\"tls\": tls, \"cluster\": {\"tls\": tls}, \"accounts\": {\"SHOP\": {\"jetstream\": "
    "\"enabled\", \"users\": [{\"user\": \"svc\", \"password\": users[\"svc\"]}, {\"user\": \"web\", \"password\": "
    "users[\"web\"], \"permissions\": {\"publish\": {\"allow\": [\"shop.cmd.>\", \"$SRV.>\"]}, \"subscribe\": "
    "{\"allow\": [\"_INBOX.>\"]}}}]}, \"OTHER\": {\"users\": [{\"user\": \"rival\", \"password\": users[\"rival\"]}]}}}"))
async def secured_cluster(security):
    clusters: list = []
    try:
        _, _, detail = await _security_line(security, clusters)
        return detail
    finally:
        for c in clusters:
            await asyncio.to_thread(c.close)


# ------------------------------------------------------------------------------ 9.2 store + order service
async def _discover(chk, timeout: float = 1.5) -> list[dict]:
    """Every service instance's $SRV.INFO reply (all of them, not only the first)."""
    inbox = chk.new_inbox()
    replies: list[dict] = []

    async def keep(msg):
        with contextlib.suppress(ValueError):
            replies.append(json.loads(msg.data))
    sub = await chk.subscribe(inbox, cb=keep)
    await chk.publish("$SRV.INFO", b"", reply=inbox)
    await chk.flush()
    await asyncio.sleep(timeout)
    await sub.unsubscribe()
    return replies


async def _find_place(chk, srv=None) -> tuple[list[dict], str]:
    infos: list[dict] = []

    async def found():
        infos[:] = await _discover(chk, 0.7)
        return [e for i in infos for e in i.get("endpoints") or [] if e.get("name") == "place"]
    try:
        places = await until(found, "a service with an endpoint named place", timeout=6, retry=TRANSIENT)
    except WaitTimeout:
        raise Mismatch("no service answered $SRV.INFO with an endpoint named place.",
                       expected="an endpoint named \"place\" (subject under shop.cmd.)",
                       seen=[(i.get("name"), [e.get("name") for e in i.get("endpoints") or []]) for i in infos] or
                       "no service answered", hint="the front end finds the order service through the service API: "
                                                   "nats.micro.add_service, then add_endpoint(name=\"place\", "
                                                   "subject=\"shop.cmd....\").") from None
    subjects = sorted({e.get("subject") for e in places})
    expect(len(subjects) == 1 and subjects[0].startswith("shop.cmd."),
           "the place endpoint's subject is not one subject under shop.cmd.",
           expected="shop.cmd.<anything>", seen=subjects,
           hint="web may publish only on shop.cmd.>: put every command endpoint under it.")
    return infos, subjects[0]


class _Front:
    """The front end: places orders through the discovered endpoint, retrying with the same command id."""

    def __init__(self, nc, subject: str):
        self.nc, self.subject = nc, subject
        self.replies: dict[str, list] = {}
        self.errors: list[str] = []

    async def place(self, cmd: dict, tries: int = 1, timeout: float = 3.0):
        last = None
        for _ in range(tries):
            try:
                msg = await self.nc.request(self.subject, json.dumps(cmd).encode(), timeout=timeout)
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
                last = ("no reply", type(exc).__name__)
                await asyncio.sleep(0.3)
                continue
            code = (msg.headers or {}).get("Nats-Service-Error-Code")
            if code:
                last = ("error", code)
                self.errors.append((msg.headers or {}).get("Nats-Service-Error", ""))
                if code.startswith("5"):  # the service says: try again (the store is electing a leader)
                    await asyncio.sleep(1.0)
                    continue
            else:
                try:
                    last = ("ok", json.loads(msg.data))
                except ValueError:
                    last = ("not json", msg.data[:60])
            break
        self.replies.setdefault(cmd["command_id"], []).append(last)
        return last


def _cmd(oid: str, customer: str) -> dict:
    return {"command_id": f"cmd-{token(8)}", "order_id": oid, "customer": customer, "items": _items()}


async def _services_line(chk, js, store: Store, web_nc, n: int = 40, race: int = 8) -> str:
    infos, subject = await _find_place(chk)
    front = _Front(web_nc, subject)
    tag = token(4)
    cmds = [_cmd(f"o{tag}{i}", f"c{i % 5}") for i in range(n)]
    rivals = [dict(_cmd(c["order_id"], "mallory")) for c in cmds[:race]]
    # every command sent twice at once (a client retrying), racing commands for the same orders
    # (a 5xx answer is retried, as the contract says: on a cluster a duplicate still in flight can get one)
    jobs = [front.place(c, tries=4) for c in cmds] + [front.place(c, tries=4) for c in cmds] + \
        [front.place(r, tries=4) for r in rivals]
    random.shuffle(jobs)
    await asyncio.gather(*jobs)
    events = await _events(js, store)
    placed: dict[str, list] = {}
    for subject_, seq, ev, headers in events:
        if ev.get("type") == "OrderPlaced":
            placed.setdefault(ev.get("order_id"), []).append((subject_, seq, ev))
    missing = [c["order_id"] for c in cmds if c["order_id"] not in placed]
    expect(not missing, f"{len(missing)} of {n} placed orders have no OrderPlaced event in {store.stream}.",
           expected="one OrderPlaced per order", seen=f"missing: {missing[:3]}",
           hint="append an OrderPlaced event to the order's subject before replying placed.")
    doubled = {o: len(v) for o, v in placed.items() if len(v) > 1}
    if doubled:
        racing = {c["order_id"] for c in rivals}
        why = ("two different commands for the same order both appended: append the first event of an order "
               "conditionally (Nats-Expected-Last-Subject-Sequence: 0), so the second fails."
               if set(doubled) <= racing else
               "a retried command appended a second event: send the command id as Nats-Msg-Id, so JetStream "
               "drops the duplicate.")
        raise Mismatch(f"{len(doubled)} orders have more than one OrderPlaced event.", expected="exactly one each",
                       seen=dict(list(doubled.items())[:3]), hint=why)
    wrong_subject = [(o, s) for o, v in placed.items() for s, _, _ in v if s != store.of(o)]
    expect(not wrong_subject, "an OrderPlaced event is not on its order's subject.",
           expected=store.subject, seen=wrong_subject[:2], hint="publish each order's events on subject.format(order_id=...).")
    for c in cmds:
        ev = placed[c["order_id"]][0][2]
        want = _placed(c["order_id"], c["customer"], c["items"])
        if c["order_id"] in {r["order_id"] for r in rivals} and ev.get("customer") == "mallory":
            continue
        expect({k: ev.get(k) for k in want} == want, "an OrderPlaced event does not carry the order.",
               expected=want, seen=ev, hint="the event holds type, order_id, customer, items and total (sum of qty*price).")
    for c in cmds:
        answers = front.replies[c["command_id"]]
        seq = placed[c["order_id"]][0][1]
        won = placed[c["order_id"]][0][2].get("customer") == c["customer"]
        for kind, body in answers:
            if won:
                ok = kind == "ok" and isinstance(body, dict) and body.get("status") == "placed" and body.get("seq") == seq
                expect(ok, "a command (or its retry) was not answered placed with the event's sequence.",
                       expected={"order_id": c["order_id"], "status": "placed", "seq": seq}, seen=(kind, body),
                       hint="a retry of the same command must get the same answer: when the conditional append fails, "
                            "look at the order's event (js.get_last_msg(stream, subject)): if its Nats-Msg-Id is this "
                            "command's id, the order is placed by this very command."
                            if kind == "error" else "reply {\"order_id\", \"status\": \"placed\", \"seq\": ack.seq}.")
    for r in rivals:
        winner = placed[r["order_id"]][0][2].get("customer")
        if winner != "mallory":
            kind, body = front.replies[r["command_id"]][0]
            expect(kind == "error" and body == "409", "a second command for an already placed order was not refused "
                   "with a 409 service error.", expected="Nats-Service-Error-Code: 409", seen=(kind, body),
                   hint="when the conditional append fails (wrong last sequence, 10071), answer "
                        "req.respond_error(\"409\", ...).")
    stats = []
    for info in infos:
        try:
            msg = await chk.request(f"$SRV.STATS.{info['name']}.{info['id']}", b"", timeout=2)
            stats.append(json.loads(msg.data))
        except Exception:  # noqa: BLE001
            pass
    counted = sum(e.get("num_requests", 0) for s in stats for e in s.get("endpoints") or [] if e.get("name") == "place")
    sent = 2 * n + race
    expect(counted >= sent, "the services' $SRV.STATS do not count the place requests.",
           expected=f"num_requests >= {sent}", seen=f"num_requests {counted}",
           hint="handle commands in the service endpoint's handler, so the service API counts them.")
    return (f"found place on {subject} through $SRV.INFO ({len(infos)} service instance(s)); {n} orders each sent "
            f"twice plus {race} rival commands: exactly one OrderPlaced each, retries answered with the same "
            f"sequence, rivals refused with 409; $SRV.STATS counted {counted} requests.")


async def _check_store(js, store: Store, replicas: int) -> str:
    try:
        info = await js.stream_info(store.stream)
    except jserr.NotFoundError:
        raise Mismatch(f"there is no stream {store.stream}.", expected="the stream create_store made", seen="not found",
                       hint="create the stream with js.add_stream before returning its name.") from None
    subject = store.of("o-probe")
    expect(any(_matches(s, subject) for s in info.config.subjects or []), "the stream does not capture the order "
           "subjects.", expected=f"subjects covering {subject}", seen=info.config.subjects,
           hint="the stream's subjects must include the template's subjects (e.g. shop.evt.>).")
    caught = [s for s in info.config.subjects or [] if _matches(s, "shop.cmd.place") or _matches(s, "_INBOX.x")]
    expect(not caught, "the stream captures command or reply subjects.", expected="events only", seen=caught,
           hint="a stream on shop.> answers every command with a PubAck: keep events apart from shop.cmd.>.")
    expect((info.config.num_replicas or 1) >= replicas, f"the stream has {info.config.num_replicas} replica(s).",
           expected=f"num_replicas {replicas}", seen=info.config.num_replicas,
           hint="pass num_replicas=replicas, so the events survive a node's loss.")
    try:
        kv = await js.stream_info(f"KV_{store.bucket}")
    except jserr.NotFoundError:
        raise Mismatch(f"there is no KV bucket {store.bucket}.", expected="the read model's bucket", seen="not found",
                       hint="create it with js.create_key_value(bucket=..., replicas=replicas).") from None
    expect((kv.config.num_replicas or 1) >= replicas, "the read model's bucket has fewer replicas than asked.",
           expected=replicas, seen=kv.config.num_replicas, hint="create_key_value(..., replicas=replicas).")
    return f"stream {store.stream} on {info.config.subjects} and bucket {store.bucket}, {replicas} replica(s)"


SERVICE_HINTS = {"BadRequestError": "the server refused a stream or bucket setting: print the error's description.",
                 "ValueError": "nats.micro refused a setting: a service name has only letters, digits, - and _, and "
                               "its version is semantic (\"1.0.0\")."}


@exercise("9.2", "the event store and the order service", hints=(
    "commands arrive through the service API; each order is an event-sourced aggregate on its own subject, "
    "appended conditionally and deduplicated by command id (lessons 07.1, 07.3, 02.2).",
    "js.add_stream(name=..., subjects=[\"shop.evt.>\"], num_replicas=replicas); js.create_key_value(...); "
    "micro.add_service + add_endpoint(name=\"place\", subject=\"shop.cmd.place\"); js.publish(subject, data, "
    "headers={\"Nats-Msg-Id\": command_id, \"Nats-Expected-Last-Subject-Sequence\": \"0\"}).",
    "ack = await js.publish(store[\"subject\"].format(order_id=o), event, headers={\"Nats-Msg-Id\": cmd[\"command_id\"], "
    "\"Nats-Expected-Last-Subject-Sequence\": \"0\"}); await req.respond(json.dumps({\"order_id\": o, \"status\": "
    "\"placed\", \"seq\": ack.seq}).encode()); on APIError 10071: await req.respond_error(\"409\", \"already placed\")"))
async def order_service_check(create_store, order_service):
    async with scratch_server() as srv, client(srv) as chk, learner_client(srv) as nc, learner_client(srv) as web:
        store = _store_of(await call_learner(create_store, nc.jetstream(), 1, what="create_store(js, replicas)",
                                             hints=SERVICE_HINTS))
        made = await _check_store(chk.jetstream(), store, 1)
        await call_learner(order_service, nc, store.as_dict(), what="order_service(nc, store)", hints=SERVICE_HINTS)
        detail = await _services_line(chk, chk.jetstream(), store, web)
        return f"{made}; {detail}"


# ------------------------------------------------------------------------------ 9.3 projection
async def _publish(js, store: Store, ev: dict):
    await js.publish(store.of(ev["order_id"]), json.dumps(ev).encode())


async def _read_model(js, store: Store) -> tuple[dict, dict]:
    kv = await js.key_value(store.bucket)
    orders, customers = {}, {}
    # the keys as the KV stream's own state lists them (nats-py's kv.keys() can answer "no keys" on a
    # loaded machine while its watcher starts)
    info = await js.stream_info(f"KV_{store.bucket}", subjects_filter=f"$KV.{store.bucket}.>")
    keys = [subject.split(".", 2)[2] for subject in (info.state.subjects or {})]
    for key in keys:
        try:
            entry = await kv.get(key)
        except (jserr.KeyNotFoundError, jserr.KeyDeletedError):
            continue
        try:
            value = json.loads(entry.value)
        except (ValueError, TypeError):
            value = {"(not JSON)": repr(entry.value)[:40]}
        if key.startswith("order."):
            orders[key[6:]] = value
        elif key.startswith("customer."):
            customers[key[9:]] = value
    return orders, customers


def _model_diff(want: tuple[dict, dict], got: tuple[dict, dict]) -> tuple[str, Any, Any] | None:
    w_orders, w_customers = want
    g_orders, g_customers = got
    for oid, w in w_orders.items():
        g = g_orders.get(oid)
        if not isinstance(g, dict) or any(g.get(k) != v for k, v in w.items()):
            return f"order.{oid}", w, g
    for name, n in w_customers.items():
        g = g_customers.get(name)
        if not isinstance(g, dict) or g.get("orders") != n:
            return f"customer.{name}", {"orders": n}, g
    return None


async def _consistent(js, store: Store, timeout: float) -> tuple[bool, Any]:
    want = _fold(await _events(js, store))
    last: list = [None]

    async def same():
        got = await _read_model(js, store)
        last[0] = _model_diff(want, got)
        return last[0] is None
    try:
        await until(same, "the read model to match the stream", timeout=timeout, every=0.3, retry=TRANSIENT)
        return True, None
    except WaitTimeout:
        return False, last[0]


async def _consumers_idle(js, store: Store, timeout: float = 20.0, skip=()):
    async def idle():
        names = await js.consumers_info(store.stream)
        return all(c.num_pending == 0 and c.num_ack_pending == 0 for c in names if c.name not in skip)
    with contextlib.suppress(WaitTimeout):
        await until(idle, "the projection to catch up", timeout=timeout, every=0.3, retry=TRANSIENT)


async def _reads_the_stream(js, store: Store, what: str, before=()) -> None:
    """Fail fast when the learner's function returned without a consumer on the event stream."""
    async def some():
        return [c.name for c in await js.consumers_info(store.stream) if c.name not in before]
    try:
        await until(some, f"a consumer on {store.stream}", timeout=5, every=0.2, retry=TRANSIENT)
    except WaitTimeout:
        raise Mismatch(f"{what} returned, and no consumer reads the event stream {store.stream}.",
                       expected="a consumer on the stream (durable, so it resumes)", seen="no consumer",
                       hint="subscribe to the store's events with a JetStream consumer and return; keep it running "
                            "(don't unsubscribe or wait for it inside the function).") from None


def _projection_hint(diff) -> str:
    key, want, got = diff
    if got is None:
        return (f"{key} never appeared: an event whose write to the read model failed was acknowledged anyway and "
                "is lost. Acknowledge after the write, and let a failed event come again (nak, or no ack).")
    if key.startswith("customer.") and isinstance(got, dict) and isinstance(got.get("orders"), int):
        if got["orders"] > want["orders"]:
            return ("an event delivered again was applied twice: make the projection idempotent, e.g. keep the "
                    "stream sequence of the last event applied in the entry and skip events at or below it.")
        if got["orders"] < want["orders"]:
            return ("an event was lost: acknowledged although its write failed, or skipped because a later event "
                    "of the same key was applied before its redelivery came. Acknowledge after the write, and keep "
                    "events in order (max_ack_pending=1, or stop a batch at its first failure).")
    return "apply every event type: OrderPlaced sets placed, OrderConfirmed confirmed, OrderCancelled cancelled."


def _model_mismatch(what: str, diff) -> Mismatch:
    key, want, got = diff
    return Mismatch(f"{what}: the read model does not match the stream at {key}.", expected=want, seen=got,
                    hint=_projection_hint(diff))


@exercise("9.3", "a projection into KV", hints=(
    "a projection is a durable consumer that folds events into the read model, acknowledging each event only "
    "after its write, and applying each at most once however often it is delivered (lesson 07.4).",
    "js.subscribe(filter, durable=..., cb=apply, manual_ack=True) or a pull consumer; in apply: kv.get, skip if "
    "entry seq >= msg.metadata.sequence.stream, kv.put, then await msg.ack(); on an error: await msg.nak().",
    "if seq > old.get(\"seq\", 0): await kv.put(key, json.dumps({**new, \"seq\": seq}).encode()); await msg.ack()"))
async def projection_check(start_projection):
    tag = token(4)
    store = Store(f"CAP_{tag.upper()}", f"c{tag}.orders.{{order_id}}.events", f"cap_rm_{tag}")
    async with scratch_server() as srv, client(srv) as chk:
        js = chk.jetstream()
        await js.add_stream(name=store.stream, subjects=[f"c{tag}.orders.*.events"])
        await js.create_key_value(bucket=store.bucket, history=1)
        oids = [f"p{tag}{i}" for i in range(24)]
        for i, oid in enumerate(oids):
            await _publish(js, store, _placed(oid, f"cust{i % 4}"))
            if i % 3 == 0:
                await _publish(js, store, {"type": "OrderConfirmed", "order_id": oid})
            elif i % 3 == 1:
                await _publish(js, store, {"type": "OrderCancelled", "order_id": oid, "reason": "payment"})
        async with learner_client(srv) as nc:
            await call_learner(start_projection, nc.jetstream(), store.as_dict(), what="start_projection(js, store)")
            await _reads_the_stream(js, store, "start_projection")
            ok, diff = await _consistent(js, store, 20)
            if not ok:
                raise _model_mismatch("after the first events", diff)
            # the read model refuses writes for a while: nothing may be lost
            kv_stream = f"KV_{store.bucket}"
            info = await js.stream_info(kv_stream)
            held = info.state.messages
            cfg = info.config
            cfg.max_msgs, cfg.discard = held, "new"
            await js.update_stream(cfg)
            late = [f"q{tag}{i}" for i in range(6)]
            for i, oid in enumerate(late):
                await _publish(js, store, _placed(oid, f"cust{i % 4}"))
            await asyncio.sleep(1.0)
            info = await js.stream_info(kv_stream)
            cfg = info.config
            cfg.max_msgs = -1
            await js.update_stream(cfg)
            ok, diff = await _consistent(js, store, 40)
            if not ok:
                raise _model_mismatch("after the read model refused writes for a second", diff)
        # a replay: the projection restarts after its consumers are gone, so every event comes again
        for c in await js.consumers_info(store.stream):
            await js.delete_consumer(store.stream, c.name)
        more = [f"r{tag}{i}" for i in range(4)]
        for i, oid in enumerate(more):
            await _publish(js, store, _placed(oid, f"cust{i % 4}"))
        async with learner_client(srv) as nc:
            await call_learner(start_projection, nc.jetstream(), store.as_dict(),
                               what="start_projection(js, store) after a restart")
            await _consumers_idle(js, store)
            ok, diff = await _consistent(js, store, 20)
            if not ok:
                raise _model_mismatch("after a replay of every event", diff)
            await asyncio.sleep(1.0)
            ok, diff = await _consistent(js, store, 3)
            if not ok:
                raise _model_mismatch("a second after the replay", diff)
        return (f"the read model matched the fold of {len(oids) + len(late) + len(more)} orders' events on another "
                f"subject plan, after the bucket refused writes for a second (nothing lost) and after a replay of "
                f"every event (nothing counted twice).")


# ------------------------------------------------------------------------------ 9.4 saga
class Partners:
    """The checker's stock and payment partners: what was asked, and what they answered."""

    def __init__(self, nc):
        self.nc = nc
        self.calls: list[tuple[str, str]] = []   # (step, order_id)
        self.no_stock: set[str] = set()
        self.decline: set[str] = set()
        self.silent: set[str] = set()
        self.subs: list = []

    async def start(self):
        for step in ("stock.reserve", "stock.release", "pay.charge"):
            self.subs.append(await self.nc.subscribe(f"{PARTNER}.{step}", cb=self._handler(step)))
        await self.nc.flush()

    async def stop(self):
        for s in self.subs:
            with contextlib.suppress(Exception):
                await s.unsubscribe()

    def _handler(self, step):
        async def handle(msg):
            try:
                body = json.loads(msg.data)
                oid = body.get("order_id")
            except (ValueError, AttributeError):
                oid = None
            self.calls.append((step, oid))
            if step == "pay.charge" and oid in self.silent:
                return
            ok = not ((step == "stock.reserve" and oid in self.no_stock) or (step == "pay.charge" and oid in self.decline))
            with contextlib.suppress(Exception):
                await msg.respond(json.dumps({"ok": ok}).encode())
        return handle

    def of(self, oid):
        return [s for s, o in self.calls if o == oid]


def _saga_outcomes(events) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for _s, _seq, ev, _h in events:
        if ev.get("type") in STATUS:
            out.setdefault(ev.get("order_id"), []).append(ev.get("type"))
    return out


async def _saga_line(js, store: Store, partners: Partners, cases: dict[str, str], timeout: float = 40) -> str:
    """cases: order id -> expected outcome ("ok", "no_stock", "decline", "silent")."""
    want_end = {"ok": "OrderConfirmed", "no_stock": "OrderCancelled", "decline": "OrderCancelled",
                "silent": "OrderCancelled"}

    async def ended():
        got = _saga_outcomes(await _events(js, store))
        return all(len(got.get(o, [])) >= 2 for o in cases)
    with contextlib.suppress(WaitTimeout):
        await until(ended, "every order's saga to end", timeout=timeout, every=0.5, retry=TRANSIENT)
    await asyncio.sleep(0.5)
    got = _saga_outcomes(await _events(js, store))
    for oid, case in cases.items():
        types = got.get(oid, [])
        steps = partners.of(oid)
        if case in ("decline", "silent"):
            expect("stock.release" in steps,
                   f"the payment for {oid} was {'declined' if case == 'decline' else 'never answered'}, and the stock "
                   f"reserved for it was not released.", expected="reserve, charge, release", seen=steps,
                   hint="a saga compensates: when a later step fails (a decline, or no answer within your timeout), "
                        "undo the steps already done (release the stock) before cancelling.")
        if case == "ok" and len(types) >= 2:
            expect(steps.count("stock.reserve") >= 1 and steps.count("pay.charge") >= 1 and "stock.release" not in steps,
                   f"order {oid} succeeded but the partners saw {steps}.", expected="reserve, charge (no release)",
                   seen=steps, hint="release stock only to compensate a failed order.")
        if case == "no_stock":
            expect("pay.charge" not in steps, f"order {oid} had no stock, and the saga charged it anyway.",
                   expected="reserve only", seen=steps, hint="a failed step ends the forward path.")
        expect(types[1:] == [want_end[case]] if types else False,
               f"order {oid} ({ {'ok': 'all steps succeed', 'no_stock': 'no stock', 'decline': 'payment declined', 'silent': 'payment provider silent'}[case]}) "
               f"did not end with exactly one {want_end[case]} after OrderPlaced.",
               expected=["OrderPlaced", want_end[case]], seen=types,
               hint="append the saga's outcome to the order's subject once (Nats-Expected-Last-Subject-Sequence: the "
                    "OrderPlaced's sequence, Nats-Msg-Id so a redelivery does not append twice).")
    return (f"{len(cases)} orders: paid ones confirmed; no stock cancelled without a charge; a declined and an "
            f"unanswered payment each released the stock and cancelled, each outcome appended once.")


@exercise("9.4", "a saga that compensates", hints=(
    "the saga reacts to OrderPlaced: reserve stock, charge, confirm; when a step fails it runs the compensations "
    "of the steps done, then records the outcome as an event (lessons 07.5, 07.3).",
    "a durable consumer on the events; await nc.request(\"partner.stock.reserve\", ..., timeout=2); on a decline "
    "or a TimeoutError: await nc.request(\"partner.stock.release\", ...); js.publish(subject, OrderCancelled, "
    "headers={\"Nats-Expected-Last-Subject-Sequence\": str(seq), \"Nats-Msg-Id\": f\"{order_id}-end\"}).",
    "if not paid: await release(order); await append(\"OrderCancelled\") else: await append(\"OrderConfirmed\")"))
async def saga_check(start_saga):
    tag = token(4)
    store = Store(f"SG_{tag.upper()}", f"s{tag}.{{order_id}}", f"sg_rm_{tag}")
    async with scratch_server() as srv, client(srv) as chk, learner_client(srv) as nc:
        js = chk.jetstream()
        await js.add_stream(name=store.stream, subjects=[f"s{tag}.*"])
        await js.create_key_value(bucket=store.bucket)
        partners = Partners(chk)
        await partners.start()
        cases = {f"g{tag}{i}": c for i, c in enumerate(["ok", "decline", "ok", "no_stock", "silent", "ok", "decline"])}
        for oid, case in cases.items():
            {"no_stock": partners.no_stock, "decline": partners.decline, "silent": partners.silent,
             "ok": set()}[case].add(oid)
        await call_learner(start_saga, nc, nc.jetstream(), store.as_dict(), what="start_saga(nc, js, store)")
        await _reads_the_stream(js, store, "start_saga")
        for i, oid in enumerate(cases):
            await _publish(js, store, _placed(oid, f"cust{i}"))
        try:
            return await _saga_line(js, store, partners, cases)
        finally:
            await partners.stop()


# ------------------------------------------------------------------------------ 9.5 alert
METRIC = "jetstream_consumer_num_pending"


async def _alert_line(rule: str, series: dict[str, str], cases: list[tuple[str, set, str]]) -> str:
    """cases: (eval time, consumers that must fire, what that moment is)."""
    expect(isinstance(rule, str) and rule.strip(), "the alert rule is empty.", expected="a PromQL expression",
           seen=repr(rule))
    for at, want, moment in cases:
        if prom.binary("promtool"):
            try:
                result = (await asyncio.to_thread(prom.test_rules, rule, series, [(at, [])]))[0]
            except ValueError as exc:
                raise Mismatch("promtool rejected the rule: it is not valid PromQL.", expected="valid PromQL",
                               seen=str(exc)[:200], hint="try it in lesson 06.3's Prometheus first.") from None
            fired = result["got"] or []
        else:
            try:
                fired = prom.alerts_at(rule, series, at)
            except ValueError as exc:
                raise Mismatch("natslab's evaluator could not evaluate the rule.", expected="a simple rule",
                               seen=str(exc)[:200], hint=f"install Prometheus to check any PromQL: {prom.INSTALL}") from None
        names = {f.get("consumer_name", "(no consumer_name label)") for f in fired}
        if names != want:
            if not want:
                hint = ("the rule fires for a consumer that is keeping up: a short burst of pending messages is normal; "
                        "alert when the lag stays up (min_over_time over a few minutes), not on any pending message."
                        if names - {"(no consumer_name label)"} or fired else "")
                hint = hint or "the rule fires when nothing is wrong."
            elif "(no consumer_name label)" in names:
                hint = "keep the consumer_name label (aggregate by it, or not at all) so the alert says which consumer."
            else:
                hint = ("the dead projector's lag stayed up for minutes and the rule did not fire: is the range "
                        "longer than the outage, or the threshold higher than the lag?")
            raise Mismatch(f"{moment}: the rule fired for {sorted(names) or 'nothing'}.",
                           expected=f"alerts for {sorted(want) or 'nothing'}", seen=f"alerts for {sorted(names) or 'nothing'}",
                           hint=hint)
    return (f"evaluated with {'promtool' if prom.binary('promtool') else 'natslab'} on the lag the check recorded: "
            f"silent while the consumers kept up (a burst included), fired only for the dead projector.")


async def _record_lag(js, stream: str, names: list[str], samples: list[dict]):
    infos = {c.name: c for c in await js.consumers_info(stream)}
    samples.append({n: (infos[n].num_pending + infos[n].num_ack_pending) if n in infos else 0 for n in names})


def _series(stream: str, samples: list[dict]) -> dict[str, str]:
    names = samples[0].keys()
    return {f'{METRIC}{{stream_name="{stream}",consumer_name="{n}"}}': " ".join(str(s[n]) for s in samples)
            for n in names}


@exercise("9.5", "an alert on the read model's lag", hints=(
    "an alert rule fires for the condition that needs a person (a projector that stopped: its consumer's "
    "pending count stays up), not for normal bursts (lessons 06.3, 06.4).",
    "jetstream_consumer_num_pending{stream_name, consumer_name} once a minute; min_over_time(...[3m]) > 0 is "
    "the lag that has not come down for three minutes.",
    "return 'min_over_time(jetstream_consumer_num_pending[3m]) > 0'"))
async def alert_check(lag_alert):
    rule = await call_learner(lag_alert, what="lag_alert()")
    expect(isinstance(rule, str), "lag_alert must return the rule's expression as text.", expected="a str",
           seen=f"{type(rule).__name__}: {rule!r}"[:120], hint="return the PromQL expression as a string.")
    tag = token(4)
    store = Store(f"LAG_{tag.upper()}", f"l{tag}.{{order_id}}", "")
    async with scratch_server() as srv, client(srv) as chk:
        js = chk.jetstream()
        await js.add_stream(name=store.stream, subjects=[f"l{tag}.*"])
        # two consumers the checker runs itself: both hold their acks during the burst (so the burst shows in
        # their own pending counts), then catch up; later the projector dies and the audit consumer keeps up
        held: list = []
        mode = {"hold": False}

        def consumer(name):
            async def on_msg(msg):
                if mode["hold"]:
                    held.append(msg)
                else:
                    await msg.ack()
            return on_msg
        sub = await js.subscribe(f"l{tag}.*", durable="projector", cb=consumer("projector"), manual_ack=True)
        keeper = await js.subscribe(f"l{tag}.*", durable="audit", cb=consumer("audit"), manual_ack=True)

        async def pub(n):
            for _ in range(n):
                await js.publish(f"l{tag}.o{token(4)}", b"{}")

        samples: list[dict] = []
        for minute in range(12):
            if minute == 2:  # a burst, sampled before the consumers acknowledge it
                mode["hold"] = True
                await pub(30)
                await _wait(lambda: len(held) >= 60, "the burst to be delivered", timeout=15)
                await _record_lag(js, store.stream, ["projector", "audit"], samples)
                mode["hold"] = False
                for msg in held:
                    await msg.ack()
                held.clear()
                continue
            if minute == 6:  # the projector dies
                await sub.unsubscribe()
            elif minute > 6:
                await pub(5)
            await until(lambda: _idle_except(js, store.stream, skip=("projector",) if minute >= 6 else ()),
                        "the live consumers to catch up", timeout=15, error=False, retry=TRANSIENT)
            await _record_lag(js, store.stream, ["projector", "audit"], samples)
        await keeper.unsubscribe()
        series = _series(store.stream, samples)
        detail = await _alert_line(rule, series, [("2m", set(), "at minute 2 (a burst, both consumers keeping up)"),
                                                  ("5m", set(), "at minute 5 (everything caught up)"),
                                                  ("11m", {"projector"}, "at minute 11 (the projector died at minute 6; "
                                                                        "audit keeps up)")])
        return detail + f" Series: {', '.join(f'{k}: {v}' for k, v in series.items())}."


async def _idle_except(js, stream, skip=()):
    infos = await js.consumers_info(stream)
    return all(c.num_pending == 0 and c.num_ack_pending == 0 for c in infos if c.name not in skip)


# ------------------------------------------------------------------------------ 9.6 the whole system
@dataclass
class Line:
    name: str
    passed: bool
    seen: str
    hint: str = ""

    def text(self) -> str:
        return f"{'✓' if self.passed else '✗'} {self.name}: {self.seen}" + (f" (hint: {self.hint})" if self.hint and not self.passed else "")


REQUIREMENTS = ("security boundaries", "services and the event store under load", "projection",
                "saga", "alert", "node kill")


async def _line(lines: list, name: str, coro) -> Any:
    try:
        result = await coro
    except Mismatch as m:
        seen = m.problem + (f" expected {m.expected}, seen {m.seen}" if m.expected is not None or m.seen is not None else "")
        lines.append(Line(name, False, seen[:400], "" if isinstance(m, Unsolved) else m.hint))
        return None
    except Exception as exc:  # noqa: BLE001 - a line that broke is a failed line, never a crash of the card
        lines.append(Line(name, False, f"the check of this line broke: {type(exc).__name__}: {exc}"[:300],
                          "run this requirement's own check to see which part of your code it was."))
        return None
    text, value = result if isinstance(result, tuple) else (result, None)
    lines.append(Line(name, True, text))
    return value if value is not None else True


@exercise("9.6", "the whole system (scorecard)", hints=(
    "the final check runs your parts together on the secured cluster, under load, kills a node, and scores each "
    "requirement on its own line; fix the failing lines with their own checks (9.1-9.5) first.",
    "start_system in the capstone notebook wires the parts: one connection per component as svc, over TLS, to "
    "every node, with reconnects.",
    "await natslab.check(\"9.6\", security, create_store, order_service, start_projection, start_saga, lag_alert)"))
async def whole_system(security, create_store, order_service, start_projection, start_saga, lag_alert):
    lines: list[Line] = []
    clusters: list = []
    conns: list = []
    try:
        started = await _line(lines, "security boundaries", _sec_line(security, clusters))
        if not started:
            for name in REQUIREMENTS[1:]:
                lines.append(Line(name, False, "not run: the secured cluster did not start or did not hold",
                                  "pass the security line first (check 9.1)."))
        else:
            cluster, mat = started
            await _system(cluster, mat, conns, lines, create_store, order_service, start_projection, start_saga, lag_alert)
    finally:
        for nc in conns:
            with contextlib.suppress(Exception):
                if not nc.is_closed:
                    await asyncio.wait_for(nc.close(), 5)
        for c in clusters:
            await asyncio.to_thread(c.close)
    from ..scorecard import Scorecard
    card = Scorecard(lines)
    card.show()
    failed = [l for l in lines if not l.passed]
    if failed:
        raise Mismatch(f"{len(failed)} of {len(lines)} requirements failed: {', '.join(l.name for l in failed)}.",
                       expected="every line passed", seen="\n" + "\n".join(l.text() for l in lines),
                       hint=failed[0].hint or "fix the first failing line with its own check.")
    return "every requirement passed:\n" + "\n".join(l.text() for l in lines)


async def _sec_line(security, clusters):
    cluster, mat, detail = await _security_line(security, clusters)
    return detail, (cluster, mat)


async def _system(cluster, mat, conns, lines, create_store, order_service, start_projection, start_saga, lag_alert):
    async def svc_conn():
        nc = await capstone.connect(cluster, mat, "svc")
        conns.append(nc)
        return nc

    # the checker's and the front end's connections know every node, as the learner's do
    async with client(cluster, tls=mat.context(), user="svc", password=mat.users["svc"]) as chk, \
            client(cluster, tls=mat.context(), user="web", password=mat.users["web"]) as web:
        js = chk.jetstream()
        nc = await svc_conn()
        store = None
        try:
            store = _store_of(await call_learner(create_store, nc.jetstream(), 3, what="create_store(js, 3)",
                                                 hints=SERVICE_HINTS))
            await _check_store(js, store, 3)
        except Mismatch as m:
            bad = m
        else:
            bad = None
        if store is None or bad is not None:
            for name in REQUIREMENTS[1:]:
                lines.append(Line(name, False, f"not run: {bad.problem if bad else 'no store'}",
                                  (bad.hint if bad else "") or "pass check 9.2 first."))
            return
        partners = Partners(chk)
        await partners.start()
        # the services, projection and saga, each on a connection of its own, as separate programs would be
        svc_ok = await _line(lines, "services and the event store under load", _first(
            call_learner(order_service, await svc_conn(), store.as_dict(), what="order_service(nc, store)",
                         hints=SERVICE_HINTS), lambda: _services_line(chk, js, store, web, n=30, race=6)))
        proj_nc = await svc_conn()
        proj_started = await _line(lines, "projection", _started(call_learner(
            start_projection, proj_nc.jetstream(), store.as_dict(), what="start_projection(js, store)")))
        saga_nc = await svc_conn()
        saga_started = await _line(lines, "saga", _started(call_learner(
            start_saga, saga_nc, saga_nc.jetstream(), store.as_dict(), what="start_saga(nc, js, store)")))
        lines[:] = [l for l in lines if l.name not in ("projection", "saga") or not l.passed]
        # the saga's cases go through the front end, the way real orders come
        cases: dict[str, str] = {}
        if svc_ok:
            _, subject = await _find_place(chk)
            front = _Front(web, subject)
            tag = token(4)
            for i, case in enumerate(["ok", "decline", "ok", "no_stock", "silent", "ok"]):
                oid = f"s{tag}{i}"
                cases[oid] = case
                {"no_stock": partners.no_stock, "decline": partners.decline, "silent": partners.silent,
                 "ok": set()}[case].add(oid)
                await front.place(_cmd(oid, f"cust{i}"), tries=3)
        if saga_started and svc_ok:
            await _line(lines, "saga", _saga_line(js, store, partners, cases, timeout=60))
        elif saga_started:
            lines.append(Line("saga", False, "not run: no order could be placed", "pass the services line first."))
        if proj_started:
            await _line(lines, "projection", _proj_final(js, store))
        # the alert: the projector dies while orders keep coming
        await _line(lines, "alert", _alert_final(js, store, proj_nc, lag_alert, svc_ok, web))
        # a node is killed under load; every acknowledged order must be counted
        await _line(lines, "node kill", _kill_line(cluster, chk, js, store, web, svc_ok, svc_conn,
                                                   start_projection, proj_started, proj_nc))
        await partners.stop()


async def _first(setup, then):
    await setup
    return await then()


async def _started(coro):
    await coro
    return "started"


async def _proj_final(js, store):
    await _consumers_idle(js, store, timeout=30)
    ok, diff = await _consistent(js, store, 30)
    if not ok:
        raise _model_mismatch("under the system's own traffic", diff)
    orders, _ = _fold(await _events(js, store))
    return f"the read model matched the fold of the stream's events ({len(orders)} orders)."


async def _alert_final(js, store, proj_nc, lag_alert, svc_ok, web):
    rule = await call_learner(lag_alert, what="lag_alert()")
    expect(isinstance(rule, str), "lag_alert must return text.", expected="a str", seen=type(rule).__name__)
    expect(bool(svc_ok), "not run: no order could be placed, so no lag could be made.", seen="services line failed",
           hint="pass the services line first.")
    _, subject = await _find_place(js._nc)
    front = _Front(web, subject)
    names = [c.name for c in await js.consumers_info(store.stream)]
    expect(bool(names), "no consumer reads the event stream.", expected="the projection's and the saga's consumers",
           seen="none", hint="start the projection (9.3) and the saga (9.4).")
    samples: list[dict] = []
    tag = token(4)
    n = [0]

    async def pub(k):
        for _ in range(k):
            n[0] += 1
            await front.place(_cmd(f"a{tag}{n[0]}", "alerts"), tries=3)
    for minute in range(10):
        if minute == 2:
            await pub(8)
        elif minute == 5:
            await proj_nc.close()  # the projector dies; the saga lives on
        elif minute > 5:
            await pub(3)
        if minute != 2:
            await until(lambda: _idle_except(js, store.stream, skip=names if minute >= 5 else ()),
                        "the consumers to catch up", timeout=20, error=False, retry=TRANSIENT)
            if minute >= 5:  # the live ones (the saga's) catch up; the projector's cannot
                await until(lambda: _lagging(js, store.stream, names, 1), "the live consumers to catch up",
                            timeout=20, error=False, retry=TRANSIENT)
        await _record_lag(js, store.stream, names, samples)
    final = samples[-1]
    behind = [name for name in names if final.get(name, 0) > 0]
    expect(len(behind) == 1, "after the projector's connection closed, not exactly one consumer of the stream was "
           "left behind.", expected="the projection's consumer behind, the saga's caught up", seen=final,
           hint="the projection's consumer must be durable (it outlives its connection, so its lag shows and it "
                "resumes), and the saga must keep up on its own connection.")
    projector = behind[0]
    series = _series(store.stream, samples)
    text = await _alert_line(rule, series, [("2m", set(), "at minute 2 (orders the consumers absorb)"),
                                            ("4m", set(), "at minute 4 (everything caught up)"),
                                            ("9m", {projector}, "at minute 9 (the projector died at minute 5; "
                                                                "the saga keeps up)")])
    return text + f" ({projector}: {series[next(k for k in series if projector in k)]})"


async def _lagging(js, stream, names, at_most: int) -> bool:
    infos = await js.consumers_info(stream)
    return sum(1 for c in infos if c.name in names and c.num_pending + c.num_ack_pending > 0) <= at_most


async def _kill_line(cluster, chk, js, store, web, svc_ok, svc_conn, start_projection, proj_started, proj_nc):
    expect(bool(svc_ok), "not run: no order could be placed.", seen="services line failed",
           hint="pass the services line first.")
    _, subject = await _find_place(chk)
    front = _Front(web, subject)
    info = await js.stream_info(store.stream)
    victim = cluster[info.cluster.leader] if info.cluster and info.cluster.leader else cluster.servers[2]
    tag = token(4)
    cmds = [_cmd(f"k{tag}{i}", f"kill{i % 3}") for i in range(40)]
    acked: list[str] = []

    async def send(c):
        kind, body = await front.place(c, tries=25, timeout=3)
        if kind == "ok" and isinstance(body, dict) and body.get("status") == "placed":
            acked.append(c["order_id"])

    first, rest = cmds[:15], cmds[15:]
    await asyncio.gather(*(send(c) for c in first))
    sending = asyncio.gather(*(send(c) for c in rest))
    await asyncio.to_thread(victim.kill)
    await sending
    await asyncio.to_thread(victim.restart)
    await _wait(lambda: all(s.monitor("routez").get("num_routes", 0) >= 2 for s in cluster.servers),
                "the killed node to rejoin", timeout=60)

    async def healthy():
        info = await js.stream_info(store.stream)
        return bool(info.cluster and info.cluster.leader and all(r.current for r in info.cluster.replicas or []))
    await _wait(healthy, "the stream to have a leader and every replica current again", timeout=60)
    expect(len(acked) >= len(cmds) // 2, f"only {len(acked)} of {len(cmds)} orders were acknowledged around the kill.",
           expected="most orders placed (the front end retries with the same command id)",
           seen=f"{len(acked)} placed; last answers of the others: "
                f"{[front.replies[c['command_id']][-1] for c in cmds if c['order_id'] not in acked][:3]} "
                f"{front.errors[-2:]}",
           hint="the services' connection must reconnect to the other nodes (all node URLs, reconnects on); a "
                "JetStream publish that fails during the election can answer 503 so the front end retries.")
    events = await _wait(lambda: _events(js, store), "the stream to be read", timeout=30)
    placed: dict[str, int] = {}
    for _s, _q, ev, _h in events:
        if ev.get("type") == "OrderPlaced":
            placed[ev.get("order_id")] = placed.get(ev.get("order_id"), 0) + 1
    lost = [o for o in acked if o not in placed]
    twice = [o for o in acked if placed.get(o, 0) > 1]
    expect(not lost, f"{len(lost)} acknowledged orders are missing from the stream after the kill.",
           expected="every acknowledged order in the stream", seen=lost[:3],
           hint="reply placed only after the JetStream PubAck, and keep the stream at 3 replicas.")
    expect(not twice, f"{len(twice)} orders were stored twice around the kill.", expected="once each", seen=twice[:3],
           hint="retries carry the same command id: send it as Nats-Msg-Id.")
    counted = "the stream"
    if proj_started:
        if proj_nc.is_closed:  # the alert line stopped the projector: it comes back now, as after a crash
            nc = await svc_conn()
            await call_learner(start_projection, nc.jetstream(), store.as_dict(),
                               what="start_projection(js, store) after the kill")
        await _consumers_idle(js, store, timeout=40)
        ok, diff = await _consistent(js, store, 40)
        if not ok:
            raise _model_mismatch("after the node kill", diff)
        counted = "the stream and the read model"
    return (f"killed {victim.name} (the stream's leader) during {len(cmds)} orders: {len(acked)} acknowledged, every "
            f"one in {counted} exactly once.")
