"""The capstone's set-up: TLS material and passwords for a secured 3-node cluster, and the cluster itself.

- ``material()``: a throwaway CA, the paths of the nodes' certificate and key, and a password per user
  of the specification (``svc``, ``web``, ``rival``), all made at run time under ``natslab.workdir()``.
- ``secure_cluster(config, mat)``: three JetStream nodes joined by routes, each started with ``config``
  (the learner's security settings: ``tls``, ``cluster.tls``, ``accounts``...) merged into natslab's
  generated settings.  The nodes' certificate names 127.0.0.1, localhost and every name a peer dials
  (on Docker, the containers' names), so TLS on routes verifies host names on both backends.
- ``connect(target, mat, user)``: a plain ``nats.connect`` connection as one of those users over TLS.
- ``route_info(srv)``: what the route port says in plain text to anyone who opens it (its INFO, as a
  dict), or None when it says nothing until a TLS handshake: the attacker's view of the routes.
"""
from __future__ import annotations

import json
import secrets
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any, Mapping

import nats

from ..runtime.topology import Cluster, cluster
from .security.keys import write_secret
from .security.tls import CertificateAuthority, client_context

USERS = ("svc", "web", "rival")


@dataclass
class Material:
    """TLS files and passwords for one capstone cluster."""

    ca: CertificateAuthority
    tls: dict            # {"ca_file", "cert_file", "key_file"}: paths as str
    users: dict = field(default_factory=dict)  # user name -> password

    def context(self) -> ssl.SSLContext:
        """A client TLS context that trusts the capstone's CA (and checks host names)."""
        return client_context(self.tls["ca_file"])


def material(name: str = "capstone") -> Material:
    ca = CertificateAuthority(f"{name}-{secrets.token_hex(3)}")
    tls = {"ca_file": str(ca.path), "cert_file": str(ca.dir / "node.pem"), "key_file": str(ca.dir / "node-key.pem")}
    return Material(ca, tls, {u: secrets.token_urlsafe(12) for u in USERS})


def _issue(mat: Material, names) -> None:
    leaf = mat.ca._ca.issue_cert(*names)
    with open(mat.tls["cert_file"], "wb") as f:
        f.write(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    write_secret(mat.tls["key_file"], leaf.private_key_pem.bytes())


def secure_cluster(config: Mapping[str, Any], mat: Material, *, name: str = "capstone",
                   backend: str | None = None, timeout: float = 60.0) -> Cluster:
    """Start three JetStream nodes with ``config`` merged into each; ready when routes and a meta leader are up.

    The node certificate is issued once the servers exist, so that it names the host names the
    nodes dial each other by (the container names on Docker): TLS on routes verifies them."""
    def issue(servers) -> None:
        _issue(mat, ["127.0.0.1", "localhost", *sorted({s.runner.peer_host(s) for s in servers})])

    return cluster(3, name=name, config=dict(config), backend=backend, timeout=timeout, replace=False,
                   before_start=issue)


async def _quiet(_exc) -> None:
    pass


async def connect(target, mat: Material, user: str | None, **options):
    """A plain nats-py connection to every node of ``target`` as ``user`` (its password from ``mat``), over TLS."""
    servers = target.urls if hasattr(target, "urls") else [target if isinstance(target, str) else target.url]
    auth = {"user": user, "password": mat.users[user]} if user else {}
    options = {"connect_timeout": 3, "max_reconnect_attempts": 30, "reconnect_time_wait": 0.3,
               "error_cb": _quiet, "tls": mat.context(), **auth, **options}
    return await nats.connect(servers=servers, **options)


def route_info(srv, timeout: float = 3.0) -> dict | None:
    """The INFO a node's route port sends in plain text to whoever connects (no TLS, no credentials),
    or None when it sends nothing readable (it waits for a TLS handshake): the attacker's view."""
    with socket.create_connection(("127.0.0.1", srv.ports["cluster"]), timeout=timeout) as sock:
        data = b""
        while b"\r\n" not in data and len(data) < 65536:
            try:
                chunk = sock.recv(4096)
            except (socket.timeout, ConnectionError):
                break
            if not chunk:
                break
            data += chunk
    line = data.split(b"\r\n", 1)[0].decode(errors="replace")
    if not line.startswith("INFO "):
        return None
    return json.loads(line[5:])
