"""Where a process keeps its servers: one work directory, groups of servers, clean-up at exit.

Every server lives in a ``ServerGroup`` (one standalone server, one cluster, one super-cluster, one
leaf node).  All
groups of a process sit under one session directory, which the Docker backend mounts into each
container at the same path: any file natslab or the learner writes under ``workdir()``
(certificates, credentials, JWTs) is visible to the server at the path the config names.
"""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import threading
import uuid
from pathlib import Path

from . import guard

_lock = threading.Lock()
_root: Path | None = None
_groups: dict[str, "ServerGroup"] = {}


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


class ServerGroup:
    """Servers that know each other (share a Docker network) and are cleaned up together.

    ``backend`` is the backend's name (``"docker"``/``"local"``, or None for the environment's
    choice); ``runner`` is the object that starts its servers (``backends.get(backend)``).
    """

    def __init__(self, kind: str = "server", backend: str | None = None):
        from . import backends

        self.id = uuid.uuid4().hex[:8]
        self.kind = kind
        self.runner = backends.get(backend)
        self.backend: str = self.runner.name
        self.root = root()
        self.dir = self.root / f"{kind}-{self.id}"
        self.dir.mkdir()
        self.servers: list = []
        register(self)

    def close(self) -> None:
        for srv in list(self.servers):
            srv.close()
        self.runner.release_group(self)
        shutil.rmtree(self.dir, ignore_errors=True)
        unregister(self)


def register(group) -> None:
    """Keep ``group`` where ``groups()`` and ``stop_all()`` find it: a ``ServerGroup``, or any
    other thing a lesson starts that must stop with the servers (it needs ``id`` and ``close()``)."""
    with _lock:
        _groups[group.id] = group


def unregister(group) -> None:
    """Forget ``group`` (its ``close()`` calls this once everything is stopped)."""
    with _lock:
        _groups.pop(group.id, None)


def groups() -> list[ServerGroup]:
    """The server groups this process has open now (started and not yet closed), oldest first.

    A checker finds the servers a learner's code started by comparing ``groups()`` before and
    after the call, and closes the new ones (``group.close()``) however the learner's code ended.
    """
    with _lock:
        return list(_groups.values())


def top_level(depth: int = 2) -> bool:
    """Whether the function ``depth`` frames up was called from a notebook cell's (or script's)
    top level, as in a set-up cell ``srv = natslab.server("welcome")``; not from inside a function
    (a checker's scratch server, learner code a check runs, a topology starting its own hub)."""
    try:
        frame = sys._getframe(depth)
    except ValueError:
        return False
    return frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__main__"


def replace_named(kind: str, name: str, what: str) -> bool:
    """Close what an earlier run of the same cell started under ``kind``/``name`` and say so in
    one line.  Only groups marked with ``mark_named`` take part, so servers started from code
    (checkers, topologies) are never replaced."""
    old = [g for g in groups() if getattr(g, "named", None) == (kind, name)]
    for g in old:
        try:
            (getattr(g, "owner", None) or g).close()
        except Exception:
            g.close()
    if old:
        print(f"natslab: replaced the running {what} {name!r} (started earlier in this kernel)")
    return bool(old)


def mark_named(group, kind: str, name: str, owner=None) -> None:
    """Let a later start under the same ``kind``/``name`` replace ``group``; ``owner`` (the
    topology object) is what gets closed, so it closes everything it started (a leaf's own hub)."""
    group.named = (kind, name)
    group.owner = owner


def stop_all() -> None:
    """Stop and remove every server this process started (teardown cells, atexit)."""
    for g in reversed(groups()):  # newest first: a leaf goes before its hub
        try:
            g.close()
        except Exception:
            pass


atexit.register(stop_all)
