"""Module 08 operations exercises (8.1-8.7), answered as learners would: correct answers written
differently from the solutions must pass (plain nats-py, urllib, sockets), plausible wrong ones must
fail with a verdict naming the mistake."""
from __future__ import annotations

import asyncio
import json
import re
import socket
import urllib.error
import urllib.request
from collections import Counter
from urllib.parse import urlparse

import nats
import natslab
from nats.js.api import AckPolicy

from .harness import fails, passes


def _get(url: str, timeout: float = 3.0) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as err:  # /healthz answers 503 with a body
        return json.loads(err.read() or b"{}")


async def _connect_fast(scene, **kw):
    return await nats.connect(scene["url"], user=scene["user"], password=scene["password"], connect_timeout=2,
                              max_reconnect_attempts=1, reconnect_time_wait=0.1, allow_reconnect=False, **kw)


# ------------------------------------------------------------------------------------- 8.1
def test_8_1_correct_monitor_first_then_socket_then_request():
    async def diagnose(scene):
        try:
            _get(scene["monitor_url"] + "/healthz", timeout=3)
        except OSError:
            return "server_paused"
        port = urlparse(scene["url"]).port
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            return "wrong_port"
        nc = await _connect_fast(scene)
        try:
            await nc.request(scene["subject"], b"?", timeout=2)
            return "healthy"
        except nats.errors.NoRespondersError:
            return "no_responders"
        except nats.errors.TimeoutError:
            return "not_authorized" if "Publish Violation" in scene["logs"]() else "unknown"
        finally:
            await nc.close()
    passes("8.1", diagnose)


def test_8_1_correct_client_errors_only():
    async def diagnose(scene):
        seen = []

        async def err(e):
            seen.append(str(e).lower())
        try:
            nc = await asyncio.wait_for(_connect_fast(scene, error_cb=err), 10)
        except Exception:
            refused = any("refused" in s or "connect call failed" in s for s in seen)
            return "wrong_port" if refused else "server_paused"
        try:
            await nc.request(scene["subject"], b"?", timeout=2)
        except nats.errors.NoRespondersError:
            return "no_responders"
        except nats.errors.TimeoutError:
            await asyncio.sleep(0.2)
            if any("permissions violation" in s for s in seen):
                return "not_authorized"
        finally:
            await nc.close()
        return "unknown"
    passes("8.1", diagnose)


def test_8_1_wrong_always_the_commonest_label():
    fails("8.1", lambda scene: "no_responders", says=("you diagnosed 'no_responders'", "fault was"))


def test_8_1_wrong_every_failed_connect_is_a_wrong_port():
    async def diagnose(scene):
        try:
            nc = await _connect_fast(scene)
        except Exception:
            return "wrong_port"
        try:
            await nc.request(scene["subject"], b"?", timeout=2)
        except nats.errors.NoRespondersError:
            return "no_responders"
        except nats.errors.TimeoutError:
            return "not_authorized"
        finally:
            await nc.close()
        return "unknown"
    fails("8.1", diagnose, says=("fault was 'server_paused'", "frozen server"))


def test_8_1_wrong_a_dropped_request_means_a_frozen_server():
    async def diagnose(scene):
        try:
            nc = await _connect_fast(scene)
        except Exception:
            try:
                _get(scene["monitor_url"] + "/varz")
                return "wrong_port"
            except OSError:
                return "server_paused"
        try:
            await nc.request(scene["subject"], b"?", timeout=2)
        except nats.errors.NoRespondersError:
            return "no_responders"
        except nats.errors.TimeoutError:
            return "server_paused"
        finally:
            await nc.close()
        return "unknown"
    fails("8.1", diagnose, says=("fault was 'not_authorized'", "Permissions Violation"))


def test_8_1_wrong_label_spelling():
    fails("8.1", lambda scene: "Wrong Port", says="not one of the labels")


# ------------------------------------------------------------------------------------- 8.2
def test_8_2_correct_urllib_counters():
    def diagnose(scene):
        url = scene["monitor_url"]
        if _get(url + "/varz")["slow_consumers"]:
            return "slow_consumer"
        if "resource limits exceeded" in scene["logs"]():
            return "storage_full"
        jsz = _get(url + "/jsz?accounts=true&consumers=true")
        lag = sum(c["num_pending"] for a in jsz["account_details"] for s in a.get("stream_detail", [])
                  for c in s.get("consumer_detail", []))
        return "consumer_lag" if lag else "unknown"
    passes("8.2", diagnose)


def test_8_2_correct_nats_py_publish_and_consumer_info():
    async def diagnose(scene):
        nc = await nats.connect(scene["url"])
        try:
            js = nc.jetstream()
            try:
                await js.publish(f"{scene['stream'].lower()}.probe", b"probe", timeout=2)
            except Exception:
                return "storage_full"
            info = await js.consumer_info(scene["stream"], scene["consumer"])
            if info.num_pending > 1:  # our own probe is one
                return "consumer_lag"
            return "slow_consumer"
        finally:
            await nc.close()
    passes("8.2", diagnose)


def test_8_2_wrong_always_consumer_lag():
    fails("8.2", lambda scene: "consumer_lag", says=("you diagnosed 'consumer_lag'", "fault was"))


def test_8_2_wrong_stream_size_taken_for_lag():
    def diagnose(scene):
        if _get(scene["monitor_url"] + "/varz")["slow_consumers"]:
            return "slow_consumer"
        jsz = _get(scene["monitor_url"] + "/jsz?accounts=true&streams=true")
        if any(s["state"]["messages"] > 100 for a in jsz["account_details"] for s in a.get("stream_detail", [])):
            return "consumer_lag"
        return "storage_full"
    fails("8.2", diagnose, says=("fault was 'storage_full'", "max_storage"))


def test_8_2_wrong_slow_consumer_looked_for_among_open_connections():
    def diagnose(scene):
        conns = _get(scene["monitor_url"] + "/connz")["connections"]
        if any(c.get("pending_bytes", 0) > 0 for c in conns):
            return "slow_consumer"
        jsz = _get(scene["monitor_url"] + "/jsz")
        if jsz["storage"] >= 0.9 * jsz["config"]["max_storage"]:
            return "storage_full"
        return "consumer_lag"
    fails("8.2", diagnose, says=("fault was 'slow_consumer'", "slow_consumers"))


# ------------------------------------------------------------------------------------- 8.3
def test_8_3_correct_log_phrases_per_node():
    def diagnose(scene):
        for name, logs in scene["logs"].items():
            text = logs()
            if "Cluster Name Conflict" in text:
                return "cluster_name_mismatch"
            if "TLS Handshake Failure" in text:
                return "route_tls_mismatch"
        return "leaf_credentials"
    passes("8.3", diagnose)


def test_8_3_correct_varz_names_then_routes_then_leafz():
    def diagnose(scene):
        urls = scene["monitor_urls"]
        names = {n: _get(urls[n] + "/varz")["cluster"].get("name") for n in ("n1", "n2")}
        if names["n1"] != names["n2"]:
            return "cluster_name_mismatch"
        if _get(urls["n1"] + "/routez")["num_routes"] == 0:
            return "route_tls_mismatch"
        assert _get(urls["leaf"] + "/leafz")["leafnodes"] == 0
        return "leaf_credentials"
    passes("8.3", diagnose)


def test_8_3_wrong_always_leaf():
    fails("8.3", lambda scene: "leaf_credentials", says=("you diagnosed 'leaf_credentials'", "fault was"))


def test_8_3_wrong_no_routes_means_name_mismatch():
    def diagnose(scene):
        urls = scene["monitor_urls"]
        if _get(urls["n1"] + "/routez")["num_routes"] == 0:
            return "cluster_name_mismatch"
        return "leaf_credentials"
    fails("8.3", diagnose, says=("fault was 'route_tls_mismatch'", "TLS route handshake"))


def test_8_3_wrong_reads_only_the_leaf():
    def diagnose(scene):
        if "Authorization Violation" in scene["logs"]["leaf"]():
            return "leaf_credentials"
        return "route_tls_mismatch"
    fails("8.3", diagnose, says=("fault was 'cluster_name_mismatch'", "does not match"))


# ------------------------------------------------------------------------------------- 8.4
def test_8_4_correct_regex_on_the_allow_list():
    def fix(ops, user, subject):
        text = ops.config_path.read_text()
        text = re.sub(r'allow: \[([^\]]*)\]', lambda m: f'allow: [{m.group(1)}, "{subject}"]', text, count=1)
        ops.config_path.write_text(text)
        ops.reload()
    passes("8.4", fix)


def test_8_4_correct_async_with_a_check_of_the_logs():
    async def fix(ops, user, subject):
        lines = ops.config_path.read_text().splitlines()
        out = []
        for line in lines:
            if '"orders.>"' in line and "allow" in line:
                line = line.replace('"orders.>"', f'"orders.>", "{subject}"')
            out.append(line)
        ops.config_path.write_text("\n".join(out) + "\n")
        said = await asyncio.to_thread(ops.reload)
        assert "Reloaded" in said
    passes("8.4", fix)


def test_8_4_wrong_restart_instead_of_reload():
    def fix(ops, user, subject):
        text = ops.config_path.read_text()
        ops.config_path.write_text(text.replace('allow: ["orders.>"]', f'allow: ["orders.>", "{subject}"]'))
        ops.restart()
    fails("8.4", fix, says=("connections were dropped", "restart disconnects"))


def test_8_4_wrong_file_edited_but_not_reloaded():
    def fix(ops, user, subject):
        text = ops.config_path.read_text()
        ops.config_path.write_text(text.replace('allow: ["orders.>"]', f'allow: ["orders.>", "{subject}"]'))
    fails("8.4", fix, says=("still cannot publish", "reload"))


def test_8_4_wrong_allow_everything():
    def fix(ops, user, subject):
        text = ops.config_path.read_text()
        ops.config_path.write_text(text.replace('allow: ["orders.>"]', 'allow: [">"]'))
        ops.reload()
    fails("8.4", fix, says=("granted more than the missing permission", "admin"))


# ------------------------------------------------------------------------------------- 8.5
def test_8_5_correct_regex_and_reload():
    def fix(ops, stream):
        text = ops.config_path.read_text()
        ops.config_path.write_text(re.sub(r"max_file_store:\s*\S+", "max_file_store: 1GB", text))
        ops.reload()
    passes("8.5", fix)


def test_8_5_correct_line_edit_in_bytes():
    async def fix(ops, stream):
        lines = [("    max_file_store: 33554432" if l.strip().startswith("max_file_store") else l)
                 for l in ops.config_path.read_text().splitlines()]
        ops.config_path.write_text("\n".join(lines) + "\n")
        await asyncio.to_thread(ops.reload)
    passes("8.5", fix)


def test_8_5_wrong_purge_to_make_room():
    async def fix(ops, stream):
        nc = await nats.connect(ops.url)
        await nc.jetstream().purge_stream(stream)
        await nc.close()
    fails("8.5", fix, says=("lost messages", "purging"))


def test_8_5_wrong_limit_too_small():
    def fix(ops, stream):
        text = ops.config_path.read_text()
        ops.config_path.write_text(re.sub(r"max_file_store: \S+", "max_file_store: 2MB", text))
        ops.reload()
    fails("8.5", fix, says=("storage limit in force", "at least 16 MB"))


def test_8_5_wrong_not_reloaded():
    def fix(ops, stream):
        text = ops.config_path.read_text()
        ops.config_path.write_text(re.sub(r"max_file_store: \S+", "max_file_store: 64MB", text))
    fails("8.5", fix, says=("storage limit in force", "AND reload"))


def test_8_5_wrong_restart():
    def fix(ops, stream):
        text = ops.config_path.read_text()
        ops.config_path.write_text(re.sub(r"max_file_store: \S+", "max_file_store: 64MB", text))
        ops.restart()
    fails("8.5", fix, says=("producer's connection was dropped", "restart"))


# ------------------------------------------------------------------------------------- 8.6
def _names_in_files(nodes):
    return {n: re.search(r'cluster \{\s*name: "([^"]+)"', o.config_path.read_text()).group(1)
            for n, o in nodes.items()}


def test_8_6_correct_from_the_config_files():
    def fix(nodes):
        names = _names_in_files(nodes)
        good, _ = Counter(names.values()).most_common(1)[0]
        for n, o in nodes.items():
            if names[n] != good:
                o.config_path.write_text(o.config_path.read_text().replace(f'"{names[n]}"', f'"{good}"'))
                o.restart()
    passes("8.6", fix)


def test_8_6_correct_odd_one_out_by_varz():
    def fix(nodes):
        odd = None
        for n, o in nodes.items():
            mine = natslab.monitor(o.monitor_url, "varz")["cluster"]["name"]
            others = [natslab.monitor(p.monitor_url, "varz")["cluster"]["name"] for m, p in nodes.items() if m != n]
            if all(x != mine for x in others):
                odd, bad, good = o, mine, others[0]
        text = odd.config_path.read_text()
        odd.config_path.write_text(re.sub(rf'name: "{bad}"', f'name: "{good}"', text))
        odd.restart()
    passes("8.6", fix)


def test_8_6_wrong_restart_every_node():
    def fix(nodes):
        names = _names_in_files(nodes)
        good, _ = Counter(names.values()).most_common(1)[0]
        for n, o in nodes.items():
            o.config_path.write_text(o.config_path.read_text().replace(f'"{names[n]}"', f'"{good}"'))
            o.restart()
    fails("8.6", fix, says=("restarted healthy node", "only the node"))


def test_8_6_wrong_reload_instead_of_restart():
    def fix(nodes):
        names = _names_in_files(nodes)
        good, _ = Counter(names.values()).most_common(1)[0]
        for n, o in nodes.items():
            if names[n] != good:
                o.config_path.write_text(o.config_path.read_text().replace(f'"{names[n]}"', f'"{good}"'))
                o.reload()
    fails("8.6", fix, says=("do not all carry the cluster's name", "a reload does not change the cluster name"))


def test_8_6_wrong_majority_renamed_to_the_odd_name():
    def fix(nodes):
        names = _names_in_files(nodes)
        (bad, _), = [(v, c) for v, c in Counter(names.values()).items() if c == 1]
        for n, o in nodes.items():
            if names[n] != bad:
                o.config_path.write_text(o.config_path.read_text().replace(f'"{names[n]}"', f'"{bad}"'))
                o.restart()
    fails("8.6", fix, says=("do not all carry the cluster's name", "healthy majority"))


def test_8_6_wrong_edit_without_restart():
    def fix(nodes):
        names = _names_in_files(nodes)
        good, _ = Counter(names.values()).most_common(1)[0]
        for n, o in nodes.items():
            if names[n] != good:
                o.config_path.write_text(o.config_path.read_text().replace(f'"{names[n]}"', f'"{good}"'))
    fails("8.6", fix, says=("do not all carry the cluster's name", "restart it"))


# ------------------------------------------------------------------------------------- 8.7
async def _snapshot(nc, stream, **opts):
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    reply = await nc.request(f"$JS.API.STREAM.SNAPSHOT.{stream}",
                             json.dumps({"deliver_subject": inbox, **opts}).encode(), timeout=5)
    meta = json.loads(reply.data)
    chunks = []
    while True:
        msg = await sub.next_msg(timeout=10)
        if not msg.data:
            break
        chunks.append(msg.data)
        if msg.reply:
            await nc.publish(msg.reply, b"")
    await sub.unsubscribe()
    return meta, chunks


async def _restore(nc, stream, meta, chunks):
    reply = await nc.request(f"$JS.API.STREAM.RESTORE.{stream}",
                             json.dumps({"config": meta["config"], "state": meta["state"]}).encode(), timeout=5)
    target = json.loads(reply.data)["deliver_subject"]
    for c in chunks:
        await nc.request(target, c, timeout=5)
    done = json.loads((await nc.request(target, b"", timeout=30)).data)
    assert "error" not in done, done


def test_8_7_correct_next_msg_loop_small_chunks():
    async def backup(source_url, target_url, stream):
        src, dst = await nats.connect(source_url), await nats.connect(target_url)
        try:
            meta, chunks = await _snapshot(src, stream, chunk_size=4096, jsck=True)
            await _restore(dst, stream, meta, chunks)
        finally:
            await src.close()
            await dst.close()
    passes("8.7", backup)


def test_8_7_correct_pipelined_one_connection_each():
    async def backup(source_url, target_url, stream):
        src, dst = await nats.connect(source_url), await nats.connect(target_url)
        queue: asyncio.Queue = asyncio.Queue()

        async def on_chunk(msg):
            await queue.put(msg.data)
            if msg.data and msg.reply:
                await msg.respond(b"")
        inbox = src.new_inbox()
        await src.subscribe(inbox, cb=on_chunk)
        meta = json.loads((await src.request(f"$JS.API.STREAM.SNAPSHOT.{stream}",
                                             json.dumps({"deliver_subject": inbox}).encode())).data)
        target = json.loads((await dst.request(f"$JS.API.STREAM.RESTORE.{stream}", json.dumps(
            {"config": meta["config"], "state": meta["state"]}).encode())).data)["deliver_subject"]
        while True:
            chunk = await asyncio.wait_for(queue.get(), 10)
            await dst.request(target, chunk, timeout=30)  # the empty last one finishes the restore
            if not chunk:
                break
        await src.close()
        await dst.close()
    passes("8.7", backup)


def test_8_7_wrong_republish_and_new_consumer():
    async def backup(source_url, target_url, stream):
        src, dst = await nats.connect(source_url), await nats.connect(target_url)
        sjs, djs = src.jetstream(), dst.jetstream()
        info = await sjs.stream_info(stream)
        await djs.add_stream(name=stream, subjects=info.config.subjects)
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            m = await sjs.get_msg(stream, seq)
            await djs.publish(m.subject, m.data)
        await djs.add_consumer(stream, durable_name="shipper", ack_policy=AckPolicy.EXPLICIT)
        await src.close()
        await dst.close()
    fails("8.7", backup, says=("does not remember where it was", "from the snapshot"))


def test_8_7_wrong_snapshot_without_consumers():
    async def backup(source_url, target_url, stream):
        src, dst = await nats.connect(source_url), await nats.connect(target_url)
        meta, chunks = await _snapshot(src, stream, no_consumers=True)
        await _restore(dst, stream, meta, chunks)
        await src.close()
        await dst.close()
    fails("8.7", backup, says=("no consumer 'shipper'", "no_consumers"))


def test_8_7_wrong_messages_only():
    async def backup(source_url, target_url, stream):
        src, dst = await nats.connect(source_url), await nats.connect(target_url)
        sjs, djs = src.jetstream(), dst.jetstream()
        info = await sjs.stream_info(stream)
        await djs.add_stream(name=stream, subjects=info.config.subjects)
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            m = await sjs.get_msg(stream, seq)
            await djs.publish(m.subject, m.data)
        await src.close()
        await dst.close()
    fails("8.7", backup, says=("no consumer 'shipper'", "copying messages never carries them"))


def test_8_7_wrong_restored_on_the_source():
    async def backup(source_url, target_url, stream):
        src = await nats.connect(source_url)
        meta, chunks = await _snapshot(src, stream)
        await src.close()
    fails("8.7", backup, says=("no stream", "target server"))


# ------------------------------------------------------------------------------------- 8.8
async def _all_healthy_and_current(nodes, js, stream) -> bool:
    for n in nodes:
        if _get(n.monitor_url + "/healthz", timeout=2).get("status") != "ok":
            return False
    info = await js.stream_info(stream)
    reps = info.cluster.replicas or []
    return bool(info.cluster.leader) and len(reps) == 2 and all(r.current for r in reps)


def test_8_8_correct_reverse_order_sleep_loop():
    async def upgrade(nodes, target, url, stream):
        nc = await nats.connect(servers=url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        js = nc.jetstream()
        for node in reversed(nodes):
            await node.stop()
            node.switch_release(target)
            await node.start()
            for _ in range(300):
                try:
                    if await _all_healthy_and_current(nodes, js, stream):
                        break
                except Exception:
                    pass
                await asyncio.sleep(0.2)
        await nc.close()
    passes("8.8", upgrade)


def test_8_8_correct_jsz_per_node_and_until():
    async def upgrade(nodes, target, url, stream):
        def ready():
            for n in nodes:
                try:
                    if natslab.monitor(n.monitor_url, "healthz").get("status") != "ok":
                        return False
                    jsz = natslab.monitor(n.monitor_url, "jsz")
                except OSError:
                    return False
                if not (jsz.get("meta_cluster") or {}).get("leader"):
                    return False
            for n in nodes:  # the stream leader's view of its replicas
                jsz = natslab.monitor(n.monitor_url, "jsz", accounts=True, streams=True)
                for acc in jsz.get("account_details") or []:
                    for s in acc.get("stream_detail") or []:
                        cl = s.get("cluster") or {}
                        if s["name"] == stream and cl.get("leader") == n.name:
                            reps = cl.get("replicas") or []
                            return len(reps) == 2 and all(r.get("current") for r in reps)
            return False
        for node in nodes:
            await node.stop()
            node.switch_release(target)
            await node.start()
            await natslab.until(ready, "caught up", timeout=60, retry=(OSError, KeyError))
    passes("8.8", upgrade)


def test_8_8_wrong_all_at_once():
    async def upgrade(nodes, target, url, stream):
        for node in nodes:
            await node.stop()
        for node in nodes:
            node.switch_release(target)
        for node in nodes:
            await node.start()
    fails("8.8", upgrade, says=("stopped too", "majority"))


def test_8_8_wrong_rolling_without_waiting():
    async def upgrade(nodes, target, url, stream):
        for node in nodes:
            await node.stop()
            node.switch_release(target)
            await node.start()
        await asyncio.sleep(3)
    fails("8.8", upgrade, says=("not caught up", "wait until every node"))


def test_8_8_wrong_forgets_the_last_node():
    async def upgrade(nodes, target, url, stream):
        nc = await nats.connect(servers=url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        js = nc.jetstream()
        for node in nodes[:-1]:
            await node.stop()
            node.switch_release(target)
            await node.start()
            await natslab.until(lambda: _all_healthy_and_current(nodes, js, stream), "caught up", timeout=60,
                                retry=(Exception,))
        await nc.close()
    fails("8.8", upgrade, says=("still runs another release", "upgrade every node"))
