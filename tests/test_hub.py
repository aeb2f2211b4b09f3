"""A real JupyterHub for a workshop: two learners log in through the login form, each gets their own
JupyterLab from docker/workshop/jupyterhub_config.py, runs a check in a real kernel, and both verdicts
reach the class dashboard.  The hub, its proxy and every learner server are gone afterwards.

Needs the hub's proxy (configurable-http-proxy, installed by ./course set-up where Node.js is).
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import natslab
from natslab.runtime import ports as portlib
from natslab.workshop import Classroom, Dashboard

requests = pytest.importorskip("requests")
ROOT = Path(__file__).resolve().parents[1]
PROXY = ROOT / "docker/workshop/node_modules/.bin/configurable-http-proxy"
HUB = ROOT / ".venv/bin/jupyterhub" if (ROOT / ".venv/bin/jupyterhub").exists() else None

pytestmark = pytest.mark.skipif(not PROXY.exists() or HUB is None,
                                reason="JupyterHub's proxy is not installed (./course set-up installs it "
                                       "with npm where Node.js 18+ is present)")

CODE = """
import natslab, natslab.workshop
verdict = await natslab.check("0.1", lambda: natslab.server("welcome", jetstream=True))
await natslab.workshop.flush()
print("VERDICT", verdict.passed, natslab.workshop.current())
natslab.stop_all()
"""


def _processes(word: str) -> set[int]:
    found = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if word in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.add(int(d.name))
            except OSError:
                pass
    return found


def _login(base: str, user: str, password: str) -> requests.Session:
    """The login form, as a browser fills it in (xsrf cookie and all)."""
    s = requests.Session()
    s.get(f"{base}/hub/login", timeout=30)
    r = s.post(f"{base}/hub/login", data={"username": user, "password": password, "_xsrf": s.cookies.get("_xsrf")},
               timeout=120, allow_redirects=True)
    assert r.status_code == 200 and "/hub/login" not in r.url, (r.status_code, r.url)
    return s


async def _run_in_kernel(base: str, user: str, token: str, code: str, timeout: float = 240) -> str:
    """Start a kernel in the learner's own server and run ``code`` there; returns what it printed."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    auth = {"Authorization": f"token {token}"}
    r = await asyncio.to_thread(requests.post, f"{base}/user/{user}/api/kernels", json={"name": "python3"},
                                headers=auth, timeout=60)
    assert r.status_code == 201, (r.status_code, r.text[:300])
    kernel = r.json()["id"]
    ws = await websocket_connect(HTTPRequest(f"{base.replace('http', 'ws', 1)}/user/{user}/api/kernels/{kernel}/channels",
                                             headers=auth))
    msg_id, out = uuid.uuid4().hex, []
    ws.write_message(json.dumps({
        "header": {"msg_id": msg_id, "username": user, "session": uuid.uuid4().hex, "msg_type": "execute_request",
                   "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True}}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = await asyncio.wait_for(ws.read_message(), timeout=deadline - time.monotonic())
        assert raw is not None, "the kernel's websocket closed"
        msg = json.loads(raw)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "stream":
            out.append(msg["content"]["text"])
        elif kind == "error":
            out.append("ERROR " + msg["content"]["ename"] + ": " + msg["content"]["evalue"])
        elif kind == "execute_reply":
            break
    ws.close()
    return "".join(out)


def test_two_learners_on_jupyterhub_reach_the_class_dashboard(tmp_path):
    port, hub_api, proxy_api = portlib.reserve(3)   # the hub's public port, its own API's, the proxy's control
    password, token = secrets.token_urlsafe(12), secrets.token_hex(32)
    base = f"http://127.0.0.1:{port}"
    before = _processes("jupyterhub-singleuser") | _processes("configurable-http-proxy")

    async def main():
        room = await Classroom.start(["alice", "bob"], name="hubclass", directory=tmp_path / "class")
        log = open(tmp_path / "hub.log", "wb")
        env = {**os.environ, "NATSLAB_CLASS_DIR": str(room.dir), "NATSLAB_HUB_PASSWORD": password,
               "NATSLAB_HUB_PORT": str(port), "NATSLAB_HUB_API_PORT": str(hub_api), "NATSLAB_HUB_PROXY_API_PORT": str(proxy_api),
               "NATSLAB_HUB_STATE": str(tmp_path / "hub"),
               "NATSLAB_HUB_API_TOKEN": token, "NATSLAB_BACKEND": "local"}
        env.pop("NATSLAB_PROGRESS", None)                      # each learner's comes from the hub
        hub = subprocess.Popen([str(HUB), "-f", str(ROOT / "docker/workshop/jupyterhub_config.py")],
                               cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            await natslab.until(lambda: requests.get(f"{base}/hub/api/", timeout=2).status_code == 200,
                                "the hub to answer", timeout=120, retry=(requests.RequestException,))
            # a stranger and a wrong password are turned away
            s = requests.Session()
            s.get(f"{base}/hub/login", timeout=30)
            r = s.post(f"{base}/hub/login", data={"username": "mallory", "password": password,
                                                   "_xsrf": s.cookies.get("_xsrf")}, timeout=60)
            assert "/hub/login" in r.url or r.status_code == 403, r.url
            r = s.post(f"{base}/hub/login", data={"username": "alice", "password": "wrong",
                                                   "_xsrf": s.cookies.get("_xsrf")}, timeout=60)
            assert "/hub/login" in r.url or r.status_code == 403, r.url

            admin = {"Authorization": f"token {token}"}
            for user in ("alice", "bob"):
                await asyncio.to_thread(_login, base, user, password)

                def ready(user=user):
                    info = requests.get(f"{base}/hub/api/users/{user}", headers=admin, timeout=10).json()
                    return bool((info.get("servers") or {}).get("", {}).get("ready"))
                await natslab.until(ready, f"{user}'s JupyterLab to be ready", timeout=180,
                                    retry=(requests.RequestException, ValueError))
                lab = requests.get(f"{base}/user/{user}/api/contents/notebooks", headers=admin, timeout=30)
                assert lab.status_code == 200 and any(i["name"] == "00_welcome.ipynb" for i in lab.json()["content"])

            dash = await Dashboard.open(room)
            for user in ("alice", "bob"):
                printed = await _run_in_kernel(base, user, token, CODE)
                assert f"VERDICT True <class hubclass: {user}" in printed, printed
            await natslab.until(lambda: all(dash.board.state(u, "0.1") == "passed" for u in ("alice", "bob")),
                                "both verdicts on the dashboard", timeout=30)
            await dash.close()
        finally:
            hub.send_signal(signal.SIGTERM)                    # the hub stops its learners' servers and proxy
            try:
                await asyncio.to_thread(hub.wait, 90)
            except subprocess.TimeoutExpired:
                os.killpg(hub.pid, signal.SIGKILL)
                hub.wait(10)
            log.close()
            await room.stop()
            portlib.release([port, hub_api, proxy_api])

    asyncio.run(main())
    left = (_processes("jupyterhub-singleuser") | _processes("configurable-http-proxy")) - before
    assert not left, f"left running: {left}"
