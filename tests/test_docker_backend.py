"""Docker specifics: the image is built from the pinned binary, dead sessions are swept."""
from __future__ import annotations

import os
import socket

import pytest

pytestmark = pytest.mark.docker


def test_image_runs_the_pinned_version():
    import natslab
    from natslab.runtime import backends

    b = backends.get("docker")
    assert b.image in (f"nats:{natslab.PINNED_VERSION}", f"natslab/nats-server:{natslab.PINNED_VERSION}")
    with natslab.server("v", backend="docker", jetstream=False) as srv:
        assert srv.monitor("varz")["version"] == natslab.PINNED_VERSION


def test_containers_of_dead_sessions_are_swept():
    from natslab.runtime import backends
    from natslab.runtime.backends.docker import OWNER_LABEL

    b = backends.get("docker")
    dead_owner = f"{socket.gethostname()}:999999999"  # no such pid
    c = b.client.containers.create(b.image, command=["--help"], labels={OWNER_LABEL: dead_owner})
    n = b.client.networks.create(f"natslab-sweeptest-{os.getpid()}", labels={OWNER_LABEL: dead_owner})
    b.sweep()
    ids = {x.id for x in b.client.containers.list(all=True)}
    nets = {x.id for x in b.client.networks.list()}
    assert c.id not in ids and n.id not in nets


def test_container_is_a_testcontainers_container_with_the_servers_settings():
    """Started through testcontainers: same ports inside and out on 127.0.0.1, the work dir at the
    same path, the learner's uid, the sweep's labels; a restart keeps the container and its ports."""
    import os

    import natslab
    from natslab.runtime.backends.docker import OWNER_LABEL, NatsServerContainer, owner_tag
    from testcontainers.core.container import DockerContainer

    with natslab.server("tc", backend="docker", jetstream=False) as srv:
        tc = srv.handle.tc
        assert isinstance(tc, NatsServerContainer) and isinstance(tc, DockerContainer)
        assert tc.nats_uri() == srv.url and tc.monitor_uri() == srv.monitor_url
        attrs = tc.get_wrapped_container().attrs
        bindings = attrs["HostConfig"]["PortBindings"]
        assert {f"{p}/tcp" for p in srv.ports.values()} == set(bindings)
        for inside, outside in bindings.items():
            assert outside == [{"HostIp": "127.0.0.1", "HostPort": inside.split("/")[0]}]
        root = str(srv.group.root)
        assert any(m["Source"] == root and m["Destination"] == root and m["RW"] for m in attrs["Mounts"])
        assert attrs["Config"]["User"] == f"{os.getuid()}:{os.getgid()}"
        assert attrs["Config"]["Labels"][OWNER_LABEL] == owner_tag()
        cid = tc.get_container_id()
        srv.restart()
        assert tc.get_container_id() == cid and srv.monitor("healthz")["status"] == "ok"
    assert not srv.running


def test_a_cut_node_keeps_its_clients():
    """The topology network is cut; the path clients use (Docker's bridge) stays up."""
    import asyncio

    import nats

    import natslab

    async def go():
        with natslab.cluster(3, backend="docker", jetstream=False) as c:
            n3 = c["c1-n3"]
            nc = await nats.connect(n3.url, max_reconnect_attempts=0)
            n3.cut()
            await natslab.until(lambda: n3.monitor("routez")["num_routes"] == 0, "n3's routes to drop", timeout=60)
            await nc.flush(timeout=5)
            still = nc.is_connected and n3.monitor("connz")["num_connections"] == 1
            n3.heal()
            await natslab.until(lambda: n3.monitor("routez")["num_routes"] >= 2, "n3's routes to return", timeout=60)
            await nc.close()
            return still
    assert asyncio.run(go()), "a client of the cut node lost its connection"
