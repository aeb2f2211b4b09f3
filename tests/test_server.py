"""Server lifecycle on both backends, against the real nats-server."""
from __future__ import annotations

import asyncio
import socket

import pytest

import natslab
from natslab.runtime import session
from natslab.runtime.monitor import fetch


def _roundtrip(url: str) -> bytes:
    async def go():
        nc = await natslab.connect(url, quiet=True)
        sub = await nc.subscribe("t.>")
        await nc.publish("t.x", b"ping")
        msg = await sub.next_msg(timeout=2)
        await nc.close()
        return msg.data
    return asyncio.run(go())


def _js_count(url: str, publish: int = 0) -> int:
    async def go():
        nc = await natslab.connect(url, quiet=True)
        js = nc.jetstream()
        await js.add_stream(name="KEEP", subjects=["keep.>"])
        for i in range(publish):
            await js.publish("keep.x", str(i).encode())
        info = await js.stream_info("KEEP")
        await nc.close()
        return info.state.messages
    return asyncio.run(go())


def test_lifecycle_and_restart_keeps_jetstream_data(backend):
    with natslab.server("life", backend=backend) as srv:
        assert srv.backend == backend and srv.runner.name == backend and srv.running
        assert srv.url.startswith("nats://127.0.0.1:") and srv.monitor_url.startswith("http://127.0.0.1:")
        assert _roundtrip(srv.url) == b"ping"
        assert srv.monitor("varz")["server_name"] == "life"
        assert 'server_name: "life"' in srv.config_text and "jetstream {" in srv.config_text
        assert "Server is ready" in srv.logs()
        assert _js_count(srv.url, publish=5) == 5
        ports = dict(srv.ports)
        srv.restart()
        assert srv.ports == ports
        assert _js_count(srv.url) == 5, "JetStream data must survive a restart"
        srv.kill()
        assert not srv.running
        srv.start()
        assert _js_count(srv.url) == 5, "JetStream data must survive a kill and start"
        srv.stop()
        assert not srv.running
    assert srv.closed


def test_pause_freezes_and_resume_thaws(backend):
    with natslab.server("frozen", backend=backend, jetstream=False) as srv:
        srv.pause()
        with pytest.raises(OSError):  # a frozen server accepts nothing and answers nothing
            fetch(srv.monitor_url, "healthz", timeout=0.5)
        srv.resume()
        assert srv.monitor("healthz")["status"] == "ok"


def test_listens_on_loopback_only(backend):
    with natslab.server("private", backend=backend, jetstream=False) as srv:
        if backend == "local":
            assert f'listen: "127.0.0.1:{srv.ports["client"]}"' in srv.config_text
            assert f'http: "127.0.0.1:{srv.ports["monitor"]}"' in srv.config_text
        else:
            bindings = srv.handle.container.attrs["HostConfig"]["PortBindings"]
            assert bindings and all(b["HostIp"] == "127.0.0.1" for v in bindings.values() for b in v)
        # nothing answers on a non-loopback address of this machine
        addrs = {i[4][0] for i in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
        for addr in addrs - {"127.0.0.1", "127.0.1.1"}:
            with socket.socket() as s:
                s.settimeout(0.5)
                assert s.connect_ex((addr, srv.ports["client"])) != 0


def test_async_context_manager_cleans_up(backend):
    async def go():
        async with natslab.server("async", backend=backend, jetstream=False) as srv:
            nc = await natslab.connect(srv, quiet=True)
            await nc.close()
            return srv
    srv = asyncio.run(go())
    assert srv.closed and not srv.running


def test_files_under_workdir_are_visible_to_the_server(backend):
    """A certificate made on the host, named by absolute path in the config, serves TLS."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    d = natslab.workdir() / f"tls-{backend}"
    d.mkdir(exist_ok=True)
    cert.private_key_and_cert_chain_pem.write_to_path(str(d / "server.pem"))
    cert.private_key_pem.write_to_path(str(d / "server.key"))
    tls = {"cert_file": str(d / "server.pem"), "key_file": str(d / "server.key")}
    with natslab.server("files", backend=backend, jetstream=False, config={"tls": tls}) as srv:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)

        async def hello():
            nc = await natslab.connect(srv, tls=ctx, tls_hostname="127.0.0.1")
            ok = nc.is_connected
            await nc.close()
            return ok
        assert asyncio.run(hello())
        assert srv.monitor("varz").get("tls_required") is True


def test_stop_all_removes_every_server(backend):
    a = natslab.server("a", backend=backend, jetstream=False)
    b = natslab.server("b", backend=backend, jetstream=False)
    natslab.stop_all()
    assert a.closed and b.closed and not a.running and not b.running


def _cell(source: str, namespace: dict) -> None:
    """Run ``source`` the way a notebook cell runs: top-level code in ``__main__``."""
    exec(compile(source, "<cell>", "exec"), namespace)


def test_rerunning_a_set_up_cell_replaces_the_server(backend, capsys):
    ns = {"__name__": "__main__", "natslab": natslab, "backend": backend}
    cell = 'srv = natslab.server("rerun", backend=backend, jetstream=False, port=PORT)'
    with socket.socket() as probe:  # a fixed client port: the second start needs the first gone
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cell = cell.replace("PORT", repr(port))
    try:
        _cell(cell, ns)
        first = ns["srv"]
        assert "replaced" not in capsys.readouterr().out
        _cell(cell, ns)  # the same fixed port: only works because the first server went first
        second = ns["srv"]
        out = capsys.readouterr().out
        assert "natslab: replaced the running server 'rerun'" in out and out.count("\n") == 1
        assert first.closed and not first.running and second.running
        assert [g for g in session.groups() if first in g.servers] == []
        assert _roundtrip(second.url) == b"ping"
    finally:
        natslab.stop_all()


def test_servers_started_from_code_are_never_replaced(backend, capsys):
    # checkers start "checker" servers from functions, possibly two checks at once
    a = natslab.server("checker", backend=backend, jetstream=False)
    b = natslab.server("checker", backend=backend, jetstream=False)
    ns = {"__name__": "__main__", "natslab": natslab, "backend": backend}
    try:
        assert a.running and b.running
        _cell('c = natslab.server("checker", backend=backend, jetstream=False)', ns)
        assert a.running and b.running and ns["c"].running  # the cell's server replaces only its own kind
        assert "replaced" not in capsys.readouterr().out
        d = natslab.server("checker", backend=backend, jetstream=False, replace=True)
        assert ns["c"].closed and a.running and b.running and d.running
    finally:
        natslab.stop_all()


def test_rerunning_a_cluster_cell_replaces_the_cluster(backend, capsys):
    ns = {"__name__": "__main__", "natslab": natslab, "backend": backend}
    cell = 'c = natslab.cluster(2, name="again", jetstream=False, backend=backend)'
    try:
        _cell(cell, ns)
        first = ns["c"]
        _cell(cell, ns)
        assert "natslab: replaced the running cluster 'again'" in capsys.readouterr().out
        assert all(s.closed for s in first) and all(s.running for s in ns["c"])
    finally:
        natslab.stop_all()
