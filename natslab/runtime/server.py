"""One real nats-server, on either backend, with the lifecycle a lesson or a test needs."""
from __future__ import annotations

import asyncio
import html
import re
from pathlib import Path
from typing import Any, Mapping

from . import confgen, ports as portlib, session
from ..errors import NatslabError, PortInUse, ServerStartError
from .monitor import NOT_ANSWERING, fetch
from .waiting import until_sync

_CONFIG_ERROR = re.compile(r"(nats-server: .*|.*\[(FTL|ERR)\].*)")


class Server:
    """A nats-server: ``url`` for clients, ``monitor_url`` for HTTP, ``config_text`` to read.

    Lifecycle: ``start``, ``stop`` (graceful), ``kill`` (SIGKILL), ``restart`` (same name,
    ports and JetStream store, so stored data survives), ``pause``/``resume`` (the process is
    frozen, as a hung or partitioned server looks), ``lame_duck``, and ``close`` (stop and
    remove everything).  Use ``with``/``async with`` or ``natslab.stop_all()`` to clean up.
    ``release`` is the nats-server release it runs (``switch_release`` changes it while stopped).
    """

    def __init__(self, group: session.ServerGroup, name: str, *, jetstream: bool | Mapping = True,
                 port: int | None = None, monitor_port: int | None = None,
                 extra: Mapping[str, Any] | None = None, extra_text: str = "",
                 roles: tuple[str, ...] = (), release: str | None = None):
        self.group = group
        self.name = name
        self.backend: str = group.backend  # "docker" or "local"
        self.runner = group.runner  # what starts the process or container
        self.release_target: str | None = None  # None: the pinned release the backend runs
        if release is not None:
            self._set_release(release)
        self.jetstream = jetstream
        self.extra = dict(extra or {})
        self.extra_text = extra_text
        self.dir: Path = group.dir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "server.conf"
        self.cluster_name: str | None = None
        self.route_peers: list[Server] = []
        self.gateway_name: str | None = None
        self.gateway_peers: dict[str, list[Server]] = {}
        self.leaf_remotes: list[dict] = []  # {"hubs": [Server], **settings}
        self.networks: list[session.ServerGroup] = []
        self._fixed = {r: p for r, p in (("client", port), ("monitor", monitor_port)) if p}
        self._roles = ("client", "monitor") + tuple(r for r in roles if r not in ("client", "monitor"))
        self.ports: dict[str, int] = {}
        self._assign_ports()
        self.handle = None
        self.closed = False
        group.servers.append(self)

    # -- addresses ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.ports['client']}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['monitor']}"

    @property
    def config_text(self) -> str:
        return self.config_path.read_text() if self.config_path.exists() else self.render_config()

    def _assign_ports(self) -> None:
        for role, p in self._fixed.items():
            self.ports[role] = portlib.claim(p)
        free = [r for r in self._roles if r not in self._fixed]
        for role, p in zip(free, portlib.reserve(len(free))):
            self.ports[role] = p

    def _reassign_free_ports(self) -> None:
        stale = [p for r, p in self.ports.items() if r not in self._fixed]
        portlib.release(stale)
        self.ports = {r: p for r, p in self.ports.items() if r in self._fixed}
        self._assign_ports()

    # -- config -------------------------------------------------------------------------------
    def render_config(self) -> str:
        b = self.runner
        bind, me = b.bind_host, b.peer_host(self)
        p = self.ports
        conf: dict[str, Any] = {
            "server_name": self.name,
            "listen": f"{bind}:{p['client']}",
            "client_advertise": f"127.0.0.1:{p['client']}",
            "http": f"{bind}:{p['monitor']}",
        }
        if self.jetstream is True or isinstance(self.jetstream, Mapping):
            js = {"store_dir": str(self.dir / "jetstream"),
                  "max_memory_store": confgen.Raw("256MB"), "max_file_store": confgen.Raw("2GB")}
            conf["jetstream"] = confgen.merge(js, self.jetstream if isinstance(self.jetstream, Mapping) else None)
        if self.cluster_name:
            conf["cluster"] = {
                "name": self.cluster_name,
                "listen": f"{bind}:{p['cluster']}",
                "advertise": f"{me}:{p['cluster']}",
                "routes": [f"nats-route://{b.peer_host(s)}:{s.ports['cluster']}"
                           for s in self.route_peers if s is not self],
            }
        if self.gateway_name:
            conf["gateway"] = {
                "name": self.gateway_name,
                "listen": f"{bind}:{p['gateway']}",
                "advertise": f"{me}:{p['gateway']}",
                "gateways": [{"name": gw, "urls": [f"nats://{b.peer_host(s)}:{s.ports['gateway']}" for s in peers]}
                             for gw, peers in self.gateway_peers.items()],
            }
        if "leafnode" in p or self.leaf_remotes:
            leaf: dict[str, Any] = {}
            if "leafnode" in p:
                leaf.update({"listen": f"{bind}:{p['leafnode']}", "advertise": f"{me}:{p['leafnode']}"})
            if self.leaf_remotes:
                leaf["remotes"] = [
                    {"urls": [f"nats-leaf://{b.peer_host(h)}:{h.ports['leafnode']}" for h in r["hubs"]],
                     **{k: v for k, v in r.items() if k != "hubs"}}
                    for r in self.leaf_remotes
                ]
            conf["leafnodes"] = leaf
        conf = confgen.merge(conf, self.extra)
        where = ("Docker: listens on 0.0.0.0 inside its container; ports published on 127.0.0.1 only"
                 if self.backend == "docker" else "local process: listens on 127.0.0.1 only")
        head = (f'nats-server config for "{self.name}", written by natslab ({where}).\n'
                f"Clients: {self.url}   Monitoring: {self.monitor_url}")
        text = confgen.render(conf, comment=head)
        if self.extra_text:
            text += "\n# added by the caller\n" + self.extra_text.rstrip() + "\n"
        return text

    # -- lifecycle ----------------------------------------------------------------------------
    def launch(self) -> None:
        """Start the process or container and return at once (a topology launches every server,
        then waits for them together; ``start`` waits for this one)."""
        if self.closed:
            raise NatslabError(f"Server {self.name} was closed.", "start a new one with natslab.server().")
        self.config_path.write_text(self.render_config())
        if self.handle is None:
            self.handle = self.runner.create(self)
        self.handle.start()

    def start(self, timeout: float = 30.0) -> "Server":
        """Start (or start again) and return once the server itself reports healthy."""
        if self.running:
            return self
        for attempt in range(3):
            try:
                self.launch()
                self.wait_ready(timeout)
                return self
            except portlib.PortRace:
                if self._fixed.keys() >= {"client", "monitor"} and attempt == 2:
                    raise
                self._discard_handle()
                self._reassign_free_ports()
        raise ServerStartError(f"nats-server {self.name} could not find free ports after 3 tries.")

    def _discard_handle(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until ``/healthz`` says ok; explain a server that died instead (its own log lines)."""
        last = ["no answer yet"]

        def healthy() -> bool:
            if not self.handle.running():
                self._explain_exit()
            try:
                reply = fetch(self.monitor_url, "healthz", timeout=2)
            except NOT_ANSWERING as exc:  # not listening yet, or half a reply
                last[0] = str(exc) or type(exc).__name__
                return False
            last[0] = reply.get("error") or str(reply)
            return reply.get("status") == "ok"

        if not until_sync(healthy, f"nats-server {self.name} to become healthy", timeout=timeout,
                          every=0.02, error=False):
            raise ServerStartError(
                f"nats-server {self.name} did not become healthy within {timeout:.0f} s "
                f"(last /healthz answer: {last[0]}).",
                "read srv.logs() for the server's view; a JetStream cluster needs a majority "
                "of its nodes running to elect a meta leader.",
                details=_tail(self.handle.logs(since_start=True), 12),
            )

    def _explain_exit(self) -> None:
        log = self.handle.logs(since_start=True)
        if portlib.is_port_in_use_error(log):
            taken = [p for r, p in self.ports.items() if f":{p}" in log]
            if self._fixed and any(self._fixed.get(r) in taken for r in self._fixed):
                raise PortInUse(
                    f"nats-server {self.name} could not listen: port {taken or list(self._fixed.values())} "
                    "is already in use by another program.",
                    "leave the port unset so natslab picks a free one, or stop the other program.",
                    details=_tail(log, 4))
            raise portlib.PortRace(log)
        lines = [m.group(0).strip() for m in _CONFIG_ERROR.finditer(log)]
        said = [l for l in lines if l.startswith("nats-server:")]  # how the binary reports a bad config
        if said:
            details = said[-4:]
            conf_lines = self.config_text.splitlines()
            for num in sorted({int(n) for n in re.findall(r"line (\d+)", " ".join(said))}):
                if 0 < num <= len(conf_lines) and conf_lines[num - 1].strip():
                    details.append(f"line {num} of the config reads: {conf_lines[num - 1].strip()}")
                elif num > len(conf_lines) and conf_lines:  # the parser ran off the end of the file
                    details.append(f"the config ends (line {len(conf_lines)}) with: {conf_lines[-1].strip()}")
            raise ServerStartError(
                f"nats-server {self.name} rejected its configuration.",
                "correct the setting the server names above; srv.show_config() prints the file "
                "with the line numbers the server counts.",
                details="\n".join(details))
        raise ServerStartError(
            f"nats-server {self.name} exited while starting.",
            "read the server's own log above; srv.logs() has all of it.",
            details=_tail(log, 12))

    @property
    def running(self) -> bool:
        return self.handle is not None and self.handle.running()

    # -- releases -----------------------------------------------------------------------------
    def _set_release(self, release: str) -> None:
        from . import releases

        version = releases.normalize(release)
        releases.ensure(version, self.backend)  # download / build now: a clear error before any start
        self.release_target = None if version == releases.PINNED_VERSION else version

    @property
    def release(self) -> str:
        """The nats-server release: the server's own /varz version while running, else the one it will run."""
        if self.running:
            try:
                return self.monitor("varz", timeout=3)["version"]
            except Exception:
                pass
        return self.release_target or self.runner.version

    def switch_release(self, release: str) -> None:
        """Make the next ``start()`` run nats-server ``release`` with the same config, ports and
        JetStream store (an upgrade or downgrade step).  The server must be stopped first."""
        if self.closed:
            raise NatslabError(f"Server {self.name} was closed.", "start a new one with natslab.server().")
        if self.running:
            raise NatslabError(
                f"Server {self.name} is running ({self.release}); a release can only be switched while it is stopped.",
                f"stop it first (srv.lame_duck() and wait, or srv.stop()), then srv.switch_release({release!r}) "
                "and srv.start().")
        self._set_release(release)
        self._discard_handle()  # the next launch creates a process / container of the new release

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop; ``start()`` or ``restart()`` brings it back with its data."""
        if self.handle is not None:
            self.handle.stop(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash: no goodbye to clients or peers."""
        if self.handle is not None:
            self.handle.kill()

    def restart(self, timeout: float = 30.0) -> "Server":
        self.stop()
        return self.start(timeout)

    def pause(self) -> None:
        """Freeze the process (SIGSTOP / docker pause): connections stay open but nothing answers."""
        self.handle.pause()

    def resume(self) -> None:
        self.handle.resume()

    def lame_duck(self) -> None:
        """Enter lame duck mode: stop accepting clients and spread existing ones out, then exit."""
        import signal

        self.handle.signal(signal.SIGUSR2)

    def cut(self) -> None:
        """Cut this server off from its peers (routes, gateways, leaf links); clients still reach it."""
        self.runner.cut(self)

    def heal(self) -> None:
        self.runner.heal(self)

    def logs(self) -> str:
        return self.handle.logs() if self.handle is not None else ""

    def close(self) -> None:
        """Stop and remove the process or container and give the ports back."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.handle is not None:
                self.handle.remove()
        finally:
            portlib.release(self.ports.values())
            if self in self.group.servers:
                self.group.servers.remove(self)

    # -- views --------------------------------------------------------------------------------
    def monitor(self, endpoint: str, timeout: float = 5.0, **params) -> dict:
        """The server's own view: ``/varz``, ``/jsz``, ... as a dict (``params`` go in the query)."""
        return fetch(self.monitor_url, endpoint, timeout=timeout, **params)

    def show_config(self) -> None:
        """Print the config with line numbers, as the server's error messages count them."""
        for i, line in enumerate(self.config_text.splitlines(), 1):
            print(f"{i:3} {line}")

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("running" if self.running else "stopped")
        return f"<natslab Server {self.name} {state} {self.backend} {self.url} monitor {self.monitor_url}>"

    def _repr_html_(self) -> str:
        state = "closed" if self.closed else ("running" if self.running else "stopped")
        rows = "".join(f"<tr><th style='text-align:left'>{k}</th><td><code>{html.escape(str(v))}</code></td></tr>"
                       for k, v in (("name", self.name), ("state", state), ("backend", self.backend),
                                    ("url", self.url), ("monitor_url", self.monitor_url)))
        return f"<table>{rows}</table>"

    # -- context managers ---------------------------------------------------------------------
    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.group.close() if len(self.group.servers) <= 1 else self.close()

    async def __aenter__(self) -> "Server":
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc) -> None:
        await asyncio.to_thread(self.__exit__, *exc)


def _tail(text: str, n: int) -> str:
    lines = [l for l in text.splitlines() if l.strip()]
    return "\n".join(lines[-n:])


def server(name: str = "nats", *, jetstream: bool | Mapping = True, port: int | None = None,
           monitor_port: int | None = None, config: Mapping[str, Any] | None = None,
           config_text: str = "", leafnodes: bool = False, backend: str | None = None,
           start: bool = True, replace: bool | None = None, release: str | None = None) -> Server:
    """Start one nats-server and return it once it is ready.

    ``config`` is merged into the generated settings (for example
    ``{"authorization": {"token": "s3cret"}}``) and ``config_text`` is appended verbatim.
    ``leafnodes=True`` opens a port that leaf nodes can join.  ``release="2.14.6"`` runs that
    nats-server release instead of the pinned one (see natslab.runtime.releases).

    Started from a cell's top level (``replace=None``), it first stops a server started the same
    way under the same ``name`` (re-running a set-up cell replaces its server instead of piling
    up a second one) and says so; ``replace=False`` never does, ``replace=True`` always does.
    """
    if replace is None:
        replace = session.top_level()
    if replace:
        session.replace_named("server", name, "server")
    group = session.ServerGroup("server", backend)
    if replace:
        session.mark_named(group, "server", name)
    try:
        srv = Server(group, name, jetstream=jetstream, port=port, monitor_port=monitor_port,
                     extra=config, extra_text=config_text, roles=("leafnode",) if leafnodes else (),
                     release=release)
        if start:
            srv.start()
        return srv
    except BaseException:
        group.close()
        raise
