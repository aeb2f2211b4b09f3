"""Module 03 (key-value and object store): feature flags, a counter, sessions, history, objects.

Every checker starts its own JetStream server, makes its own buckets with random names, hands the
learner's function a handle made on a plain ``nats.connect`` connection (as the learner's own
program would have), and reads the result back from the server (stream info, stored messages, its
own KV handle).  Where concurrency is the point it writes competing updates itself, after
the learner's code has read a key (whichever way it read it: ``get``, ``keys``, ``history``,
``watch``) and before it writes, including when the write would create the key.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import os
import random

import nats.js.errors as jserr
from nats.js.kv import KeyValue

from ..checks import Mismatch, Unsolved, call_learner, exercise, expect
from ...lessons.kvstore import digest_of, history_entries, meta_subject, value_of
from ...runtime.waiting import until
from . import client, learner_client, of_type, scratch_server, subs_of, token


# ------------------------------------------------------------------------------ shared tools
async def _bucket(nc, prefix: str, **config):
    name = f"{prefix}_{token(6)}"
    return name, await nc.jetstream().create_key_value(bucket=name, **config)


async def _stored(js, stream: str, subject: str) -> int:
    """How many messages the stream keeps on ``subject`` (the server's count)."""
    info = await js.stream_info(stream, subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


async def _gone(kv, key) -> bool:
    return (await value_of(kv, key))[0] is None


async def _bucket_config(js, name: str):
    """The config of bucket ``name``'s stream, as the server has it; a verdict if there is none."""
    try:
        return (await js.stream_info(f"KV_{name}")).config
    except jserr.NotFoundError:
        streams = [si.config.name for si in await js.streams_info()]
        raise Mismatch(f"the server has no bucket named {name!r}.", expected=f"stream KV_{name}",
                       seen=f"streams: {streams}",
                       hint="a bucket named B is the stream KV_B: create the bucket with exactly the name you are "
                            "given (lesson 03.1).")


async def _returned_handle(kv, js, name: str, fn: str, key: str) -> None:
    """The learner returned a KeyValue handle of bucket ``name``: a put through it reaches that bucket."""
    expect(isinstance(kv, KeyValue), f"{fn} must return the bucket handle.", expected="a nats.js.kv.KeyValue",
           seen=f"{type(kv).__name__}: {kv!r}"[:100],
           hint="the call that creates a bucket returns its handle (a KeyValue): return that object, not the "
                "bucket's name, status or stream info.")
    probe = token(8).encode()
    await call_learner(kv.put, key, probe, what="a put through the handle you returned")
    seen, _ = await value_of(await js.key_value(name), key)
    expect(seen == probe, "a put through the returned handle did not reach the bucket.", expected=probe, seen=seen,
           hint="return the handle of the bucket you created, not of another one.")


async def _learner_kv(learner, bucket: str) -> "Meddling":
    """A Meddling handle on ``bucket`` made on the learner's (plain) connection."""
    js = learner.jetstream()
    direct = bool((await js.stream_info(f"KV_{bucket}")).config.allow_direct)
    return Meddling(js, bucket, direct)


class Meddling(KeyValue):
    """A real KeyValue handle on which another writer acts between the learner's read and write.

    Once ``arm(action)`` is called, the first write through the handle (``put``, ``create``,
    ``update``, ``delete``, ``purge``) that follows a read of any kind (``get`` of the latest value,
    also when it raised KeyNotFoundError; ``keys``; ``history``; ``watch``/``watchall``) first runs
    ``await action()``: whatever the learner read is then out of date, exactly when it matters.
    ``meddled`` counts how many actions ran.  It is built with KeyValue's public constructor, as
    ``js.key_value(bucket)`` builds one.
    """

    def __init__(self, js, bucket: str, direct: bool = False):
        super().__init__(name=bucket, stream=f"KV_{bucket}", pre=f"$KV.{bucket}.", js=js, direct=direct)
        self._action = None
        self._read = False
        self.meddled = 0

    def arm(self, action) -> None:
        self._action, self._read = action, False

    def disarm(self) -> None:
        self._action = None

    async def _before_write(self) -> None:
        if self._read and self._action is not None:
            action, self._action = self._action, None
            self.meddled += 1
            await action()

    # reads
    async def get(self, key, revision=None, validate_keys=True):
        try:
            return await super().get(key, revision, validate_keys)
        finally:
            self._read = self._read or revision is None  # an old revision says nothing about the key now

    async def keys(self, *args, **kwargs):
        try:
            return await super().keys(*args, **kwargs)
        finally:
            self._read = True

    async def history(self, *args, **kwargs):
        try:
            return await super().history(*args, **kwargs)
        finally:
            self._read = True

    async def watch(self, *args, **kwargs):
        try:
            return await super().watch(*args, **kwargs)
        finally:
            self._read = True

    # writes
    async def put(self, *args, **kwargs):
        await self._before_write()
        return await super().put(*args, **kwargs)

    async def create(self, *args, **kwargs):
        await self._before_write()
        return await super().create(*args, **kwargs)

    async def update(self, *args, **kwargs):
        await self._before_write()
        return await super().update(*args, **kwargs)

    async def delete(self, *args, **kwargs):
        await self._before_write()
        return await super().delete(*args, **kwargs)

    async def purge(self, *args, **kwargs):
        await self._before_write()
        return await super().purge(*args, **kwargs)


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


def _boolean(got, what: str):
    return of_type(got, bool, what, "True or False (a bool)")


# ------------------------------------------------------------------------------ 3.1
BUCKET_HINTS = {
    "BadRequestError": "the server refused the bucket's settings (print the error's description): history is "
                       "at most 64 revisions, sizes are in bytes (lesson 03.1).",
    "KeyHistoryTooLargeError": "a bucket keeps at most 64 revisions per key (its history).",
    "TypeError": "create_key_value takes keyword arguments (bucket=..., and the settings by name); look at the "
                 "names in lesson 03.1.",
}


@exercise("3.1", "a bucket for feature flags",
          hints=("a bucket's options are stream settings: how many revisions it keeps per key, and how large one "
                 "value may be (lesson 03.1, 'A bucket is a stream' and 'Limits on size').",
                 "js.create_key_value(bucket=..., history=..., max_value_size=...) returns the KeyValue handle.",
                 "return await js.create_key_value(bucket=name, history=10, max_value_size=256)"))
async def flags_bucket(create_flags_bucket):
    async with scratch_server() as srv, client(srv) as nc, learner_client(srv) as learner:
        js, name = nc.jetstream(), f"flags_{token(6)}"
        kv = await call_learner(create_flags_bucket, learner.jetstream(), name,
                                what=f"create_flags_bucket(js, {name!r})", hints=BUCKET_HINTS)
        c = await _bucket_config(js, name)
        expect(c.max_msgs_per_subject == 10, "the bucket keeps the wrong number of revisions per key.",
               expected="history 10 (stream max_msgs_per_subject: 10)", seen=f"max_msgs_per_subject: {c.max_msgs_per_subject}",
               hint="the number of revisions a bucket keeps per key is its history (the stream's "
                    "max_msgs_per_subject); the default keeps only the latest.")
        expect(c.max_msg_size == 256, "values are not limited to 256 bytes.", expected="max_value_size 256 (stream max_msg_size: 256)",
               seen=f"max_msg_size: {c.max_msg_size}" + (" (no limit)" if c.max_msg_size in (None, -1) else ""),
               hint="the largest value a bucket accepts is its max value size (the stream's max_msg_size), in bytes; "
                    "max_bytes limits the whole bucket instead.")
        await _returned_handle(kv, js, name, "create_flags_bucket", "flags.probe")
        mine = await js.key_value(name)
        await mine.put("flags.size", b"x" * 256)
        try:
            await mine.put("flags.size", b"x" * 257)
            refused = False
        except jserr.APIError:
            refused = True
        expect(refused, "the server accepted a 257-byte value.", expected="a 257-byte put refused",
               seen="stored", hint="the value size limit must be 256 bytes exactly.")
        return (f"the server keeps bucket {name!r} as stream KV_{name} with 10 revisions per key; it stored a "
                "256-byte value and refused a 257-byte one; a put through the returned handle reached the bucket.")


# ------------------------------------------------------------------------------ 3.2
@exercise("3.2", "read a flag",
          hints=("only the key's latest entry counts, and a key that was never set, was deleted or was purged has "
                 "no value: reading it is an error you must turn into 'off' (lesson 03.1, 'delete versus purge').",
                 "kv.get(key) returns an entry whose .value is bytes; it raises "
                 "nats.js.errors.KeyNotFoundError when the key has no value.",
                 "try: entry = await kv.get(key)  except KeyNotFoundError: return False;  return entry.value == b\"on\""))
async def read_flag(flag_enabled):
    async with scratch_server() as srv, client(srv) as nc, learner_client(srv) as learner:
        name, kv = await _bucket(nc, "flags", history=5)
        lkv = await learner.jetstream().key_value(name)
        k = lambda: f"flags.f{token(5)}"
        cases = []
        on, off, other, deleted, purged, missing, back = k(), k(), k(), k(), k(), k(), k()
        await kv.put(on, b"on"); cases.append((on, True, "on"))
        await kv.put(off, b"on"); await kv.put(off, b"off"); cases.append((off, False, "first on, now off"))
        await kv.put(other, b"enabled"); cases.append((other, False, "set to b'enabled' (not b'on')"))
        await kv.put(deleted, b"on"); await kv.delete(deleted); cases.append((deleted, False, "on, then deleted"))
        await kv.put(purged, b"on"); await kv.purge(purged); cases.append((purged, False, "on, then purged"))
        cases.append((missing, False, "never set"))
        await kv.put(back, b"on"); await kv.delete(back); await kv.put(back, b"on")
        cases.append((back, True, "deleted, then on again"))
        hints = {"KeyNotFoundError": "kv.get raises KeyNotFoundError for a flag that was never set, was deleted or was "
                                     "purged: such a flag is off, so catch it and answer False (lesson 03.1)."}
        for key, want, story in cases:
            got = _boolean(await call_learner(flag_enabled, lkv, key, what=f"flag_enabled(kv, {key!r})", hints=hints),
                           "flag_enabled")
            if got != want and want and story == "on":
                hint = "values come back as bytes: compare with bytes (b\"on\"), not with the str \"on\"."
            elif got != want and want:
                hint = "a key deleted and then set again is on: only its latest entry counts."
            else:
                hint = ("only the latest value counts, and only b\"on\" is on; a key without a value (never set, deleted, "
                        "purged) is off.")
            expect(got == want, f"wrong answer for a flag that was {story}.", expected=want, seen=got, hint=hint)
        return (f"it answered correctly for {len(cases)} flags: on, off, another value, deleted, purged, never set, "
                "re-enabled.")


# ------------------------------------------------------------------------------ 3.3
@exercise("3.3", "register a flag only once",
          hints=("'write only if absent' must be decided by the server in one step: a read followed by a write "
                 "leaves a gap in which another registrant can write (lesson 03.1, 'create: only if absent').",
                 "kv.create(key, value) stores the value only when the key is absent (a deleted key counts as "
                 "absent) and raises KeyWrongLastSequenceError otherwise.",
                 "try: await kv.create(key, default); return True  except KeyWrongLastSequenceError: return False"))
async def register_once(register_flag):
    async with scratch_server() as srv, client(srv) as nc, learner_client(srv) as learner:
        name, kv = await _bucket(nc, "flags", history=5)
        lkv = await _learner_kv(learner, name)
        hints = {"KeyWrongLastSequenceError": "a create of a key that exists raises KeyWrongLastSequenceError: that is "
                                              "the answer 'someone has it already' (return False), not an error.",
                 "KeyNotFoundError": "kv.get raises KeyNotFoundError when the key is absent, which is the case "
                                     "where you register it."}
        call = lambda key, default: call_learner(register_flag, lkv, key, default, hints=hints,
                                                 what=f"register_flag(kv, {key!r}, {default!r})")
        # 1. an existing flag is left alone
        key = f"flags.f{token(5)}"
        rev = await kv.put(key, b"off")
        got = _boolean(await call(key, b"on"), "register_flag")
        value, now = await value_of(kv, key)
        expect(now == rev and value == b"off", "register_flag changed a flag that already existed.",
               expected=f"b'off' at revision {rev}", seen=f"{value!r} at revision {now}",
               hint="an existing flag belongs to whoever registered it first: never overwrite it.")
        expect(got is False, "register_flag returned True for a flag that already existed.",
               expected=False, seen=got, hint="return False when the key is there already.")
        # 2. a new flag, while another registrant creates the key between any read of it and the write
        key, theirs = f"flags.f{token(5)}", f"theirs-{token(4)}".encode()

        async def rival_creates():
            await kv.create(key, theirs)

        lkv.arm(rival_creates)
        got = _boolean(await call(key, b"on"), "register_flag")
        lkv.disarm()
        raced = lkv.meddled
        value, _ = await value_of(kv, key)
        if raced:
            expect(got is False and value == theirs,
                   "another registrant created the flag between your read and your write, and you "
                   + ("overwrote it." if value != theirs else "returned True."),
                   expected=f"False, and the value the other registrant stored ({theirs!r})",
                   seen=f"{got!r}, value {value!r}",
                   hint="a read followed by a put is not atomic: between the two, someone else can register the "
                        "flag. Let the server decide in one step whether the key is absent.")
        else:
            expect(got is True and value == b"on", "a new flag was not registered.", expected="True, value b'on'",
                   seen=f"{got!r}, value {value!r}", hint="create the key with the default value and return True.")
        # 3. a deleted flag can be registered again
        key = f"flags.f{token(5)}"
        await kv.put(key, b"off"); await kv.delete(key)
        got = _boolean(await call(key, b"on"), "register_flag")
        value, _ = await value_of(kv, key)
        expect(got is True and value == b"on", "a flag that was deleted could not be registered again.",
               expected="True, value b'on'", seen=f"{got!r}, value {value!r}",
               hint="after a delete the key's last revision is the delete marker, not 0: the key counts as absent, "
                    "and 'expect revision 0' alone refuses it (lesson 03.1).")
        # 4. five registrants at once: exactly one wins
        key = f"flags.f{token(5)}"
        defaults = [f"v{i}-{token(4)}".encode() for i in range(5)]
        results = await asyncio.gather(*(call(key, d) for d in defaults))
        results = [_boolean(r, "register_flag") for r in results]
        value, _ = await value_of(kv, key)
        stored = await _stored(nc.jetstream(), f"KV_{name}", f"$KV.{name}.{key}")
        winners = [d for d, r in zip(defaults, results) if r is True]
        expect(len(winners) == 1 and stored == 1 and value == winners[0],
               "five concurrent registrations of one new flag did not produce exactly one winner.",
               expected="one call returns True, the bucket holds one value: the winner's",
               seen=f"results {results}, {stored} value(s) written, current {value!r}",
               hint="check-then-put races: several callers see the key absent and all write. Only a write the "
                    "server refuses when the key exists gives exactly one winner.")
        race = ("did not overwrite a registrant that created the flag between your read and your write, "
                if raced else "(your code never read the key before writing, so no rival was slipped in between), ")
        return ("it left an existing flag alone, " + race + "re-registered a deleted flag, and of five concurrent "
                "registrations exactly one won (the server holds one value).")


# ------------------------------------------------------------------------------ 3.4
@exercise("3.4", "live feature flags with a watcher",
          hints=("a watcher delivers the latest entry of each matching key, then None, then every change, "
                 "deletes and purges included; it must be stopped when you are done (lesson 03.2).",
                 "kv.watch(\"flags.>\") returns a watcher: async for entry in watcher (skip None); "
                 "entry.operation is \"DEL\" or \"PURGE\" for markers; await watcher.stop() in a finally: block.",
                 "w = await kv.watch(\"flags.>\"); try: async for e in w: if e is None: continue; "
                 "if e.operation in (\"DEL\", \"PURGE\"): flags.pop(e.key, None) else: flags[e.key] = e.value == b\"on\"  "
                 "finally: await w.stop()"))
async def live_flags(keep_flags):
    async with scratch_server() as srv, client(srv) as nc, learner_client(srv) as learner:
        name, kv = await _bucket(nc, "flags", history=5)
        a, b, c, d, e, f = (f"flags.{x}{token(4)}" for x in "abcdef")
        await kv.put(a, b"on"); await kv.put(b, b"off"); await kv.put(c, b"on"); await kv.delete(c)
        await kv.put(d, b"on"); await kv.purge(d); await kv.put(f"other.x{token(4)}", b"on")
        lkv = await learner.jetstream().key_value(name)
        baseline = await until(lambda: subs_of(srv, learner), "the learner's connection on /connz", timeout=5,
                               error=False) or 0
        flags: dict = {}
        hints = {"KeyError": "the initial values include keys whose latest entry is a DEL or PURGE marker, which "
                             "were never in the dict: remove keys in a way that accepts a missing one.",
                 "AttributeError": "the watcher yields None once, after the initial values ('you are up to date'): "
                                   "skip it before reading .key or .operation (lesson 03.2).",
                 "NoKeysError": "kv.keys() raises NoKeysError on an empty bucket; a watcher needs no such read first."}
        task = asyncio.ensure_future(call_learner(keep_flags, lkv, flags, timeout=120, hints=hints,
                                                  what="keep_flags(kv, flags)"))

        def explain(want: dict) -> str:
            if not flags:
                return ("the dict you were given stayed empty: fill that same dict in place (flags[key] = ...), "
                        "starting with the initial values the watcher delivers first.")
            if any(not k.startswith("flags.") for k in flags):
                return "keys outside flags. are not flags: watch only the keys under flags."
            if set(flags) - set(want):
                return "a DEL or PURGE entry means the key no longer has a value: remove it from the dict."
            if any(k.count(".") > 1 for k in set(want) - set(flags)):
                return ("keys under flags. can have several tokens after it (flags.ui.dark): the wildcard * matches "
                        "exactly one token, > matches one or more (lesson 03.2).")
            if set(want) - set(flags):
                return "every key under flags. with a value belongs in the dict, including keys set after you started."
            return "values are bytes: b\"on\" is True, anything else is False."

        async def reach(want: dict, story: str):
            await until(lambda: flags == want or task.done(), f"the flags {story}", timeout=5, error=False)
            if task.done():
                task.result()  # an exception from the learner's code becomes the verdict
                raise Mismatch("keep_flags returned; it must keep following the bucket until it is cancelled.",
                               expected="still running", seen=f"returned {task.result()!r}",
                               hint="a watcher keeps delivering changes: loop over it for as long as the function "
                                    "runs, instead of returning after the initial values.")
            expect(flags == want, f"the flags dict does not match the bucket {story}.", expected=want, seen=dict(flags),
                   hint=explain(want))

        try:
            state = {a: True, b: False}
            await reach(state, "at start (initial values)")
            deep = f"flags.ui.g{token(4)}"
            steps = [("put", e, b"on"), ("put", a, b"off"), ("delete", b, None), ("put", f"other.y{token(4)}", b"on"),
                     ("put", f, b"maybe"), ("put", deep, b"on"), ("purge", e, None), ("put", b, b"on")]
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
        left = await until(lambda: subs_of(srv, learner) <= baseline, "the watcher's subscription gone", timeout=3,
                           error=False)
        expect(left, "the watcher's subscription is still open after keep_flags was cancelled.",
               expected=f"{baseline} subscriptions on the connection (server's /connz)", seen=subs_of(srv, learner),
               hint="cancelling raises CancelledError inside your function: a watcher left running keeps its "
                    "subscription (and consumer) on the server. Stop it whatever way the function ends.")
        return (f"the dict followed the initial values and {len(steps)} changes (puts, a deeper key flags.ui.*, a delete, "
                "a purge, keys outside flags.), and the watcher's subscription was gone from /connz after cancellation.")


# ------------------------------------------------------------------------------ 3.5
COUNTER_HINTS = {
    "KeyWrongLastSequenceError": "your compare-and-set write was refused: another writer changed (or created) the "
                                 "counter after your read. That is expected under concurrency: read again and "
                                 "retry, in a loop, until your write goes through (lesson 03.3).",
    "KeyNotFoundError": "a missing counter counts as 0: kv.get raises KeyNotFoundError for it, so catch that and "
                        "create the key (lesson 03.3, 'The retry loop').",
    "ValueError": "the counter is stored as decimal text (b\"41\"): int(entry.value) reads it, str(n).encode() "
                  "writes it.",
}


@exercise("3.5", "a counter that stays right under concurrent writers",
          hints=("a read-modify-write must be a compare-and-set: write only if nobody wrote since your read, and "
                 "retry on conflict; creating a missing counter is the same check against 'absent' "
                 "(lesson 03.3, 'The retry loop').",
                 "kv.update(key, value, last=entry.revision) and kv.create(key, value) raise "
                 "KeyWrongLastSequenceError on conflict; kv.get raises KeyNotFoundError for a missing key.",
                 "loop: entry = await kv.get(key) (KeyNotFoundError -> await kv.create(key, b\"1\"); return 1); "
                 "new = int(entry.value) + 1; await kv.update(key, str(new).encode(), last=entry.revision); return new; "
                 "on KeyWrongLastSequenceError go round again."))
async def counter(increment):
    async with (scratch_server() as srv, client(srv) as nc, learner_client(srv) as learner,
                client(srv) as rival_nc):
        name, kv = await _bucket(nc, "counters")
        rival = await rival_nc.jetstream().key_value(name)
        lkv = await _learner_kv(learner, name)
        key = f"hits.{token(5)}"
        call = lambda k: call_learner(increment, lkv, k, what=f"increment(kv, {k!r})", hints=COUNTER_HINTS)
        result = lambda got: of_type(got, int, "increment", "the new value as an int")

        async def rival_step():
            await _cas_increment(rival, key)

        # 1. a missing counter, created by another writer between your read and your write: both count
        # 2. then: another writer increments between each of your reads and your write
        for step in range(5):
            lkv.arm(rival_step)
            before, meddled = int((await value_of(kv, key))[0] or 0), lkv.meddled
            got = result(await call(key))
            lkv.disarm()
            value, _ = await value_of(kv, key)
            theirs = lkv.meddled - meddled
            want = before + 1 + theirs
            if step == 0:
                created_between = bool(theirs)
                expect(value == str(want).encode(), "the counter was missing; another writer created it between "
                       "your read and your write, and your write replaced its value." if theirs else
                       "the first increment of a missing counter did not store 1.",
                       expected=f"b'{want}'" + (" (the other writer's 1, plus yours)" if theirs else ""), seen=value,
                       hint="a missing key counts as 0, but creating it is a write like any other: with a plain put, "
                            "a writer that created it first is overwritten. Creating must fail when the key exists.")
            else:
                expect(value == str(want).encode(), "an increment was lost: another writer changed the counter between "
                       "your read and your write, and your write replaced its change.",
                       expected=f"b'{want}' (you and the other writer both added 1 to {before})", seen=value,
                       hint="a plain put always succeeds, even when the value it was computed from is stale; a write "
                            "must fail when the key changed since your read (and then you read again).")
            expect(got == want, "increment returned a value other than the one it stored.", expected=want, seen=got,
                   hint="return the new value your own successful write stored (after any retries), as an int.")
        # everyone at once on a fresh counter: creation and increments all compete
        key = f"hits.{token(5)}"
        mine, theirs = 4 * 8, 2 * 8

        async def learner_writer():
            return [result(await call(key)) for _ in range(8)]

        async def rival_writer():
            return [await _cas_increment(rival, key) for _ in range(8)]

        results = await asyncio.gather(*(learner_writer() for _ in range(4)), *(rival_writer() for _ in range(2)))
        value, _ = await value_of(kv, key)
        want = mine + theirs
        expect(value == str(want).encode(), "increments were lost while several writers ran at once on a new counter.",
               expected=f"b'{want}' ({mine} of yours + {theirs} of the checker's, from a missing key)", seen=value,
               hint="every write, the creation included, must be refused by the server when someone wrote first, "
                    "and retried with a fresh read.")
        returned = sorted(v for r in results for v in r)
        expect(returned == list(range(1, want + 1)), "the values increment returned are not each a distinct step.",
               expected=f"every value 1..{want} exactly once across all writers", seen=returned[:12],
               hint="return the value your own successful write stored.")
        later = lkv.meddled - int(created_between)
        parts = (["a missing counter created by another writer between your read and your write"] if created_between
                 else ["a missing counter went to 1"])
        parts.append(f"{later} increment(s) by another writer between your reads and writes" if later else
                     "your increments (your code never read the counter through its handle before writing, so no "
                     "writer was slipped in between)")
        return (f"{parts[0]}, then {parts[1]}, were all kept; 4 copies of your function and 2 writers of the "
                f"checker's took a new counter to exactly {want}.")


# ------------------------------------------------------------------------------ 3.6
@exercise("3.6", "a session store whose entries expire",
          hints=("a bucket's TTL is its stream's max_age: the server removes each value that long after it was "
                 "written; history says how many revisions are kept (lesson 03.1, 'TTL: values that expire').",
                 "js.create_key_value(bucket=..., ttl=<seconds>, history=...) returns the KeyValue handle.",
                 "return await js.create_key_value(bucket=name, ttl=ttl)  (history stays at its default, 1)"))
async def session_store(open_session_store):
    async with scratch_server() as srv, client(srv) as nc, learner_client(srv) as learner:
        js, name, ttl = nc.jetstream(), f"sessions_{token(6)}", random.choice((1.0, 1.5))
        kv = await call_learner(open_session_store, learner.jetstream(), name, ttl,
                                what=f"open_session_store(js, {name!r}, {ttl})", hints=BUCKET_HINTS)
        config = await _bucket_config(js, name)
        age = config.max_age or 0
        if not age:
            hint = "the bucket has no TTL: values never expire. A bucket's ttl is given when it is created."
        elif abs(age - ttl * 1000) < 1 or abs(age - ttl * 1e9) < 1e3:
            hint = "nats-py takes the TTL in seconds (a float), not milliseconds or nanoseconds."
        else:
            hint = "use the ttl you are given, in seconds."
        expect(abs(age - ttl) < 0.01, "entries in the bucket do not expire after the given TTL.",
               expected=f"ttl {ttl} s (stream max_age {ttl})", seen=f"max_age {age} s", hint=hint)
        expect(config.max_msgs_per_subject == 1, "the bucket keeps old revisions of sessions.",
               expected="history 1", seen=f"history {config.max_msgs_per_subject}",
               hint="a session store needs only the latest value of each session: keep one revision per key.")
        sid = f"s{token(8)}"
        await _returned_handle(kv, js, name, "open_session_store", sid)
        mine = await js.key_value(name)
        gone = await until(lambda: _gone(mine, sid), "the session's expiry", timeout=ttl + 5, every=0.1, error=False)
        expect(gone, "a session did not expire.", expected=f"gone about {ttl} s after it was written",
               seen=f"still there after {ttl + 5:.0f} s", hint="the bucket needs a TTL.")
        return (f"bucket {name!r} keeps one revision per session with max_age {ttl} s, and a session written "
                "through your handle was expired by the server.")


# ------------------------------------------------------------------------------ 3.7
@exercise("3.7", "touch a session without bringing it back",
          hints=("a touch is a read-modify-write: between your read and your write the session can be deleted, "
                 "purged or expire, so the write must be conditional on the revision you read "
                 "(lesson 03.3, compare-and-set; lesson 03.1 for TTL).",
                 "kv.get(sid) (KeyNotFoundError when absent); kv.update(sid, value, last=entry.revision) "
                 "(KeyWrongLastSequenceError when the key changed or vanished since).",
                 "try: entry = await kv.get(sid); await kv.update(sid, entry.value, last=entry.revision); return True  "
                 "except (KeyNotFoundError, KeyWrongLastSequenceError): return False"))
async def touch(touch_session):
    async with scratch_server() as srv, client(srv) as nc, learner_client(srv) as learner:
        # a long bucket TTL, so live sessions cannot expire during a slow run; the sessions that must
        # expire get a TTL of their own (per-message TTL, nats-server 2.11+)
        name, kv = await _bucket(nc, "sessions", ttl=60)
        js, stream = nc.jetstream(), f"KV_{name}"
        lkv = await _learner_kv(learner, name)
        hints = {"KeyNotFoundError": "kv.get raises KeyNotFoundError when the session does not exist (never created, "
                                     "expired, deleted): that is the answer False, not an error.",
                 "KeyWrongLastSequenceError": "your conditional write was refused because the session changed or "
                                              "vanished since your read: that is the answer False, not an error.",
                 "NoKeysError": "kv.keys() and kv.history() raise NoKeysError when there is nothing to list: "
                                "the session does not exist."}
        call = lambda sid: call_learner(touch_session, lkv, sid, what=f"touch_session(kv, {sid!r})", hints=hints)
        subject = lambda sid: f"$KV.{name}.{sid}"
        # a live session is rewritten with its value
        sid, user = f"s{token(8)}", f"user-{token(4)}".encode()
        rev = await kv.put(sid, user)
        got = _boolean(await call(sid), "touch_session")
        value, now = await value_of(kv, sid)
        expect(got is True, "touching a live session did not return True.", expected=True, seen=got,
               hint="return True once the session has been written again.")
        expect(value == user and now is not None and now > rev, "the live session was not rewritten with its own value.",
               expected=f"{user!r} at a revision after {rev}", seen=f"{value!r} at revision {now}",
               hint="only a new revision restarts the TTL clock, and it must carry the session's own value.")
        lkv.disarm()
        # a session that never existed, or has expired, stays gone
        missing, expired = f"s{token(8)}", f"s{token(8)}"
        await kv.create(expired, b"someone", msg_ttl=1)
        await until(lambda: _gone(kv, expired), "a session's expiry", timeout=10, every=0.1)
        for sid, story in ((missing, "never existed"), (expired, "expired")):
            before = await _stored(js, stream, subject(sid))
            got = _boolean(await call(sid), "touch_session")
            written = await _stored(js, stream, subject(sid)) - before
            expect(written == 0 and await _gone(kv, sid), f"touch_session wrote a session that {story}: it came back "
                   "to life.", expected="nothing written for that key", seen=f"{written} message(s) written",
                   hint="a touch writes only an existing session; a blind write creates it.")
            expect(got is False, f"touch_session returned {got!r} for a session that {story}.", expected=False,
                   seen=got, hint="return False when there was no session to touch.")
        # the session ends between your code's read (however it reads) and its write: it must stay ended
        async def logout(sid):
            await kv.delete(sid)

        async def purge(sid):
            await kv.purge(sid)

        async def expire(sid):
            await until(lambda: _gone(kv, sid), "a session's expiry", timeout=10, every=0.05)

        raced = []
        for end, story in ((logout, "deleted (a logout)"), (purge, "purged"), (expire, "expired")):
            sid = f"s{token(8)}"
            if end is expire:
                await kv.create(sid, b"alice", msg_ttl=1)
            else:
                await kv.put(sid, b"alice")
            lkv.arm(lambda sid=sid, end=end: end(sid))
            meddled = lkv.meddled
            got = _boolean(await call(sid), "touch_session")
            lkv.disarm()
            if lkv.meddled == meddled:
                continue
            raced.append(story.split(" ")[0])
            value, _ = await value_of(kv, sid)
            expect(value is None, f"the session was {story} between your read and your write, and your write brought "
                   "it back.", expected="the session stays gone", seen=f"value {value!r}",
                   hint="a write that does not say which revision it expects always succeeds, even when the session "
                        "ended since your read: make the write conditional, and treat its refusal as False.")
            expect(got is False, f"the session was {story} before your write, yet touch_session returned True.",
                   expected=False, seen=got, hint="a touch that was refused touched nothing: return False.")
        races = (f"; sessions {', '.join(raced)} between your code's read and write stayed gone" if raced else
                 "; your code never read the sessions through its handle, so no logout was slipped in between")
        return ("a live session was rewritten (new revision, same value); missing and expired sessions were not "
                "written" + races + ".")


# ------------------------------------------------------------------------------ 3.8
@exercise("3.8", "restore an old revision",
          hints=("the bucket keeps old revisions of a key; restoring one is a new write of its value on top of the "
                 "history, never a rewrite of the history (lesson 03.1, 'History and its limit').",
                 "kv.get(key, revision=r) reads one kept revision of key (KeyNotFoundError if r is not a value of "
                 "key); kv.put returns the revision it wrote.",
                 "old = await kv.get(key, revision=revision); return await kv.put(key, old.value)"))
async def restore_revision(restore):
    async with scratch_server() as srv, client(srv) as nc, learner_client(srv) as learner:
        name, kv = await _bucket(nc, "config", history=10)
        js = nc.jetstream()
        lkv = await learner.jetstream().key_value(name)
        key, other = f"app.k{token(4)}", f"app.o{token(4)}"
        values = [f"v{i}-{token(4)}".encode() for i in range(3)]
        revs = []
        for v in values:
            revs.append(await kv.put(key, v))
            await kv.put(other, token(8).encode())
        await kv.delete(key)

        async def history():
            return [(e.revision, e.operation, e.value) for e in await history_entries(kv, key)]

        for target in (1, 0):
            before = await history()
            got = await call_learner(restore, lkv, key, revs[target], what=f"restore(kv, {key!r}, {revs[target]})",
                                     hints={"KeyNotFoundError": "the key is currently deleted, so reading its latest "
                                            "value fails; read the revision you are given instead."})
            after = await history()
            value, now = await value_of(kv, key)
            expect(value == values[target], f"after restore(kv, key, {revs[target]}) the key does not hold that "
                   "revision's value.", expected=values[target], seen=value,
                   hint="revisions are stream sequence numbers shared by every key of the bucket, not positions in "
                        "the key's history: read the value the key had at that revision.")
            expect(after[:len(before)] == before and len(after) == len(before) + 1,
                   "restore changed the key's history instead of adding one revision on top.",
                   expected=f"{len(before)} old entries kept, 1 new",
                   seen=f"{len(after)} entries, old ones kept: {after[:len(before)] == before}",
                   hint="the history is the record of what happened: never purge or delete, only add one write.")
            got = of_type(got, int, "restore", "the new revision (an int)")
            expect(got == now, "restore returned something other than the new revision.", expected=now, seen=got,
                   hint="the write you made returns the revision it created: return that.")
        last = await value_of(kv, key)
        stream_last = (await js.stream_info(f"KV_{name}")).state.last_seq
        marker = [r for r, op, _ in await history() if op == "DEL"][0]
        bad_cases = (((await kv.get(other)).revision, "a revision of another key"),
                     (marker, "the revision of a delete marker"),
                     (stream_last + 1000, "a revision that does not exist"))
        for bad, story in bad_cases:
            try:
                got = await call_learner(restore, lkv, key, bad, what=f"restore(kv, {key!r}, {bad})")
            except Unsolved:
                raise
            except Mismatch:
                got = "raised"
            written = (await js.stream_info(f"KV_{name}")).state.last_seq - stream_last
            expect(got == "raised" and written == 0, f"restore accepted {story} ({bad}).",
                   expected="an exception, nothing written", seen=f"returned {got!r}, {written} message(s) written",
                   hint="a revision is a value of the key only if the bucket keeps a value (not a marker) of that key "
                        "at that revision; anything else is an error, and nothing may be written.")
        now_value = await value_of(kv, key)
        expect(now_value == last, "a refused restore changed the key.", expected=last, seen=now_value,
               hint="write nothing when the revision is not one of the key's values.")
        return (f"restoring revisions {revs[1]} and {revs[0]} (over a delete) added one revision each with that "
                "value and kept the history; another key's revision, a delete marker and a revision that does not "
                "exist were refused with nothing written.")


# ------------------------------------------------------------------------------ 3.9
@exercise("3.9", "store a large object with metadata",
          hints=("an object's metadata (name, description, headers, chunk size) is given when you put it "
                 "(lesson 03.4, 'Put a 3 MB object' and 'Chunk size').",
                 "obs.put(name, data, meta=api.ObjectMeta(headers=..., options=api.ObjectMetaOptions(max_chunk_size=...))); "
                 "headers are a dict of lists of strings.",
                 "await obs.put(name, data, meta=api.ObjectMeta(name=name, headers={\"Version\": [version]}, "
                 "options=api.ObjectMetaOptions(max_chunk_size=64 * 1024)))"))
async def store_object(store_artifact):
    async with scratch_server() as srv, client(srv) as nc, learner_client(srv) as learner:
        js, bucket = nc.jetstream(), f"artifacts_{token(6)}"
        obs = await js.create_object_store(bucket=bucket)
        lobs = await learner.jetstream().object_store(bucket)
        name, version = f"build-{token(4)}.tar", f"1.{random.randrange(97)}.{random.randrange(31)}"
        data = os.urandom(2 * 1024 * 1024 + random.randrange(50_000))
        await call_learner(store_artifact, lobs, name, data, version,
                           what=f"store_artifact(obs, {name!r}, data, {version!r})",
                           hints={"TypeError": "obs.put takes the name, the data (bytes) and meta=api.ObjectMeta(...); "
                                               "headers and options go inside the ObjectMeta."})
        try:
            raw = await js.get_last_msg(f"OBJ_{bucket}", meta_subject(bucket, name))
        except jserr.NotFoundError:
            names = [i.name for i in await obs.list()] if (await obs.status()).size else []
            raise Mismatch(f"the bucket has no object named {name!r}.", expected=f"metadata on {meta_subject(bucket, name)}",
                           seen=f"objects: {names}", hint="store the object under the name you are given.")
        meta = json.loads(raw.data)
        expect(not meta.get("deleted"), "the object was deleted after it was stored.", expected="the object",
               seen="a delete marker", hint="store it, and leave it there.")
        expect(meta.get("size") == len(data) and meta.get("digest") == digest_of(data),
               "the stored object is not the data you were given.",
               expected=f"size {len(data)}, digest {digest_of(data)}", seen=f"size {meta.get('size')}, digest {meta.get('digest')}",
               hint="store the bytes as they are (no encoding, no slicing).")
        headers = meta.get("headers") or {}
        seen_version = headers.get("Version")
        expect(seen_version == [version], "the object's metadata does not carry the version header as a list.",
               expected=f"headers {{'Version': [{version!r}]}}", seen=f"headers: {headers}",
               hint=("object headers are a dict of lists of strings, like message headers: the value must be a list "
                     "holding the version." if seen_version == version else
                     "the version goes in the object's headers, under the name Version (not in the description)."))
        chunk = (meta.get("options") or {}).get("max_chunk_size")
        want_chunks = math.ceil(len(data) / 65536)
        stored = await _stored(js, f"OBJ_{bucket}", f"$O.{bucket}.C.{meta.get('nuid')}")
        expect(chunk is not None and chunk <= 65536 and stored >= want_chunks and stored == meta.get("chunks"),
               "the object is not stored in chunks of at most 64 KiB.",
               expected=f"max_chunk_size <= 65536, at least {want_chunks} chunk messages",
               seen=f"max_chunk_size {chunk}, {stored} chunk messages on the server",
               hint="the chunk size is an option of the object's metadata; the default is 128 KiB.")
        back = await obs.get(name)
        expect(back.data == data, "reading the object back gives other bytes.", expected=f"{len(data)} bytes as given",
               seen=f"{len(back.data or b'')} bytes", hint="store data unchanged.")
        return (f"the server holds {name!r}: {len(data)} bytes in {stored} chunks of <= 64 KiB, SHA-256 digest "
                f"matching the data, header Version [{version!r}]; read back byte for byte.")


# ------------------------------------------------------------------------------ 3.10
def _awkward_data(size: int) -> bytes:
    """Random bytes whose digest differs between URL-safe and standard base64 (it has - or _),
    so a digest written in the wrong alphabet can never match by chance."""
    while True:
        data = os.urandom(size)
        b64 = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
        if "-" in b64 or "_" in b64:
            return data


@exercise("3.10", "fetch an object and verify it",
          hints=("the store checks its chunks against its own metadata, but the digest you trust comes from "
                 "elsewhere (the manifest): compare the data's digest with it, in the same format "
                 "(lesson 03.4, 'Get it back and verify').",
                 "obs.get(name) returns a result with .data; digest_of(data) (or hashlib.sha256 then "
                 "base64.urlsafe_b64encode, prefixed with \"SHA-256=\") gives the store's digest format.",
                 "res = await obs.get(name); if digest_of(res.data) != expected_digest: raise ValueError(...); "
                 "return res.data"))
async def fetch_object(fetch_verified):
    async with scratch_server() as srv, client(srv) as nc, learner_client(srv) as learner:
        js, bucket = nc.jetstream(), f"artifacts_{token(6)}"
        obs = await js.create_object_store(bucket=bucket)
        lobs = await learner.jetstream().object_store(bucket)
        good = _awkward_data(600_000 + random.randrange(10_000))
        expected = digest_of(good)
        fmt = ("the expected digest is in the object store's format, 'SHA-256=' and the URL-safe base64 of the hash "
               f"(here {expected[:20]}…); a hex digest, standard base64 (+ and / instead of - and _) or a missing "
               "prefix never matches it. Compare like with like.")
        call = lambda name: call_learner(fetch_verified, lobs, name, expected, hints={"ValueError": fmt},
                                         what=f"fetch_verified(obs, {name!r}, expected)")
        # the right object
        name = f"model-{token(4)}.bin"
        await obs.put(name, good)
        try:
            got = await call(name)
        except Unsolved:
            raise
        except Mismatch as m:
            raise Mismatch(f"fetch_verified raised for the right object, whose digest is the expected one ({m.seen}).",
                           expected=f"its {len(good)} bytes returned", seen=m.seen, hint=m.hint) from None
        if not isinstance(got, (bytes, bytearray)):
            raise Mismatch("fetch_verified did not return the object's bytes.",
                           expected=f"bytes ({len(good)} of them)", seen=f"{type(got).__name__}: {got!r}"[:120],
                           hint="obs.get returns a result object: its .data holds the bytes.")
        expect(bytes(got) == good, "fetch_verified did not return the object's bytes.",
               expected=f"{len(good)} bytes with digest {expected}", seen=f"{len(got)} other bytes",
               hint="return the object's data as read.")
        # replaced by other content: consistent, but not what the manifest says
        replaced = f"model-{token(4)}.bin"
        await obs.put(replaced, os.urandom(len(good)))
        # tampered: chunks of other content under metadata that claims the expected digest
        tampered = f"model-{token(4)}.bin"
        await obs.put(tampered, os.urandom(len(good)))
        raw = await js.get_last_msg(f"OBJ_{bucket}", meta_subject(bucket, tampered))
        meta = json.loads(raw.data)
        meta["digest"] = expected
        await js.publish(meta_subject(bucket, tampered), json.dumps(meta).encode(), headers={"Nats-Rollup": "sub"})
        missing = f"model-{token(4)}.bin"
        for n, story in ((replaced, "was replaced by other content"),
                         (tampered, "has chunks that do not match its metadata"), (missing, "does not exist")):
            try:
                got = await call(n)
            except Unsolved:
                raise
            except Mismatch:
                continue
            raise Mismatch(f"fetch_verified returned instead of raising for an object that {story}.",
                           expected="an exception",
                           seen=f"returned {type(got).__name__}" + (f" of {len(got)} bytes" if hasattr(got, "__len__") else ""),
                           hint=("the data you read must have the digest you were given: anything else is an error "
                                 "to raise, never data to return (nor None)."))
        return ("it returned the right object byte for byte and raised for a replaced object, a tampered one "
                "and a missing one.")
