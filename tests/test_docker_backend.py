"""Docker specifics: the image is built from the pinned binary, dead sessions are swept."""
from __future__ import annotations

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
    n = b.client.networks.create("natslab-sweeptest", labels={OWNER_LABEL: dead_owner})
    b.sweep()
    ids = {x.id for x in b.client.containers.list(all=True)}
    nets = {x.id for x in b.client.networks.list()}
    assert c.id not in ids and n.id not in nets
