"""Module 04 exercises, answered as learners would: correct answers written differently from the
solutions must pass, plausible wrong ones must fail with a verdict naming the mistake.

Every checker here starts a cluster (or a super-cluster, or a hub), so each case takes seconds;
each case is the shortest answer that shows its point.  The JetStream contexts handed to the
answers come from plain ``nats.connect`` connections, so the answers are plain nats-py code.
"""
from __future__ import annotations

import asyncio

import nats
from nats.js.api import Placement, StorageType, StreamConfig

import natslab
from natslab.lessons import failover

from .harness import fails, passes


async def _leader(js, stream):
    return (await js.stream_info(stream)).cluster.leader


async def _new_leader(js, stream, old):
    """Poll stream info until a leader other than ``old`` is named (a learner's own loop)."""
    for _ in range(400):
        try:
            leader = (await js.stream_info(stream)).cluster.leader
            if leader and leader != old:
                return leader
        except Exception:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("no new leader")


# ------------------------------------------------------------------------------------- 4.1
def test_4_1_correct_seed_with_empty_routes():
    def node_config(cluster_name, node, seed):
        routes = [] if node["name"] == seed["name"] else [seed["route_url"]]
        return {"cluster": {"name": cluster_name, "listen": node["listen"], "advertise": node["advertise"],
                            "routes": routes}}
    passes("4.1", node_config)


def test_4_1_correct_nats_scheme_and_no_advertise():
    async def node_config(cluster_name, node, seed):
        cluster = {"name": cluster_name, "listen": node["listen"]}
        if node is not seed and node != seed:
            cluster["routes"] = ["nats://" + seed["route_url"].split("://", 1)[1]]
        return {"cluster": cluster}
    passes("4.1", node_config)


def test_4_1_wrong_every_node_lists_every_route():
    urls: list[str] = []

    def node_config(cluster_name, node, seed):  # each node lists every node configured before it
        urls.append(node["route_url"])
        return {"cluster": {"name": cluster_name, "listen": node["listen"], "advertise": node["advertise"],
                            "routes": urls[:-1]}}
    fails("4.1", node_config, says=("configured with a route", "gossip"))


def test_4_1_wrong_node_name_as_cluster_name():
    def node_config(cluster_name, node, seed):
        block = {"name": node["name"], "listen": node["listen"], "advertise": node["advertise"]}
        if node["name"] != seed["name"]:
            block["routes"] = [seed["route_url"]]
        return {"cluster": block}
    fails("4.1", node_config, says="cluster name")


def test_4_1_wrong_routes_outside_the_cluster_block():
    def node_config(cluster_name, node, seed):
        return {"cluster_name": cluster_name, "listen": node["listen"], "routes": [seed["route_url"]]}
    fails("4.1", node_config, says="no cluster block")


def test_4_1_wrong_config_text_instead_of_a_dict():
    def node_config(cluster_name, node, seed):
        return f'cluster {{ name: {cluster_name}, listen: "{node["listen"]}", routes: ["{seed["route_url"]}"] }}'
    fails("4.1", node_config, says=("returned str", "dict"))


# ------------------------------------------------------------------------------------- 4.2
def test_4_2_correct_keywords():
    async def create_stream(js, name, subjects):
        await js.add_stream(name=name, subjects=subjects, num_replicas=3)
    passes("4.2", create_stream)


def test_4_2_correct_memory_storage_r3_config_object():
    async def create_stream(js, name, subjects):
        cfg = StreamConfig(name=name, subjects=list(subjects), num_replicas=3, storage=StorageType.MEMORY)
        info = await js.add_stream(cfg)
        assert info.config.num_replicas == 3
    passes("4.2", create_stream)


def test_4_2_wrong_default_single_replica():
    async def create_stream(js, name, subjects):
        await js.add_stream(name=name, subjects=subjects)
    fails("4.2", create_stream, says=("1 replica", "majority"))


def test_4_2_wrong_two_replicas():
    async def create_stream(js, name, subjects):
        await js.add_stream(name=name, subjects=subjects, num_replicas=2)
    fails("4.2", create_stream, says="2 replica")


def test_4_2_wrong_subjects():
    async def create_stream(js, name, subjects):
        await js.add_stream(name=name, subjects=["orders.>"], num_replicas=3)
    fails("4.2", create_stream, says="subjects")


def test_4_2_wrong_limits_drop_acknowledged_messages():
    async def create_stream(js, name, subjects):
        await js.add_stream(name=name, subjects=subjects, num_replicas=3, max_msgs=100)
    fails("4.2", create_stream, says=("missing", "limits"))


def test_4_2_wrong_more_replicas_than_servers():
    async def create_stream(js, name, subjects):
        await js.add_stream(name=name, subjects=subjects, num_replicas=5)
    fails("4.2", create_stream, says=("three servers", "each replica"))


# ------------------------------------------------------------------------------------- 4.3
def test_4_3_correct_until_helper():
    async def fail_over(cluster, js, stream):
        old = await _leader(js, stream)
        cluster[old].kill()

        async def elected():
            leader = (await js.stream_info(stream)).cluster.leader
            return leader if leader not in (None, old) else None
        return await natslab.until(elected, "a new leader", timeout=30, retry=(Exception,))
    passes("4.3", fail_over)


def test_4_3_correct_graceful_stop_in_a_thread():
    async def fail_over(cluster, js, stream):
        info = await js.stream_info(stream)
        old = info.cluster.leader
        await asyncio.to_thread(cluster[old].stop)
        return await _new_leader(js, stream, old)
    passes("4.3", fail_over)


def test_4_3_wrong_kills_the_meta_leader():
    async def fail_over(cluster, js, stream):
        old = cluster.meta_leader()
        cluster[old].kill()
        return await _new_leader(js, stream, old)
    fails("4.3", fail_over, says=("meta leader", "cluster.leader"))


def test_4_3_wrong_kills_a_follower():
    async def fail_over(cluster, js, stream):
        info = await js.stream_info(stream)
        cluster[info.cluster.replicas[0].name].kill()
        return info.cluster.leader
    fails("4.3", fail_over, says="a follower")


def test_4_3_wrong_returns_without_waiting_for_the_election():
    async def fail_over(cluster, js, stream):
        old = await _leader(js, stream)
        cluster[old].kill()
        return old
    fails("4.3", fail_over, says=("the leader you killed", "election"))


def test_4_3_wrong_guesses_a_follower_without_waiting():
    async def fail_over(cluster, js, stream):
        info = await js.stream_info(stream)
        cluster[info.cluster.leader].kill()
        return info.cluster.replicas[0].name
    fails("4.3", fail_over, says=("guess", "fail_over returned"))


def test_4_3_wrong_kills_nobody():
    async def fail_over(cluster, js, stream):
        return await _leader(js, stream)
    fails("4.3", fail_over, says="no server was stopped")


def test_4_3_wrong_kills_leader_and_a_follower():
    async def fail_over(cluster, js, stream):
        info = await js.stream_info(stream)
        cluster[info.cluster.leader].kill()
        cluster[info.cluster.replicas[0].name].kill()
        return info.cluster.replicas[1].name if len(info.cluster.replicas) > 1 else None
    fails("4.3", fail_over, says="more than one server")


# ------------------------------------------------------------------------------------- 4.4
def test_4_4_correct_direct_get():
    async def read_message(js, stream, seq):
        msg = await js.get_msg(stream, seq=seq, direct=True)
        return msg.data.decode()
    passes("4.4", read_message)


def test_4_4_correct_positional_with_own_timeout():
    async def read_message(js, stream, seq):
        msg = await asyncio.wait_for(js.get_msg(stream, seq, direct=True), 5)
        return str(msg.data, "utf-8")
    passes("4.4", read_message)


def test_4_4_wrong_ordinary_get_needs_a_leader():
    async def read_message(js, stream, seq):
        msg = await js.get_msg(stream, seq=seq)
        return msg.data.decode()
    fails("4.4", read_message, says=("no leader", "direct get"))


def test_4_4_wrong_course_helper_waits_for_a_leader():
    async def read_message(js, stream, seq):
        await failover.wait_for_leader(js, stream, timeout=3)
        return (await js.get_msg(stream, seq=seq, direct=True)).data.decode()
    fails("4.4", read_message, says=("no leader", "direct get"))


def test_4_4_wrong_returns_bytes():
    async def read_message(js, stream, seq):
        return (await js.get_msg(stream, seq=seq, direct=True)).data
    fails("4.4", read_message, says="bytes")


def test_4_4_wrong_returns_the_message_object():
    async def read_message(js, stream, seq):
        return await js.get_msg(stream, seq=seq, direct=True)
    fails("4.4", read_message, says="a str")


def test_4_4_wrong_sequence_off_by_one():
    async def read_message(js, stream, seq):
        return (await js.get_msg(stream, seq=seq + 1, direct=True)).data.decode()
    fails("4.4", read_message, says="data of message")


# ------------------------------------------------------------------------------------- 4.5
def test_4_5_correct_placement_by_cluster():
    async def place_stream(js, name, subjects, cluster):
        await js.add_stream(StreamConfig(name=name, subjects=subjects, placement=Placement(cluster=cluster)))
    passes("4.5", place_stream)


def test_4_5_correct_placement_by_tag_r3():
    async def place_stream(js, name, subjects, cluster):
        await js.add_stream(name=name, subjects=subjects, num_replicas=3,
                            placement=Placement(tags=[f"cluster:{cluster}"]))
    passes("4.5", place_stream)


def test_4_5_wrong_no_placement():
    async def place_stream(js, name, subjects, cluster):
        await js.add_stream(name=name, subjects=subjects)
    fails("4.5", place_stream, says=("not in cluster", "other cluster"))


def test_4_5_wrong_tag_without_prefix():
    async def place_stream(js, name, subjects, cluster):
        await js.add_stream(name=name, subjects=subjects, placement=Placement(tags=[cluster]))
    fails("4.5", place_stream, says="cluster:")


def test_4_5_wrong_subjects():
    async def place_stream(js, name, subjects, cluster):
        await js.add_stream(name=name, subjects=[s.replace(".>", ".*") for s in subjects],
                            placement=Placement(cluster=cluster))
    fails("4.5", place_stream, says="subjects")


# ------------------------------------------------------------------------------------- 4.6
def _leaf_dict(hub_leaf_url):
    return {"leafnodes": {"remotes": [{"urls": [hub_leaf_url]}]}}


async def _ask(url, subject):
    nc = await nats.connect(url)
    try:
        return (await nc.request(subject, b"ping", timeout=5)).data.decode()
    finally:
        await nc.close()


def test_4_6_correct_dict_and_plain_client():
    async def ask_via_leaf(leaf_url, hub_url, subject):
        return await _ask(leaf_url, subject)
    passes("4.6", _leaf_dict, ask_via_leaf)


def test_4_6_correct_config_text_and_drain():
    def leaf_config(hub_leaf_url):
        return f'leafnodes {{\n  remotes [\n    {{ url: "{hub_leaf_url}" }}\n  ]\n}}\n'

    async def ask_via_leaf(leaf_url, hub_url, subject):
        nc = await nats.connect(servers=[leaf_url], name="edge-client")
        reply = await nc.request(subject, b"", timeout=5)
        await nc.drain()
        return reply.data.decode("utf-8")
    passes("4.6", leaf_config, ask_via_leaf)


def test_4_6_wrong_leaf_listens_instead_of_dialing():
    def leaf_config(hub_leaf_url):
        return {"leafnodes": {"listen": "127.0.0.1:-1"}}

    async def ask_via_leaf(leaf_url, hub_url, subject):
        return await _ask(leaf_url, subject)
    fails("4.6", leaf_config, ask_via_leaf, says="no leafnodes remotes")


def test_4_6_wrong_client_on_the_hub():
    async def ask_via_leaf(leaf_url, hub_url, subject):
        return await _ask(hub_url, subject)
    fails("4.6", _leaf_dict, ask_via_leaf, says="connected to the hub itself")


def test_4_6_wrong_returns_bytes():
    async def ask_via_leaf(leaf_url, hub_url, subject):
        nc = await nats.connect(leaf_url)
        reply = await nc.request(subject, b"ping", timeout=5)
        await nc.close()
        return reply.data
    fails("4.6", _leaf_dict, ask_via_leaf, says="bytes")


def test_4_6_wrong_leaves_its_connection_open():
    async def ask_via_leaf(leaf_url, hub_url, subject):
        nc = await nats.connect(leaf_url)
        reply = await nc.request(subject, b"ping", timeout=5)
        return reply.data.decode()
    fails("4.6", _leaf_dict, ask_via_leaf, says="still open")


# ------------------------------------------------------------------------------------- 4.7
def test_4_7_correct_lame_duck_then_start_in_a_thread():
    async def rolling_restart(cluster, js, stream):
        for srv in cluster:
            srv.lame_duck()
            await natslab.until(lambda: not srv.running, "exit", timeout=40)
            await asyncio.to_thread(srv.start)
            await failover.wait_until_current(js, stream, timeout=60)
    passes("4.7", rolling_restart)


def test_4_7_correct_restart_in_a_thread_and_own_catch_up_loop():
    async def rolling_restart(cluster, js, stream):
        for srv in list(cluster):
            await asyncio.to_thread(srv.restart)
            for _ in range(600):
                try:
                    info = await js.stream_info(stream)
                    if info.cluster.leader and all(r.current for r in info.cluster.replicas or []):
                        break
                except Exception:
                    pass
                await asyncio.sleep(0.1)
    passes("4.7", rolling_restart)


def test_4_7_wrong_blocking_restart_on_the_event_loop():
    async def rolling_restart(cluster, js, stream):
        for srv in cluster:
            srv.restart()
            await failover.wait_until_current(js, stream, timeout=60)
    fails("4.7", rolling_restart, says="blocked the event loop")


def test_4_7_wrong_all_at_once():
    async def rolling_restart(cluster, js, stream):
        await asyncio.gather(*(asyncio.to_thread(srv.restart) for srv in cluster))
    fails("4.7", rolling_restart, says="two servers")


def test_4_7_wrong_skips_a_server():
    async def rolling_restart(cluster, js, stream):
        for srv in list(cluster)[:2]:
            await asyncio.to_thread(srv.restart)
            await failover.wait_until_current(js, stream, timeout=60)
    fails("4.7", rolling_restart, says="not restarted")


def test_4_7_wrong_takes_servers_down_and_leaves_them():
    async def rolling_restart(cluster, js, stream):
        srv = list(cluster)[-1]
        srv.kill()
    fails("4.7", rolling_restart, says="not every server is running")
