"""natslab.connect: flush keeps its promise (ordering), and refusals are explained."""
from __future__ import annotations

import asyncio

import natslab


def flush_race_losses(batches: int = 20, width: int = 200) -> int:
    """Subscribe ``width`` subjects, flush, publish to each from another connection; count losses.

    With nats-py 2.16's own client the flush PING can overtake the queued SUBs (see the wire
    order test below) and messages are lost now and then; natslab's client must lose none.
    """
    async def go():
        with natslab.server("order", backend="local", jetstream=False) as srv:
            a = await natslab.connect(srv, quiet=True)
            b = await natslab.connect(srv, quiet=True)
            lost = 0
            for i in range(batches):
                subs = [await a.subscribe(f"order.{i}.{k}") for k in range(width)]
                await a.flush()
                for k in range(width):
                    await b.publish(f"order.{i}.{k}", b"x")
                await b.flush()
                for sub in subs:
                    try:
                        await sub.next_msg(timeout=0.5 if lost == 0 else 0.01)
                    except asyncio.TimeoutError:
                        lost += 1
                    await sub.unsubscribe()
            await a.close()
            await b.close()
            return lost
    return asyncio.run(go())


def test_subscribe_flush_then_publish_elsewhere_never_loses_a_message():
    assert flush_race_losses() == 0


def wire_order(client_cls) -> list[bytes]:
    """The commands a client hands its socket for ``subscribe`` then ``flush``, in order."""
    async def go():
        with natslab.server("wire", backend="local", jetstream=False) as srv:
            nc = await natslab.connect(srv, quiet=True)
            nc.__class__ = client_cls  # same connection, the method under test swapped
            sent: list[bytes] = []
            t = nc._transport
            write, writelines = t.write, t.writelines
            t.write = lambda data: (sent.append(bytes(data)), write(data))[1]
            t.writelines = lambda lines: (sent.extend(bytes(x) for x in lines), writelines(lines))[1]
            await nc.subscribe("wire.test")
            await nc.flush()
            t.write, t.writelines = write, writelines
            await nc.close()
            return [c.split(b" ")[0].strip() for c in sent]
    return asyncio.run(go())


def test_flush_ping_goes_after_the_commands_before_it():
    import nats

    from natslab.runtime import client

    assert wire_order(client.Client) == [b"SUB", b"PING"]
    # nats-py 2.16 on its own sends the PING first; when this fails, nats-py fixed it and
    # natslab.client.Client can go.
    assert wire_order(nats.NATS) == [b"PING", b"SUB"]


def test_connect_accepts_server_topology_url_and_list():
    async def go(target):
        nc = await natslab.connect(target, quiet=True)
        ok = nc.is_connected
        await nc.close()
        return ok
    with natslab.server("targets", backend="local", jetstream=False) as srv:
        for target in (srv, srv.url, [srv.url]):
            assert asyncio.run(go(target))


def test_mutual_tls_without_a_client_certificate_fails_fast_and_says_why():
    import ssl
    import time

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    d = natslab.workdir() / "mtls-client-test"
    d.mkdir(exist_ok=True)
    cert.private_key_and_cert_chain_pem.write_to_path(str(d / "server.pem"))
    cert.private_key_pem.write_to_path(str(d / "server.key"))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    tls = {"cert_file": str(d / "server.pem"), "key_file": str(d / "server.key"),
           "ca_file": str(d / "ca.pem"), "verify": True}
    with natslab.server("mtls", backend="local", jetstream=False, config={"tls": tls}) as srv:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        start = time.monotonic()
        try:
            asyncio.run(natslab.connect(srv, tls=ctx, tls_hostname="127.0.0.1"))
            raise AssertionError("a client without a certificate was let in")
        except natslab.ConnectFailed as exc:
            text = str(exc)
        assert time.monotonic() - start < 10, "the refusal should not wait for the retry budget"
        assert "certificate" in text.lower(), text


def _flush_after_a_cancelled_flush(make_client) -> str:
    """Cancel a flush while it waits for its PONG, then flush again: 'ok' or what went wrong.

    The server is paused while the flush waits, so the cancel always lands before the PONG.
    """
    async def go():
        with natslab.server("cancelled-flush", backend="local", jetstream=False) as srv:
            nc = await make_client(srv)
            try:
                srv.pause()
                waiting = asyncio.ensure_future(nc.flush(timeout=5))
                await asyncio.sleep(0.1)
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)
                srv.resume()
                await asyncio.sleep(0.3)  # the PONG of the cancelled flush arrives
                try:
                    await nc.flush(timeout=1)
                    return "ok"
                except Exception as exc:  # a timeout, or the connection closed by its dead read loop
                    return type(exc).__name__
            finally:
                await nc.close()
    return asyncio.run(go())


def test_a_cancelled_flush_does_not_break_later_flushes(caplog):
    import logging

    with caplog.at_level(logging.ERROR, logger="nats.aio.client"):
        assert _flush_after_a_cancelled_flush(lambda srv: natslab.connect(srv, quiet=True)) == "ok"
    assert not any(r.exc_info and r.exc_info[0] is asyncio.InvalidStateError for r in caplog.records), caplog.text


def test_plain_nats_py_still_breaks_after_a_cancelled_flush(caplog):
    # nats-py's read loop dies on the PONG of a cancelled flush (it logs "encountered error" with
    # InvalidStateError and stops reading).  When this fails, nats-py consumes such PONGs itself and
    # natslab.runtime.client.Client._process_pong can go.
    import logging

    import nats

    async def plain(srv):
        return await nats.connect(srv.url, allow_reconnect=False)

    with caplog.at_level(logging.ERROR, logger="nats.aio.client"):
        _flush_after_a_cancelled_flush(plain)
    assert any(r.exc_info and r.exc_info[0] is asyncio.InvalidStateError for r in caplog.records), caplog.text
