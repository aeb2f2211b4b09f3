"""Where a process keeps its servers: one work directory, groups of servers, clean-up at exit.

Every server lives in a *group* (one standalone server, one cluster, one super-cluster).  All
groups of a process sit under one session directory, which the Docker backend mounts into each
container at the same path: any file natslab or the learner writes under ``workdir()``
(certificates, credentials, JWTs) is visible to the server at the path the config names.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

from . import guard

_lock = threading.Lock()
_root: Path | None = None
_groups: dict[str, "Group"] = {}


def root() -> Path:
    global _root
    with _lock:
        if _root is None or not _root.exists():
            base = os.environ.get("NATSLAB_WORKDIR") or tempfile.gettempdir()
            _root = Path(tempfile.mkdtemp(prefix=f"natslab-{os.getpid()}-", dir=base)).resolve()
            os.chmod(_root, 0o755)
            guard.watch("dir", _root)
        return _root


def workdir() -> Path:
    """A directory for files servers must read (TLS, creds); visible on both backends."""
    path = root() / "files"
    path.mkdir(exist_ok=True)
    return path


class Group:
    """Servers that know each other (share a Docker network) and are cleaned up together."""

    def __init__(self, backend, kind: str = "server"):
        self.id = uuid.uuid4().hex[:8]
        self.kind = kind
        self.backend = backend
        self.root = root()
        self.dir = self.root / f"{kind}-{self.id}"
        self.dir.mkdir()
        self.servers: list = []
        with _lock:
            _groups[self.id] = self

    def close(self) -> None:
        for srv in list(self.servers):
            srv.close()
        self.backend.release_group(self)
        shutil.rmtree(self.dir, ignore_errors=True)
        with _lock:
            _groups.pop(self.id, None)


def groups() -> list[Group]:
    """The groups of servers this process has running now, oldest first (checkers use it to find
    the servers a learner's code started)."""
    with _lock:
        return list(_groups.values())


def stop_all() -> None:
    """Stop and remove every server this process started (teardown cells, atexit)."""
    for g in reversed(groups()):  # newest first: a leaf goes before its hub
        try:
            g.close()
        except Exception:
            pass


atexit.register(stop_all)
