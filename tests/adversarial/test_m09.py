"""Module 09 (capstone), answered as learners would: other correct designs must pass (services split
differently, another subject plan, pull consumers instead of push), plausible wrong ones must fail with a
verdict naming the mistake, and the final scorecard must fail exactly the line of a requirement left out.

Every answer is plain nats-py (nats.connect objects, nats.micro, JetStream and KV calls).
"""
from __future__ import annotations

import asyncio
import json

import pytest
from nats import micro
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, KeyNotFoundError

import natslab

from .harness import fails, passes, run


# ------------------------------------------------------------------------------------- 9.1
def _shop_users(users, web_perms=None, svc_perms=None):
    web = {"user": "web", "password": users["web"],
           "permissions": web_perms if web_perms is not None else
           {"publish": {"allow": ["shop.cmd.>", "$SRV.>"]}, "subscribe": {"allow": ["_INBOX.>"]}}}
    svc = {"user": "svc", "password": users["svc"]}
    if svc_perms:
        svc["permissions"] = svc_perms
    return [svc, web]


def security_a(tls, users):
    tls = dict(tls)
    return {"tls": tls, "cluster": {"tls": tls},
            "accounts": {"SHOP": {"jetstream": "enabled", "users": _shop_users(users)},
                         "OTHER": {"users": [{"user": "rival", "password": users["rival"]}]}}}


def test_9_1_correct_verified_routes_and_a_limited_svc():
    def security(tls, users):
        node = {"cert_file": tls["cert_file"], "key_file": tls["key_file"], "ca_file": tls["ca_file"]}
        svc = {"publish": {"deny": ["$SYS.>"]}, "subscribe": {"deny": ["$SYS.>"]}}
        return {"tls": {**node, "timeout": 3},
                "cluster": {"tls": {**node, "verify": True, "timeout": 3}},
                "accounts": {"ORDERS": {"jetstream": {"max_file": 1 << 30, "max_mem": 64 << 20},
                                        "users": _shop_users(users, svc_perms=svc)},
                             "TENANT_B": {"jetstream": "enabled",
                                          "users": [{"user": "rival", "password": users["rival"]}]}}}
    passes("9.1", security)


def test_9_1_correct_solution_shape():
    passes("9.1", security_a)


def test_9_1_wrong_tls_on_clients_but_not_routes():
    def security(tls, users):
        config = security_a(tls, users)
        del config["cluster"]
        return config
    fails("9.1", security, says=("route port", "cluster block needs a tls block"))


def test_9_1_wrong_web_with_everything():
    def security(tls, users):
        config = security_a(tls, users)
        config["accounts"]["SHOP"]["users"] = _shop_users(users, web_perms={"publish": ">", "subscribe": "_INBOX.>"})
        return config
    fails("9.1", security, says=("web may publish", "least privilege"))


def test_9_1_wrong_one_account_for_every_tenant():
    def security(tls, users):
        config = security_a(tls, users)
        config["accounts"]["SHOP"]["users"].append({"user": "rival", "password": users["rival"]})
        del config["accounts"]["OTHER"]
        return config
    fails("9.1", security, says=("rival", "account of its own"))


def test_9_1_wrong_no_jetstream_in_the_account():
    def security(tls, users):
        config = security_a(tls, users)
        del config["accounts"]["SHOP"]["jetstream"]
        return config
    fails("9.1", security, says=("svc could not create a stream", "jetstream: enabled"))


# ------------------------------------------------------------------------------------- 9.2
async def create_store(js, replicas):
    await js.add_stream(name="SHOP_EVENTS", subjects=["events.order.*"], num_replicas=replicas)
    await js.create_key_value(bucket="shop_read", replicas=replicas)
    return {"stream": "SHOP_EVENTS", "subject": "events.order.{order_id}", "bucket": "shop_read"}


def _place_handler(js, store, *, msg_id=True, expected=True, check_retry=True):
    async def place(req):
        try:
            cmd = json.loads(req.data)
        except ValueError:
            return await req.respond_error("400", "bad command")
        total = sum(i["qty"] * i["price"] for i in cmd["items"])
        event = {"type": "OrderPlaced", "order_id": cmd["order_id"], "customer": cmd["customer"],
                 "items": cmd["items"], "total": total, "command_id": cmd["command_id"]}
        headers = {}
        if msg_id:
            headers["Nats-Msg-Id"] = cmd["command_id"]
        if expected:
            headers["Nats-Expected-Last-Subject-Sequence"] = "0"
        subject = store["subject"].format(order_id=cmd["order_id"])
        try:
            ack = await js.publish(subject, json.dumps(event).encode(), headers=headers or None)
        except APIError as err:
            if err.err_code == 10071:
                if check_retry:
                    last = await js.get_last_msg(store["stream"], subject)
                    if json.loads(last.data).get("command_id") == cmd["command_id"]:
                        return await req.respond(json.dumps({"order_id": cmd["order_id"], "status": "placed",
                                                             "seq": last.seq}).encode())
                return await req.respond_error("409", "already placed")
            return await req.respond_error("503", "store unavailable")
        except Exception:
            return await req.respond_error("503", "store unavailable")
        await req.respond(json.dumps({"order_id": cmd["order_id"], "status": "placed", "seq": ack.seq}).encode())
    return place


async def order_service_split(nc, store):
    """Two services: commands and queries; two instances of the command service in its queue group."""
    js = nc.jetstream()
    services = []
    for _ in range(2):
        cmds = await micro.add_service(nc, name="order-commands", version="2.1.0", metadata={"role": "commands"})
        await cmds.add_endpoint(name="place", subject="shop.cmd.orders.place", handler=_place_handler(js, store))
        services.append(cmds)

    async def get(req):
        await req.respond(b"{}")
    queries = await micro.add_service(nc, name="order-queries", version="1.0.0")
    await queries.add_endpoint(name="get", subject="shop.cmd.orders.get", handler=get)
    return services + [queries]


def test_9_2_correct_split_services_and_command_id_in_the_event():
    passes("9.2", create_store, order_service_split)


def test_9_2_correct_groups_and_msg_id_lookup():
    async def store(js, replicas):
        await js.add_stream(name="O", subjects=["o.*.evt"], num_replicas=replicas, duplicate_window=300)
        await js.create_key_value(bucket="o_view", replicas=replicas)
        return {"stream": "O", "subject": "o.{order_id}.evt", "bucket": "o_view"}

    async def service(nc, store):
        js = nc.jetstream()
        svc = await micro.add_service(nc, name="shop", version="0.1.0")
        group = svc.add_group(name="shop.cmd")
        await group.add_endpoint(name="place", handler=_place_handler(js, store))
        return svc
    passes("9.2", store, service)


def test_9_2_wrong_no_msg_id_no_condition():
    async def service(nc, store):
        svc = await micro.add_service(nc, name="orders", version="1.0.0")
        await svc.add_endpoint(name="place", subject="shop.cmd.place",
                               handler=_place_handler(nc.jetstream(), store, msg_id=False, expected=False))
    fails("9.2", create_store, service, says=("more than one OrderPlaced",))


def test_9_2_wrong_msg_id_but_no_condition():
    async def service(nc, store):
        svc = await micro.add_service(nc, name="orders", version="1.0.0")
        await svc.add_endpoint(name="place", subject="shop.cmd.place",
                               handler=_place_handler(nc.jetstream(), store, expected=False))
    fails("9.2", create_store, service, says=("more than one OrderPlaced", "Nats-Expected-Last-Subject-Sequence: 0"))


def test_9_2_wrong_retry_refused_as_a_conflict():
    async def service(nc, store):
        svc = await micro.add_service(nc, name="orders", version="1.0.0")
        await svc.add_endpoint(name="place", subject="shop.cmd.place",
                               handler=_place_handler(nc.jetstream(), store, check_retry=False))
    fails("9.2", create_store, service, says=("retry", "same answer"))


def test_9_2_wrong_plain_subscription():
    async def service(nc, store):
        handler = _place_handler(nc.jetstream(), store)
        await nc.subscribe("shop.cmd.place", cb=handler)
    fails("9.2", create_store, service, says=("no service answered $SRV.INFO",))


def test_9_2_wrong_stream_over_the_commands():
    async def store(js, replicas):
        await js.add_stream(name="SHOP", subjects=["shop.>"], num_replicas=replicas)
        await js.create_key_value(bucket="v", replicas=replicas)
        return {"stream": "SHOP", "subject": "shop.evt.{order_id}", "bucket": "v"}
    fails("9.2", store, order_service_split, says=("captures command",))


# ------------------------------------------------------------------------------------- 9.3
STATUS = {"OrderPlaced": "placed", "OrderConfirmed": "confirmed", "OrderCancelled": "cancelled"}


def _projector(kv, *, idempotent=True, ack_first=False, kinds=STATUS):
    async def put(key, change, seq):
        try:
            entry = await kv.get(key)
            old = json.loads(entry.value)
        except KeyNotFoundError:
            old = {}
        if idempotent and old.get("last_seq", 0) >= seq:
            return
        await kv.put(key, json.dumps({**change(old), "last_seq": seq}).encode())

    async def apply(msg):
        if ack_first:
            await msg.ack()
        ev, seq = json.loads(msg.data), msg.metadata.sequence.stream
        try:
            if ev["type"] == "OrderPlaced":
                await put("order." + ev["order_id"], lambda o: {"status": "placed", "total": ev["total"],
                                                               "customer": ev["customer"]}, seq)
                await put("customer." + ev["customer"], lambda c: {"orders": c.get("orders", 0) + 1}, seq)
            elif ev["type"] in kinds:
                await put("order." + ev["order_id"], lambda o: {**o, "status": kinds[ev["type"]]}, seq)
        except Exception:
            if not ack_first:
                await msg.nak()
            return False
        if not ack_first:
            await msg.ack()
        return True
    return apply


def test_9_3_correct_pull_consumer_in_a_task():
    async def start_projection(js, store):
        kv = await js.key_value(store["bucket"])
        apply = _projector(kv)
        sub = await js.pull_subscribe(store["subject"].format(order_id="*"), durable="read-model",
                                      config=ConsumerConfig(ack_wait=3))

        async def loop():  # one event at a time, so a failed one comes again before any later one
            while not js._nc.is_closed:
                try:
                    msgs = await sub.fetch(1, timeout=1)
                except Exception:
                    await asyncio.sleep(0.05)
                    continue
                for m in msgs:
                    await apply(m)
        asyncio.get_running_loop().create_task(loop())
    passes("9.3", start_projection)


def test_9_3_correct_push_with_revision_checks():
    async def start_projection(js, store):
        kv = await js.key_value(store["bucket"])
        await js.subscribe(store["subject"].replace("{order_id}", "*"), durable="proj", cb=_projector(kv),
                           manual_ack=True, config=ConsumerConfig(ack_wait=2, deliver_policy=DeliverPolicy.ALL,
                                                                  max_ack_pending=1))
    passes("9.3", start_projection)


def test_9_3_wrong_acks_before_processing():
    async def start_projection(js, store):
        kv = await js.key_value(store["bucket"])
        await js.subscribe(store["subject"].replace("{order_id}", "*"), durable="proj",
                           cb=_projector(kv, ack_first=True), manual_ack=True)
    fails("9.3", start_projection, says=("refused writes", "acknowledged anyway"))


def test_9_3_wrong_not_idempotent():
    async def start_projection(js, store):
        kv = await js.key_value(store["bucket"])
        await js.subscribe(store["subject"].replace("{order_id}", "*"), durable="proj",
                           cb=_projector(kv, idempotent=False), manual_ack=True, config=ConsumerConfig(ack_wait=2))
    fails("9.3", start_projection, says=("replay", "applied twice"))


def test_9_3_wrong_ignores_cancellations():
    async def start_projection(js, store):
        kv = await js.key_value(store["bucket"])
        kinds = {"OrderPlaced": "placed", "OrderConfirmed": "confirmed"}
        await js.subscribe(store["subject"].replace("{order_id}", "*"), durable="proj",
                           cb=_projector(kv, kinds=kinds), manual_ack=True)
    fails("9.3", start_projection, says=("does not match the stream", "OrderCancelled"))


def test_9_3_wrong_returns_without_a_consumer():
    async def start_projection(js, store):
        await js.key_value(store["bucket"])
    fails("9.3", start_projection, says=("no consumer reads the event stream",))


# ------------------------------------------------------------------------------------- 9.4
def _saga(nc, js, store, *, compensate=True, stop_on_no_stock=True, silent_is_ok=False):
    async def ask(step, body):
        try:
            reply = await nc.request(f"partner.{step}", json.dumps(body).encode(), timeout=1)
        except Exception:
            return silent_is_ok
        return json.loads(reply.data)["ok"]

    async def handle(msg):
        ev = json.loads(msg.data)
        if ev["type"] != "OrderPlaced":
            return await msg.ack()
        oid, body = ev["order_id"], {"order_id": ev["order_id"], "items": ev["items"], "amount": ev["total"]}
        reserved = await ask("stock.reserve", body)
        if not reserved and stop_on_no_stock:
            outcome = "OrderCancelled"
        elif await ask("pay.charge", body):
            outcome = "OrderConfirmed"
        else:
            if compensate:
                await ask("stock.release", body)
            outcome = "OrderCancelled"
        try:
            await js.publish(store["subject"].format(order_id=oid), json.dumps({"type": outcome, "order_id": oid}).encode(),
                             headers={"Nats-Msg-Id": f"outcome-{oid}"})
        except Exception:
            return await msg.nak(delay=1)
        await msg.ack()
    return handle


def test_9_4_correct_push_consumer():
    async def start_saga(nc, js, store):
        await js.subscribe(store["subject"].replace("{order_id}", "*"), durable="saga",
                           cb=_saga(nc, js, store), manual_ack=True)
    passes("9.4", start_saga)


def test_9_4_correct_pull_consumer_with_explicit_steps():
    async def start_saga(nc, js, store):
        handle = _saga(nc, js, store)
        sub = await js.pull_subscribe(store["subject"].format(order_id="*"), durable="orders-saga",
                                      config=ConsumerConfig(ack_wait=15))

        async def loop():
            while not nc.is_closed:
                try:
                    msgs = await sub.fetch(5, timeout=1)
                except Exception:
                    await asyncio.sleep(0.1)
                    continue
                await asyncio.gather(*(handle(m) for m in msgs))
        asyncio.get_running_loop().create_task(loop())
    passes("9.4", start_saga)


def test_9_4_wrong_no_compensation():
    async def start_saga(nc, js, store):
        await js.subscribe(store["subject"].replace("{order_id}", "*"), durable="saga",
                           cb=_saga(nc, js, store, compensate=False), manual_ack=True)
    fails("9.4", start_saga, says=("was not released", "compensates"))


def test_9_4_wrong_charges_without_stock():
    async def start_saga(nc, js, store):
        await js.subscribe(store["subject"].replace("{order_id}", "*"), durable="saga",
                           cb=_saga(nc, js, store, stop_on_no_stock=False), manual_ack=True)
    fails("9.4", start_saga, says=("charged it anyway",))


def test_9_4_wrong_silence_taken_for_payment():
    async def start_saga(nc, js, store):
        await js.subscribe(store["subject"].replace("{order_id}", "*"), durable="saga",
                           cb=_saga(nc, js, store, silent_is_ok=True), manual_ack=True)
    fails("9.4", start_saga, says=("never answered", "no answer"))


# ------------------------------------------------------------------------------------- 9.5
def test_9_5_correct_min_over_time():
    passes("9.5", lambda: "min_over_time(jetstream_consumer_num_pending[3m]) > 0")


def test_9_5_correct_min_by_consumer():
    passes("9.5", lambda: "min by (stream_name, consumer_name) (min_over_time(jetstream_consumer_num_pending[2m])) >= 1")


def test_9_5_wrong_fires_on_any_pending():
    fails("9.5", lambda: "jetstream_consumer_num_pending > 0", says=("at minute 2", "burst"))


def test_9_5_wrong_always_fires():
    fails("9.5", lambda: "jetstream_consumer_num_pending >= 0", says=("fired for", "keeping up"))


def test_9_5_wrong_loses_the_consumer_label():
    fails("9.5", lambda: "sum(min_over_time(jetstream_consumer_num_pending[3m])) > 0", says=("consumer_name label",))


def test_9_5_wrong_range_longer_than_the_outage():
    fails("9.5", lambda: "min_over_time(jetstream_consumer_num_pending[30m]) > 0", says=("did not fire",))


# ------------------------------------------------------------------------------------- 9.6
async def start_projection(js, store):
    kv = await js.key_value(store["bucket"])
    await js.subscribe(store["subject"].replace("{order_id}", "*"), durable="proj", cb=_projector(kv),
                       manual_ack=True, config=ConsumerConfig(ack_wait=3, max_ack_pending=1))


async def start_saga(nc, js, store):
    await js.subscribe(store["subject"].replace("{order_id}", "*"), durable="saga", cb=_saga(nc, js, store),
                       manual_ack=True, config=ConsumerConfig(ack_wait=10))


def lag_alert():
    return "min_over_time(jetstream_consumer_num_pending[3m]) > 0"


def _unsolved(*args):
    raise NotImplementedError("not yet")


SYSTEM = dict(security=security_a, create_store=create_store, order_service=order_service_split,
              start_projection=start_projection, start_saga=start_saga, lag_alert=lag_alert)


def _scorecard(**replace) -> str:
    parts = {**SYSTEM, **replace}
    try:
        verdict = run(natslab.check("9.6", *parts.values()))
    except natslab.ExerciseFailed as failed:
        return str(failed)
    return verdict.text()


def _line(text: str, name: str) -> str:
    return next(l for l in text.splitlines() if l.lstrip("✓✗ ").startswith(name + ":") or f" {name}:" in l[:60])


@pytest.mark.slow
def test_9_6_correct_another_design_passes_every_line():
    text = _scorecard()
    assert text.startswith("✓ Exercise 9.6"), text


@pytest.mark.slow
@pytest.mark.parametrize("part,line", [("start_saga", "saga"), ("lag_alert", "alert"),
                                       ("start_projection", "projection"),
                                       ("order_service", "services and the event store under load")])
def test_9_6_a_part_left_out_fails_its_own_line(part, line):
    text = _scorecard(**{part: _unsolved})
    assert text.startswith("✗ Exercise 9.6"), text
    assert _line(text, line).lstrip().startswith("✗"), text
    assert "security boundaries:" in text and _line(text, "security boundaries").lstrip().startswith("✓"), text


def test_9_6_security_left_out_fails_every_line():
    text = _scorecard(security=_unsolved)
    assert text.startswith("✗ Exercise 9.6") and "6 of 6 requirements failed" in text, text
    assert "not yet solved" in _line(text, "security boundaries"), text
