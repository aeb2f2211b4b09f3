"""Module 06 monitoring exercises (6.1-6.6), answered as learners would: correct answers written
differently from the solutions must pass, plausible wrong ones must fail with a verdict naming the
mistake.  Answers read the servers with plain urllib and nats-py as often as with natslab.monitor.
"""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import nats
import natslab

from .harness import fails, passes


def _get(url: str, timeout: float | None = 3.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


# ------------------------------------------------------------------------------------- 6.1
def test_6_1_correct_urllib_closed_connections():
    def find(monitor_url):
        conns = _get(f"{monitor_url}/connz?state=closed&limit=1024")["connections"]
        for c in conns:
            if c.get("reason", "").startswith("Slow Consumer"):
                return (c["name"], c["reason"])
    passes("6.1", find)


def test_6_1_correct_natslab_state_all_sorted():
    def find(monitor_url):
        conns = natslab.monitor(monitor_url, "connz", state="all", limit=1024)["connections"]
        slow = [c for c in conns if "slow consumer" in (c.get("reason") or "").lower()]
        return slow[-1]["name"], slow[-1]["reason"]
    passes("6.1", find)


def test_6_1_wrong_open_connections_only():
    def find(monitor_url):  # the "slowest" open connection: the one with the fewest messages out
        conns = natslab.monitor(monitor_url, "connz")["connections"]
        c = min(conns, key=lambda c: c["out_msgs"])
        return c.get("name") or "", "slow"
    fails("6.1", find, says=("wrong connection", "closed connections"))


def test_6_1_wrong_first_closed_connection():
    def find(monitor_url):
        c = natslab.monitor(monitor_url, "connz", state="closed")["connections"][0]
        return c["name"], c["reason"]
    fails("6.1", find, says=("wrong connection", "closed by itself"))


def test_6_1_wrong_returns_cid():
    def find(monitor_url):
        conns = natslab.monitor(monitor_url, "connz", state="closed")["connections"]
        c = next(c for c in conns if "Slow" in c.get("reason", ""))
        return c["cid"], c["reason"]
    fails("6.1", find, says=("must return text", "int"))


def test_6_1_wrong_reason_made_up():
    def find(monitor_url):
        conns = natslab.monitor(monitor_url, "connz", state="closed")["connections"]
        c = next(c for c in conns if "Slow" in c.get("reason", ""))
        return c["name"], "slow consumer"
    fails("6.1", find, says="not the one the server recorded")


def test_6_1_wrong_returns_a_dict():
    def find(monitor_url):
        conns = natslab.monitor(monitor_url, "connz", state="closed")["connections"]
        return next(c for c in conns if "Slow" in c.get("reason", ""))
    fails("6.1", find, says="not a tuple")


# ------------------------------------------------------------------------------------- 6.2
def _lag(pending_of=lambda c: c["num_pending"] + c["num_ack_pending"], cmp=lambda lag, t: lag > t,
         accounts=True):
    def lagging(monitor_url, threshold):
        jsz = natslab.monitor(monitor_url, "jsz", accounts=accounts, consumers=True)
        out = {}
        for acc in (jsz.get("account_details") or [])[: None if accounts else 1]:
            for s in acc.get("stream_detail") or []:
                for c in s.get("consumer_detail") or []:
                    lag = pending_of(c) if pending_of.__code__.co_argcount == 1 else pending_of(c, s)
                    if cmp(lag, threshold):
                        out[f"{s['name']}/{c['name']}"] = lag
        return out
    return lagging


def test_6_2_correct_natslab():
    passes("6.2", _lag())


def test_6_2_correct_urllib_comprehension():
    def lagging(monitor_url, threshold):
        jsz = _get(f"{monitor_url}/jsz?accounts=true&consumers=true")
        lags = {f"{s['name']}/{c['name']}": c["num_pending"] + c["num_ack_pending"]
                for a in jsz["account_details"] for s in a.get("stream_detail", [])
                for c in s.get("consumer_detail", [])}
        return {k: v for k, v in lags.items() if v > threshold}
    passes("6.2", lagging)


def test_6_2_wrong_pending_only():
    fails("6.2", _lag(pending_of=lambda c: c["num_pending"]), says=("acknowledged none", "num_ack_pending"))


def test_6_2_wrong_at_threshold_alerts():
    fails("6.2", _lag(cmp=lambda lag, t: lag >= t), says=("exactly", "greater than"))


def test_6_2_wrong_first_account_only():
    def lagging(monitor_url, threshold):
        jsz = natslab.monitor(monitor_url, "jsz", accounts=True, consumers=True)
        acc = jsz["account_details"][0]
        return {f"{s['name']}/{c['name']}": c["num_pending"] + c["num_ack_pending"]
                for s in acc.get("stream_detail") or [] for c in s.get("consumer_detail") or []
                if c["num_pending"] + c["num_ack_pending"] > threshold}
    fails("6.2", lagging, says=("two different accounts", "every entry"))


def test_6_2_wrong_lag_from_stream_count():
    fails("6.2", _lag(pending_of=lambda c, s: s["state"]["messages"] - c["delivered"]["stream_seq"] + c["num_ack_pending"]),
          says=("not what the server says", "one subject"))


def test_6_2_wrong_no_consumer_details():
    def lagging(monitor_url, threshold):
        jsz = natslab.monitor(monitor_url, "jsz", accounts=True)
        return {f"{s['name']}/{c['name']}": 0 for a in jsz.get("account_details") or []
                for s in a.get("stream_detail") or [] for c in s.get("consumer_detail") or []}
    fails("6.2", lagging, says=("no consumer was reported", "consumers=true"))


# ------------------------------------------------------------------------------------- 6.3
def test_6_3_correct_urllib_http_error():
    def probe(urls):
        ok = 0
        for u in urls:
            try:
                ok += _get(f"{u}/healthz", timeout=2).get("status") == "ok"
            except urllib.error.HTTPError:
                pass  # 503: answering, but not healthy
            except (urllib.error.URLError, OSError):
                pass  # refused or no answer
        if ok == len(urls):
            return "healthy"
        return "degraded" if 2 * ok > len(urls) else "down"
    passes("6.3", probe)


def test_6_3_correct_async_parallel():
    async def probe(urls):
        def one(u):
            try:
                return natslab.monitor(u, "healthz", timeout=1.5).get("status") == "ok"
            except Exception:
                return False
        oks = await asyncio.gather(*(asyncio.to_thread(one, u) for u in urls))
        n = sum(oks)
        return "healthy" if n == len(urls) else "degraded" if n >= len(urls) // 2 + 1 else "down"
    passes("6.3", probe)


def _probe(ok_count):
    def probe(urls):
        return ok_count(urls)
    return probe


def _status(u, timeout=2):
    try:
        return natslab.monitor(u, "healthz", timeout=timeout).get("status")
    except OSError:
        return None


def test_6_3_wrong_first_server_only():
    def probe(urls):
        return "healthy" if _status(urls[0]) == "ok" else "down"
    fails("6.3", probe, says=("hung", "ask every server"))


def test_6_3_wrong_no_timeout_hangs():
    def probe(urls):  # urlopen without a timeout waits forever for a hung server
        ok = 0
        for u in urls:
            try:
                ok += _get(f"{u}/healthz", timeout=None).get("status") == "ok"
            except OSError:
                pass
        return "healthy" if ok == len(urls) else "degraded" if ok > len(urls) // 2 else "down"
    fails("6.3", probe, says="did not finish")


def test_6_3_wrong_down_only_when_nobody_answers():
    def probe(urls):
        answers = [_status(u) for u in urls]
        if all(a == "ok" for a in answers):
            return "healthy"
        return "down" if all(a is None for a in answers) else "degraded"
    fails("6.3", probe, says=("down", "status in the body"))


def test_6_3_wrong_refused_raises():
    def probe(urls):
        ok = 0
        for u in urls:
            try:
                ok += _get(f"{u}/healthz", timeout=2).get("status") == "ok"
            except TimeoutError:
                pass
        return "healthy" if ok == len(urls) else "degraded" if ok > len(urls) // 2 else "down"
    fails("6.3", probe, says="raised")


# ------------------------------------------------------------------------------------- 6.4
def test_6_4_correct_callback_and_quiet_period():
    async def server_stats(nc):
        replies = []
        got = asyncio.Event()

        async def on(msg):
            replies.append(json.loads(msg.data))
            got.set()
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, cb=on)
        await nc.publish("$SYS.REQ.SERVER.PING.STATSZ", b"{}", reply=inbox)
        while True:
            got.clear()
            try:
                await asyncio.wait_for(got.wait(), 0.5)
            except asyncio.TimeoutError:
                break
        await sub.unsubscribe()
        return {r["server"]["name"]: r["statsz"]["connections"] for r in replies}
    passes("6.4", server_stats)


def test_6_4_correct_next_msg_with_overall_cap():
    async def server_stats(nc):
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.flush()
        await nc.publish("$SYS.REQ.SERVER.PING.STATSZ", b"", reply=inbox)
        out = {}
        loop = asyncio.get_running_loop()
        end = loop.time() + 3
        while loop.time() < end:
            try:
                m = await sub.next_msg(timeout=0.5)
            except nats.errors.TimeoutError:
                break
            d = json.loads(m.data)
            out[d["server"]["name"]] = d["statsz"]["connections"]
        await sub.unsubscribe()
        return out
    passes("6.4", server_stats)


def test_6_4_wrong_single_request():
    async def server_stats(nc):
        m = await nc.request("$SYS.REQ.SERVER.PING.STATSZ", b"", timeout=2)
        d = json.loads(m.data)
        return {d["server"]["name"]: d["statsz"]["connections"]}
    fails("6.4", server_stats, says=("of the 3 servers", "first reply"))


def _gather(field=lambda d: d["statsz"]["connections"], key=lambda d: d["server"]["name"], unsubscribe=True):
    async def server_stats(nc):
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish("$SYS.REQ.SERVER.PING.STATSZ", b"", reply=inbox)
        out = {}
        while True:
            try:
                m = await sub.next_msg(timeout=0.5)
            except nats.errors.TimeoutError:
                break
            d = json.loads(m.data)
            out[key(d)] = field(d)
        if unsubscribe:
            await sub.unsubscribe()
        return out
    return server_stats


def test_6_4_wrong_total_connections():
    fails("6.4", _gather(field=lambda d: d["statsz"]["total_connections"]), says="total_connections")


def test_6_4_wrong_keyed_by_server_id():
    fails("6.4", _gather(key=lambda d: d["server"]["id"]), says=("not server names", "name"))


def test_6_4_wrong_subscription_left_open():
    fails("6.4", _gather(unsubscribe=False), says=("subscription open", "unsubscribe"))


def test_6_4_wrong_closes_the_connection():
    async def server_stats(nc):
        out = await _gather()(nc)
        await nc.drain()
        return out
    fails("6.4", server_stats, says="closed or drained the connection")


def test_6_4_wrong_waits_for_exactly_three():
    async def server_stats(nc):
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish("$SYS.REQ.SERVER.PING.STATSZ", b"", reply=inbox)
        out = {}
        while len(out) < 3:
            d = json.loads((await sub.next_msg(timeout=None)).data)
            out[d["server"]["name"]] = d["statsz"]["connections"]
        await sub.unsubscribe()
        return out
    fails("6.4", server_stats, says=("did not finish", "down"))


# ------------------------------------------------------------------------------------- 6.5
def test_6_5_correct_increase():
    passes("6.5", lambda: "increase(gnatsd_varz_slow_consumers[5m]) > 0")


def test_6_5_correct_rate_by_server():
    passes("6.5", lambda: "sum by (server_id) (rate(gnatsd_varz_slow_consumers[5m])) > 0")


def test_6_5_wrong_counter_value():
    fails("6.5", lambda: "gnatsd_varz_slow_consumers > 0", says=("fired for ['n1']", "recent increase"))


def test_6_5_wrong_delta_sees_restart():
    fails("6.5", lambda: "delta(gnatsd_varz_slow_consumers[5m]) != 0", says=("n3", "counter reset"))


def test_6_5_wrong_rate_threshold_too_high():
    fails("6.5", lambda: "rate(gnatsd_varz_slow_consumers[5m]) > 1", says=("no server", "per second"))


def test_6_5_wrong_label_lost():
    fails("6.5", lambda: "max(increase(gnatsd_varz_slow_consumers[5m])) > 0", says="by (server_id)")


def test_6_5_wrong_not_promql():
    fails("6.5", lambda: "slow_consumers increased", says="not valid PromQL")


def test_6_5_wrong_bytes():
    fails("6.5", lambda: b"increase(gnatsd_varz_slow_consumers[5m]) > 0", says="bytes")


# ------------------------------------------------------------------------------------- 6.6
def _trace(only=True, first_only=False, count=lambda ev: ev["type"] == "eg" and ev.get("kind") == 0):
    async def subscribers_per_server(nc, subject):
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        headers = {"Nats-Trace-Dest": inbox}
        if only:
            headers["Nats-Trace-Only"] = "true"
        await nc.publish(subject, b"", headers=headers)
        out = {}
        while True:
            try:
                e = json.loads((await sub.next_msg(timeout=1)).data)
            except nats.errors.TimeoutError:
                break
            out[e["server"]["name"]] = sum(1 for ev in e["events"] if count(ev))
            if first_only:
                break
        await sub.unsubscribe()
        return out
    return subscribers_per_server


def test_6_6_correct_callback_and_event_gap():
    async def subscribers_per_server(nc, subject):
        events, arrived = [], asyncio.Event()

        async def on(msg):
            events.append(json.loads(msg.data))
            arrived.set()
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, cb=on)
        await nc.publish(subject, b"who gets this?", headers={"Nats-Trace-Dest": inbox, "Nats-Trace-Only": "true"})
        while True:
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), 0.8)
            except asyncio.TimeoutError:
                break
        await sub.unsubscribe()
        counts = {}
        for e in events:
            clients = [ev for ev in e["events"] if ev["type"] == "eg" and ev["kind"] == 0]
            counts[e["server"]["name"]] = counts.get(e["server"]["name"], 0) + len(clients)
        return counts
    passes("6.6", subscribers_per_server)


def test_6_6_correct_plain_loop_counting_sub_field():
    passes("6.6", _trace(count=lambda ev: ev["type"] == "eg" and "sub" in ev))


def test_6_6_wrong_delivers_the_message():
    fails("6.6", _trace(only=False), says=("was delivered", "Nats-Trace-Only"))


def test_6_6_wrong_first_event_only():
    fails("6.6", _trace(first_only=True), says=("of the 3 servers", "keep reading"))


def test_6_6_wrong_counts_route_egress():
    fails("6.6", _trace(count=lambda ev: ev["type"] == "eg"), says=("routes", "kind 0"))


def test_6_6_wrong_request_reply():
    async def subscribers_per_server(nc, subject):
        msg = await nc.request(subject, b"", headers={"Nats-Trace-Only": "true"}, timeout=2)
        return {"?": len(msg.data)}
    fails("6.6", subscribers_per_server, says="raised")
