"""Free TCP ports on 127.0.0.1 that no other natslab process will hand out at the same time.

Ports come from 14000-29999, below the kernel's ephemeral range (Linux 32768+, macOS 49152+),
so a client's outgoing connection never takes the port of a server that is stopped for a
restart.  A small registry under a file lock keeps two test runs, or two notebooks, from
picking the same port; entries of dead processes are forgotten.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import socket
import tempfile
from pathlib import Path

from ..errors import PortInUse

LOW, HIGH = 14000, 29999
_REGISTRY = Path(tempfile.gettempdir()) / "natslab-ports.json"


class PortRace(Exception):
    """A free port was taken between choosing it and the server binding it; natslab tries others."""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _locked_registry():
    lock_path = str(_REGISTRY) + ".lock"
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o666)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # Windows: best effort without a lock
            pass
        try:
            data = json.loads(_REGISTRY.read_text())
        except (OSError, ValueError):
            data = {}
        data = {p: pid for p, pid in data.items() if pid_alive(int(pid))}
        yield data
        tmp = str(_REGISTRY) + f".{os.getpid()}"
        Path(tmp).write_text(json.dumps(data))
        os.replace(tmp, _REGISTRY)
    finally:
        os.close(fd)


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def reserve(count: int) -> list[int]:
    """Reserve ``count`` free ports for this process until ``release`` is called."""
    got: list[int] = []
    with _locked_registry() as reg:
        tries = 0
        while len(got) < count:
            tries += 1
            if tries > 5000:
                raise PortInUse("natslab could not find free ports between 14000 and 29999.",
                                "stop servers you no longer need (natslab.stop_all()) and try again.")
            port = random.randint(LOW, HIGH)
            if str(port) in reg or port in got or not bindable(port):
                continue
            got.append(port)
        for p in got:
            reg[str(p)] = os.getpid()
    return got


def claim(port: int) -> int:
    """Claim a port the learner chose; a clear error when another program holds it."""
    if not bindable(port):
        raise PortInUse(
            f"Port {port} on 127.0.0.1 is already in use by another program.",
            f"leave the port unset and natslab picks a free one, or stop what holds it "
            f"(find it with `lsof -i :{port}` or `ss -ltnp 'sport = :{port}'`).",
        )
    with _locked_registry() as reg:
        reg[str(port)] = os.getpid()
    return port


def release(ports) -> None:
    with _locked_registry() as reg:
        for p in ports:
            reg.pop(str(p), None)


def is_port_in_use_error(text: str) -> bool:
    return "address already in use" in text.lower() or str(errno.EADDRINUSE) == text
