"""Module 06 (performance), exercises 6.7-6.9 (imported by m06).

6.7: the checker answers the learner's requests itself and freezes the server for a known time
in the middle of the run, so a closed-loop measurement (coordinated omission) reports a p99 far
below the stall it lived through.  6.8: the checker measures the raw limit (a raw-socket publisher,
lessons.bench.raw_publish) right before and after the learner's publisher, in the same run on the
same server, and counts the learner's messages on the server.  6.9: the checker starts a server
with the learner's config, logs in as the tenant and goes past every limit itself.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import time

from nats.js.errors import APIError

from ...errors import NatslabError
from ...lessons import bench
from ...runtime.server import server
from ...runtime.waiting import until
from ..checks import Mismatch, call_learner, exercise, expect
from . import client, learner_client, of_type, scratch_server, token


# ------------------------------------------------------------------------------------- 6.7
LAT_RATE, LAT_COUNT, LAT_STALL = 100, 300, 0.8  # 3 s of requests; the server freezes 0.8 s of it
LAT_BEFORE = 0.3  # the freeze starts once this share of the requests has arrived
LAT_KEYS = ("count", "p50", "p90", "p99")
TIMEOUT_67 = ("a request timed out: the check freezes the server for 0.8 s, longer than "
              "nats-py's default request timeout (0.5 s). Give each request a timeout of several seconds: "
              "a late reply is a latency to record, not an error.")


def _number(result: dict, key: str, what: str) -> float:
    value = result[key]
    expect(isinstance(value, (int, float)) and not isinstance(value, bool) and value == value,
           f"{what}[{key!r}] is not a number.", expected="a number (milliseconds; count: a whole number)",
           seen=f"{type(value).__name__}: {value!r}"[:100],
           hint="return plain numbers: float(...) of each percentile, len(...) for the count.")
    return float(value)


@exercise("6.7", "latency percentiles without coordinated omission", hints=(
    "Coordinated omission (lesson 06.6): a closed loop waits for each reply before sending the next "
    "request, so the requests that should have gone out during a stall are never measured. Send on a "
    "fixed schedule and measure each latency from the time the request was due.",
    "Request i is due at t0 + i/rate: sleep until then (loop.time()), then start it as its own task "
    "(asyncio.create_task) or, in a loop, measure from the due time even when you are late; "
    "nc.request(subject, data, timeout=5); numpy.percentile(latencies, [50, 90, 99]) in ms.",
    "due = t0 + i / rate; ...; await nc.request(subject, b'x', timeout=5); lat.append((loop.time() - due) * 1000)",
))
async def check_latency(measure) -> str:
    loop = asyncio.get_running_loop()
    async with scratch_server(jetstream=False) as srv, client(srv) as nc, learner_client(srv) as lnc:
        subject = f"lat.{token()}"
        arrivals: list[float] = []

        async def echo(msg):
            arrivals.append(loop.time())
            await nc.publish(msg.reply, msg.data)
        await nc.subscribe(subject, cb=echo, pending_msgs_limit=-1, pending_bytes_limit=-1)
        await nc.flush()

        async def freeze():  # once the learner is well under way, freeze the server for LAT_STALL s
            await until(lambda: len(arrivals) >= LAT_COUNT * LAT_BEFORE, "requests", timeout=LAT_COUNT / LAT_RATE + 20)
            asked = loop.time()
            await asyncio.to_thread(srv.pause)
            frozen = loop.time()
            try:
                await asyncio.sleep(LAT_STALL)
            finally:
                resuming = loop.time()
                await asyncio.to_thread(srv.resume)
            return resuming - frozen, loop.time() - asked  # surely frozen, at most frozen
        stall = asyncio.ensure_future(freeze())
        try:
            result = await call_learner(measure, lnc, subject, LAT_RATE, LAT_COUNT, what="your function",
                                        timeout=LAT_COUNT / LAT_RATE + 25, hints={"TimeoutError": TIMEOUT_67})
        finally:
            if not stall.done():
                stall.cancel()
                with contextlib.suppress(BaseException):
                    await stall
        received = len(arrivals)
        froze = stall.result() if stall.done() and not stall.cancelled() and not stall.exception() else None

    of_type(result, dict, "your function", 'a dict {"count": ..., "p50": ..., "p90": ..., "p99": ...}')
    missing = [k for k in LAT_KEYS if k not in result]
    expect(not missing, f"the dict your function returned has no {', '.join(map(repr, missing))}.",
           expected=f"keys {', '.join(LAT_KEYS)}", seen=f"keys {sorted(map(str, result))}"[:120],
           hint="return the number of latencies measured and the 50th, 90th and 99th percentiles in ms.")
    n, p50, p90, p99 = (_number(result, k, "the dict") for k in LAT_KEYS)
    expect(received >= LAT_COUNT, f"the service received {received} requests; the check asked for {LAT_COUNT}.",
           expected=f"{LAT_COUNT} requests on {subject}", seen=f"{received} (counted by the responder)",
           hint="send exactly count requests to the subject you are given, one per scheduled time.")
    first = round(LAT_COUNT * LAT_BEFORE)  # the requests before the freeze show the pace of sending
    span = arrivals[first - 1] - arrivals[0]
    planned = (first - 1) / LAT_RATE
    expect(span >= 0.7 * planned,
           f"your first {first} requests arrived within {span:.2f} s, faster than the rate asks "
           f"({LAT_RATE}/s: {planned:.2f} s).",
           expected=f"{first} requests spread over about {planned:.2f} s", seen=f"{span:.2f} s",
           hint="a latency test runs at a fixed rate, not as fast as it can: request i is due at t0 + i/rate; "
                "wait until then before sending it.")
    expect(n == LAT_COUNT, f"your function measured {n:g} latencies for {LAT_COUNT} requests.",
           expected=f"count = {LAT_COUNT}", seen=f"count = {n:g}",
           hint="every request has a latency, the late ones most of all: leaving out the ones that timed out "
                "or failed removes exactly the stall the measurement is for.")
    expect(froze is not None, "the check could not freeze the server while your requests were running.",
           expected="a freeze in the middle of the run", seen="none", hint="run the check again.")
    lo, hi = froze[0] * 1e3, froze[1] * 1e3  # the freeze in ms: surely at least lo, at most hi
    due = round(LAT_STALL * LAT_RATE)
    expect(p50 <= p90 <= p99, "the percentiles are not in order (p50 <= p90 <= p99).",
           expected="p50 <= p90 <= p99", seen=f"p50={p50:g}, p90={p90:g}, p99={p99:g}",
           hint="compute each one over all latencies (numpy.percentile or statistics.quantiles), "
                "from the same list.")
    if lo / 1e3 * 0.6 <= p99 <= hi / 1e3 + 2:
        raise Mismatch(f"p99 = {p99:g}: that is the freeze in seconds; the exercise asks for milliseconds.",
                       expected=f"p99 in ms (the server froze for {lo:.0f}-{hi:.0f} ms)", seen=f"p99 = {p99:g}",
                       hint="multiply seconds by 1000.")
    expect(p99 >= 0.6 * lo,
           f"p99 = {p99:.1f} ms, but the server froze for {lo:.0f} ms in the middle of your run: about {due} "
           f"of the {LAT_COUNT} requests were due during the freeze, so at least 10% of the latencies "
           "measured from their due time are hundreds of ms. This is coordinated omission.",
           expected=f"p99 close to the freeze ({lo:.0f} ms)", seen=f"p50={p50:.1f}, p90={p90:.1f}, p99={p99:.1f} ms",
           hint="a closed loop (wait for the reply, then send the next one, time it from the send) never "
                "measures the requests that should have gone out during a stall: measure each request from "
                "the time it was due on the schedule, not from when your loop got round to sending it.")
    expect(p90 >= 0.25 * lo,
           f"p90 = {p90:.1f} ms: about {due / LAT_COUNT:.0%} of the requests were due while the server was "
           f"frozen ({lo:.0f} ms), so the 90th percentile sits well inside the freeze.",
           expected=f"p90 of the order of {lo * (1 - 0.1 * LAT_COUNT / due):.0f} ms", seen=f"p90 = {p90:.1f} ms",
           hint="every request's latency counts from its due time; compute p90 over all of them.")
    expect(p99 <= hi + 1500,
           f"p99 = {p99:.0f} ms, far above anything the server did: it froze for at most {hi:.0f} ms.",
           expected=f"p99 at most about {hi:.0f} ms", seen=f"p99 = {p99:.0f} ms",
           hint="measure each latency from its own due time to its own reply (in ms), not from the start "
                "of the run, and not in microseconds.")
    expect(p50 <= 0.5 * lo,
           f"p50 = {p50:.0f} ms: most requests were not near the freeze, so the median should be small.",
           expected=f"p50 well below {0.5 * lo:.0f} ms", seen=f"p50 = {p50:.0f} ms",
           hint="each latency runs from that request's due time to its reply, not from the start of the run.")
    return (f"the responder answered {received} requests at {LAT_RATE}/s while the server froze for "
            f"{lo:.0f}-{hi:.0f} ms; your p99 of {p99:.0f} ms and p90 of {p90:.0f} ms include that freeze "
            f"(p50 {p50:.1f} ms).")


# ------------------------------------------------------------------------------------- 6.8
PAYLOAD_68, COUNT_68, PROBE_68, RAW_68 = 4096, 30_000, 1_000, 60_000
TARGET_68, ROUNDS_68 = 0.10, 3


def _in_msgs(srv) -> int:
    return int(srv.monitor("varz").get("in_msgs", 0))


def _connections(srv) -> int:
    return int(srv.monitor("connz").get("num_connections", 0))


async def _raw(srv, subject: str, payload: bytes) -> bench.Rate:
    return await asyncio.to_thread(bench.raw_publish, srv, subject, payload, RAW_68)


async def _timed_run(srv, publish_fast, subject: str, payload: bytes, before: int, raw, allowed: float):
    """Run the learner's publisher against the clock; stop it early when it is hopelessly slow.

    Returns (seconds, cut).  A run is cut after ``allowed`` seconds, or after 1 s if the server has
    counted less than a quarter of the target rate so far.  The learner's task is cancelled until it
    stops: nats-py can lose a single cancellation that lands while a flush completes.
    """
    tasks: list[asyncio.Future] = []

    def started(*args):
        result = publish_fast(*args)
        if inspect.isawaitable(result):
            result = asyncio.ensure_future(result)
            tasks.append(result)
        return result
    t0 = time.perf_counter()
    call = asyncio.ensure_future(call_learner(started if callable(publish_fast) else publish_fast, srv.url,
                                              subject, payload, COUNT_68, what="your function",
                                              timeout=allowed + 10))
    cut = False
    while not call.done():
        await asyncio.wait({call}, timeout=0.25)
        elapsed = time.perf_counter() - t0
        if call.done() or elapsed < 1.0:
            continue
        so_far = (await asyncio.to_thread(_in_msgs, srv) - before) / elapsed
        if elapsed > allowed or so_far < TARGET_68 / 4 * raw.msgs_per_s:
            cut = True
            break
    seconds = time.perf_counter() - t0
    if not cut:
        await call  # its verdict (an exception, a stub) is the check's
        return seconds, False
    for _ in range(250):  # bounded: 5 s
        if all(t.done() for t in tasks):
            break
        for t in tasks:
            t.cancel()
        await asyncio.sleep(0.02)
    call.cancel()
    with contextlib.suppress(BaseException):
        await call
    return seconds, True


@exercise("6.8", "tune a publisher toward the raw limit", hints=(
    "Throughput is a ratio to the raw limit measured in the same run (lesson 06.7): what slows a Python "
    "publisher most is waiting for the server, for example a flush (a round trip) after every message.",
    "Publish every message with await nc.publish(...), then one await nc.flush() (or nc.drain()) at "
    "the end; nats.connect(url, pending_size=...) lets the client buffer more before it writes.",
    "for _ in range(count): await nc.publish(subject, payload)   # then: await nc.flush(); await nc.close()",
))
async def check_tuned(publish_fast) -> str:
    payload = bytes(random.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(PAYLOAD_68))
    async with scratch_server(jetstream=False) as srv:
        subject = f"fast.{token()}"
        # 1. a small run the checker reads back: the subject, the payload, the count, the connection closed
        async with client(srv) as nc:
            got: list[bytes] = []

            async def keep(msg):
                got.append(msg.data)
            await nc.subscribe(subject, cb=keep, pending_msgs_limit=-1, pending_bytes_limit=-1)
            await nc.flush()
            before = _in_msgs(srv)
            await call_learner(publish_fast, srv.url, subject, payload, PROBE_68, what="your function")
            await until(lambda: len(got) >= PROBE_68, timeout=3, error=False)
            sent = _in_msgs(srv) - before
            expect(len(got) == PROBE_68 and sent == PROBE_68,
                   f"asked for {PROBE_68} messages on {subject}, the server received {sent} "
                   f"and a subscriber on {subject} got {len(got)}.",
                   expected=f"{PROBE_68} messages on {subject}", seen=f"{sent} in, {len(got)} on the subject",
                   hint="publish exactly count messages, each one the payload you are given, to the subject "
                        "you are given (one message per publish, no batching into bigger messages).")
            bad = next((d for d in got if d != payload), None)
            expect(bad is None, "a message's data is not the payload the check gave your function.",
                   expected=f"{len(payload)} bytes as given", seen=f"{len(bad or b'')} bytes: {(bad or b'')[:20]!r}",
                   hint="publish the payload bytes unchanged.")
            left = await until(lambda: _connections(srv) <= 1, timeout=3, error=False)
            expect(bool(left), "your function returned with its connection still open.",
                   expected="only the check's own connection on the server (/connz)",
                   seen=f"{_connections(srv)} connections",
                   hint="a benchmark leaves nothing behind: close (or drain) the connection you opened "
                        "before you return.")
        # 2. timed runs, each between two raw-socket runs on the same server
        best = None
        for _ in range(ROUNDS_68):
            raw1 = await _raw(srv, subject, payload)
            allowed = max(2.0, 2 * COUNT_68 / (TARGET_68 * raw1.msgs_per_s))
            before = await asyncio.to_thread(_in_msgs, srv)
            seconds, cut = await _timed_run(srv, publish_fast, subject, payload, before, raw1, allowed)
            if not cut:
                await until(lambda: _in_msgs(srv) - before >= COUNT_68, timeout=5, error=False)
            sent = _in_msgs(srv) - before
            expect(cut or sent == COUNT_68, f"asked for {COUNT_68} messages, the server received {sent}.",
                   expected=f"{COUNT_68} messages", seen=f"{sent} (the server's /varz in_msgs)",
                   hint="publish exactly count messages, and let them all reach the server (flush) before "
                        "you return.")
            if not cut:
                await until(lambda: _connections(srv) == 0, timeout=3, error=False)
            raw2 = await _raw(srv, subject, payload)
            raw_rate = (raw1.msgs_per_s + raw2.msgs_per_s) / 2
            ratio = sent / seconds / raw_rate
            if best is None or ratio > best[0]:
                best = (ratio, sent / seconds, raw_rate, cut and seconds)
            if ratio >= TARGET_68 or ratio < TARGET_68 / 2:
                break  # reached, or so far below that noise cannot explain it
    ratio, rate, raw_rate, cut = best
    expect(ratio >= TARGET_68,
           f"your publisher reached {ratio:.1%} of the raw limit measured in the same run; the target is "
           f"{TARGET_68:.0%}." + (f" It was stopped after {cut:.1f} s, still publishing." if cut else ""),
           expected=f">= {TARGET_68:.0%} of {raw_rate:,.0f} msgs/s (raw socket, {PAYLOAD_68} B messages)",
           seen=f"{rate:,.0f} msgs/s ({ratio:.1%})",
           hint="something in your loop waits for the server on every message (a flush, a request, a "
                "JetStream publish, a sleep): a round trip per message caps the rate at one message per "
                "round trip. Let the client batch writes and wait once, at the end.")
    return (f"your publisher sent {COUNT_68:,} messages of {PAYLOAD_68} B at {rate:,.0f} msgs/s: {ratio:.0%} of "
            f"the raw-socket limit ({raw_rate:,.0f} msgs/s) measured in the same run (target {TARGET_68:.0%}); "
            f"a trial run of {PROBE_68} messages arrived intact on {subject}.")


# ------------------------------------------------------------------------------------- 6.9
USER_69, PASSWORD_69, ACCOUNT_69 = "app", "app-secret", "APP"
MSG_69 = 1000


def _api_error(exc: BaseException) -> tuple[int | None, str]:
    return getattr(exc, "err_code", None), (getattr(exc, "description", None) or str(exc))


@exercise("6.9", "account JetStream limits and their refusals", hints=(
    "JetStream limits per account (lesson 06.7): an account's own jetstream block caps its memory store, "
    "file store and stream count, and the server refuses what goes past them; the server-wide "
    "max_memory_store/max_file_store are a different, whole-server limit.",
    "In the server config: accounts: {APP: {jetstream: {max_mem: ..., max_file: ..., max_streams: ...}, "
    "users: [{user: ..., password: ...}]}} (sizes in bytes).",
    'return {"accounts": {"APP": {"jetstream": {"max_mem": max_mem, "max_file": max_file, "max_streams": '
    'max_streams}, "users": [{"user": "app", "password": "app-secret"}]}}}',
))
async def check_limits(tenant_limits) -> str:
    max_mem = random.randrange(48, 97) * 1024
    max_file = random.randrange(64, 129) * 1024
    max_streams = random.randrange(2, 5)
    config = await call_learner(tenant_limits, max_mem, max_file, max_streams, what="your function")
    of_type(config, dict, "your function", "a dict (the server configuration)")
    try:
        srv = await asyncio.to_thread(server, "checker", config=config)
    except NatslabError as exc:
        raise Mismatch("the server did not start with your configuration.", expected="a server that starts",
                       seen=(exc.what + " " + (exc.details or ""))[:300],
                       hint="the server's own error above names the line: sizes are numbers of bytes, users are "
                            "a list of {user, password} inside the account.") from None
    try:
        return await _probe_limits(srv, max_mem, max_file, max_streams)
    finally:
        await asyncio.to_thread(srv.group.close)


async def _probe_limits(srv, max_mem: int, max_file: int, max_streams: int) -> str:
    import nats

    try:
        nc = await nats.connect(srv.url, user=USER_69, password=PASSWORD_69, connect_timeout=2,
                                max_reconnect_attempts=0, allow_reconnect=False)
    except Exception as exc:
        raise Mismatch(f"could not log in as {USER_69!r} with password {PASSWORD_69!r}.",
                       expected=f"user {USER_69} in account {ACCOUNT_69}", seen=f"{type(exc).__name__}: {exc}"[:160],
                       hint="put the user, with that password, in the users list of the account.") from None
    refusals = []
    try:
        js = nc.jetstream(timeout=5)
        account = srv.monitor("connz", auth=1).get("connections", [{}])
        names = {c.get("account") for c in account}
        expect(ACCOUNT_69 in names, f"user {USER_69} is not in account {ACCOUNT_69}.",
               expected=f"account {ACCOUNT_69}", seen=f"account {', '.join(map(str, names))}",
               hint=f"declare the user inside accounts.{ACCOUNT_69}.users.")
        try:
            await js.account_info()
        except Exception as exc:
            raise Mismatch(f"user {USER_69} has no JetStream.", expected="JetStream for the account",
                           seen=f"{type(exc).__name__}: {exc}"[:160],
                           hint="an account gets JetStream through its own jetstream block (with the limits).") from None
        # streams: max_streams are allowed, one more is refused
        tag = token(4)
        for i in range(max_streams):
            try:
                await js.add_stream(name=f"S{i}_{tag}", subjects=[f"s{i}.{tag}.>"], storage="memory")
            except APIError as exc:
                raise Mismatch(f"the server refused stream {i + 1} of the {max_streams} the account may have.",
                               expected=f"{max_streams} streams allowed", seen=_api_error(exc)[1],
                               hint="max_streams is the number of streams the account may have.") from None
        try:
            await js.add_stream(name=f"EXTRA_{tag}", subjects=[f"extra.{tag}"], storage="memory")
            extra = None
        except APIError as exc:
            extra = _api_error(exc)
        expect(extra is not None and extra[0] == 10027,
               f"the account created stream {max_streams + 1}: it is allowed {max_streams}.",
               expected="refused: maximum number of streams reached (10027)",
               seen=f"refused: {extra[1]}" if extra else "created",
               hint="the stream count is an account limit (max_streams in the account's jetstream block).")
        refusals.append(f"stream {max_streams + 1}: {extra[1]}")
        await js.delete_stream(f"S{max_streams - 1}_{tag}")
        # file storage: a stream reserving half of max_file is allowed, one reserving more than max_file is not
        try:
            await js.add_stream(name=f"H_{tag}", subjects=[f"h.{tag}"], storage="file", max_bytes=max_file // 2)
            await js.delete_stream(f"H_{tag}")
        except APIError as exc:
            raise Mismatch(f"the account could not reserve {max_file // 2} bytes of file storage; its limit "
                           f"should be {max_file}.", expected=f"file streams up to {max_file} bytes allowed",
                           seen=f"refused: {_api_error(exc)[1]}",
                           hint="sizes in the config are bytes: pass max_file unchanged as the account's "
                                "file limit.") from None
        try:
            await js.add_stream(name=f"F_{tag}", subjects=[f"f.{tag}"], storage="file", max_bytes=2 * max_file)
            refused = None
            await js.delete_stream(f"F_{tag}")
        except APIError as exc:
            refused = _api_error(exc)
        expect(refused is not None and "insufficient" in refused[1],
               f"the account could reserve {2 * max_file} bytes of file storage; its limit is {max_file}.",
               expected="refused: insufficient storage resources", seen=f"refused: {refused[1]}" if refused else "created",
               hint="cap the account's file store (max_file in its jetstream block), in bytes.")
        refusals.append(f"file stream of {2 * max_file} B: {refused[1]}")
        # memory: publish into a memory stream until the account refuses
        subject, stored, error = f"s0.{tag}.m", 0, None
        for _ in range(2 * max_mem // MSG_69 + 20):
            try:
                await js.publish(subject, b"m" * MSG_69)
                stored += 1
            except APIError as exc:
                error = _api_error(exc)
                break
        used = (await js.account_info()).memory
        expect(error is not None,
               f"the account stored {stored} messages of {MSG_69} B ({used} bytes of memory) without a refusal; "
               f"its limit is {max_mem} bytes.",
               expected="refused: resource limits exceeded for account", seen=f"{used} bytes stored",
               hint="cap the account's memory store (max_mem in its jetstream block), in bytes; the "
                    "server-wide max_memory_store is a different limit.")
        expect("account" in error[1] and used <= max_mem,
               f"publishing was refused, but not by the account's memory limit: {error[1]}.",
               expected=f"refused near {max_mem} bytes: resource limits exceeded for account",
               seen=f"refused at {used} bytes: {error[1]}",
               hint="the limit must be the account's (max_mem in its jetstream block), not the server's.")
        expect(used >= max_mem - 4 * MSG_69,
               f"publishing was refused at {used} bytes, well below the {max_mem} bytes asked for.",
               expected=f"about {max_mem} bytes stored before the refusal", seen=f"{used} bytes",
               hint="sizes in the config are bytes: pass the numbers your function is given unchanged.")
        refusals.append(f"publish at {used} B of memory: {error[1]}")
        return (f"as {USER_69} in {ACCOUNT_69} (limits {max_mem} B memory, {max_file} B file, {max_streams} "
                "streams) the server refused " + "; ".join(refusals) + ".")
    finally:
        await nc.close()
