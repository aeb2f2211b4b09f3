"""Nothing natslab starts outlives the process that started it.

Normal exits run ``atexit`` clean-up.  For the hard case, a kernel killed with SIGKILL, each
process that starts servers also starts one small guard process in its own session.  The
parent tells the guard, over a pipe, what it started (process ids, containers, networks,
directories, commands to run: a Compose project's ``down``).  When the parent dies, however it dies, the pipe closes, the guard reads
end-of-file and removes whatever is still listed.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

_lock = threading.Lock()
_proc: subprocess.Popen | None = None


def _send(line: str) -> None:
    global _proc
    with _lock:
        if _proc is None or _proc.poll() is not None:
            _proc = subprocess.Popen(
                [sys.executable, "-m", "natslab.runtime.guard", str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        try:
            _proc.stdin.write((line + "\n").encode())
            _proc.stdin.flush()
        except (BrokenPipeError, OSError):
            _proc = None


def watch(kind: str, value) -> None:
    """Ask the guard to remove ``value`` (a pid, container, network or dir) if we die.

    Kind ``command``: ``value`` is a JSON list, a command the guard runs if we die (e.g.
    ``compose down -v`` for a Compose project, which also removes its volumes)."""
    _send(f"+{kind} {value}")


def forget(kind: str, value) -> None:
    _send(f"-{kind} {value}")


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """End a process registered with ``watch("pid", ...)``: SIGTERM, SIGKILL after ``grace`` s, forgotten."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    forget("pid", proc.pid)


# ---------------------------------------------------------------- the guard process itself
def _cmdline(pid: int) -> bytes | None:
    """The process's command line, None when it is gone (b"" where there is no /proc: macOS)."""
    if not os.path.isdir("/proc"):
        return b""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError:
        return b""


def _clean(items: dict[str, set[str]], started: dict[str, bytes | None]) -> None:
    for pid in items.get("pid", ()):
        # Kill only the process we were told about: same pid and the same command line as when
        # it was registered (a pid reused by another program since is left alone).
        now = _cmdline(int(pid))
        if now is not None and now == started.get(pid, now):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
    if items.get("container") or items.get("network"):
        try:
            import docker

            client = docker.from_env(timeout=20)
            for cid in items.get("container", ()):
                try:
                    client.containers.get(cid).remove(force=True)
                except Exception:
                    pass
            for nid in items.get("network", ()):
                try:
                    client.networks.get(nid).remove()
                except Exception:
                    pass
        except Exception:
            pass
    for command in items.get("command", ()):
        try:
            subprocess.run(json.loads(command), stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
        except Exception:
            pass
    time.sleep(0.2)  # let killed servers release their files before the directory goes
    for path in items.get("dir", ()):
        shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the terminal is the parent's business
    items: dict[str, set[str]] = {}
    started: dict[str, bytes | None] = {}  # pid -> its command line when registered
    for raw in sys.stdin.buffer:
        line = raw.decode(errors="replace").strip()
        if len(line) < 3 or " " not in line:
            continue
        op, rest = line[0], line[1:]
        kind, _, value = rest.partition(" ")
        bucket = items.setdefault(kind, set())
        if op == "+":
            bucket.add(value)
            if kind == "pid" and value.isdigit():
                started[value] = _cmdline(int(value))
        else:
            bucket.discard(value)
    _clean(items, started)


if __name__ == "__main__":
    main()
