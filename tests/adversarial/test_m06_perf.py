"""Module 06 performance exercises (6.7-6.9), answered as learners would: correct answers written
differently from the solutions must pass, plausible wrong ones must fail with a verdict naming the
mistake.  6.7 hands the answer a plain ``nats.connect`` connection; 6.8 hands it a URL, so every
answer opens its own plain connection; 6.9 answers with a config dict.
"""
from __future__ import annotations

import asyncio
import statistics
import time

import nats
import numpy as np

import natslab.grading.exercises.m06_perf  # noqa: F401  (registers 6.7-6.9 even before m06 exists)

from .harness import fails, passes


# ------------------------------------------------------------------------------------- 6.7
def _summary(lat_ms):
    p50, p90, p99 = np.percentile(lat_ms, [50, 90, 99])
    return {"count": len(lat_ms), "p50": p50, "p90": p90, "p99": p99}


def test_6_7_correct_open_loop_tasks():
    async def measure_latency(nc, subject, rate, count):
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.05
        lat = []

        async def one(due):
            await nc.request(subject, b"ping", timeout=5)
            lat.append((loop.time() - due) * 1000)
        tasks = []
        for i in range(count):
            due = t0 + i / rate
            await asyncio.sleep(max(0, due - loop.time()))
            tasks.append(asyncio.create_task(one(due)))
        await asyncio.gather(*tasks)
        return _summary(lat)
    passes("6.7", measure_latency)


def test_6_7_correct_corrected_loop_with_quantiles():
    async def measure_latency(nc, subject, rate, count):
        start = time.perf_counter()
        lat = []
        for i in range(count):
            due = start + i / rate
            now = time.perf_counter()
            if now < due:
                await asyncio.sleep(due - now)
            await nc.request(subject, b"", timeout=10)
            lat.append((time.perf_counter() - due) * 1e3)  # from the due time, even when late
        q = statistics.quantiles(lat, n=100)
        return {"count": len(lat), "p50": q[49], "p90": q[89], "p99": q[98]}
    passes("6.7", measure_latency)


async def _closed_loop(nc, subject, rate, count, *, timeout=5, skip_timeouts=False, unit=1000):
    lat = []
    for _ in range(count):
        t = time.perf_counter()
        try:
            await nc.request(subject, b"ping", timeout=timeout)
        except nats.errors.TimeoutError:
            if skip_timeouts:
                continue
            raise
        lat.append((time.perf_counter() - t) * unit)
        await asyncio.sleep(1 / rate)
    return lat


def test_6_7_wrong_closed_loop_from_actual_send():
    async def measure_latency(nc, subject, rate, count):
        return _summary(await _closed_loop(nc, subject, rate, count))
    fails("6.7", measure_latency, says=("coordinated omission", "froze"))


def test_6_7_wrong_drops_timed_out_requests():
    async def measure_latency(nc, subject, rate, count):
        loop = asyncio.get_running_loop()
        t0, lat = loop.time(), []

        async def one(due):
            try:
                await nc.request(subject, b"ping", timeout=0.2)
                lat.append((loop.time() - due) * 1000)
            except nats.errors.TimeoutError:
                pass  # "outliers"
        tasks = []
        for i in range(count):
            await asyncio.sleep(max(0, t0 + i / rate - loop.time()))
            tasks.append(asyncio.create_task(one(t0 + i / rate)))
        await asyncio.gather(*tasks)
        return _summary(lat)
    fails("6.7", measure_latency, says=("latencies for 300 requests", "timed out"))


def test_6_7_wrong_all_at_once():
    async def measure_latency(nc, subject, rate, count):
        loop = asyncio.get_running_loop()

        async def one():
            t = loop.time()
            await nc.request(subject, b"ping", timeout=5)
            return (loop.time() - t) * 1000
        return _summary(await asyncio.gather(*[one() for _ in range(count)]))  # no schedule at all
    fails("6.7", measure_latency, says=("faster than the rate", "fixed rate"))


def test_6_7_wrong_seconds_not_milliseconds():
    async def measure_latency(nc, subject, rate, count):
        loop = asyncio.get_running_loop()
        t0, lat = loop.time(), []

        async def one(due):
            await nc.request(subject, b"ping", timeout=5)
            lat.append(loop.time() - due)
        tasks = []
        for i in range(count):
            await asyncio.sleep(max(0, t0 + i / rate - loop.time()))
            tasks.append(asyncio.create_task(one(t0 + i / rate)))
        await asyncio.gather(*tasks)
        return _summary(lat)
    fails("6.7", measure_latency, says=("in seconds", "milliseconds"))


def test_6_7_wrong_default_request_timeout():
    async def measure_latency(nc, subject, rate, count):
        lat = []
        start = time.perf_counter()
        for i in range(count):
            due = start + i / rate
            await asyncio.sleep(max(0, due - time.perf_counter()))
            await nc.request(subject, b"ping")  # nats-py's default: 0.5 s
            lat.append((time.perf_counter() - due) * 1000)
        return _summary(lat)
    fails("6.7", measure_latency, says=("raised TimeoutError", "default request timeout"))


# ------------------------------------------------------------------------------------- 6.8
def test_6_8_correct_plain_loop_then_flush():
    async def publish_fast(url, subject, payload, count):
        nc = await nats.connect(url)
        for _ in range(count):
            await nc.publish(subject, payload)
        await nc.flush()
        await nc.close()
    passes("6.8", publish_fast)


def test_6_8_correct_tuned_buffers_and_drain():
    async def publish_fast(url, subject, payload, count):
        nc = await nats.connect(url, pending_size=256 * 1024, flusher_queue_size=4096,
                                skip_subject_validation=True)
        pub = nc.publish
        for i in range(count):
            await pub(subject, payload)
            if i % 1000 == 999:
                await nc.flush()  # a round trip per thousand messages, not per message
        await nc.drain()  # flushes what is pending, then closes
    passes("6.8", publish_fast)


def test_6_8_wrong_flush_every_message():
    async def publish_fast(url, subject, payload, count):
        nc = await nats.connect(url)
        for _ in range(count):
            await nc.publish(subject, payload)
            await nc.flush()
        await nc.close()
    fails("6.8", publish_fast, says=("of the raw limit", "round trip per message"))


def test_6_8_wrong_batches_into_fewer_messages():
    async def publish_fast(url, subject, payload, count):
        nc = await nats.connect(url)
        for _ in range(count // 10):
            await nc.publish(subject, payload * 10)  # ten payloads per message: fewer, bigger messages
        await nc.flush()
        await nc.close()
    fails("6.8", publish_fast, says=("the server received 100 ", "no batching"))


def test_6_8_wrong_subject():
    async def publish_fast(url, subject, payload, count):
        nc = await nats.connect(url)
        for _ in range(count):
            await nc.publish("bench.fast", payload)
        await nc.flush()
        await nc.close()
    fails("6.8", publish_fast, says=("got 0", "subject"))


def test_6_8_wrong_leaves_connection_open():
    async def publish_fast(url, subject, payload, count):
        nc = await nats.connect(url)
        for _ in range(count):
            await nc.publish(subject, payload)
        await nc.flush()  # ... and never closed (asyncio.run cancels its tasks when the test ends)
    fails("6.8", publish_fast, says=("connection still open", "close"))


# ------------------------------------------------------------------------------------- 6.9
def test_6_9_correct_dict_literal():
    def tenant_limits(max_mem, max_file, max_streams):
        return {"accounts": {"APP": {"jetstream": {"max_mem": max_mem, "max_file": max_file,
                                                   "max_streams": max_streams},
                                     "users": [{"user": "app", "password": "app-secret"}]}}}
    passes("6.9", tenant_limits)


def test_6_9_correct_long_names_and_other_tenant():
    async def tenant_limits(max_mem, max_file, max_streams):
        app = {"jetstream": {"max_memory": max_mem, "max_store": max_file, "max_streams": max_streams,
                             "max_consumers": 100},
               "users": [{"user": "app", "password": "app-secret"}]}
        other = {"jetstream": "enabled", "users": [{"user": "ops", "password": "ops-secret"}]}
        return {"accounts": {"APP": app, "OPS": other}}
    passes("6.9", tenant_limits)


def test_6_9_wrong_server_wide_limits():
    def tenant_limits(max_mem, max_file, max_streams):
        return {"jetstream": {"max_memory_store": max_mem, "max_file_store": max_file},
                "accounts": {"APP": {"jetstream": "enabled",
                                     "users": [{"user": "app", "password": "app-secret"}]}}}
    fails("6.9", tenant_limits, says=("created stream", "account limit"))


def test_6_9_wrong_kilobytes():
    def tenant_limits(max_mem, max_file, max_streams):
        return {"accounts": {"APP": {"jetstream": {"max_mem": max_mem // 1024, "max_file": max_file,
                                                   "max_streams": max_streams},
                                     "users": [{"user": "app", "password": "app-secret"}]}}}
    fails("6.9", tenant_limits, says=("well below", "bytes"))


def test_6_9_wrong_no_memory_limit():
    def tenant_limits(max_mem, max_file, max_streams):
        return {"accounts": {"APP": {"jetstream": {"max_file": max_file, "max_streams": max_streams},
                                     "users": [{"user": "app", "password": "app-secret"}]}}}
    fails("6.9", tenant_limits, says=("without a refusal", "max_mem"))


def test_6_9_wrong_user_outside_the_account():
    def tenant_limits(max_mem, max_file, max_streams):
        return {"authorization": {"users": [{"user": "app", "password": "app-secret"}]},
                "accounts": {"APP": {"jetstream": {"max_mem": max_mem, "max_file": max_file,
                                                   "max_streams": max_streams}}}}
    fails("6.9", tenant_limits, says=("not in account APP", "users"))


def test_6_9_wrong_no_file_limit():
    def tenant_limits(max_mem, max_file, max_streams):
        return {"accounts": {"APP": {"jetstream": {"max_mem": max_mem, "max_streams": max_streams},
                                     "users": [{"user": "app", "password": "app-secret"}]}}}
    fails("6.9", tenant_limits, says=("file storage", "max_file"))


def test_6_9_wrong_file_limit_in_kilobytes():
    def tenant_limits(max_mem, max_file, max_streams):
        return {"accounts": {"APP": {"jetstream": {"max_mem": max_mem, "max_file": max_file // 1024,
                                                   "max_streams": max_streams},
                                     "users": [{"user": "app", "password": "app-secret"}]}}}
    fails("6.9", tenant_limits, says=("could not reserve", "bytes"))
