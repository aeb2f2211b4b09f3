"""Module 03 (key-value and object store): feature flags, a counter, sessions, history, objects.

Every checker starts its own JetStream server, makes its own buckets with random names, calls
the learner's function on a connection of its own, and reads the result back from the server
(stream info, raw stream messages, its own KV handle).  Where concurrency is the point it writes
its own competing updates, some of them right after the learner's code has read a key.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import random
import uuid

import nats.js.errors as jserr
from nats.js.kv import KeyValue

from ..checks import Mismatch, Unsolved, call_learner, exercise, expect
from ...lessons.kvstore import digest_of, history_entries, meta_subject
from ...runtime.waiting import until
from . import client, scratch_server, subs_of


# ------------------------------------------------------------------------------ shared tools
def _token(n: int = 8) -> str:
    return uuid.uuid4().hex[:n]


async def _bucket(nc, prefix: str, **config):
    name = f"{prefix}_{_token(6)}"
    return name, await nc.jetstream().create_key_value(bucket=name, **config)


async def _value(kv, key: str):
    """The key's current value and revision as the server has them, (None, None) when absent."""
    try:
        entry = await kv.get(key)
        return entry.value, entry.revision
    except jserr.KeyNotFoundError:
        return None, None


async def _stored(js, stream: str, subject: str) -> int:
    """How many messages the stream keeps on ``subject`` (the server's count)."""
    info = await js.stream_info(stream, subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


async def _until(cond, timeout: float, step: float = 0.05) -> bool:
    return bool(await until(cond, timeout=timeout, every=step, error=False))


async def _bucket_config(js, name: str):
    """The config of bucket ``name``'s stream, as the server has it; a verdict if there is none."""
    try:
        return (await js.stream_info(f"KV_{name}")).config
    except jserr.NotFoundError:
        streams = [si.config.name for si in await js.streams_info()]
        raise Mismatch(f"the server has no bucket named {name!r}.", expected=f"stream KV_{name}",
                       seen=f"streams: {streams}", hint="use the name you are given: create_key_value(bucket=name, ...).")


async def _returned_handle(kv, js, name: str, fn: str, key: str) -> None:
    """The learner returned a KeyValue handle of bucket ``name``: a put through it reaches that bucket."""
    expect(isinstance(kv, KeyValue), f"{fn} must return the bucket handle.", expected="a nats.js.kv.KeyValue",
           seen=f"{type(kv).__name__}: {kv!r}"[:100], hint="return the value of await js.create_key_value(...).")
    token = _token().encode()
    await call_learner(kv.put, key, token, what="put through the handle you returned")
    seen, _ = await _value(await js.key_value(name), key)
    expect(seen == token, "a put through the returned handle did not reach the bucket.", expected=token, seen=seen,
           hint="return the handle of the bucket you created, not of another one.")


class Meddling(KeyValue):
    """A real KeyValue handle on the learner's connection whose ``get`` lets another writer act
    once, right after the value was read: the moment a read-modify-write is exposed.

    ``arm(action)`` schedules ``await action(key)`` after the next latest-value ``get``;
    ``meddled`` says whether it ran.
    """

    def __init__(self, js, bucket: str):
        super().__init__(name=bucket, stream=f"KV_{bucket}", pre=f"$KV.{bucket}.", js=js, direct=False)
        self._action = None
        self.meddled = 0

    def arm(self, action) -> None:
        self._action = action

    def disarm(self) -> None:
        self._action = None

    async def get(self, key, revision=None, validate_keys=True):
        try:
            return await super().get(key, revision, validate_keys)
        finally:
            action, self._action = self._action, None
            if action is not None and revision is None:
                self.meddled += 1
                await action(key)
            elif action is not None:
                self._action = action


async def _cas_increment(kv, key: str) -> int:
    """The checker's own correct increment (compare-and-set with retry); returns the new value."""
    while True:
        try:
            entry = await kv.get(key)
        except jserr.KeyNotFoundError:
            try:
                await kv.create(key, b"1")
                return 1
            except jserr.KeyWrongLastSequenceError:
                continue
        new = int(entry.value) + 1
        try:
            await kv.update(key, str(new).encode(), last=entry.revision)
            return new
        except jserr.KeyWrongLastSequenceError:
            continue


# ------------------------------------------------------------------------------ 3.1
@exercise("3.1", "a bucket for feature flags",
          hints=("await js.create_key_value(bucket=name, history=10, max_value_size=256)",))
async def flags_bucket(create_flags_bucket):
    async with scratch_server() as srv, client(srv) as nc, client(srv) as learner:
        js, name = nc.jetstream(), f"flags_{_token(6)}"
        kv = await call_learner(create_flags_bucket, learner.jetstream(), name,
                                what=f"create_flags_bucket(js, {name!r})")
        c = await _bucket_config(js, name)
        expect(c.max_msgs_per_subject == 10, "the bucket keeps the wrong number of revisions per key.",
               expected="history 10 (stream max_msgs_per_subject: 10)", seen=f"max_msgs_per_subject: {c.max_msgs_per_subject}",
               hint="pass history=10 to create_key_value.")
        expect(c.max_msg_size == 256, "values are not limited to 256 bytes.", expected="max_value_size 256 (stream max_msg_size: 256)",
               seen=f"max_msg_size: {c.max_msg_size}", hint="pass max_value_size=256 to create_key_value.")
        await _returned_handle(kv, js, name, "create_flags_bucket", "flags.probe")
        return f"the server keeps bucket {name!r} as stream KV_{name} with 10 revisions per key and values up to 256 bytes."


# ------------------------------------------------------------------------------ 3.2
@exercise("3.2", "read a flag",
          hints=("entry = await kv.get(key) and compare entry.value with b\"on\"; KeyNotFoundError means off.",))
async def read_flag(flag_enabled):
    async with scratch_server() as srv, client(srv) as nc, client(srv) as learner:
        name, kv = await _bucket(nc, "flags", history=5)
        lkv = await learner.jetstream().key_value(name)
        k = lambda: f"flags.f{_token(5)}"
        cases = []
        on, off, deleted, purged, missing, back = k(), k(), k(), k(), k(), k()
        await kv.put(on, b"on"); cases.append((on, True, "on"))
        await kv.put(off, b"on"); await kv.put(off, b"off"); cases.append((off, False, "first on, now off"))
        await kv.put(deleted, b"on"); await kv.delete(deleted); cases.append((deleted, False, "on, then deleted"))
        await kv.put(purged, b"on"); await kv.purge(purged); cases.append((purged, False, "on, then purged"))
        cases.append((missing, False, "never set"))
        await kv.put(back, b"on"); await kv.delete(back); await kv.put(back, b"on")
        cases.append((back, True, "deleted, then on again"))
        for key, want, story in cases:
            got = await call_learner(flag_enabled, lkv, key, what=f"flag_enabled(kv, {key!r})")
            expect(isinstance(got, bool), "flag_enabled must return True or False.", expected="a bool",
                   seen=f"{type(got).__name__}: {got!r}"[:80], hint="return entry.value == b\"on\" (a bool), not the value itself.")
            expect(got == want, f"wrong answer for a flag that was {story}.", expected=want, seen=got,
                   hint="only the latest value counts; a deleted, purged or missing key raises KeyNotFoundError "
                        "from kv.get: treat it as off.")
        return f"it answered correctly for {len(cases)} flags: on, off, deleted, purged, never set, re-enabled."


# ------------------------------------------------------------------------------ 3.3
@exercise("3.3", "register a flag only once",
          hints=("await kv.create(key, default) succeeds only when the key does not exist; "
               "KeyWrongLastSequenceError means someone else has it.",))
async def register_once(register_flag):
    async with scratch_server() as srv, client(srv) as nc, client(srv) as learner:
        name, kv = await _bucket(nc, "flags", history=5)
        lkv = Meddling(learner.jetstream(), name)
        call = lambda key, default: call_learner(register_flag, lkv, key, default,
                                                 what=f"register_flag(kv, {key!r}, {default!r})")
        # 1. an existing flag is left alone
        key = f"flags.f{_token(5)}"
        rev = await kv.put(key, b"off")
        got = await call(key, b"on")
        value, now = await _value(kv, key)
        expect(got is False, "register_flag returned something other than False for a flag that already existed.",
               expected=False, seen=got, hint="return False when the key is there already.")
        expect(now == rev and value == b"off", "register_flag changed a flag that already existed.",
               expected=f"b'off' at revision {rev}", seen=f"{value!r} at revision {now}",
               hint="never overwrite: kv.create writes only when the key is absent.")
        # 2. a new flag, while another registrant takes the key right after any read
        key, theirs = f"flags.f{_token(5)}", f"theirs-{_token(4)}".encode()
        lkv.arm(lambda k: kv.create(k, theirs))
        got = await call(key, b"on")
        lkv.disarm()
        meddled = lkv.meddled
        value, _ = await _value(kv, key)
        if meddled:
            expect(got is False and value == theirs,
                   "another writer created the flag between your read and your write, and you overwrote it.",
                   expected=f"False, and the value the other writer stored ({theirs!r})", seen=f"{got!r}, value {value!r}",
                   hint="a read followed by put is not atomic; kv.create(key, value) is: it fails if the key exists.")
        else:
            expect(got is True and value == b"on", "a new flag was not registered.", expected="True, value b'on'",
                   seen=f"{got!r}, value {value!r}", hint="create the key with the default value and return True.")
        # 3. a deleted flag can be registered again
        key = f"flags.f{_token(5)}"
        await kv.put(key, b"off"); await kv.delete(key)
        got = await call(key, b"on")
        value, _ = await _value(kv, key)
        expect(got is True and value == b"on", "a flag that was deleted could not be registered again.",
               expected="True, value b'on'", seen=f"{got!r}, value {value!r}",
               hint="after a delete the key is absent: kv.create works again (it expects the delete marker).")
        # 4. five registrants at once: exactly one wins
        key = f"flags.f{_token(5)}"
        defaults = [f"v{i}-{_token(4)}".encode() for i in range(5)]
        results = await asyncio.gather(*(call(key, d) for d in defaults))
        value, _ = await _value(kv, key)
        stored = await _stored(nc.jetstream(), f"KV_{name}", f"$KV.{name}.{key}")
        winners = [d for d, r in zip(defaults, results) if r is True]
        expect(len(winners) == 1 and stored == 1 and value == winners[0],
               "five concurrent registrations of one new flag did not produce exactly one winner.",
               expected="one call returns True, the bucket holds one value: the winner's",
               seen=f"results {results}, {stored} value(s) written, current {value!r}",
               hint="check-then-put races; kv.create is decided by the server, so only one create succeeds.")
        return ("it left an existing flag alone, did not overwrite a concurrent registrant, re-registered a deleted "
                "flag, and of five concurrent registrations exactly one won (the server holds one value).")


# ------------------------------------------------------------------------------ 3.4
@exercise("3.4", "live feature flags with a watcher",
          hints=("w = await kv.watch(\"flags.>\"); async for e in w: skip None; DEL/PURGE -> flags.pop(e.key); "
               "else flags[e.key] = e.value == b\"on\"; stop the watcher in a finally: block.",))
async def live_flags(keep_flags):
    async with scratch_server() as srv, client(srv) as nc, client(srv) as learner:
        name, kv = await _bucket(nc, "flags", history=5)
        a, b, c, d, e, f = (f"flags.{x}{_token(4)}" for x in "abcdef")
        await kv.put(a, b"on"); await kv.put(b, b"off"); await kv.put(c, b"on"); await kv.delete(c)
        await kv.put(d, b"on"); await kv.purge(d); await kv.put(f"other.x{_token(4)}", b"on")
        lkv = await learner.jetstream().key_value(name)
        await learner.flush()
        baseline = subs_of(srv, learner)
        flags: dict = {}
        task = asyncio.ensure_future(call_learner(keep_flags, lkv, flags, timeout=120, what="keep_flags(kv, flags)"))

        async def reach(want: dict, story: str):
            await _until(lambda: flags == want or task.done(), 5)
            if task.done():
                task.result()  # an exception from the learner's code becomes the verdict
                raise Mismatch("keep_flags returned; it must keep following the bucket until it is cancelled.",
                               expected="still running", seen=f"returned {task.result()!r}",
                               hint="loop over the watcher (async for entry in watcher) instead of returning.")
            expect(flags == want, f"the flags dict does not match the bucket {story}.", expected=want, seen=dict(flags),
                   hint="value b\"on\" -> True, anything else -> False; drop keys whose entry is a DEL or PURGE "
                        "marker; ignore keys outside flags.")

        try:
            state = {a: True, b: False}
            await reach(state, "at start (initial values)")
            steps = [("put", e, b"on"), ("put", a, b"off"), ("delete", b, None), ("put", f"other.y{_token(4)}", b"on"),
                     ("put", f, b"maybe"), ("purge", e, None), ("put", b, b"on")]
            for op, key, value in steps:
                if op == "put":
                    await kv.put(key, value)
                    if key.startswith("flags."):
                        state[key] = value == b"on"
                else:
                    await getattr(kv, op)(key)
                    state.pop(key, None)
                await reach(dict(state), f"after the checker's {op} of {key!r}" + (f" = {value!r}" if value else ""))
        finally:
            task.cancel()
            try:
                await asyncio.wait_for(task, 5)
            except (asyncio.CancelledError, asyncio.TimeoutError, Mismatch):
                pass
        await learner.flush()
        left = await _until(lambda: subs_of(srv, learner) <= baseline, 3)
        expect(left, "the watcher's subscription is still open after keep_flags was cancelled.",
               expected=f"{baseline} subscriptions on the connection (server's /connz)", seen=subs_of(srv, learner),
               hint="wrap the loop in try/finally and await watcher.stop() in the finally block.")
        return (f"the dict followed {len(steps)} changes (puts, a delete, a purge, a key outside flags.) and the "
                "watcher was gone from /connz after cancellation.")


# ------------------------------------------------------------------------------ 3.5
@exercise("3.5", "a counter that stays right under concurrent writers",
          hints=("loop: entry = await kv.get(key) (KeyNotFoundError -> kv.create(key, b\"1\")); "
               "await kv.update(key, new, last=entry.revision); on KeyWrongLastSequenceError read again and retry.",))
async def counter(increment):
    async with scratch_server() as srv, client(srv) as nc, client(srv) as learner, client(srv) as rival_nc:
        name, kv = await _bucket(nc, "counters")
        rival = await rival_nc.jetstream().key_value(name)
        lkv = Meddling(learner.jetstream(), name)
        key = f"hits.{_token(5)}"
        call = lambda: call_learner(increment, lkv, key, what=f"increment(kv, {key!r})")

        got = await call()
        value, _ = await _value(kv, key)
        expect(value == b"1" and got == 1, "the first increment of a missing counter did not give 1.",
               expected="returns 1, the bucket holds b'1'", seen=f"returns {got!r}, the bucket holds {value!r}",
               hint="a missing key counts as 0: create it with b\"1\" (kv.create, so a concurrent creator is not overwritten).")
        # another writer increments right after each of the learner's reads
        for _ in range(4):
            lkv.arm(lambda k: _cas_increment(rival, k))
            before, meddled = int((await _value(kv, key))[0]), lkv.meddled
            got = await call()
            lkv.disarm()
            value, _ = await _value(kv, key)
            want = before + 1 + (lkv.meddled - meddled)
            expect(value == str(want).encode(), "an increment was lost: another writer changed the counter between "
                   "your read and your write, and your write replaced its change.",
                   expected=f"b'{want}' (you and the other writer both added 1 to {before})", seen=value,
                   hint="write with kv.update(key, new, last=entry.revision); on KeyWrongLastSequenceError read again and retry.")
            expect(got == want, "increment returned a value other than the one it stored.", expected=want, seen=got,
                   hint="return the new value your successful update wrote, as an int.")
        # everyone at once
        start = int((await _value(kv, key))[0])
        mine, theirs = 4 * 8, 2 * 8

        async def learner_writer():
            return [await call() for _ in range(8)]

        async def rival_writer():
            return [await _cas_increment(rival, key) for _ in range(8)]

        results = await asyncio.gather(*(learner_writer() for _ in range(4)), *(rival_writer() for _ in range(2)))
        value, _ = await _value(kv, key)
        want = start + mine + theirs
        expect(value == str(want).encode(), "increments were lost while several writers ran at once.",
               expected=f"b'{want}' ({start} + {mine} of yours + {theirs} of the checker's)", seen=value,
               hint="every write must be a compare-and-set (kv.update with last=revision) retried on conflict.")
        returned = sorted(v for r in results for v in r)
        expect(returned == list(range(start + 1, want + 1)), "the values increment returned are not each a distinct step.",
               expected=f"every value {start + 1}..{want} exactly once across all writers", seen=returned[:12],
               hint="return the value your own successful update stored.")
        return (f"with the checker writing between your reads and alongside 4 concurrent callers, the counter went "
                f"to exactly {want}: no increment lost ({lkv.meddled} forced conflicts).")


# ------------------------------------------------------------------------------ 3.6
@exercise("3.6", "a session store whose entries expire",
          hints=("await js.create_key_value(bucket=name, ttl=ttl) (history stays 1)",))
async def session_store(open_session_store):
    async with scratch_server() as srv, client(srv) as nc, client(srv) as learner:
        js, name, ttl = nc.jetstream(), f"sessions_{_token(6)}", random.choice((1.0, 1.5))
        kv = await call_learner(open_session_store, learner.jetstream(), name, ttl,
                                what=f"open_session_store(js, {name!r}, {ttl})")
        config = await _bucket_config(js, name)
        age = config.max_age or 0
        expect(abs(age - ttl) < 0.01, "entries in the bucket do not expire after the given TTL.",
               expected=f"ttl {ttl} s (stream max_age {ttl})", seen=f"max_age {age} s",
               hint="pass ttl=ttl (seconds) to create_key_value.")
        expect(config.max_msgs_per_subject == 1, "the bucket keeps old revisions of sessions.",
               expected="history 1", seen=f"history {config.max_msgs_per_subject}",
               hint="a session store needs only the latest value; leave history at its default, 1.")
        sid = f"s{_token()}"
        await _returned_handle(kv, js, name, "open_session_store", sid)
        mine = await js.key_value(name)
        gone = await _until(lambda: _gone(mine, sid), ttl + 5, 0.1)
        expect(gone, "a session did not expire.", expected=f"gone about {ttl} s after it was written",
               seen=f"still there after {ttl + 5:.0f} s", hint="set the bucket's ttl.")
        return f"bucket {name!r} keeps one revision per session, and a session written by the checker expired (max_age {ttl} s)."


async def _gone(kv, key) -> bool:
    return (await _value(kv, key))[0] is None


# ------------------------------------------------------------------------------ 3.7
@exercise("3.7", "touch a session without bringing it back",
          hints=("entry = await kv.get(sid) (KeyNotFoundError -> False); "
               "await kv.update(sid, entry.value, last=entry.revision) (KeyWrongLastSequenceError -> False); True.",))
async def touch(touch_session):
    async with scratch_server() as srv, client(srv) as nc, client(srv) as learner:
        name, kv = await _bucket(nc, "sessions", ttl=1)
        js = nc.jetstream()
        lkv = Meddling(learner.jetstream(), name)
        call = lambda sid: call_learner(touch_session, lkv, sid, what=f"touch_session(kv, {sid!r})")
        # a live session is rewritten with its value
        sid, user = f"s{_token()}", f"user-{_token(4)}".encode()
        rev = await kv.put(sid, user)
        got = await call(sid)
        value, now = await _value(kv, sid)
        expect(got is True, "touching a live session did not return True.", expected=True, seen=got,
               hint="return True once the session has been written again.")
        expect(value == user and now is not None and now > rev, "the live session was not rewritten with its own value.",
               expected=f"{user!r} at a revision after {rev}", seen=f"{value!r} at revision {now}",
               hint="write the same value again: a new revision restarts the TTL clock.")
        # a session that never existed, or has expired, stays gone
        missing = f"s{_token()}"
        expired = f"s{_token()}"
        await kv.put(expired, b"someone")
        await _until(lambda: _gone(kv, expired), 6, 0.1)
        for sid, story in ((missing, "never existed"), (expired, "expired")):
            got = await call(sid)
            stored = await _stored(js, f"KV_{name}", f"$KV.{name}.{sid}")
            expect(got is False, f"touch_session returned {got!r} for a session that {story}.", expected=False, seen=got,
                   hint="kv.get raises KeyNotFoundError for a missing or expired key: return False.")
            expect(stored == 0, f"touch_session wrote a session that {story}: it came back to life.",
                   expected="no message for that key in the stream", seen=f"{stored} message(s)",
                   hint="only write when the key exists; never put blindly.")
        # logged out right after you read it: do not resurrect
        sid = f"s{_token()}"
        await kv.put(sid, b"alice")
        lkv.arm(lambda k: kv.delete(k))
        got = await call(sid)
        lkv.disarm()
        value, _ = await _value(kv, sid)
        if lkv.meddled:
            expect(got is False and value is None, "the session was deleted (a logout) between your read and your "
                   "write, and your write brought it back.", expected="False, the session stays deleted",
                   seen=f"{got!r}, value {value!r}",
                   hint="write with kv.update(sid, entry.value, last=entry.revision): it fails if anything changed "
                        "since your read; return False then.")
        return ("a live session was rewritten (new revision, same value); missing, expired and just-logged-out "
                "sessions were not brought back (the server holds no new message for them).")


# ------------------------------------------------------------------------------ 3.8
@exercise("3.8", "restore an old revision",
          hints=("old = await kv.get(key, revision=revision); return await kv.put(key, old.value)",))
async def restore_revision(restore):
    async with scratch_server() as srv, client(srv) as nc, client(srv) as learner:
        name, kv = await _bucket(nc, "config", history=10)
        lkv = await learner.jetstream().key_value(name)
        key, other = f"app.k{_token(4)}", f"app.o{_token(4)}"
        values = [f"v{i}-{_token(4)}".encode() for i in range(3)]
        revs = []
        for v in values:
            revs.append(await kv.put(key, v))
            await kv.put(other, _token().encode())
        await kv.delete(key)

        async def history():
            return [(e.revision, e.operation, e.value) for e in await history_entries(kv, key)]

        for target in (1, 0):
            before = await history()
            got = await call_learner(restore, lkv, key, revs[target], what=f"restore(kv, {key!r}, {revs[target]})")
            after = await history()
            value, now = await _value(kv, key)
            expect(value == values[target], f"after restore(kv, key, {revs[target]}) the key does not hold that revision's value.",
                   expected=values[target], seen=value,
                   hint="read the old revision with kv.get(key, revision=revision) and write its value as a new revision.")
            expect(after[:len(before)] == before and len(after) == len(before) + 1,
                   "restore changed the key's history instead of adding one revision on top.",
                   expected=f"{len(before)} old entries kept, 1 new", seen=f"{len(after)} entries, old ones kept: {after[:len(before)] == before}",
                   hint="never purge or rewrite: one put (or update) of the old value.")
            expect(got == now, "restore returned something other than the new revision.", expected=now, seen=got,
                   hint="kv.put and kv.update return the revision they wrote.")
        last = await _value(kv, key)
        js = nc.jetstream()
        stream_last = (await js.stream_info(f"KV_{name}")).state.last_seq
        marker = [r for r, op, _ in await history() if op == "DEL"][0]
        for bad, story in (((await kv.get(other)).revision, "a revision of another key"),
                           (marker, "the revision of a delete marker")):
            try:
                got = await call_learner(restore, lkv, key, bad, what=f"restore(kv, {key!r}, {bad})")
            except Unsolved:
                raise
            except Mismatch:
                got = "raised"
            written = (await js.stream_info(f"KV_{name}")).state.last_seq - stream_last
            expect(got == "raised" and written == 0, f"restore accepted {story} ({bad}).",
                   expected="an exception, nothing written", seen=f"returned {got!r}, {written} message(s) written",
                   hint="kv.get(key, revision=r) raises KeyNotFoundError when r is not a value of key: let it raise.")
        expect(await _value(kv, key) == last, "a refused restore changed the key.", expected=last,
               seen=await _value(kv, key), hint="write nothing when the revision is not one of the key's values.")
        return (f"restoring revisions {revs[1]} and {revs[0]} (over a delete) added one revision each and kept the "
                "history; another key's revision and a delete marker were refused with nothing written.")


# ------------------------------------------------------------------------------ 3.9
@exercise("3.9", "store a large object with metadata",
          hints=("await obs.put(name, data, meta=api.ObjectMeta(name=name, headers={\"Version\": [version]}, "
               "options=api.ObjectMetaOptions(max_chunk_size=64 * 1024)))",))
async def store_object(store_artifact):
    async with scratch_server() as srv, client(srv) as nc, client(srv) as learner:
        js, bucket = nc.jetstream(), f"artifacts_{_token(6)}"
        obs = await js.create_object_store(bucket=bucket)
        lobs = await learner.jetstream().object_store(bucket)
        name, version = f"build-{_token(4)}.tar", f"1.{int(_token(4), 16) % 97}.{int(_token(4), 16) % 31}"
        data = os.urandom(2 * 1024 * 1024 + int(_token(4), 16) % 50_000)
        await call_learner(store_artifact, lobs, name, data, version, what=f"store_artifact(obs, {name!r}, data, {version!r})")
        try:
            raw = await js.get_last_msg(f"OBJ_{bucket}", meta_subject(bucket, name))
        except jserr.NotFoundError:
            raise Mismatch(f"the bucket has no object named {name!r}.", expected=f"metadata on {meta_subject(bucket, name)}",
                           seen="none", hint="obs.put(name, data, meta=...) with the name you are given.")
        meta = json.loads(raw.data)
        expect(meta.get("size") == len(data) and meta.get("digest") == digest_of(data),
               "the stored object is not the data you were given.",
               expected=f"size {len(data)}, digest {digest_of(data)}", seen=f"size {meta.get('size')}, digest {meta.get('digest')}",
               hint="store the bytes as they are.")
        headers = meta.get("headers") or {}
        seen_version = headers.get("Version")
        expect(seen_version in (version, [version]), "the object's metadata does not carry the version header.",
               expected=f"headers Version: [{version!r}]", seen=f"headers: {headers}",
               hint="pass meta=api.ObjectMeta(headers={\"Version\": [version]}) to obs.put.")
        chunk = (meta.get("options") or {}).get("max_chunk_size")
        want_chunks = math.ceil(len(data) / 65536)
        stored = await _stored(js, f"OBJ_{bucket}", f"$O.{bucket}.C.{meta.get('nuid')}")
        expect(chunk is not None and chunk <= 65536 and stored >= want_chunks and stored == meta.get("chunks"),
               "the object is not stored in chunks of at most 64 KiB.",
               expected=f"max_chunk_size <= 65536, at least {want_chunks} chunk messages",
               seen=f"max_chunk_size {chunk}, {stored} chunk messages on the server",
               hint="options=api.ObjectMetaOptions(max_chunk_size=64 * 1024) in the ObjectMeta.")
        back = await obs.get(name)
        expect(back.data == data, "reading the object back gives other bytes.", expected=f"{len(data)} bytes as given",
               seen=f"{len(back.data or b'')} bytes", hint="store data unchanged.")
        return (f"the server holds {name!r}: {len(data)} bytes in {stored} chunks of <= 64 KiB, SHA-256 digest "
                f"matching the data, header Version {version}; read back byte for byte.")


# ------------------------------------------------------------------------------ 3.10
@exercise("3.10", "fetch an object and verify it",
          hints=("res = await obs.get(name); compare digest_of(res.data) (or res.info.digest) with expected_digest; "
               "raise ValueError when they differ.",))
async def fetch_object(fetch_verified):
    async with scratch_server() as srv, client(srv) as nc, client(srv) as learner:
        js, bucket = nc.jetstream(), f"artifacts_{_token(6)}"
        obs = await js.create_object_store(bucket=bucket)
        lobs = await learner.jetstream().object_store(bucket)
        good = os.urandom(600_000 + int(_token(4), 16) % 10_000)
        expected = digest_of(good)
        call = lambda name: call_learner(fetch_verified, lobs, name, expected, what=f"fetch_verified(obs, {name!r}, expected)")
        # the right object
        name = f"model-{_token(4)}.bin"
        await obs.put(name, good)
        got = await call(name)
        expect(isinstance(got, (bytes, bytearray)) and bytes(got) == good, "fetch_verified did not return the object's bytes.",
               expected=f"{len(good)} bytes with digest {expected}", seen=f"{type(got).__name__} {len(got) if hasattr(got, '__len__') else ''}",
               hint="return result.data.")
        # replaced by other content: consistent, but not what the manifest says
        replaced = f"model-{_token(4)}.bin"
        await obs.put(replaced, os.urandom(len(good)))
        # tampered: chunks of other content under metadata that claims the expected digest
        tampered = f"model-{_token(4)}.bin"
        await obs.put(tampered, os.urandom(len(good)))
        raw = await js.get_last_msg(f"OBJ_{bucket}", meta_subject(bucket, tampered))
        meta = json.loads(raw.data)
        meta["digest"] = expected
        await js.publish(meta_subject(bucket, tampered), json.dumps(meta).encode(), headers={"Nats-Rollup": "sub"})
        missing = f"model-{_token(4)}.bin"
        for n, story in ((replaced, "was replaced by other content"), (tampered, "has chunks that do not match its "
                         "metadata"), (missing, "does not exist")):
            try:
                got = await call(n)
            except Unsolved:
                raise
            except Mismatch:
                continue
            raise Mismatch(f"fetch_verified returned data for an object that {story}.", expected="an exception",
                           seen=f"returned {type(got).__name__}" + (f" of {len(got)} bytes" if hasattr(got, "__len__") else ""),
                           hint="compare the digest of what you read with expected_digest and raise ValueError when they differ.")
        return ("it returned the right object byte for byte and raised for a replaced object, a tampered one "
                "and a missing one.")
