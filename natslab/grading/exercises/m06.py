"""Module 06 (monitoring), exercises 6.1-6.6: each checker builds the situation on real servers
(a slow consumer among healthy ones, lagging consumers in two accounts, a cluster it breaks, a
cluster with a system account, counter series with a restart, subscribers to trace) and compares the learner's answer
with what the servers themselves report.  Exercises 6.7-6.9 (performance) live in m06_perf."""
from __future__ import annotations

import asyncio
import contextlib
import json
import importlib.util
import inspect
import random

import nats
from nats.js.api import AckPolicy, ConsumerConfig

from ...lessons import prometheus as prom
from ...lessons.fanout import RawClient
from ...runtime.topology import cluster
from ..checks import Mismatch, call_learner, exercise, expect
from . import client, learner_client, of_type, scenario_ready, scratch_server, subs_of, text_result, token


def _http_hints(extra: dict | None = None) -> dict:
    return {"URLError": "a server did not answer the HTTP request (refused or timed out): a server that "
                        "is down is an answer to handle, not an error to raise.",
            "HTTPError": "the server answered with an HTTP error status (/healthz answers 503 when it is "
                         "not healthy): catch urllib.error.HTTPError and read its body, or use "
                         "natslab.monitor(), which returns that body.",
            "ConnectionRefusedError": "a server did not accept the HTTP connection: it is down. Count it "
                                      "as not ok instead of raising.",
            **(extra or {})}


# ------------------------------------------------------------------------------------- 6.1
@exercise("6.1", "find the slow consumer",
          hints=("the server closes a client it cannot write to fast enough and keeps it in its list of "
                 "closed connections with the reason (lesson 06.1, /connz states; lesson 06.4).",
                 "read /connz?state=closed (natslab.monitor(url, \"connz\", state=\"closed\") or urllib) and "
                 "look at each connection's \"reason\" and \"name\".",
                 "c = next(c for c in natslab.monitor(url, \"connz\", state=\"closed\")[\"connections\"] "
                 "if \"Slow Consumer\" in (c.get(\"reason\") or \"\")); return c[\"name\"], c[\"reason\"]"))
async def slow_consumer(find_slow_consumer):
    tag = token(4)
    subject = f"feed{tag}.prices"
    names = {k: f"{k}-{token(4)}" for k in ("pricing", "audit", "ledger", "batch", "report")}
    config = {"max_pending": 256 * 1024, "max_payload": 64 * 1024, "write_deadline": "2s"}
    async with scratch_server(jetstream=False, config=config) as srv, contextlib.AsyncExitStack() as stack:
        # a decoy: a busy batch job that finished and closed on its own (reason "Client Closed")
        batch = await nats.connect(srv.url, name=names["batch"])
        await batch.subscribe(f"feed{tag}.>")
        await batch.flush()
        for _ in range(50):
            await batch.publish(f"feed{tag}.batch", b"b" * 2048)
        await batch.close()
        healthy = []
        for role in ("pricing", "audit", "ledger"):
            nc = await stack.enter_async_context(client(srv, name=names[role]))
            got = []

            async def take(msg, got=got):
                got.append(1)
            await nc.subscribe(subject, cb=take)
            await nc.flush()
            healthy.append((nc, got))
        slow = await asyncio.to_thread(RawClient, srv, subject, names["report"])
        stack.callback(slow.close)
        pub = await stack.enter_async_context(client(srv, name=f"publisher-{tag}"))

        def slow_closed():
            return any("Slow Consumer" in (c.get("reason") or "")
                       for c in srv.monitor("connz", state="closed", limit=1024)["connections"])
        sent = 0
        while not slow_closed() and sent < 40_000:  # offer data until the server gives up on the reader
            for _ in range(200):
                await pub.publish(subject, b"p" * 8192)
            await pub.flush()
            sent += 200
        expect(slow_closed(), "the check could not make its slow consumer (the server never closed it).",
               expected="a connection closed as a slow consumer", seen=f"{sent} messages sent",
               hint="run the check again; this is the check's fault, not yours.")
        closed = {c.get("name"): c for c in srv.monitor("connz", state="closed", limit=1024)["connections"]}
        truth = closed[names["report"]]

        got = await call_learner(find_slow_consumer, srv.monitor_url, what="find_slow_consumer(monitor_url)",
                                 hints=_http_hints())
        of_type(got, tuple, "find_slow_consumer", "a tuple (name, reason)")
        expect(len(got) == 2, "find_slow_consumer must return two things: the connection's name and the reason.",
               expected="(name, reason)", seen=repr(got)[:140])
        name, reason = text_result(got[0], "find_slow_consumer (the name)"), text_result(got[1], "find_slow_consumer (the reason)")
        open_names = {c.get("name") for c in srv.monitor("connz")["connections"]}
        if name != names["report"]:
            why = ("that connection is still open and healthy: a slow consumer is one the server had to cut "
                   "off, so look at closed connections (state=closed), not only at open ones."
                   if name in open_names else
                   "that connection closed by itself (its reason is Client Closed): pick the one whose reason "
                   "says the server closed it for being slow." if name == names["batch"] else
                   "that is not the name of any connection the server reports as a slow consumer.")
            raise Mismatch("find_slow_consumer named the wrong connection.", expected=names["report"],
                           seen=name, hint=why)
        expect(reason == truth.get("reason"), "the reason is not the one the server recorded for that connection.",
               expected=truth.get("reason"), seen=reason,
               hint="return the connection's \"reason\" field from /connz?state=closed as the server wrote it.")
        slow_count = srv.monitor("varz").get("slow_consumers")
        return (f"among {len(healthy)} healthy subscribers and a client that closed by itself, you named "
                f"{name}, which the server closed with \"{reason}\" (/varz slow_consumers: {slow_count}).")


# ------------------------------------------------------------------------------------- 6.2
@exercise("6.2", "alert on consumer lag",
          hints=("a consumer's lag is what it still owes: messages not delivered yet plus messages delivered "
                 "but not acknowledged; /jsz reports both per consumer, in every account (lesson 06.1 /jsz, "
                 "lesson 06.4).",
                 "read /jsz with accounts=true and consumers=true; walk account_details -> stream_detail -> "
                 "consumer_detail and add num_pending and num_ack_pending.",
                 "jsz = natslab.monitor(url, \"jsz\", accounts=True, consumers=True); return {f\"{s['name']}/{c['name']}\": "
                 "c['num_pending'] + c['num_ack_pending'] for a in jsz['account_details'] for s in a.get('stream_detail') "
                 "or [] for c in s.get('consumer_detail') or [] if c['num_pending'] + c['num_ack_pending'] > threshold}"))
async def consumer_lag(lagging_consumers):
    threshold = random.choice((20, 30, 40))
    tag = token(4).upper()
    config = {"accounts": {"SHOP": {"jetstream": "enabled", "users": [{"user": "shop", "password": "shop"}]},
                           "EDGE": {"jetstream": "enabled", "users": [{"user": "edge", "password": "edge"}]}}}
    async with scratch_server(jetstream=True, config=config) as srv, \
            client(srv, user="shop", password="shop") as shop, client(srv, user="edge", password="edge") as edge:
        sjs, ejs = shop.jetstream(), edge.jetstream()
        orders, sensors = f"ORDERS_{tag}", f"SENSORS_{tag}"
        await sjs.add_stream(name=orders, subjects=[f"o{tag}.>"])
        await ejs.add_stream(name=sensors, subjects=[f"s{tag}.>"])
        n = threshold + 10
        for i in range(n):
            await sjs.publish(f"o{tag}.new", b"order %d" % i)
        for i in range(2 * n):
            await ejs.publish(f"s{tag}.{'temp' if i % 2 else 'hum'}", b"reading %d" % i)
        slow = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=300, max_ack_pending=10_000)
        want: dict[str, int] = {}

        async def consumer(js, stream, name, fetch, ack, filt=None):
            sub = await js.pull_subscribe(filt or ">", durable=name, stream=stream, config=slow)
            left = fetch
            while left > 0:
                msgs = await sub.fetch(min(left, 50), timeout=5)
                for m in msgs:
                    if ack:
                        await m.ack()
                left -= len(msgs)
            await sub.unsubscribe()
        # SHOP: one caught up, one never read, one that read everything and acknowledged nothing
        await consumer(sjs, orders, "billing", n, True)
        await consumer(sjs, orders, "fraud", 0, False)
        await consumer(sjs, orders, "mailer", n - 2, False)
        want[f"{orders}/fraud"] = n
        want[f"{orders}/mailer"] = n
        # EDGE: exactly at the threshold (no alert), and a filtered consumer behind by n on its subject
        await consumer(ejs, sensors, "archiver", 2 * n - threshold, True)
        await consumer(ejs, sensors, "temps", 0, False, filt=f"s{tag}.temp")
        want[f"{sensors}/temps"] = n

        def settled():
            seen = {}
            for acc in srv.monitor("jsz", accounts=True, consumers=True).get("account_details") or []:
                for s in acc.get("stream_detail") or []:
                    for c in s.get("consumer_detail") or []:
                        seen[f"{s['name']}/{c['name']}"] = c["num_pending"] + c["num_ack_pending"]
            return len(seen) == 5 and seen.get(f"{orders}/billing") == 0 and seen
        truth = await scenario_ready(settled, "the consumers' state in /jsz", timeout=15)

        got = await call_learner(lagging_consumers, srv.monitor_url, threshold,
                                 what=f"lagging_consumers(monitor_url, {threshold})", hints=_http_hints())
        of_type(got, dict, "lagging_consumers", "a dict {\"STREAM/consumer\": lag}")
        at = f"{sensors}/archiver"
        expect(at not in got, f"{at} has a lag of exactly {threshold}, which is not past the threshold.",
               expected=f"no alert for {at}", seen=f"{at}: {got.get(at)!r}",
               hint="alert when the lag is greater than the threshold (>), not when it equals it.")
        expect(f"{orders}/billing" not in got, "a consumer that is caught up was reported.",
               expected=f"no alert for {orders}/billing (lag 0)", seen=f"{orders}/billing: {got.get(f'{orders}/billing')!r}",
               hint="report only consumers whose lag is past the threshold.")
        expect(bool(got), "no consumer was reported at all.", expected=want, seen=got,
               hint="/jsz lists consumers only when asked: consumers=true (and every account with accounts=true).")
        missing = [k for k in want if k not in got]
        for stream in (orders, sensors):
            if not [k for k in got if k.startswith(stream + "/")]:
                raise Mismatch(f"no consumer of the stream {stream} was reported; the two streams belong to "
                               "two different accounts.", expected={k: v for k, v in want.items() if k.startswith(stream)},
                               seen=sorted(got),
                               hint="/jsz shows every account only with accounts=true; read every entry of "
                                    "account_details, not only the first.")
        if f"{orders}/mailer" in missing:
            raise Mismatch(f"{orders}/mailer was not reported: it was handed {n - 2} messages and acknowledged none.",
                           expected=f"{orders}/mailer: {n}", seen=f"{orders}/mailer: absent",
                           hint="messages delivered but not acknowledged are still owed: add num_ack_pending to num_pending.")
        expect(not missing, "some consumers past the threshold were not reported.",
               expected={k: want[k] for k in want}, seen=got,
               hint="read /jsz with consumers=true (and accounts=true) and report every consumer past the threshold.")
        for key, lag in want.items():
            value = got[key]
            expect(isinstance(value, int) and not isinstance(value, bool) and value == truth[key],
                   f"the lag reported for {key} is not what the server says.", expected=truth[key], seen=repr(value),
                   hint=("that consumer reads one subject of its stream: its num_pending counts only that subject; "
                         "don't compute the lag from the stream's message count." if key.endswith("/temps") else
                         "lag = num_pending + num_ack_pending, as integers."))
        extra = [k for k in got if k not in want]
        expect(not extra, "consumers that are not past the threshold were reported.", expected=sorted(want),
               seen=sorted(got), hint="report only consumers whose lag is greater than the threshold.")
        return (f"with threshold {threshold}, across two accounts, you reported exactly the 3 lagging consumers "
                f"with the lag /jsz gives (undelivered + unacknowledged), not the one at the threshold.")


# ------------------------------------------------------------------------------------- 6.3
@exercise("6.3", "a health probe for a cluster",
          hints=("/healthz answers ok only when the server is ready (with JetStream: current with its meta "
                 "leader); a hung server does not answer at all, a dead one refuses (lesson 06.1, /healthz).",
                 "ask each URL's /healthz with a timeout (urllib.request.urlopen(url, timeout=2), or "
                 "natslab.monitor(url, \"healthz\", timeout=2)), count the status == \"ok\" answers, treat errors "
                 "and timeouts as not ok.",
                 "ok = sum(status(u) == \"ok\" for u in urls); return \"healthy\" if ok == len(urls) else "
                 "\"degraded\" if ok > len(urls) // 2 else \"down\""))
async def health_probe(probe):
    topo = await asyncio.to_thread(cluster, 3, name=f"h{token(3)}")
    try:
        servers = topo.servers
        urls = [s.monitor_url for s in servers]

        def status(s):
            try:
                return s.monitor("healthz", timeout=2).get("status")
            except OSError:
                return None

        async def ask(stage: str, want: str, hint: str, ok: list, not_ok: tuple = ()):
            """Call the probe while the cluster is steady in the stated condition (JetStream elects a
            new meta leader after a failure; until then the survivors say they are not ok)."""
            def steady():
                return all(status(s) == "ok" for s in ok) and all(status(s) != "ok" for s in not_ok)
            # a plain function runs in a thread, so one that blocks on a hung server cannot block the check
            fn = probe if not callable(probe) or inspect.iscoroutinefunction(probe) else \
                (lambda u: asyncio.to_thread(probe, u))
            for _attempt in range(3):
                await scenario_ready(steady, f"the cluster settling with {stage}", timeout=60)
                got = await call_learner(fn, list(urls), what=f"probe(urls) with {stage}", timeout=15,
                                         hints=_http_hints({"TimeoutError": "a server that hangs makes a request "
                                                            "without a timeout wait forever; give each request a "
                                                            "timeout and count a timeout as not ok."}))
                if steady():  # nothing changed while the probe ran: its answer can be judged
                    break
            got = text_result(got, "probe")
            expect(got == want, f"with {stage}, probe said {got!r}.", expected=want, seen=got, hint=hint)

        n1, n2, n3 = servers
        await ask("all three servers healthy", "healthy", "every server answered /healthz with status ok.",
                  ok=[n1, n2, n3])
        await asyncio.to_thread(n3.pause)
        try:
            await ask(f"{n3.name} hung (paused: it accepts the connection and never answers)", "degraded",
                      "ask every server, not only the first, and count one that does not answer within a "
                      "couple of seconds as not ok.", ok=[n1, n2])
        finally:
            await asyncio.to_thread(n3.resume)
        await asyncio.to_thread(n2.kill)
        await ask(f"{n2.name} dead (connections refused)", "degraded",
                  "a refused connection is an answer (not ok); 2 of 3 ok is degraded, not down.", ok=[n1, n3])
        await asyncio.to_thread(n3.kill)
        await scenario_ready(lambda: status(n1) not in ("ok", None), "the last server reporting JetStream unavailable",
                    timeout=40)
        last = n1.monitor("healthz", timeout=2)
        await ask(f"two servers dead and the last answering {last.get('status')!r} ({last.get('error')})", "down",
                  "a server that answers is not necessarily healthy: read the status in the body; "
                  "with fewer than a majority ok the cluster is down.", ok=[], not_ok=(n1,))
        return ("your probe told healthy, degraded (a hung server, then a dead one) and down (a lone "
                "survivor reporting JetStream unavailable) apart, as the servers' /healthz said.")
    finally:
        await asyncio.to_thread(topo.close)


# ------------------------------------------------------------------------------------- 6.4
SYS_ACCOUNTS = {"accounts": {"SYS": {"users": [{"user": "sys", "password": "sys"}]},
                             "APP": {"jetstream": "enabled", "users": [{"user": "app", "password": "app"}]}},
                "system_account": "SYS"}


async def _statsz_now(nc, quiet: float = 0.5) -> dict:
    """Every server's own statsz connection count, asked now (a closing connection can still count there
    for a moment after /varz has dropped it)."""
    counts, inbox = {}, nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish("$SYS.REQ.SERVER.PING.STATSZ", b"", reply=inbox)
        while True:
            try:
                msg = await sub.next_msg(timeout=quiet)
            except asyncio.TimeoutError:
                return counts
            data = json.loads(msg.data)
            counts[data["server"]["name"]] = data["statsz"]["connections"]
    finally:
        await sub.unsubscribe()


@exercise("6.4", "every server's statistics in one request",
          hints=("one request on $SYS.REQ.SERVER.PING.STATSZ, made from the system account, is answered by "
                 "every server of the cluster: gather replies until none comes for a moment (lesson 06.2).",
                 "subscribe to an inbox (nc.new_inbox()), publish to $SYS.REQ.SERVER.PING.STATSZ with "
                 "reply=inbox, collect with sub.next_msg(timeout=0.5) until it times out, then unsubscribe.",
                 "for each reply r = json.loads(msg.data): stats[r[\"server\"][\"name\"]] = "
                 "r[\"statsz\"][\"connections\"]"))
async def statsz_all(server_stats):
    topo = await asyncio.to_thread(cluster, 3, name=f"s{token(3)}", config=SYS_ACCOUNTS)
    try:
        servers = topo.servers
        async with contextlib.AsyncExitStack() as stack:
            extra = random.sample([1, 2, 3], 3)
            for srv, count in zip(servers, extra):
                for i in range(count + 2):
                    nc = await stack.enter_async_context(client(srv, user="app", password="app", name=f"app-{i}"))
                    if i >= count:  # connections that come and go: total_connections is not connections
                        await nc.close()
            learner = await stack.enter_async_context(learner_client(servers[0], user="sys", password="sys"))
            base_subs = await asyncio.to_thread(subs_of, servers[0], learner)

            async def round_(alive, stage):
                before = {s.name: s.monitor("varz")["connections"] for s in alive}
                got = await call_learner(server_stats, learner, what=f"server_stats(nc) with {stage}", timeout=15)
                after = {s.name: s.monitor("varz")["connections"] for s in alive}
                expect(learner.is_connected, "server_stats closed or drained the connection it was handed.",
                       expected="nc still open afterwards", seen="closed" if learner.is_closed else "not connected",
                       hint="the connection belongs to the caller (a fleet tool polls through it again and "
                            "again): unsubscribe what you subscribed, but leave nc open.")
                of_type(got, dict, "server_stats", "a dict {server name: connections}")
                unknown = [k for k in got if k not in before]
                expect(not unknown, "server_stats returned keys that are not server names.",
                       expected=sorted(before), seen=sorted(map(str, got))[:5],
                       hint="key each reply by reply[\"server\"][\"name\"] (not the server id).")
                if len(got) < len(alive):
                    raise Mismatch(f"server_stats returned {len(got)} of the {len(alive)} servers ({stage}).",
                                   expected=sorted(before), seen=sorted(got),
                                   hint="nc.request() returns the first reply only; every server answers the "
                                        "PING, so subscribe to an inbox and gather replies until none comes for "
                                        "a moment.")
                for name in before:
                    v = got[name]
                    if v not in (before[name], after[name]) and v != (await _statsz_now(learner)).get(name):
                        totals = servers_by_name[name].monitor("varz").get("total_connections")
                        raise Mismatch(f"the connection count for {name} is not the server's.",
                                       expected=before[name], seen=repr(v),
                                       hint=("that is total_connections (every connection since the server "
                                             "started); the current count is statsz.connections."
                                             if v == totals else "use reply[\"statsz\"][\"connections\"]."))
                left = await asyncio.to_thread(subs_of, servers[0], learner)
                expect(left <= base_subs, "server_stats left its subscription open.",
                       expected=f"{base_subs} subscriptions on the connection afterwards", seen=left,
                       hint="unsubscribe from the inbox when done (await sub.unsubscribe()).")
                return got
            servers_by_name = {s.name: s for s in servers}
            first = await round_(servers, "all 3 servers up")
            await asyncio.to_thread(servers[2].kill)  # a dead server cannot answer the PING
            second = await round_(servers[:2], f"{servers[2].name} down")
            return (f"one request gathered {len(first)} servers' statistics ({first}), and {len(second)} "
                    f"after one died; the counts matched each server's /varz and the inbox was unsubscribed.")
    finally:
        await asyncio.to_thread(topo.close)


# ------------------------------------------------------------------------------------- 6.5
SLOW_SERIES = {  # one sample a minute for 30 minutes
    'gnatsd_varz_slow_consumers{server_id="n1"}': "0x2 2x27",    # an old incident: 2 slow consumers at 3 min
    'gnatsd_varz_slow_consumers{server_id="n2"}': "0x13 1 3x16",  # a new one: up at 14 and 15 min
    'gnatsd_varz_slow_consumers{server_id="n3"}': "5x9 0x20",     # a restart at 10 min: counter back to 0
}
SLOW_CASES = [("12m", []), ("16m", [{"server_id": "n2"}]), ("25m", [])]
_CASE_WORDS = {
    "12m": "at 12 min (n3 restarted at 10 min, its counter dropped from 5 to 0; n1's incident was at 3 min)",
    "16m": "at 16 min (n2's counter went up at 14 and 15 min)",
    "25m": "at 25 min (nothing has gone up since 15 min)",
}


@exercise("6.5", "an alert rule for slow consumers",
          hints=("gnatsd_varz_slow_consumers is a counter: it only goes up, except when its server restarts "
                 "and it starts again from 0. Alert on how much it went up recently, not on its value "
                 "(lesson 06.3, alert rules).",
                 "increase(counter[5m]) is the growth over the last 5 minutes, and it treats a drop to 0 as a "
                 "restart, not as a change; compare it with > 0 and keep the server_id label.",
                 "return 'increase(gnatsd_varz_slow_consumers[5m]) > 0'"))
async def alert_rule(slow_consumer_alert):
    expr = text_result(await call_learner(slow_consumer_alert, what="slow_consumer_alert()"), "slow_consumer_alert")
    expect(expr.strip() != "", "the expression is empty.", expected="a PromQL expression", seen=repr(expr))
    if prom.binary("promtool"):
        engine = "promtool test rules"
        try:
            results = await asyncio.to_thread(prom.test_rules, expr, SLOW_SERIES, SLOW_CASES)
        except ValueError as exc:
            raise Mismatch("promtool rejected the expression: it is not valid PromQL.", expected="valid PromQL",
                           seen=str(exc)[:200], hint="test it in the lesson's Prometheus (prom.query(expr)) first.")
        outcome = [(r["at"], want, r["ok"], r["got"]) for r, (_, want) in zip(results, SLOW_CASES)]
    else:
        engine = "natslab's evaluator (Prometheus is not installed)"
        outcome = []
        for at, want in SLOW_CASES:
            try:
                fired = prom.alerts_at(expr, SLOW_SERIES, at)
            except ValueError as exc:
                raise Mismatch("natslab's evaluator could not evaluate the expression.", expected="a simple rule",
                               seen=str(exc)[:200], hint=f"install Prometheus to check any PromQL: {prom.INSTALL}")
            got = [{"alertname": "NatslabAlert", **f} for f in fired]
            ok = sorted(map(sorted, (l.items() for l in fired))) == sorted(map(sorted, (l.items() for l in want)))
            outcome.append((at, want, ok, None if ok else got))
    for at, want, ok, got in outcome:
        if ok:
            continue
        fired = sorted((g or {}).get("server_id", "(no server_id label)") for g in got or [])
        wanted = sorted(w["server_id"] for w in want)
        if want and fired == ["(no server_id label)"]:
            hint = "an aggregation without `by (server_id)` loses the label that says which server to look at."
        elif "n1" in fired:
            hint = ("n1's counter has not moved since minute 3: comparing the counter's value with a threshold "
                    "fires forever after one old incident; alert on its recent increase.")
        elif "n3" in fired:
            hint = ("n3 restarted and its counter went back to 0: delta(), changes() or subtracting an offset "
                    "see that as a change; increase() treats it as a counter reset.")
        elif want and not fired:
            hint = ("n2's counter went up by 3 in the last 5 minutes: the rule must fire. Is the range too short, "
                    "or the threshold too high (rate() is per second)?")
        else:
            hint = "fire only for a server whose counter increased in the last 5 minutes."
        raise Mismatch(f"{_CASE_WORDS[at]} the rule fired for {fired or 'no server'}.",
                       expected=f"alerts for {wanted or 'no server'}", seen=f"alerts for {fired or 'no server'}",
                       hint=hint)
    return (f"evaluated with {engine} at 12, 16 and 25 min over three servers' counters (an old incident, "
            f"a new one, a restart): the rule fired only for n2 at 16 min.")




# ------------------------------------------------------------------------------------- 6.6
@exercise("6.6", "trace a message without delivering it",
          hints=("a message published with the header Nats-Trace-Dest makes every server on its path report "
                 "trace events to that subject; Nats-Trace-Only: true stops it being delivered (lesson 06.5).",
                 "subscribe to an inbox, publish with headers={\"Nats-Trace-Dest\": inbox, \"Nats-Trace-Only\": "
                 "\"true\"}, gather events with next_msg(timeout=...) until none comes, and count the events of "
                 "type \"eg\" whose kind is 0 (a client) per event[\"server\"][\"name\"].",
                 "counts[e[\"server\"][\"name\"]] = sum(1 for ev in e[\"events\"] if ev[\"type\"] == \"eg\" and "
                 "ev.get(\"kind\") == 0)"))
async def trace_message(subscribers_per_server):
    tag = token(4)
    subject = f"orders{tag}.new"
    topo = await asyncio.to_thread(cluster, 3, name=f"t{token(3)}", jetstream=False)
    try:
        servers = topo.servers
        plan = dict(zip((s.name for s in servers), random.sample([1, 2, 3], 3)))
        delivered: list[str] = []
        receivers = []
        async with contextlib.AsyncExitStack() as stack:
            for srv in servers:
                for i in range(plan[srv.name]):
                    nc = await stack.enter_async_context(client(srv, name=f"{srv.name}-sub{i}"))
                    receivers.append(nc)

                    async def got(msg, where=srv.name):
                        delivered.append(where)
                    await nc.subscribe(subject, cb=got)
                # a subscriber on another subject of the same server: not on the message's path
                other = await stack.enter_async_context(client(srv, name=f"{srv.name}-other"))
                await other.subscribe(f"orders{tag}.cancelled", cb=_ignore)
            # interest travels once per server over the routes: wait until each server knows both peers'
            await scenario_ready(lambda: all(_route_subs(s, subject) >= len(servers) - 1 for s in servers),
                        "every server knowing the other servers' subscribers", timeout=20)
            learner = await stack.enter_async_context(learner_client(servers[0]))
            got = await call_learner(subscribers_per_server, learner, subject,
                                     what=f"subscribers_per_server(nc, {subject!r})", timeout=15)
            # a round trip to each subscriber: anything its server delivered before its trace event is in
            await asyncio.gather(*(nc.flush(timeout=5) for nc in receivers))
            expect(not delivered, "the traced message was delivered to the subscribers.",
                   expected="no delivery (a trace-only probe)", seen=f"{len(delivered)} deliveries",
                   hint="add the header Nats-Trace-Only: \"true\": the servers then trace the message without "
                        "delivering it, which is what makes tracing safe in production.")
            of_type(got, dict, "subscribers_per_server", "a dict {server name: subscribers}")
            got = {k: v for k, v in got.items() if v}
            if got and len(got) < len(plan) and set(got) <= set(plan):
                raise Mismatch(f"only {sorted(got)} of the 3 servers on the path were counted.",
                               expected=plan, seen=got,
                               hint="every server on the path sends its own event: keep reading the trace "
                                    "subject until nothing comes for a moment, not just the first event.")
            for name, want in plan.items():
                have = got.get(name)
                if have != want:
                    routes = len(servers) - 1 if name == servers[0].name else 0
                    hint = ("that count includes the copies sent over routes to the other servers: count only "
                            "egress events of kind 0 (a client)." if have == want + routes and routes else
                            "count the \"eg\" events of kind 0 in each server's trace event.")
                    raise Mismatch(f"the count for {name} is not the number of its subscribers on {subject}.",
                                   expected=plan, seen=got, hint=hint)
            return (f"a trace-only probe from {servers[0].name} found {plan} subscribers per server, as the "
                    f"checker placed them, and delivered nothing.")
    finally:
        await asyncio.to_thread(topo.close)


async def _ignore(msg) -> None:
    pass


def _route_subs(srv, subject: str) -> int:
    """How many remote subscriptions to ``subject`` ``srv`` knows of, through its routes (/routez)."""
    count = 0
    for route in srv.monitor("routez", subs=True).get("routes") or []:
        count += sum(1 for s in route.get("subscriptions_list") or [] if s == subject)
    return count


if importlib.util.find_spec(f"{__package__}.m06_perf") is not None:  # exercises 6.7-6.9, another file
    from . import m06_perf  # noqa: F401,E402
