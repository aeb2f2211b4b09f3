"""``%nats`` magics (natslab.lessons.magics) in a real IPython shell against real servers."""
from __future__ import annotations

import asyncio
import re
import threading
import time

import pytest
from IPython.testing.globalipapp import start_ipython

import natslab
from natslab.lessons import magics
from natslab.runtime import session


@pytest.fixture(scope="module")
def ip():
    shell = start_ipython()
    magics.autoload()  # what `import natslab` does inside IPython
    return shell


@pytest.fixture(scope="module")
def srv(ip):
    with natslab.server("magics") as s:
        yield s


@pytest.fixture
def nats(ip, srv, capsys):
    """``nats("pub a b")`` runs ``%nats pub a b`` in the shell and returns (stdout, stderr)."""
    magics._chosen.clear()
    capsys.readouterr()

    def run(line, cell=None):
        if cell is None:
            ip.run_line_magic("nats", line)
        else:
            ip.run_cell_magic("nats", line, cell)
        return capsys.readouterr()
    yield run
    for r in list(magics._responders.values()):
        r.close()
    magics._chosen.clear()


async def _js_setup(srv, body):
    nc = await natslab.connect(srv, quiet=True)
    try:
        return await body(nc.jetstream())
    finally:
        await nc.close()


def js(srv, body):
    return asyncio.run(_js_setup(srv, body))


def test_import_natslab_registers_the_magic_in_ipython(ip):
    assert "nats" in ip.magics_manager.magics["line"] and "nats" in ip.magics_manager.magics["cell"]


def test_autoload_does_nothing_outside_ipython(monkeypatch):
    import IPython
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    magics.autoload()  # no shell: no error, nothing to register on


def test_pub_prints_the_cli_line_and_the_message_lands(nats, srv):
    js(srv, lambda j: j.add_stream(name="PUBS", subjects=["pubs.>"]))
    out, err = nats('pub pubs.new "hello world"')
    assert not err
    assert out.splitlines()[0] == f'$ nats pub pubs.new "hello world" --server {srv.url}'
    assert "Published 11 bytes to pubs.new" in out
    out, _ = nats("pub pubs.cell", cell="from a cell\n")
    assert "Published 11 bytes to pubs.cell" in out
    out, _ = nats("pub pubs.many x --count 3")
    assert "--count 3" in out.splitlines()[0] and "3 times" in out
    out, err = nats("stream view PUBS")
    assert not err, err
    lines = out.splitlines()
    assert lines[0] == f"$ nats stream view PUBS --count 10 --server {srv.url}"
    assert lines[1:] == ["[1] pubs.new: hello world", "[2] pubs.cell: from a cell",
                         "[3] pubs.many: x", "[4] pubs.many: x", "[5] pubs.many: x"]
    out, _ = nats("stream view PUBS --count 2 --subject pubs.many")
    assert out.splitlines()[1:] == ["[3] pubs.many: x", "[4] pubs.many: x", "... showing 2; the stream holds 5 (use --count)"]


def _publish_until(srv, subject, stop: threading.Event):
    async def go():
        nc = await natslab.connect(srv, quiet=True)
        try:
            deadline = time.monotonic() + 10
            while not stop.is_set() and time.monotonic() < deadline:
                await nc.publish(subject, b"ping")
                await nc.flush()
                await asyncio.sleep(0.1)
        finally:
            await nc.close()
    t = threading.Thread(target=asyncio.run, args=(go(),), daemon=True)
    t.start()
    return t


def test_sub_shows_messages_and_stops_at_count(nats, srv):
    stop = threading.Event()
    t = _publish_until(srv, "subtest.a", stop)
    try:
        out, err = nats('sub "subtest.>" --count 2 --timeout 8')
    finally:
        stop.set()
        t.join(5)
    assert not err, err
    assert out.splitlines()[0] == f'$ nats sub "subtest.>" --count 2 --server {srv.url}'
    assert "[#1] subtest.a: ping" in out and "[#2] subtest.a: ping" in out and "[#3]" not in out


def test_sub_and_watch_are_bounded_in_time(nats):
    t0 = time.monotonic()
    out, err = nats("sub nobody.talks --timeout 1")
    assert "Stopped after 1 s: 0 message(s) received" in out and not err
    assert time.monotonic() - t0 < 6


def test_reply_runs_in_the_background_until_stopped(nats, srv):
    out, err = nats('reply svc.time "noon #{{Count}}"')
    assert not err, err
    assert out.splitlines()[0] == f'$ nats reply svc.time "noon #{{{{Count}}}}" --server {srv.url}'
    assert "stop with %nats reply --stop" in out
    out, err = nats("req svc.time what-time")
    assert out.splitlines()[0] == f"$ nats req svc.time what-time --timeout 2s --server {srv.url}"
    assert re.search(r"Received reply in [\d.]+ ms: noon #1", out), out
    out, _ = nats("req svc.time again")
    assert "noon #2" in out
    out, _ = nats("reply ls")
    assert re.search(r"svc\.time\s+2", out)
    out, _ = nats("reply --stop")
    assert "Stopped the responder on svc.time after 2 request(s)" in out
    _, err = nats("req svc.time anyone")
    assert err.strip().startswith("nats: error: no responders on svc.time")
    assert "Traceback" not in err


def test_reply_echo_and_stop_all_stops_responders(nats):
    nats("reply svc.echo --echo")
    out, _ = nats("req svc.echo bounce")
    assert "bounce" in out
    assert any(isinstance(g, magics.Responder) for g in session.groups())
    responder = next(iter(magics._responders.values()))
    responder.close()  # what natslab.stop_all() calls on every registered group
    assert not magics._responders and not any(isinstance(g, magics.Responder) for g in session.groups())
    assert not responder._thread.is_alive()


def test_stream_consumer_and_kv_verbs(nats, srv):
    async def setup(j):
        await j.add_stream(name="ORDERS", subjects=["orders.>"])
        for i in range(3):
            await j.publish("orders.new", f"o{i}".encode())
        await j.add_consumer("ORDERS", durable_name="worker")
        await j.create_key_value(bucket="config")
    js(srv, setup)
    out, err = nats("stream ls")
    assert not err and re.search(r"ORDERS\s+orders\.>\s+3\s", out), out
    out, _ = nats("stream info ORDERS")
    assert "Stream ORDERS" in out and re.search(r"messages: 3", out) and re.search(r"consumers: 1", out)
    out, _ = nats("consumer ls ORDERS")
    assert re.search(r"worker\s+3\s+0", out), out
    out, _ = nats("consumer info ORDERS worker")
    assert "Consumer worker on stream ORDERS" in out and "ack policy: explicit" in out
    out, err = nats("kv put config color deep blue")
    assert out.splitlines()[0] == f'$ nats kv put config color "deep blue" --server {srv.url}'
    assert "Stored color in config: revision 1" in out and not err
    out, _ = nats("kv get config color")
    assert "config > color revision 1: deep blue" in out
    out, _ = nats("kv watch config --timeout 1")
    assert "[1] color: deep blue" in out and "Stopped after 1 s: 1 update(s)" in out


@pytest.mark.parametrize("line, says", [
    ("stream info NOPE", "stream 'NOPE' not found"),
    ("stream view NOPE", "stream 'NOPE' not found"),
    ("consumer ls NOPE", "stream 'NOPE' not found"),
    ("kv get nobucket k", "bucket 'nobucket' not found"),
    ("kv put nobucket k v", "bucket 'nobucket' not found"),
    ("frobnicate", "unknown verb 'frobnicate'"),
    ("stream frob", "unknown stream sub-command 'frob'"),
    ("sub", "the following arguments are required: subject"),
    ("sub x --count 0", "--count must be at least 1"),
    ('pub "unclosed', "cannot read the command line"),
    ("req nobody.here hi --timeout 1", "no responders on nobody.here"),
    ("pub a b --server nats://127.0.0.1:1", "nats: error:"),
    ("use no-such-server", "no server, topology or URL called 'no-such-server'"),
])
def test_errors_are_one_line(nats, line, says):
    out, err = nats(line)
    assert says in err, (out, err)
    assert err.strip().startswith("nats: error:") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in out + err


def test_no_server_running_is_a_clear_error(nats, monkeypatch):
    monkeypatch.setattr(session, "groups", lambda: [])
    _, err = nats("stream ls")
    assert err.strip().startswith("nats: error: no server running in this notebook")


def test_use_picks_the_server_by_variable_name_or_url(nats, ip, srv):
    with natslab.server("magics-other", jetstream=False) as other:
        out, _ = nats("pub x y")
        assert f"--server {other.url}" in out  # the newest server is the default
        ip.user_ns["first"] = srv
        out, _ = nats("use first")
        assert srv.url in out
        out, _ = nats("pub x y")
        assert f"--server {srv.url}" in out
        nats("use --auto")
        out, _ = nats("use magics")  # a natslab server's name
        assert srv.url in out
        out, _ = nats(f"pub x y --server {other.url}")
        assert f"--server {other.url}" in out
        _, err = nats(f"stream ls --server {other.url}")
        assert "JetStream is not enabled" in err


def test_server_info_and_list_from_varz(nats, srv):
    out, err = nats("server info")
    assert not err and "Server magics" in out and f"version: {natslab.PINNED_VERSION}" in out
    out, err = nats("server list")
    assert not err
    assert "(no system account here: the notebook's servers' /varz)" in out
    assert re.search(rf"magics\s+{re.escape(natslab.PINNED_VERSION)}", out), out


def test_server_list_through_the_system_account(nats):
    accounts = {"SYS": {"users": [{"user": "sys", "password": "sys"}]},
                "APP": {"users": [{"user": "app", "password": "app"}]}}
    with natslab.server("magics-sys", jetstream=False, config={"accounts": accounts, "system_account": "SYS"}) as s:
        url = s.url.replace("nats://", "nats://sys:sys@")
        out, err = nats(f"server list --server {url}")
        assert not err, err
        assert "$SYS.REQ.SERVER.PING" in out and re.search(r"magics-sys\s+2\.", out), out


def test_magic_works_while_the_callers_event_loop_runs(nats, srv):
    """In a notebook the magic runs inside the kernel's running loop (autoawait): it must not block on it."""
    async def cell():
        return nats("stream ls")
    out, err = asyncio.run(cell())
    assert not err and "$ nats stream ls" in out


def test_a_cluster_is_the_notebooks_server_once_started(nats):
    with natslab.cluster(3, name="mc") as c:
        out, err = nats("server list")
        assert not err, err
        assert out.splitlines()[0] == f"$ nats server list --server {','.join(c.urls)}"
        assert all(re.search(rf"mc-n{i}\s+\S+\s+mc\s", out) for i in (1, 2, 3)), out
        out, err = nats("server info mc-n2")
        assert not err and "Server mc-n2" in out and "cluster: mc" in out
        async def r3(j):
            await j.add_stream(name="R3", subjects=["r3.>"], num_replicas=3)

            async def followers_current():
                info = await j.stream_info("R3")
                return info.cluster.leader and len([r for r in info.cluster.replicas or [] if r.current]) == 2
            await natslab.until(followers_current, "R3's leader and two current followers", timeout=20)
        js(c, r3)
        out, err = nats("stream info R3")
        assert not err and "replicas: 3" in out and re.search(r"cluster mc: leader mc-n\d, followers", out), out


def test_interrupting_a_long_sub_stops_it_at_once(nats):
    import _thread
    timer = threading.Timer(1.0, _thread.interrupt_main)
    t0 = time.monotonic()
    timer.start()
    try:
        out, err = nats("sub nobody.talks --count 5 --timeout 60")
    finally:
        timer.cancel()
    assert "nats: error: interrupted" in err
    assert time.monotonic() - t0 < 15
    assert not [t for t in threading.enumerate() if t.name == "natslab-magic" and t.is_alive()]


def test_help_lists_the_verbs_and_a_verbs_options(nats, ip):
    out, err = nats("help")
    assert "%nats stream view ORDERS" in out and not err
    out, err = nats("sub -h")
    assert "--count" in out and "--timeout" in out and not err
    assert "%nats kv watch" in ip.magics_manager.magics["line"]["nats"].__doc__


def test_a_chosen_server_that_stopped_is_named(nats, ip):
    gone = natslab.server("magics-gone", jetstream=False)
    try:
        ip.user_ns["gone"] = gone
        nats("use gone")
    finally:
        gone.group.close()
    _, err = nats("pub a b")
    assert "magics-gone at" in err and "has no running server" in err and "%nats use --auto" in err
