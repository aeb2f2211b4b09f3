"""Module 07 exercises (patterns), answered as learners would: correct answers written differently
from the solutions must pass, plausible wrong ones must fail with a verdict naming the mistake.

Every answer gets plain nats-py objects (a ``nats.connect`` connection, its JetStream context or a
KV handle the checker made), so every answer here is plain nats-py code.
"""
from __future__ import annotations

import asyncio
import json
import time

import nats.errors
from nats import micro
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.micro.request import ServiceError
from nats.micro.service import EndpointConfig, ServiceConfig

from .harness import fails, passes


# ------------------------------------------------------------------------------------- 7.1
def _total(order):
    return sum(i["qty"] * i["price"] for i in order["items"])


def test_7_1_correct_config_objects_and_service_error():
    async def start_service(nc, name, subject):
        async def handler(req):
            try:
                order = json.loads(req.data.decode())
            except json.JSONDecodeError:
                raise ServiceError("400", "bad order")  # the endpoint turns it into a service error
            await req.respond(json.dumps({"id": order["id"], "status": "placed", "total": _total(order)}).encode())
        svc = await micro.add_service(nc, config=ServiceConfig(name=name, version="1.0.0"))
        await svc.add_endpoint(EndpointConfig(name="place-order", subject=subject, handler=handler))
        return svc
    passes("7.1", start_service)


def test_7_1_correct_keywords_and_metadata():
    async def start_service(nc, name, subject):
        svc = await micro.add_service(nc, name=name, version="1.0.0", metadata={"team": "orders"})

        async def place(req):
            try:
                body = json.loads(req.data)
            except ValueError:
                return await req.respond_error("400", "not json")
            total = 0
            for item in body["items"]:
                total += item["price"] * item["qty"]
            await req.respond(json.dumps({"total": total, "status": "placed", "id": body["id"]}).encode())
        await svc.add_endpoint(name="place", subject=subject, handler=place, metadata={"kind": "command"})
        return svc
    passes("7.1", start_service)


def test_7_1_wrong_plain_subscription():
    async def start_service(nc, name, subject):
        async def place(msg):
            order = json.loads(msg.data)
            await msg.respond(json.dumps({"id": order["id"], "status": "placed", "total": _total(order)}).encode())
        return await nc.subscribe(subject, cb=place)
    fails("7.1", start_service, says=("$SRV.PING", "cannot be discovered"))


def test_7_1_wrong_fixed_service_name():
    async def start_service(nc, name, subject):
        svc = await micro.add_service(nc, name="orders", version="1.0.0")
        await svc.add_endpoint(name="place", subject=subject, handler=lambda req: req.respond(b"{}"))
        return svc
    fails("7.1", start_service, says="cannot be discovered")


def test_7_1_wrong_endpoint_without_subject():
    async def start_service(nc, name, subject):
        async def place(req):
            order = json.loads(req.data)
            await req.respond(json.dumps({"id": order["id"], "status": "placed", "total": _total(order)}).encode())
        svc = await micro.add_service(nc, name=name, version="1.0.0")
        await svc.add_endpoint(name="place", handler=place)
        return svc
    fails("7.1", start_service, says=("no endpoint on the subject", "pass subject="))


def test_7_1_wrong_error_in_the_json_body():
    async def start_service(nc, name, subject):
        async def place(req):
            try:
                order = json.loads(req.data)
            except ValueError:
                return await req.respond(json.dumps({"error": "bad request", "code": 400}).encode())
            await req.respond(json.dumps({"id": order["id"], "status": "placed", "total": _total(order)}).encode())
        svc = await micro.add_service(nc, name=name, version="1.0.0")
        await svc.add_endpoint(name="place", subject=subject, handler=place)
        return svc
    fails("7.1", start_service, says=("service error", "Nats-Service-Error-Code"))


# ------------------------------------------------------------------------------------- 7.2
def test_7_2_correct_pull_consumer_on_the_subject():
    async def load(js, stream, subject):
        psub = await js.pull_subscribe(subject, stream=stream, config=ConsumerConfig(ack_policy=AckPolicy.NONE))
        pending = (await psub.consumer_info()).num_pending
        events, last = [], 0
        while pending:
            for msg in await psub.fetch(min(pending, 50), timeout=2):
                events.append(json.loads(msg.data))
                last = msg.metadata.sequence.stream
                pending = msg.metadata.num_pending
        await psub.unsubscribe()
        return events, last
    passes("7.2", load)


def test_7_2_correct_walk_the_whole_stream():
    async def load(js, stream, subject):
        info = await js.stream_info(stream)
        events, last = [], 0
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                m = await js.get_msg(stream, seq)
            except NotFoundError:  # deleted
                continue
            if m.subject == subject:
                events.append(json.loads(m.data.decode()))
                last = seq
        return (events, last)
    passes("7.2", load)


def test_7_2_wrong_every_message_of_the_stream():
    async def load(js, stream, subject):
        info = await js.stream_info(stream)
        events, last = [], 0
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                m = await js.get_msg(stream, seq)
            except NotFoundError:
                continue
            events.append(json.loads(m.data))
            last = seq
        return events, last
    fails("7.2", load, says="other subjects")


def test_7_2_wrong_one_fetch():
    async def load(js, stream, subject):
        psub = await js.pull_subscribe(subject, stream=stream, config=ConsumerConfig(ack_policy=AckPolicy.NONE))
        try:
            msgs = await psub.fetch(100, timeout=1)
        except asyncio.TimeoutError:
            return [], 0
        return [json.loads(m.data) for m in msgs], msgs[-1].metadata.sequence.stream
    fails("7.2", load, says="some events are missing")


def test_7_2_wrong_count_as_version():
    async def load(js, stream, subject):
        events, seq = [], 1
        while True:
            try:
                m = await js.get_msg(stream, seq=seq, subject=subject, next=True)
            except NotFoundError:
                return events, len(events)
            events.append(json.loads(m.data))
            seq = m.seq + 1
    fails("7.2", load, says=("stream sequence", "not a count"))


def test_7_2_wrong_waits_for_an_empty_order():
    async def load(js, stream, subject):
        sub = await js.subscribe(subject, stream=stream, ordered_consumer=True)
        events, last = [], 0
        while True:
            msg = await sub.next_msg(timeout=1)
            events.append(json.loads(msg.data))
            last = msg.metadata.sequence.stream
            if msg.metadata.num_pending == 0:
                break
        await sub.unsubscribe()
        return events, last
    fails("7.2", load, says=("TimeoutError", "never came"))


# ------------------------------------------------------------------------------------- 7.3
async def _load(js, stream, subject):
    events, last, seq = [], 0, 1
    while True:
        try:
            m = await js.get_msg(stream, seq=seq, subject=subject, next=True)
        except NotFoundError:
            return events, last
        events.append(json.loads(m.data))
        last = seq = m.seq
        seq += 1


def test_7_3_correct_while_loop_on_api_error():
    async def execute(js, stream, subject, command, decide):
        attempts = 0
        while True:
            attempts += 1
            events, version = await _load(js, stream, subject)
            event = await decide(events, command)
            try:
                ack = await js.publish(subject, json.dumps(event).encode(),
                                       headers={"Nats-Expected-Last-Subject-Sequence": f"{version}"})
            except APIError as err:
                if err.err_code == 10071 and attempts < 5:
                    continue
                raise
            return ack.seq
    passes("7.3", execute)


def test_7_3_correct_description_and_last_message():
    async def execute(js, stream, subject, command, decide):
        for _ in range(5):
            events, _ = await _load(js, stream, subject)
            try:
                last = (await js.get_last_msg(stream, subject)).seq
            except NotFoundError:
                last = 0
            if len(events) != len((await _load(js, stream, subject))[0]):
                continue
            new = await decide(events, command)
            try:
                return (await js.publish(subject, json.dumps(new).encode(),
                                         headers={"Nats-Expected-Last-Subject-Sequence": str(last)})).seq
            except BadRequestError as e:
                if "wrong last sequence" not in (e.description or ""):
                    raise
        raise RuntimeError("too many conflicts")
    passes("7.3", execute)


def test_7_3_wrong_no_expected_sequence():
    async def execute(js, stream, subject, command, decide):
        events, _ = await _load(js, stream, subject)
        event = await decide(events, command)
        return (await js.publish(subject, json.dumps(event).encode())).seq
    fails("7.3", execute, says=("stale", "Nats-Expected-Last-Subject-Sequence"))


def test_7_3_wrong_gives_up_on_conflict():
    async def execute(js, stream, subject, command, decide):
        events, last = await _load(js, stream, subject)
        event = await decide(events, command)
        try:
            ack = await js.publish(subject, json.dumps(event).encode(),
                                   headers={"Nats-Expected-Last-Subject-Sequence": str(last)})
        except BadRequestError:
            return 0
        return ack.seq
    fails("7.3", execute, says=("missing", "load again"))


def test_7_3_wrong_expects_the_stream_sequence():
    async def execute(js, stream, subject, command, decide):
        for _ in range(5):
            events, last = await _load(js, stream, subject)
            event = await decide(events, command)
            try:
                return (await js.publish(subject, json.dumps(event).encode(),
                                         headers={"Nats-Expected-Last-Sequence": str(last)})).seq
            except BadRequestError:
                continue
        raise BadRequestError(code=400, err_code=10071, description="wrong last sequence")
    fails("7.3", execute, says=("not of the whole stream",))


def test_7_3_wrong_retries_the_stale_decision():
    async def execute(js, stream, subject, command, decide):
        events, last = await _load(js, stream, subject)
        event = await decide(events, command)
        for _ in range(5):
            try:
                return (await js.publish(subject, json.dumps(event).encode(),
                                         headers={"Nats-Expected-Last-Subject-Sequence": str(last)})).seq
            except BadRequestError:
                await asyncio.sleep(0.05)
        raise RuntimeError("conflict")
    fails("7.3", execute, says="raised RuntimeError")


# ------------------------------------------------------------------------------------- 7.4
def _apply(state, oid, e):
    if e["type"] == "placed":
        state[oid] = {"status": "placed", "total": 0}
    elif e["type"] == "item_added":
        state[oid]["total"] += e["price"]
    else:
        state[oid]["status"] = e["type"]


async def _all(js, stream):
    info = await js.stream_info(stream)
    sub = await js.subscribe(info.config.subjects[0], stream=stream, ordered_consumer=True)
    out = []
    for _ in range(info.state.messages):
        out.append(await sub.next_msg(timeout=5))
    await sub.unsubscribe()
    return out


def test_7_4_correct_ordered_consumer_fold_then_put():
    async def project(js, stream, kv):
        state = {}
        for msg in await _all(js, stream):
            _apply(state, msg.subject.split(".")[-1], json.loads(msg.data))
        for oid, s in state.items():
            await kv.put(oid, json.dumps(s).encode())
    passes("7.4", project)


def test_7_4_correct_checkpoint_in_the_bucket():
    async def project(js, stream, kv):
        try:
            done = int((await kv.get("_checkpoint")).value)
        except KeyNotFoundError:
            done = 0
        seq = done + 1
        while True:
            try:
                m = await js.get_msg(stream, seq=seq, subject=">", next=True)
            except NotFoundError:
                break
            oid, e = m.subject.rsplit(".", 1)[1], json.loads(m.data)
            try:
                cur = {oid: json.loads((await kv.get(oid)).value)}
            except KeyNotFoundError:
                cur = {}
            _apply(cur, oid, e)
            await kv.put(oid, json.dumps(cur[oid]).encode())
            await kv.put("_checkpoint", str(m.seq).encode())
            seq = m.seq + 1
    passes("7.4", project)


def test_7_4_wrong_adds_to_what_the_bucket_holds():
    async def project(js, stream, kv):
        for msg in await _all(js, stream):
            oid, e = msg.subject.split(".")[-1], json.loads(msg.data)
            try:
                cur = {oid: json.loads((await kv.get(oid)).value)}
            except KeyNotFoundError:
                cur = {oid: {"status": "placed", "total": 0}}
            if e["type"] != "placed":
                _apply(cur, oid, e)
            await kv.put(oid, json.dumps(cur[oid]).encode())
    fails("7.4", project, says="not idempotent")


def test_7_4_wrong_checkpoint_in_the_program():
    seen = {}

    async def project(js, stream, kv):
        state = seen.setdefault(stream, {"seq": 0, "orders": {}})
        seq = state["seq"] + 1
        changed = set()
        while True:
            try:
                m = await js.get_msg(stream, seq=seq, subject=">", next=True)
            except NotFoundError:
                break
            oid = m.subject.split(".")[-1]
            _apply(state["orders"], oid, json.loads(m.data))
            changed.add(oid)
            state["seq"] = seq = m.seq
            seq += 1
        for oid in changed:
            await kv.put(oid, json.dumps(state["orders"][oid]).encode())
    fails("7.4", project, says=("empty bucket", "checkpoint"))


def test_7_4_wrong_ignores_paid_and_cancelled():
    async def project(js, stream, kv):
        state = {}
        for msg in await _all(js, stream):
            oid, e = msg.subject.split(".")[-1], json.loads(msg.data)
            if e["type"] in ("placed", "item_added"):
                _apply(state, oid, e)
        for oid, s in state.items():
            await kv.put(oid, json.dumps(s).encode())
    fails("7.4", project, says="differs from the fold")


def test_7_4_wrong_first_batch_only():
    async def project(js, stream, kv):
        info = await js.stream_info(stream)
        psub = await js.pull_subscribe(info.config.subjects[0], stream=stream,
                                       config=ConsumerConfig(ack_policy=AckPolicy.NONE))
        state = {}
        for msg in await psub.fetch(100, timeout=2):
            _apply(state, msg.subject.split(".")[-1], json.loads(msg.data))
        await psub.unsubscribe()
        for oid, s in state.items():
            await kv.put(oid, json.dumps(s).encode())
    fails("7.4", project, says="not the fold")


# ------------------------------------------------------------------------------------- 7.5
FORWARD = [("reserve", "inventory.reserve", "inventory.release"), ("charge", "payments.charge", "payments.refund"),
           ("ship", "shipping.create", None)]


async def _ok(nc, subject, body):
    try:
        return json.loads((await nc.request(subject, body, timeout=2)).data).get("ok") is True
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
        return None  # no answer: it may have happened


async def good_place_order(nc, kv, prefix, order_id, done=None):
    body = json.dumps({"order": order_id}).encode()
    undo_stack, done = [], list(done or [])
    for step, subject, undo in FORWARD:
        if step in done:
            if undo:
                undo_stack.append(undo)
            continue
        await kv.put(order_id, json.dumps({"done": done, "status": "running"}).encode())
        ok = await _ok(nc, f"{prefix}.{subject}", body)
        if ok is not True:
            if ok is None and undo:
                undo_stack.append(undo)
            while undo_stack:
                await nc.request(f"{prefix}.{undo_stack.pop()}", body, timeout=2)
            await kv.put(order_id, json.dumps({"done": done, "status": "compensated"}).encode())
            return "compensated"
        done.append(step)
        if undo:
            undo_stack.append(undo)
    await kv.put(order_id, json.dumps({"done": done, "status": "completed"}).encode())
    return "completed"


def test_7_5_correct_undo_stack():
    passes("7.5", good_place_order)


def test_7_5_correct_dict_of_steps():
    async def place_order(nc, kv, prefix, order_id):
        steps = {"reserve": ("inventory.reserve", "inventory.release"),
                 "charge": ("payments.charge", "payments.refund"), "ship": ("shipping.create", None)}
        payload = json.dumps({"order": order_id}).encode()
        done = []
        for name, (do, _undo) in steps.items():
            await kv.put(order_id, json.dumps({"status": "running", "done": list(done)}).encode())
            try:
                answer = await nc.request(f"{prefix}.{do}", payload, timeout=2)
                failed = not json.loads(answer.data)["ok"]
            except nats.errors.TimeoutError:
                failed = True
            if failed:
                for prev in reversed(done):
                    if steps[prev][1]:
                        await nc.request(f"{prefix}.{steps[prev][1]}", payload, timeout=2)
                await kv.put(order_id, json.dumps({"status": "compensated", "done": done}).encode())
                return "compensated"
            done.append(name)
        await kv.put(order_id, json.dumps({"status": "completed", "done": done}).encode())
        return "completed"
    passes("7.5", place_order)


def test_7_5_wrong_no_compensation():
    async def place_order(nc, kv, prefix, order_id):
        body = json.dumps({"order": order_id}).encode()
        done = []
        for step, subject, _ in FORWARD:
            await kv.put(order_id, json.dumps({"done": done, "status": "running"}).encode())
            if not await _ok(nc, f"{prefix}.{subject}", body):
                await kv.put(order_id, json.dumps({"done": done, "status": "compensated"}).encode())
                return "compensated"
            done.append(step)
        await kv.put(order_id, json.dumps({"done": done, "status": "completed"}).encode())
        return "completed"
    fails("7.5", place_order, says="not all undone")


def test_7_5_wrong_compensates_in_step_order():
    async def place_order(nc, kv, prefix, order_id):
        body = json.dumps({"order": order_id}).encode()
        done = []
        for step, subject, _ in FORWARD:
            await kv.put(order_id, json.dumps({"done": done, "status": "running"}).encode())
            if not await _ok(nc, f"{prefix}.{subject}", body):
                for s, _, undo in FORWARD:
                    if s in done and undo:
                        await nc.request(f"{prefix}.{undo}", body, timeout=2)
                await kv.put(order_id, json.dumps({"done": done, "status": "compensated"}).encode())
                return "compensated"
            done.append(step)
        await kv.put(order_id, json.dumps({"done": done, "status": "completed"}).encode())
        return "completed"
    fails("7.5", place_order, says="reverse order")


def test_7_5_wrong_state_only_at_the_end():
    async def place_order(nc, kv, prefix, order_id):
        body = json.dumps({"order": order_id}).encode()
        done = []
        for step, subject, _ in FORWARD:
            if not await _ok(nc, f"{prefix}.{subject}", body):
                for s in reversed(done):
                    undo = dict((a, c) for a, _, c in FORWARD)[s]
                    if undo:
                        await nc.request(f"{prefix}.{undo}", body, timeout=2)
                await kv.put(order_id, json.dumps({"done": done, "status": "compensated"}).encode())
                return "compensated"
            done.append(step)
        await kv.put(order_id, json.dumps({"done": done, "status": "completed"}).encode())
        return "completed"
    fails("7.5", place_order, says=("saga state in KV", "persist"))


def test_7_5_wrong_goes_on_after_a_decline():
    async def place_order(nc, kv, prefix, order_id):
        body = json.dumps({"order": order_id}).encode()
        done, ok_all = [], True
        for step, subject, _ in FORWARD:
            await kv.put(order_id, json.dumps({"done": done, "status": "running"}).encode())
            if await _ok(nc, f"{prefix}.{subject}", body):
                done.append(step)
            else:
                ok_all = False
        status = "completed" if ok_all else "compensated"
        await kv.put(order_id, json.dumps({"done": done, "status": status}).encode())
        return status
    fails("7.5", place_order, says="went on")


# ------------------------------------------------------------------------------------- 7.6
async def _state(kv, order_id):
    return json.loads((await kv.get(order_id)).value)


def test_7_6_correct_forward_recovery():
    async def recover(nc, kv, prefix, order_id):
        state = await _state(kv, order_id)
        if state["status"] in ("completed", "compensated"):
            return state["status"]
        return await good_place_order(nc, kv, prefix, order_id, done=state["done"])
    passes("7.6", good_place_order, recover)


def test_7_6_correct_backward_unless_shipping():
    async def recover(nc, kv, prefix, order_id):
        state = await _state(kv, order_id)
        if state["status"] != "running":
            return state["status"]
        names = [s for s, _, _ in FORWARD]
        in_flight = names[len(state["done"])]
        if in_flight == "ship":  # cannot be undone: finish it
            await nc.request(f"{prefix}.shipping.create", json.dumps({"order": order_id}).encode(), timeout=2)
            await kv.put(order_id, json.dumps({"done": names, "status": "completed"}).encode())
            return "completed"
        for s, _, undo in reversed(FORWARD[:len(state["done"]) + 1]):
            await nc.request(f"{prefix}.{undo}", json.dumps({"order": order_id}).encode(), timeout=2)
        await kv.put(order_id, json.dumps({"done": [], "status": "compensated"}).encode())
        return "compensated"
    passes("7.6", good_place_order, recover)


def test_7_6_wrong_undoes_only_the_done_steps():
    async def recover(nc, kv, prefix, order_id):
        state = await _state(kv, order_id)
        if state["status"] != "running":
            return state["status"]
        for s, _, undo in reversed(FORWARD):
            if s in state["done"] and undo:
                await nc.request(f"{prefix}.{undo}", json.dumps({"order": order_id}).encode(), timeout=2)
        await kv.put(order_id, json.dumps({"done": [], "status": "compensated"}).encode())
        return "compensated"
    fails("7.6", good_place_order, recover, says=("effects remain", "in flight"))


def test_7_6_wrong_only_says_compensated():
    async def recover(nc, kv, prefix, order_id):
        state = await _state(kv, order_id)
        if state["status"] != "running":
            return state["status"]
        await kv.put(order_id, json.dumps({"done": state["done"], "status": "compensated"}).encode())
        return "compensated"
    fails("7.6", good_place_order, recover, says="effects remain")


def test_7_6_wrong_state_kept_in_the_program():
    progress = {}

    async def place_order(nc, kv, prefix, order_id, done=None):
        progress[order_id] = []
        body = json.dumps({"order": order_id}).encode()
        for step, subject, undo in FORWARD:
            await kv.put(order_id, json.dumps({"done": progress[order_id], "status": "running"}).encode())
            await nc.request(f"{prefix}.{subject}", body, timeout=2)
            progress[order_id].append(step)
        await kv.put(order_id, json.dumps({"done": progress[order_id], "status": "completed"}).encode())
        return "completed"

    async def recover(nc, kv, prefix, order_id):
        done = progress[order_id]
        body = json.dumps({"order": order_id}).encode()
        for step, subject, _ in FORWARD:
            if step not in done:
                await nc.request(f"{prefix}.{subject}", body, timeout=2)
        await kv.put(order_id, json.dumps({"done": [s for s, _, _ in FORWARD], "status": "completed"}).encode())
        return "completed"
    fails("7.6", place_order, recover, says="raised KeyError")


def test_7_6_wrong_reruns_a_completed_saga():
    async def recover(nc, kv, prefix, order_id):
        state = await _state(kv, order_id)
        return await good_place_order(nc, kv, prefix, order_id,
                                      done=state["done"] if state["status"] == "running" else None)
    fails("7.6", good_place_order, recover, says="completed changed it")


# ------------------------------------------------------------------------------------- 7.7
def test_7_7_correct_act_and_refresh_every_fifth():
    async def lead(kv, name, act, ttl):
        while True:
            try:
                rev = await kv.create("leader", name.encode())
            except KeyWrongLastSequenceError:
                await asyncio.sleep(ttl / 5)
                continue
            while True:
                await act()
                await asyncio.sleep(ttl / 5)
                try:
                    rev = await kv.update("leader", name.encode(), last=rev)
                except KeyWrongLastSequenceError:
                    break
    passes("7.7", lead)


def test_7_7_correct_refresher_task_and_flag():
    async def lead(kv, name, act, ttl):
        while True:
            try:
                rev = await kv.create("leader", name.encode())
            except KeyWrongLastSequenceError:
                await asyncio.sleep(ttl / 4)
                continue
            lease = {"rev": rev, "until": time.monotonic() + ttl / 2, "held": True}

            async def refresh():
                while lease["held"]:
                    await asyncio.sleep(ttl / 4)
                    try:
                        lease["rev"] = await kv.update("leader", name.encode(), last=lease["rev"])
                        lease["until"] = time.monotonic() + ttl / 2
                    except KeyWrongLastSequenceError:
                        lease["held"] = False
            task = asyncio.create_task(refresh())
            try:
                while lease["held"] and time.monotonic() < lease["until"]:
                    await act()
                    await asyncio.sleep(ttl / 4)
            finally:
                lease["held"] = False
                task.cancel()
    passes("7.7", lead)


def test_7_7_wrong_put_instead_of_create():
    async def lead(kv, name, act, ttl):
        while True:
            await kv.put("leader", name.encode())
            await act()
            await asyncio.sleep(ttl / 4)
    fails("7.7", lead, says="two workers acted as leader")


def test_7_7_wrong_never_refreshes():
    async def lead(kv, name, act, ttl):
        while True:
            try:
                await kv.create("leader", name.encode())
            except KeyWrongLastSequenceError:
                await asyncio.sleep(ttl / 4)
                continue
            while True:
                await act()
                await asyncio.sleep(ttl / 4)
    fails("7.7", lead, says=("two workers acted as leader", "refresh"))


def test_7_7_wrong_tries_once():
    async def lead(kv, name, act, ttl):
        try:
            rev = await kv.create("leader", name.encode())
        except KeyWrongLastSequenceError:
            await asyncio.Event().wait()  # not the leader: wait forever
        while True:
            await act()
            await asyncio.sleep(ttl / 4)
            rev = await kv.update("leader", name.encode(), last=rev)
    fails("7.7", lead, says="no worker took over")


# ------------------------------------------------------------------------------------- 7.8
def test_7_8_correct_get_compare_put():
    async def fenced_write(kv, key, value, token):
        try:
            current = json.loads((await kv.get(key)).value)
            if current["token"] > token:
                return False
        except KeyNotFoundError:
            pass
        await kv.put(key, json.dumps({"token": token, "value": value}).encode())
        return True
    passes("7.8", fenced_write)


def test_7_8_correct_compare_and_set_loop():
    async def fenced_write(kv, key, value, token):
        new = json.dumps({"value": value, "token": int(token)}).encode()
        while True:
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                try:
                    await kv.create(key, new)
                    return True
                except KeyWrongLastSequenceError:
                    continue
            if int(json.loads(entry.value)["token"]) > token:
                return False
            try:
                await kv.update(key, new, last=entry.revision)
                return True
            except KeyWrongLastSequenceError:
                continue
    passes("7.8", fenced_write)


def test_7_8_wrong_no_fencing_check():
    async def fenced_write(kv, key, value, token):
        await kv.put(key, json.dumps({"token": token, "value": value}).encode())
        return True
    fails("7.8", fenced_write, says=("older than the stored token", "refuses"))


def test_7_8_wrong_tokens_as_text():
    async def fenced_write(kv, key, value, token):
        try:
            stored = json.loads((await kv.get(key)).value)
            if str(stored["token"]) > str(token):  # tokens compared as text
                return False
        except KeyNotFoundError:
            pass
        await kv.put(key, json.dumps({"token": token, "value": value}).encode())
        return True
    fails("7.8", fenced_write, says="as numbers")


def test_7_8_wrong_refuses_an_equal_token():
    async def fenced_write(kv, key, value, token):
        try:
            stored = json.loads((await kv.get(key)).value)
            if stored["token"] >= token:
                return False
        except KeyNotFoundError:
            pass
        await kv.put(key, json.dumps({"token": token, "value": value}).encode())
        return True
    fails("7.8", fenced_write, says="same token")


def test_7_8_wrong_says_yes_without_writing():
    async def fenced_write(kv, key, value, token):
        try:
            stored = json.loads((await kv.get(key)).value)
            return stored["token"] <= token
        except KeyNotFoundError:
            return True
    fails("7.8", fenced_write, says="did not store")


# ------------------------------------------------------------------------------------- 7.9
async def _events(js, stream):
    return [json.loads(m.data) for m in await _all(js, stream)]


def test_7_9_correct_ordered_consumer():
    async def aggregate(js, stream, width, lateness):
        totals, late, watermark = {}, 0, None
        for e in await _events(js, stream):
            start = (e["ts"] // width) * width
            if watermark is not None and start + width <= watermark:
                late += 1
            else:
                totals[start] = totals.get(start, 0) + e["amount"]
            watermark = max(watermark if watermark is not None else e["ts"] - lateness, e["ts"] - lateness)
        return totals, late
    passes("7.9", aggregate)


def test_7_9_correct_pull_batches():
    async def aggregate(js, stream, width, lateness):
        info = await js.stream_info(stream)
        psub = await js.pull_subscribe(info.config.subjects[0], stream=stream,
                                       config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL))
        left, totals, late, high = info.state.messages, {}, 0, float("-inf")
        while left:
            for m in await psub.fetch(min(left, 40), timeout=2):
                left -= 1
                e = json.loads(m.data)
                w = e["ts"] - e["ts"] % width
                if w + width <= high - lateness:
                    late += 1
                else:
                    totals[w] = totals.get(w, 0) + e["amount"]
                high = max(high, e["ts"])
        await psub.unsubscribe()
        return totals, late
    passes("7.9", aggregate)


def test_7_9_wrong_arrival_time():
    async def aggregate(js, stream, width, lateness):
        info = await js.stream_info(stream)
        sub = await js.subscribe(info.config.subjects[0], stream=stream, ordered_consumer=True)
        totals = {}
        for _ in range(info.state.messages):
            m = await sub.next_msg(timeout=5)
            ts = int(m.metadata.timestamp.timestamp() * 1000)
            start = ts - ts % width
            totals[start] = totals.get(start, 0) + json.loads(m.data)["amount"]
        await sub.unsubscribe()
        return totals, 0
    fails("7.9", aggregate, says="arrived")


def test_7_9_wrong_no_lateness():
    async def aggregate(js, stream, width, lateness):
        totals = {}
        for e in await _events(js, stream):
            start = e["ts"] - e["ts"] % width
            totals[start] = totals.get(start, 0) + e["amount"]
        return totals, 0
    fails("7.9", aggregate, says="late events were counted")


def test_7_9_wrong_rounded_window_start():
    async def aggregate(js, stream, width, lateness):
        totals, late, high = {}, 0, None
        for e in await _events(js, stream):
            start = round(e["ts"] / width) * width - width // 2
            if high is not None and start + width <= high - lateness:
                late += 1
            else:
                totals[start] = totals.get(start, 0) + e["amount"]
            high = e["ts"] if high is None else max(high, e["ts"])
        return totals, late
    fails("7.9", aggregate, says="ts - ts % width")


def test_7_9_wrong_drops_every_out_of_order_event():
    async def aggregate(js, stream, width, lateness):
        totals, late, high = {}, 0, None
        for e in await _events(js, stream):
            if high is not None and e["ts"] < high:
                late += 1
                continue
            start = e["ts"] - e["ts"] % width
            totals[start] = totals.get(start, 0) + e["amount"]
            high = e["ts"]
        return totals, late
    fails("7.9", aggregate, says="out-of-order event that is not late")


# ------------------------------------------------------------------------------------- 7.10
def test_7_10_correct_class():
    class Breaker:
        def __init__(self, nc, subject, threshold, cooldown):
            self.nc, self.subject, self.threshold, self.cooldown = nc, subject, threshold, cooldown
            self.failures, self.state, self.since = 0, "closed", 0.0

        async def call(self, data):
            if self.state == "open":
                if time.monotonic() - self.since < self.cooldown:
                    return None
                self.state = "half-open"
            try:
                msg = await self.nc.request(self.subject, data, timeout=0.5)
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                self.failures += 1
                if self.state == "half-open" or self.failures >= self.threshold:
                    self.state, self.since = "open", time.monotonic()
                return None
            self.state, self.failures = "closed", 0
            return msg.data

    def make_breaker(nc, subject, threshold, cooldown):
        return Breaker(nc, subject, threshold, cooldown).call
    passes("7.10", make_breaker)


def test_7_10_correct_nonlocal_closure_async_factory():
    async def make_breaker(nc, subject, threshold, cooldown):
        failures = 0
        open_until = None

        async def call(data):
            nonlocal failures, open_until
            probe = False
            if open_until is not None:
                if time.monotonic() < open_until:
                    return None
                probe = True
            try:
                reply = await nc.request(subject, data, timeout=0.5)
            except Exception:
                failures += 1
                if probe or failures >= threshold:
                    open_until = time.monotonic() + cooldown
                return None
            failures, open_until = 0, None
            return reply.data
        return call
    passes("7.10", make_breaker)


def test_7_10_wrong_no_breaker():
    def make_breaker(nc, subject, threshold, cooldown):
        async def call(data):
            try:
                return (await nc.request(subject, data, timeout=0.5)).data
            except nats.errors.TimeoutError:
                return None
        return call
    fails("7.10", make_breaker, says="kept reaching the broken responder")


def test_7_10_wrong_never_half_opens():
    def make_breaker(nc, subject, threshold, cooldown):
        state = {"failures": 0, "open": False}

        async def call(data):
            if state["open"]:
                return None
            try:
                reply = await nc.request(subject, data, timeout=0.5)
            except nats.errors.TimeoutError:
                state["failures"] += 1
                state["open"] = state["failures"] >= threshold
                return None
            state["failures"] = 0
            return reply.data
        return call
    fails("7.10", make_breaker, says="never half-opens")


def test_7_10_wrong_counts_all_failures():
    def make_breaker(nc, subject, threshold, cooldown):
        state = {"failures": 0, "opened": None}

        async def call(data):
            if state["opened"] is not None and time.monotonic() - state["opened"] < cooldown:
                return None
            try:
                reply = await nc.request(subject, data, timeout=0.5)
            except nats.errors.TimeoutError:
                state["failures"] += 1
                if state["failures"] >= threshold:
                    state["opened"] = time.monotonic()
                return None
            state["opened"] = None  # a success closes it, but the failures keep adding up
            return reply.data
        return call
    fails("7.10", make_breaker, says="not consecutive")


def test_7_10_wrong_failed_probe_closes_it():
    def make_breaker(nc, subject, threshold, cooldown):
        state = {"failures": 0, "opened": None}

        async def call(data):
            if state["opened"] is not None:
                if time.monotonic() - state["opened"] < cooldown:
                    return None
                state["opened"], state["failures"] = None, 0  # cooldown over: back to closed
            try:
                reply = await nc.request(subject, data, timeout=0.5)
            except nats.errors.TimeoutError:
                state["failures"] += 1
                if state["failures"] >= threshold:
                    state["opened"] = time.monotonic()
                return None
            state["failures"] = 0
            return reply.data
        return call
    fails("7.10", make_breaker, says="after a failed probe")


# ------------------------------------------------------------------------------------- 7.11
def test_7_11_correct_pull_subscribe_with_config():
    async def consume(js, stream, durable, handle, total):
        info = await js.stream_info(stream)
        psub = await js.pull_subscribe(info.config.subjects[0], durable=durable, stream=stream,
                                       config=ConsumerConfig(max_ack_pending=20, ack_policy=AckPolicy.EXPLICIT))
        ok = 0
        while ok < total:
            try:
                batch = await psub.fetch(10, timeout=2)
            except asyncio.TimeoutError:
                continue
            for msg in batch:
                try:
                    await handle(msg.data)
                except Exception:
                    await msg.nak()
                else:
                    await msg.ack()
                    ok += 1
        return ok
    passes("7.11", consume)


def test_7_11_correct_small_batches_bind():
    async def consume(js, stream, durable, handle, total):
        await js.add_consumer(stream, durable_name=durable, ack_policy="explicit", max_ack_pending=10)
        sub = await js.pull_subscribe_bind(durable, stream)
        handled = 0
        while handled != total:
            try:
                msgs = await sub.fetch(5, timeout=0.5)
            except asyncio.TimeoutError:
                msgs = []
            for m in msgs:
                try:
                    await handle(m.data)
                    await m.ack_sync()
                    handled += 1
                except RuntimeError:
                    await m.nak(delay=0.05)
        await sub.unsubscribe()
        return handled
    passes("7.11", consume)


def test_7_11_wrong_push_consumer():
    async def consume(js, stream, durable, handle, total):
        info = await js.stream_info(stream)
        done = asyncio.Event()
        count = 0

        async def cb(msg):
            nonlocal count
            try:
                await handle(msg.data)
            except Exception:
                await msg.nak()
                return
            await msg.ack()
            count += 1
            if count >= total:
                done.set()
        sub = await js.subscribe(info.config.subjects[0], durable=durable, stream=stream, cb=cb, manual_ack=True,
                                 config=ConsumerConfig(max_ack_pending=20))
        await done.wait()
        await sub.unsubscribe()
        return count
    fails("7.11", consume, says="push consumer")


def test_7_11_wrong_default_max_ack_pending():
    async def consume(js, stream, durable, handle, total):
        info = await js.stream_info(stream)
        psub = await js.pull_subscribe(info.config.subjects[0], durable=durable, stream=stream)
        ok = 0
        while ok < total:
            try:
                msgs = await psub.fetch(10, timeout=1)
            except asyncio.TimeoutError:
                continue
            for msg in msgs:
                try:
                    await handle(msg.data)
                except Exception:
                    await msg.nak()
                    continue
                await msg.ack()
                ok += 1
        return ok
    fails("7.11", consume, says="max_ack_pending")


def test_7_11_wrong_big_batches():
    async def consume(js, stream, durable, handle, total):
        await js.add_consumer(stream, ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT,
                                                     max_ack_pending=20))
        psub = await js.pull_subscribe_bind(durable=durable, stream=stream)
        ok = 0
        while ok < total:
            try:
                msgs = await psub.fetch(100, timeout=1)
            except asyncio.TimeoutError:
                continue
            for msg in msgs:
                try:
                    await handle(msg.data)
                except Exception:
                    await msg.nak()
                    continue
                await msg.ack()
                ok += 1
        return ok
    fails("7.11", consume, says="larger than 10")


def test_7_11_wrong_ack_before_handling():
    async def consume(js, stream, durable, handle, total):
        await js.add_consumer(stream, ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT,
                                                     max_ack_pending=20))
        psub = await js.pull_subscribe_bind(durable=durable, stream=stream)
        ok = 0
        while ok < total:
            try:
                msgs = await psub.fetch(10, timeout=1)
            except asyncio.TimeoutError:
                continue
            for msg in msgs:
                await msg.ack()
                try:
                    await handle(msg.data)
                    ok += 1
                except Exception:
                    pass
        return ok
    fails("7.11", consume, says="acknowledged anyway")
