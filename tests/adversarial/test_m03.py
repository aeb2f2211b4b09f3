"""Module 03 exercises, answered as learners would: correct answers written differently from the
solutions must pass, plausible wrong ones must fail with a verdict naming the mistake.

Every answer receives a KV handle, an object store handle or the JetStream context of a plain
``nats.connect`` connection (the checker makes it), so every answer here is plain nats-py code.
"""
from __future__ import annotations

import base64
import hashlib

import nats.errors
import nats.js.errors as jserr
from nats.js import api
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError

from natslab.lessons.kvstore import digest_of

from .harness import fails, passes


# ------------------------------------------------------------------------------------- 3.1
def test_3_1_correct_keywords():
    async def create_flags_bucket(js, name):
        return await js.create_key_value(bucket=name, history=10, max_value_size=256)
    passes("3.1", create_flags_bucket)


def test_3_1_correct_config_object_then_lookup():
    async def create_flags_bucket(js, name):
        await js.create_key_value(config=api.KeyValueConfig(bucket=name, history=10, max_value_size=256,
                                                             description="feature flags"))
        return await js.key_value(name)
    passes("3.1", create_flags_bucket)


def test_3_1_wrong_default_history():
    async def create_flags_bucket(js, name):
        return await js.create_key_value(bucket=name, max_value_size=256)
    fails("3.1", create_flags_bucket, says=("revisions per key", "history 10"))


def test_3_1_wrong_max_bytes_instead_of_value_size():
    async def create_flags_bucket(js, name):
        return await js.create_key_value(bucket=name, history=10, max_bytes=256)
    fails("3.1", create_flags_bucket, says=("not limited to 256 bytes", "max value size"))


def test_3_1_wrong_returns_the_name():
    async def create_flags_bucket(js, name):
        await js.create_key_value(bucket=name, history=10, max_value_size=256)
        return name
    fails("3.1", create_flags_bucket, says=("must return the bucket handle", "KeyValue"))


def test_3_1_wrong_history_too_large():
    async def create_flags_bucket(js, name):
        return await js.create_key_value(bucket=name, history=100, max_value_size=256)
    fails("3.1", create_flags_bucket, says="at most 64 revisions")


# ------------------------------------------------------------------------------------- 3.2
def test_3_2_correct_decode_and_compare_text():
    async def flag_enabled(kv, key):
        try:
            return (await kv.get(key)).value.decode() == "on"
        except KeyNotFoundError:
            return False
    passes("3.2", flag_enabled)


def test_3_2_correct_catching_the_base_not_found_error():
    async def flag_enabled(kv, key):
        try:
            entry = await kv.get(key)
        except jserr.NotFoundError:
            return False
        return bool(entry.value == b"on")
    passes("3.2", flag_enabled)


def test_3_2_wrong_compares_bytes_with_str():
    async def flag_enabled(kv, key):
        try:
            return (await kv.get(key)).value == "on"
        except KeyNotFoundError:
            return False
    fails("3.2", flag_enabled, says=("flag that was on", "compare with bytes"))


def test_3_2_wrong_missing_key_not_handled():
    async def flag_enabled(kv, key):
        return (await kv.get(key)).value == b"on"
    fails("3.2", flag_enabled, says=("KeyNotFoundError", "catch it and answer False"))


def test_3_2_wrong_any_value_counts_as_on():
    async def flag_enabled(kv, key):
        try:
            return bool((await kv.get(key)).value)
        except KeyNotFoundError:
            return False
    fails("3.2", flag_enabled, says=("first on, now off", "only b\"on\" is on"))


def test_3_2_wrong_returns_the_value():
    async def flag_enabled(kv, key):
        try:
            return (await kv.get(key)).value
        except KeyNotFoundError:
            return None
    fails("3.2", flag_enabled, says=("returned bytes", "a bool"))


# ------------------------------------------------------------------------------------- 3.3
def test_3_3_correct_catching_bad_request():
    async def register_flag(kv, key, default):
        try:
            await kv.create(key, default)
        except jserr.BadRequestError:  # KeyWrongLastSequenceError is one
            return False
        return True
    passes("3.3", register_flag)


def test_3_3_correct_reads_first_then_creates():
    async def register_flag(kv, key, default):
        try:
            await kv.get(key)
            return False
        except KeyNotFoundError:
            pass
        try:
            await kv.create(key, default)
            return True
        except KeyWrongLastSequenceError:
            return False
    passes("3.3", register_flag)


def test_3_3_wrong_get_then_put():
    async def register_flag(kv, key, default):
        try:
            await kv.get(key)
            return False
        except KeyNotFoundError:
            await kv.put(key, default)
            return True
    fails("3.3", register_flag, says=("between your read and your write", "not atomic"))


def test_3_3_wrong_keys_then_put():
    async def register_flag(kv, key, default):
        try:
            keys = await kv.keys()
        except NoKeysError:
            keys = []
        if key in keys:
            return False
        await kv.put(key, default)
        return True
    fails("3.3", register_flag, says=("between your read and your write", "overwrote"))


def test_3_3_wrong_always_put():
    async def register_flag(kv, key, default):
        await kv.put(key, default)
        return True
    fails("3.3", register_flag, says="changed a flag that already existed")


def test_3_3_wrong_expects_revision_zero():
    async def register_flag(kv, key, default):
        try:
            await kv.update(key, default, last=0)
            return True
        except KeyWrongLastSequenceError:
            return False
    fails("3.3", register_flag, says=("deleted could not be registered again", "delete marker"))


def test_3_3_wrong_conflict_not_caught():
    async def register_flag(kv, key, default):
        await kv.create(key, default)
        return True
    fails("3.3", register_flag, says=("KeyWrongLastSequenceError", "return False"))


# ------------------------------------------------------------------------------------- 3.4
def test_3_4_correct_watchall_with_timeouts_and_filter():
    async def keep_flags(kv, flags):
        watcher = await kv.watchall()
        try:
            while True:
                try:
                    entry = await watcher.updates(timeout=1)
                except nats.errors.TimeoutError:
                    continue
                if entry is None or not entry.key.startswith("flags."):
                    continue
                if entry.operation is not None:
                    flags.pop(entry.key, None)
                else:
                    flags[entry.key] = entry.value == b"on"
        finally:
            await watcher.stop()
    passes("3.4", keep_flags)


def test_3_4_correct_async_for_on_the_pattern():
    async def keep_flags(kv, flags):
        w = await kv.watch("flags.>")
        try:
            async for e in w:
                if not e:
                    continue
                if e.operation in ("DEL", "PURGE"):
                    if e.key in flags:
                        del flags[e.key]
                    continue
                flags[e.key] = e.value.decode() == "on"
        finally:
            await w.stop()
    passes("3.4", keep_flags)


def test_3_4_wrong_del_of_a_key_never_added():
    async def keep_flags(kv, flags):
        w = await kv.watch("flags.>")
        try:
            async for e in w:
                if e is None:
                    continue
                if e.operation in ("DEL", "PURGE"):
                    del flags[e.key]
                else:
                    flags[e.key] = e.value == b"on"
        finally:
            await w.stop()
    fails("3.4", keep_flags, says=("KeyError", "initial values"))


def _keep(pattern=">", markers=True, skip_none=True, stop=True, keep_running=True):
    async def keep_flags(kv, flags):
        w = await kv.watch(pattern)
        try:
            async for e in w:
                if e is None and skip_none:
                    if not keep_running:
                        return
                    continue
                if markers and e.operation in ("DEL", "PURGE"):
                    flags.pop(e.key, None)
                else:
                    flags[e.key] = e.value == b"on"
        finally:
            if stop:
                await w.stop()
    return keep_flags


def test_3_4_wrong_watcher_never_stopped():
    fails("3.4", _keep("flags.>", stop=False), says=("still open", "Stop it whatever way"))


def test_3_4_wrong_watches_every_key():
    fails("3.4", _keep(">"), says="keys outside flags.")


def test_3_4_wrong_one_token_wildcard():
    fails("3.4", _keep("flags.*"), says=("flags.ui", "exactly one token"))


def test_3_4_wrong_ignores_deletes():
    fails("3.4", _keep("flags.>", markers=False), says="DEL or PURGE")


def test_3_4_wrong_none_not_skipped():
    fails("3.4", _keep("flags.>", skip_none=False), says=("AttributeError", "yields None"))


def test_3_4_wrong_returns_after_initial_values():
    fails("3.4", _keep("flags.>", keep_running=False), says=("keep_flags returned", "still running"))


def test_3_4_wrong_replaces_the_dict():
    async def keep_flags(kv, flags):
        w = await kv.watch("flags.>")
        try:
            async for e in w:
                if e is None:
                    continue
                flags = {**flags, e.key: e.value == b"on"}  # a new dict: the caller's stays empty
        finally:
            await w.stop()
    fails("3.4", keep_flags, says=("stayed empty", "in place"))


# ------------------------------------------------------------------------------------- 3.5
def test_3_5_correct_update_last_zero_to_create():
    async def increment(kv, key):
        while True:
            try:
                entry = await kv.get(key)
                current, rev = int(entry.value.decode()), entry.revision
            except KeyNotFoundError:
                current, rev = 0, 0
            try:
                await kv.update(key, str(current + 1).encode(), last=rev)
                return current + 1
            except KeyWrongLastSequenceError:
                pass
    passes("3.5", increment)


def test_3_5_correct_create_first_then_cas():
    async def increment(kv, key):
        try:
            await kv.create(key, b"1")
            return 1
        except jserr.BadRequestError:
            pass
        while True:
            e = await kv.get(key)
            n = int(e.value) + 1
            try:
                await kv.update(key, b"%d" % n, last=e.revision)
                return n
            except jserr.BadRequestError:
                continue
    passes("3.5", increment)


def test_3_5_wrong_naive_get_put():
    async def increment(kv, key):
        try:
            n = int((await kv.get(key)).value) + 1
        except KeyNotFoundError:
            n = 1
        await kv.put(key, str(n).encode())
        return n
    fails("3.5", increment, says=("between your read and your write", "plain put"))


def test_3_5_wrong_cas_but_put_on_create():
    async def increment(kv, key):
        while True:
            try:
                e = await kv.get(key)
            except KeyNotFoundError:
                await kv.put(key, b"1")
                return 1
            try:
                await kv.update(key, str(int(e.value) + 1).encode(), last=e.revision)
                return int(e.value) + 1
            except KeyWrongLastSequenceError:
                continue
    fails("3.5", increment, says=("counter was missing", "Creating must fail when the key exists"))


def test_3_5_wrong_no_retry():
    async def increment(kv, key):
        try:
            e = await kv.get(key)
        except KeyNotFoundError:
            await kv.create(key, b"1")
            return 1
        await kv.update(key, str(int(e.value) + 1).encode(), last=e.revision)
        return int(e.value) + 1
    fails("3.5", increment, says=("KeyWrongLastSequenceError", "retry"))


def test_3_5_wrong_returns_text():
    async def increment(kv, key):
        while True:
            try:
                e = await kv.get(key)
            except KeyNotFoundError:
                try:
                    await kv.create(key, b"1")
                    return "1"
                except KeyWrongLastSequenceError:
                    continue
            new = str(int(e.value) + 1)
            try:
                await kv.update(key, new.encode(), last=e.revision)
                return new
            except KeyWrongLastSequenceError:
                continue
    fails("3.5", increment, says=("not the new value as an int", "str"))


# ------------------------------------------------------------------------------------- 3.6
def test_3_6_correct_defaults():
    async def open_session_store(js, name, ttl):
        return await js.create_key_value(bucket=name, ttl=ttl)
    passes("3.6", open_session_store)


def test_3_6_correct_config_object():
    async def open_session_store(js, name, ttl):
        return await js.create_key_value(config=api.KeyValueConfig(bucket=name, ttl=float(ttl), history=1,
                                                                    storage=api.StorageType.MEMORY))
    passes("3.6", open_session_store)


def test_3_6_wrong_ttl_in_milliseconds():
    async def open_session_store(js, name, ttl):
        return await js.create_key_value(bucket=name, ttl=ttl * 1000)
    fails("3.6", open_session_store, says=("do not expire after the given TTL", "in seconds"))


def test_3_6_wrong_keeps_history():
    async def open_session_store(js, name, ttl):
        return await js.create_key_value(bucket=name, ttl=ttl, history=5)
    fails("3.6", open_session_store, says=("keeps old revisions", "one revision per key"))


def test_3_6_wrong_no_ttl():
    async def open_session_store(js, name, ttl):
        return await js.create_key_value(bucket=name)
    fails("3.6", open_session_store, says=("do not expire", "no TTL"))


def test_3_6_wrong_returns_status():
    async def open_session_store(js, name, ttl):
        return await (await js.create_key_value(bucket=name, ttl=ttl)).status()
    fails("3.6", open_session_store, says="must return the bucket handle")


# ------------------------------------------------------------------------------------- 3.7
def test_3_7_correct_get_and_conditional_update():
    async def touch_session(kv, sid):
        try:
            entry = await kv.get(sid)
        except KeyNotFoundError:
            return False
        try:
            await kv.update(sid, entry.value, last=entry.revision)
        except KeyWrongLastSequenceError:
            return False
        return True
    passes("3.7", touch_session)


def test_3_7_correct_reads_through_history():
    async def touch_session(kv, sid):
        try:
            latest = (await kv.history(sid))[-1]
        except NoKeysError:
            return False
        if latest.operation in ("DEL", "PURGE"):
            return False
        try:
            await kv.update(sid, latest.value, last=latest.revision)
            return True
        except jserr.BadRequestError:
            return False
    passes("3.7", touch_session)


def test_3_7_wrong_get_then_put():
    async def touch_session(kv, sid):
        try:
            entry = await kv.get(sid)
        except KeyNotFoundError:
            return False
        await kv.put(sid, entry.value)
        return True
    fails("3.7", touch_session, says=("between your read and your write", "brought it back"))


def test_3_7_wrong_history_then_put():
    async def touch_session(kv, sid):
        try:
            latest = (await kv.history(sid))[-1]
        except NoKeysError:
            return False
        if latest.operation:
            return False
        await kv.put(sid, latest.value)
        return True
    fails("3.7", touch_session, says=("between your read and your write", "brought it back"))


def test_3_7_wrong_keys_then_put():
    async def touch_session(kv, sid):
        try:
            if sid not in await kv.keys():
                return False
        except NoKeysError:
            return False
        try:
            entry = await kv.get(sid)
        except KeyNotFoundError:
            return False
        await kv.put(sid, entry.value)
        return True
    fails("3.7", touch_session, says="brought it back")


def test_3_7_wrong_blind_write():
    async def touch_session(kv, sid):
        await kv.put(sid, b"touched")
        return True
    fails("3.7", touch_session, says=("its own value",))


def test_3_7_wrong_conflict_not_caught():
    async def touch_session(kv, sid):
        try:
            entry = await kv.get(sid)
        except KeyNotFoundError:
            return False
        await kv.update(sid, entry.value, last=entry.revision)
        return True
    fails("3.7", touch_session, says=("KeyWrongLastSequenceError", "answer False"))


# ------------------------------------------------------------------------------------- 3.8
def test_3_8_correct_history_lookup():
    async def restore(kv, key, revision):
        for entry in await kv.history(key):
            if entry.revision == revision and entry.operation is None:
                return await kv.put(key, entry.value)
        raise LookupError(f"{key} has no value at revision {revision}")
    passes("3.8", restore)


def test_3_8_correct_get_revision_and_put():
    async def restore(kv, key, revision):
        old = await kv.get(key, revision=revision)
        new_revision = await kv.put(key, old.value)
        return new_revision
    passes("3.8", restore)


def test_3_8_wrong_revision_as_position():
    async def restore(kv, key, revision):
        history = await kv.history(key)
        return await kv.put(key, history[revision - 1].value)
    fails("3.8", restore, says=("does not hold that revision's value", "not positions"))


def test_3_8_wrong_accepts_markers():
    async def restore(kv, key, revision):
        for entry in await kv.history(key):
            if entry.revision == revision:
                return await kv.put(key, entry.value or b"")
        raise LookupError(revision)
    fails("3.8", restore, says="delete marker")


def test_3_8_wrong_purges_history():
    async def restore(kv, key, revision):
        old = await kv.get(key, revision=revision)
        await kv.purge(key)
        return await kv.put(key, old.value)
    fails("3.8", restore, says=("changed the key's history", "never purge"))


def test_3_8_wrong_returns_nothing():
    async def restore(kv, key, revision):
        old = await kv.get(key, revision=revision)
        await kv.put(key, old.value)
    fails("3.8", restore, says=("the new revision (an int)", "NoneType"))


# ------------------------------------------------------------------------------------- 3.9
def test_3_9_correct_smaller_chunks_no_name_in_meta():
    async def store_artifact(obs, name, data, version):
        await obs.put(name, data, meta=api.ObjectMeta(headers={"Version": [version]},
                                                      options=api.ObjectMetaOptions(max_chunk_size=32 * 1024)))
    passes("3.9", store_artifact)


def test_3_9_correct_exact_64k_with_description():
    async def store_artifact(obs, name, data, version):
        meta = api.ObjectMeta(name=name, description=f"build {version}", headers={"Version": [version]})
        meta.options = api.ObjectMetaOptions(max_chunk_size=65536)
        return await obs.put(name, data, meta)
    passes("3.9", store_artifact)


def test_3_9_wrong_header_not_a_list():
    async def store_artifact(obs, name, data, version):
        await obs.put(name, data, meta=api.ObjectMeta(headers={"Version": version},
                                                      options=api.ObjectMetaOptions(max_chunk_size=64 * 1024)))
    fails("3.9", store_artifact, says=("as a list", "dict of lists"))


def test_3_9_wrong_default_chunks():
    async def store_artifact(obs, name, data, version):
        await obs.put(name, data, meta=api.ObjectMeta(headers={"Version": [version]}))
    fails("3.9", store_artifact, says=("chunks of at most 64 KiB", "128 KiB"))


def test_3_9_wrong_version_in_description():
    async def store_artifact(obs, name, data, version):
        await obs.put(name, data, meta=api.ObjectMeta(description=version,
                                                      options=api.ObjectMetaOptions(max_chunk_size=64 * 1024)))
    fails("3.9", store_artifact, says=("version header", "under the name Version"))


def test_3_9_wrong_name():
    async def store_artifact(obs, name, data, version):
        await obs.put(f"artifacts/{name}", data, meta=api.ObjectMeta(
            headers={"Version": [version]}, options=api.ObjectMetaOptions(max_chunk_size=64 * 1024)))
    fails("3.9", store_artifact, says="no object named")


# ------------------------------------------------------------------------------------- 3.10
def test_3_10_correct_hashlib_urlsafe():
    async def fetch_verified(obs, name, expected_digest):
        result = await obs.get(name)
        digest = "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(result.data).digest()).decode()
        if digest != expected_digest:
            raise ValueError(f"{name}: {digest} != {expected_digest}")
        return result.data
    passes("3.10", fetch_verified)


def test_3_10_correct_trusts_the_verified_info_digest():
    async def fetch_verified(obs, name, expected_digest):
        result = await obs.get(name)  # get itself checks the chunks against the metadata digest
        if result.info.digest != expected_digest:
            raise RuntimeError("wrong object")
        return bytes(result.data)
    passes("3.10", fetch_verified)


def test_3_10_wrong_hex_digest():
    async def fetch_verified(obs, name, expected_digest):
        data = (await obs.get(name)).data
        if hashlib.sha256(data).hexdigest() != expected_digest.removeprefix("SHA-256="):
            raise ValueError("digest mismatch")
        return data
    fails("3.10", fetch_verified, says=("ValueError", "URL-safe base64"))


def test_3_10_wrong_standard_base64():
    async def fetch_verified(obs, name, expected_digest):
        data = (await obs.get(name)).data
        if "SHA-256=" + base64.b64encode(hashlib.sha256(data).digest()).decode() != expected_digest:
            raise ValueError("digest mismatch")
        return data
    fails("3.10", fetch_verified, says=("ValueError", "standard base64"))


def test_3_10_wrong_no_comparison():
    async def fetch_verified(obs, name, expected_digest):
        return (await obs.get(name)).data
    fails("3.10", fetch_verified, says=("replaced by other content", "raise"))


def test_3_10_wrong_returns_the_result_object():
    async def fetch_verified(obs, name, expected_digest):
        result = await obs.get(name)
        if digest_of(result.data) != expected_digest:
            raise ValueError("digest mismatch")
        return result
    fails("3.10", fetch_verified, says=("did not return the object's bytes", ".data"))


def test_3_10_wrong_none_for_a_missing_object():
    async def fetch_verified(obs, name, expected_digest):
        try:
            result = await obs.get(name)
        except jserr.NotFoundError:
            return None
        if digest_of(result.data) != expected_digest:
            raise ValueError("digest mismatch")
        return result.data
    fails("3.10", fetch_verified, says=("does not exist", "nor None"))


def test_3_7_correct_reads_through_a_watcher():
    async def touch_session(kv, sid):
        watcher = await kv.watch(sid)
        try:
            entry = await watcher.updates(timeout=5)
        finally:
            await watcher.stop()
        if entry is None or entry.operation is not None:
            return False
        try:
            await kv.update(sid, entry.value, last=entry.revision)
            return True
        except KeyWrongLastSequenceError:
            return False
    passes("3.7", touch_session)
