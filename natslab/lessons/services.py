"""Lesson 07.1's service in another language: the Node.js service in ``node_service/``.

``node_service(srv)`` starts ``node service.mjs`` (a NATS micro service written with the official
``@nats-io/transport-node`` and ``@nats-io/services`` npm packages) against a server and returns
once the service has told the server about every subscription.  The process is cleaned up like a
server: ``natslab.stop_all()``, the end of the process, and the death of the kernel that started it
(the clean-up guard kills it), so it never outlives the notebook.

``node_missing()`` says, in one sentence with what to do, why the demo cannot run here (no Node.js,
a Node.js older than 18, the npm packages not installed), or returns None when it can.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

from ..errors import NatslabError
from ..runtime import guard, session
from ..runtime.waiting import until_sync

HERE = Path(__file__).resolve().parent / "node_service"
SCRIPT = HERE / "service.mjs"
MIN_NODE = 18
GET_NODE = ("install Node.js 18 or newer (nodejs.org, or on Debian/Ubuntu `sudo apt install nodejs npm`), "
            "then run `./course open` again: its set-up installs the service's npm packages.")
GET_PACKAGES = ("run `./course open` again (its set-up runs `npm ci` for the service), or by hand: "
                "`npm ci --prefix natslab/lessons/node_service --no-audit --no-fund`.")


def node_binary() -> str | None:
    """The path of ``node``, or None when Node.js is not installed."""
    return shutil.which("node")


def node_version(exe: str | None = None) -> tuple[int, ...] | None:
    """Node's version as a tuple, e.g. (20, 20, 2); None when it cannot be run."""
    exe = exe or node_binary()
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.match(r"v?(\d+)\.(\d+)\.(\d+)", out.strip())
    return tuple(int(x) for x in m.groups()) if m else None


def node_missing(packages: bool = True) -> str | None:
    """Why the Node.js service cannot run here, with what to do; None when it can.

    ``packages=False`` asks about Node.js itself only (installed, 18 or newer): lesson 07.1 prints
    this reason and moves on, while missing npm packages with Node.js present are an error
    (``./course open`` installs them; in CI a service that does not start must fail the run)."""
    exe = node_binary()
    if exe is None:
        return "Node.js is not installed (no `node` on PATH): " + GET_NODE
    version = node_version(exe)
    if version is None:
        return f"`{exe} --version` did not answer: " + GET_NODE
    if version[0] < MIN_NODE:
        return f"Node.js {'.'.join(map(str, version))} is too old for the service: " + GET_NODE
    if not packages:
        return None
    for package in ("transport-node", "services"):
        if not (HERE / "node_modules" / "@nats-io" / package / "package.json").exists():
            return f"the npm package @nats-io/{package} of the Node.js service is not installed: " + GET_PACKAGES
    return None


def _url_of(target) -> str:
    url = getattr(target, "url", target)
    if not isinstance(url, str) or not url.startswith(("nats://", "tls://")):
        raise NatslabError(f"node_service() needs a server (or its nats:// URL), got {target!r}.",
                           "pass the server a set-up cell started: node_service(srv).")
    return url


class NodeService:
    """One ``node service.mjs`` process, registered in the session like a server group (so
    ``natslab.stop_all()`` and the end of the process stop it) and with the clean-up guard (so a
    kernel killed with SIGKILL does not leave it behind)."""

    def __init__(self, target, *, name: str = "inventory", version: str = "1.0.0",
                 connection_name: str | None = None, timeout: float = 30.0):
        url = _url_of(target)
        why = node_missing()
        if why:
            raise NatslabError("The Node.js service cannot start.", why.split(": ", 1)[-1], details=why)
        self.id, self.kind, self.backend, self.servers = uuid.uuid4().hex[:8], "node-service", "none", []
        self.name, self.version, self.url = name, version, url
        self.connection_name = connection_name or f"{name}-node"
        self.dir = session.root() / f"node-service-{self.id}"
        self.dir.mkdir()
        session.register(self)  # stop_all() and the end of the process close it, like servers
        self.log_path = self.dir / "service.log"
        env = {**os.environ, "NATS_URL": url, "SERVICE_NAME": name, "SERVICE_VERSION": version,
               "CONNECTION_NAME": self.connection_name}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([node_binary(), str(SCRIPT)], cwd=HERE, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, close_fds=True)
        guard.watch("pid", self.proc.pid)
        self.service_id: str | None = None
        try:
            ready = until_sync(self._ready, f"the Node.js service {name!r} registering on the server",
                               timeout=timeout, every=0.05)
            self.service_id = ready["id"]
        except BaseException:
            self.close()
            raise

    def _ready(self) -> dict | None:
        for line in self.logs().splitlines():
            if line.startswith("{") and '"ready"' in line:
                try:
                    return json.loads(line)
                except ValueError:
                    pass
        if self.proc.poll() is not None:
            raise NatslabError(f"The Node.js service exited while starting (exit code {self.proc.returncode}).",
                               "read its output below (svc.logs()); a connection error means the server "
                               "is not running at " + self.url + ".",
                               details="\n".join(self.logs().splitlines()[-8:]))
        return None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def running(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        """Stop the service (SIGTERM: it stops its endpoints and drains; SIGKILL after 10 s)."""
        guard.stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)
        session.unregister(self)

    stop = close

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running() else "stopped"
        return (f"<natslab NodeService {self.name} {self.version} id={self.service_id} pid={self.pid} "
                f"{state} on {self.url}>")


def node_service(target, **kw) -> NodeService:
    """Start the Node.js service against ``target`` (a server or its URL); see ``NodeService``."""
    return NodeService(target, **kw)
