"""natslab.kvstore (module 03 helpers) against a real server, on both backends."""
from __future__ import annotations

import asyncio
import os

import pytest

import natslab
from conftest import BACKENDS
from natslab.lessons import kvstore


@pytest.fixture(scope="module", params=BACKENDS)
def srv(request):
    with natslab.server("kvtest", backend=request.param) as s:
        yield s


def run(srv, body):
    """Run ``await body(js, nc)`` on a fresh connection to ``srv``."""
    async def go():
        nc = await natslab.connect(srv, quiet=True)
        try:
            return await body(nc.jetstream(), nc)
        finally:
            await nc.close()
    return asyncio.run(go())


def test_show_and_table_need_no_server():
    assert kvstore.show(b"hello") == "hello"
    assert kvstore.show(b"\x00\xff") == "<2 bytes>"
    assert kvstore.show(None) == ""
    assert kvstore.show(b"x" * 50, 10) == "x" * 9 + "…"
    table = kvstore.Table([{"a": 1, "b": "two"}, {"a": 22, "c": True}], title="t")
    text = repr(table).splitlines()
    assert text[0] == "t" and text[1].split() == ["a", "b", "c"] and text[3].split() == ["1", "two"]
    assert "<table>" in table._repr_html_() and "two" in table._repr_html_()
    assert repr(kvstore.Table([], title="none")) == "none: (empty)"
    assert kvstore.digest_of(b"") == "SHA-256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU="


def test_views_show_revisions_markers_and_the_stream(srv):
    async def body(js, nc):
        kv = await js.create_key_value(bucket="views", history=5)
        await kv.put("a.x", b"1")
        await kv.put("a.x", b"2")
        await kv.put("a.y", b"keep")
        await kv.put("a.z", b"gone")
        await kv.delete("a.x")
        await kv.purge("a.z")
        history = await kvstore.history_table(kv, "a.x")
        table = await kvstore.bucket_table(kv)
        live = await kvstore.bucket_table(kv, include_deletes=False)
        state = await kvstore.bucket_state(kv)
        empty = await kvstore.history_table(kv, "never.written")
        values = [await kvstore.value_of(kv, k) for k in ("a.x", "a.y", "a.z", "never.written")]
        return history, table, live, state, empty, values

    history, table, live, state, empty, values = run(srv, body)
    assert [(r["value"], r["op"]) for r in history] == [("1", "PUT"), ("2", "PUT"), ("", "DEL")]
    assert {r["key"]: r["op"] for r in table} == {"a.x": "DEL", "a.y": "PUT", "a.z": "PURGE"}
    assert [r["key"] for r in live] == ["a.y"]
    assert state == {"a.y": b"keep"}
    assert list(empty) == []
    assert values == [(None, None), (b"keep", 3), (None, None), (None, None)]


def test_follower_applies_changes_and_drives_widgets(srv):
    import ipywidgets

    async def body(js, nc):
        kv = await js.create_key_value(bucket="follow", history=3)
        await kv.put("svc.limit", b"10")
        await kv.put("other.key", b"x")
        slider = ipywidgets.IntSlider(max=1000)
        changes = []
        subs_before = _subs(srv, nc)
        live = await kvstore.follow(kv, "svc.>", widgets={"svc.limit": slider},
                                    on_change=lambda k, old, new: changes.append((k, old, new)))
        assert live.values == {"svc.limit": "10"} and slider.value == 10 and live.initial == ["svc.limit"]
        await kv.put("svc.limit", b"250")
        await kv.put("other.key", b"y")
        rev = await kv.put("svc.name", b"greeter")
        await live.wait_for(rev)
        await kv.delete("svc.name")
        await live.wait_for(key="svc.name", value=None)
        with pytest.raises(asyncio.TimeoutError):
            await live.wait_for(rev + 100, timeout=0.3)
        summary = live.summary()
        html = live.table.value
        await live.stop()
        await nc.flush()
        return live.values, slider.value, changes, summary, html, subs_before, _subs(srv, nc)

    values, slider, changes, summary, html, before, after = run(srv, body)
    assert values == {"svc.limit": "250"} and slider == 250
    assert changes == [("svc.limit", "10", "250"), ("svc.name", None, "greeter"), ("svc.name", "greeter", None)]
    assert "svc.limit='250'" in summary and "svc.limit" in html and "other.key" not in html
    assert after <= before, "stop() must remove the watcher's subscription"


def _subs(srv, nc) -> int:
    for conn in srv.monitor("connz", subs=True)["connections"]:
        if conn["cid"] == nc.client_id:
            return conn.get("subscriptions", 0)
    return 0


def test_race_reports_the_server_value_and_conflicts(srv):
    from nats.js.errors import KeyWrongLastSequenceError

    async def cas(kv, key):
        conflicts = 0
        while True:
            entry = await kv.get(key)
            try:
                await kv.update(key, str(int(entry.value) + 1).encode(), last=entry.revision)
                return conflicts
            except KeyWrongLastSequenceError:
                conflicts += 1

    async def body(js, nc):
        kv = await js.create_key_value(bucket="race")
        other = await natslab.connect(srv, quiet=True)
        try:
            kv2 = await other.jetstream().key_value("race")
            await kv.put("n", b"5")
            result = await kvstore.race([kv, kv2], "n", cas, times=15)
            return result, await kvstore.counter_value(kv, "n"), await kvstore.counter_value(kv, "missing")
        finally:
            await other.close()

    result, stored, missing = run(srv, body)
    assert (result.start, result.final, result.expected, result.lost) == (5, 35, 35, 0)
    assert stored == 35 and missing == 0 and len(result.conflicts) == 2
    assert "2 writers x 15 increments from 5: final 35, expected 35 -> correct" in repr(result)
    import matplotlib
    matplotlib.use("Agg")
    fig = kvstore.plot_races(result)
    assert len(fig.axes[0].patches) == 3


def test_object_helpers_digest_table_and_links(srv):
    async def body(js, nc):
        obs = await js.create_object_store(bucket="objs")
        data = os.urandom(300_000)
        info = await obs.put("blob.bin", data)
        raw = await js.get_last_msg("OBJ_objs", kvstore.meta_subject("objs", "blob.bin"))
        await kvstore.add_link(js, "objs", "latest", "objs", "blob.bin")
        followed = await obs.get("latest")
        with pytest.raises(ValueError):
            await kvstore.add_link(js, "objs", "latest2", "objs", "latest")
        table = await kvstore.object_table(obs)
        await obs.delete("blob.bin")
        live = await kvstore.object_table(obs, include_deleted=False)
        return data, info, raw, followed, table, live

    data, info, raw, followed, table, live = run(srv, body)
    assert kvstore.digest_of(data) == info.digest and raw.subject.startswith("$O.objs.M.")
    assert followed.data == data and followed.info.name == "blob.bin"
    rows = {r["name"]: r for r in table}
    assert rows["latest"]["link"] == "-> objs/blob.bin" and rows["blob.bin"]["size"] == 300_000
    assert [r["name"] for r in live] == ["latest"]


def test_history_shows_server_written_expiry_markers(srv):
    """nats-server 2.11+: with limit_marker_ttl the server writes a marker when a key expires
    (header Nats-Marker-Reason: MaxAge, no KV-Operation); the views show it as a PURGE."""
    async def body(js, nc):
        kv = await js.create_key_value(bucket="marked", ttl=1, limit_marker_ttl=5)
        await kv.put("node.a", b"up")

        async def marker():
            entries = await kvstore.history_entries(kv, "node.a")
            return entries if entries and entries[-1].operation == "PURGE" else None

        entries = await natslab.until(marker, "the expiry marker", timeout=10, every=0.1)
        return entries, await kvstore.value_of(kv, "node.a"), await kvstore.bucket_state(kv)

    entries, value, state = run(srv, body)
    assert [e.operation for e in entries] == ["PURGE"] and entries[0].value == b""
    assert value == (None, None) and state == {}
