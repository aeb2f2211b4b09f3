"""Module 05 security against real servers, on both backends: each refusal, with a positive control.

Every test makes its secrets at run time (natslab.security) and asks a real nats-server: the
forbidden thing must be refused and the permitted thing must work, so a test cannot pass by a
server that refuses everything (or accepts everything).
"""
from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time

import pytest

import natslab
from natslab.lessons import security as sec


def run(coro):
    return asyncio.run(coro)


# ------------------------------------------------------------------------------ pure helpers
def test_jwt_roundtrip_and_tamper_detection():
    key = sec.new_key("account")
    token = sec.encode({"sub": sec.new_key("user").public, "nats": {"type": "user", "version": 2}}, key)
    claims = sec.decode(token)
    assert claims["iss"] == key.public and claims["jti"] and claims["iat"] <= time.time() + 1
    head, body, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data["nats"]["pub"] = {"allow": [">"]}
    forged = f"{head}.{base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b'=').decode()}.{sig}"
    with pytest.raises(sec.JWTError):
        sec.decode(forged)


def test_keys_have_the_right_prefixes_and_secret_files_are_private():
    for kind, letter in (("operator", "O"), ("account", "A"), ("user", "U")):
        k = sec.new_key(kind)
        assert k.public.startswith(letter) and k.seed.startswith("S" + letter) and k.kind == kind
        assert sec.key_from_seed(k.seed).public == k.public
        assert k.seed not in repr(k)
    path = sec.new_key("user").save_seed(sec.secrets_dir("test") / "u.nk")
    assert sec.file_mode(path) == "0o600"
    assert sec.check_password("pw", sec.hash_password("pw", cost=4))


def test_explain_refusal_names_the_cause():
    assert "revoked" in sec.explain_refusal("nats: user authentication revoked").lower()
    assert "expired" in sec.explain_refusal("nats: user authentication expired").lower()
    assert "publish" in sec.explain_refusal('Permissions Violation for Publish to "x"').lower()
    assert "does not trust" in sec.explain_refusal("certificate verify failed: unable to get local issuer certificate")
    # a specific server log line beats a generic client error
    assert "client certificate" in sec.explain_refusal("ConnectionResetError: Connection lost",
                                                       "TLS handshake error: tls: client didn't provide a certificate")


def test_refusal_rules_import_nothing_from_natslab():
    """runtime.refusals is the bottom layer: client.py and the security lessons both read it."""
    import ast
    from pathlib import Path

    import natslab.runtime.refusals as refusals

    tree = ast.parse(Path(refusals.__file__).read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.startswith(("natslab", "."))], imported
    client_src = Path(refusals.__file__).with_name("client.py").read_text()
    assert "lessons" not in client_src, "runtime.client must not reach into the lessons layer"


def test_error_log_works_as_a_plain_nats_py_error_callback(backend):
    import nats

    users = [{"user": "u", "password": "p", "permissions": {"publish": {"deny": ["secret.>"]}}}]
    with natslab.server("errlog", backend=backend, jetstream=False,
                        config={"authorization": {"users": users}}) as srv:
        async def go():
            errs = sec.ErrorLog()
            nc = await nats.connect(srv.url, user="u", password="p", error_cb=errs.callback)
            try:
                await nc.publish("secret.x", b"")
                return await errs.next(timeout=3, contains="secret.x")
            finally:
                await nc.close()
        seen = run(go())
    assert seen and "permissions violation" in seen.lower()
    assert "publish" in sec.ErrorLog().explain_refusal(seen).lower()


# ------------------------------------------------------------------------------ TLS
def test_wrong_ca_is_refused_and_right_ca_accepted(backend):
    ca, other = sec.CertificateAuthority("t-ca"), sec.CertificateAuthority("t-other")
    with natslab.server("tls", backend=backend, jetstream=False, config=sec.tls_config(ca.server_cert())) as srv:
        good = run(sec.attempt(srv, tls=ca.client_context()))
        bad = run(sec.attempt(srv, tls=other.client_context()))
        public_only = run(sec.attempt(srv, tls=ssl.create_default_context()))
    assert good.ok, good
    assert not bad.ok and bad.cause == "the client does not trust the server's certificate", bad
    assert not public_only.ok


def test_wrong_hostname_is_refused(backend):
    ca = sec.CertificateAuthority("t-ca")
    with natslab.server("tls", backend=backend, jetstream=False,
                        config=sec.tls_config(ca.server_cert("elsewhere.example"))) as srv:
        bad = run(sec.attempt(srv, tls=ca.client_context()))
        good = run(sec.attempt(srv, tls=ca.client_context(), tls_hostname="elsewhere.example"))
    assert not bad.ok and "does not name" in bad.cause, bad
    assert good.ok, good


def test_missing_client_certificate_is_refused(backend):
    ca, other = sec.CertificateAuthority("t-ca"), sec.CertificateAuthority("t-other")
    config = sec.tls_config(ca.server_cert(), ca, verify=True)
    with natslab.server("mtls", backend=backend, jetstream=False, config=config) as srv:
        good = run(sec.attempt(srv, tls=ca.client_context(ca.client_cert("a@example.com"))))
        none = run(sec.attempt(srv, tls=ca.client_context()))
        foreign = run(sec.attempt(srv, tls=ca.client_context(other.client_cert("e@example.com"))))
    assert good.ok, good
    assert not none.ok and "client certificate" in none.cause, none
    assert not foreign.ok and "client's certificate" in foreign.cause, foreign


def test_certificate_identity_maps_to_a_user(backend):
    ca = sec.CertificateAuthority("t-ca")
    config = {**sec.tls_config(ca.server_cert(), ca, map_users=True),
              "authorization": {"users": [{"user": "alice@example.com"}]}}
    with natslab.server("mapped", backend=backend, jetstream=False, config=config) as srv:
        alice = run(sec.attempt(srv, tls=ca.client_context(ca.client_cert("alice@example.com"))))
        mallory = run(sec.attempt(srv, tls=ca.client_context(ca.client_cert("mallory@example.com"))))
    assert alice.ok and not mallory.ok


# ------------------------------------------------------------------------------ permissions and accounts
def test_one_token_allow_admits_a_deeper_wildcard_and_a_deny_closes_it(backend):
    """What lesson 05.3 teaches about nats-server 2.15.1 (unchanged since 2.12.8): a user allowed
    ``orders.*`` may subscribe to ``orders.>`` and then receives deeper subjects; ``deny: orders.*.>``
    filters them on delivery.  If a release changes this, the lesson must change with it."""
    users = [{"user": "loose", "password": "p", "permissions": {"subscribe": {"allow": ["orders.*"]}}},
             {"user": "tight", "password": "p",
              "permissions": {"subscribe": {"allow": ["orders.*"], "deny": ["orders.*.>"]}}},
             {"user": "admin", "password": "p"}]
    with natslab.server("wild", backend=backend, jetstream=False, config={"authorization": {"users": users}}) as srv:
        async def go():
            table = await sec.probe(srv, ["orders.>", "orders.a.b"], user="loose", password="p")
            admin = await natslab.connect(srv, quiet=True, user="admin", password="p")
            loose = await natslab.connect(srv, quiet=True, user="loose", password="p")
            tight = await natslab.connect(srv, quiet=True, user="tight", password="p")
            try:
                return (table, await sec.delivered(admin, loose, "orders.>", publish_subject="orders.a.b"),
                        await sec.delivered(admin, tight, "orders.>", publish_subject="orders.a.b"),
                        await sec.delivered(admin, tight, "orders.>", publish_subject="orders.a"))
            finally:
                for nc in (admin, loose, tight):
                    await nc.close()
        table, loose_deep, tight_deep, tight_one = run(go())
    assert table["orders.>"]["subscribe"] is True and table["orders.a.b"]["subscribe"] is False, table
    assert loose_deep is not None, "orders.* no longer admits orders.> deliveries: update lesson 05.3"
    assert tight_deep is None and tight_one is not None


def test_permission_violation_is_refused_and_not_delivered(backend):
    users = [{"user": "pub", "password": "p1", "permissions": {"publish": ["allowed.>"], "subscribe": ["_INBOX.>"]}},
             {"user": "admin", "password": "p2"}]
    with natslab.server("authz", backend=backend, jetstream=False, config={"authorization": {"users": users}}) as srv:
        async def go():
            errs = sec.ErrorLog()
            pub = await natslab.connect(srv, quiet=True, user="pub", password="p1", error_cb=errs)
            admin = await natslab.connect(srv, quiet=True, user="admin", password="p2")
            try:
                allowed = await sec.delivered(pub, admin, "allowed.x")
                forbidden = await sec.delivered(pub, admin, "secret.x")
                error = await errs.next(timeout=2, contains="secret.x")
                table = await sec.probe(srv, ["allowed.x", "secret.x"], user="pub", password="p1")
                return allowed, forbidden, error, table, pub.is_connected
            finally:
                await pub.close()
                await admin.close()
        allowed, forbidden, error, table, still_connected = run(go())
    assert allowed is not None, "positive control: an allowed publish must arrive"
    assert forbidden is None and error and "permissions violation for publish" in error.lower()
    assert table == {"allowed.x": {"publish": True, "subscribe": False}, "secret.x": {"publish": False, "subscribe": False}}
    assert still_connected


def test_cross_account_access_without_import_is_refused(backend):
    accounts = {"A": {"users": [{"user": "a", "password": "pa"}], "exports": [{"service": "svc.time"}]},
                "B": {"users": [{"user": "b", "password": "pb"}],
                      "imports": [{"service": {"account": "A", "subject": "svc.time"}}]},
                "C": {"users": [{"user": "c", "password": "pc"}]}}
    with natslab.server("accounts", backend=backend, jetstream=False, config={"accounts": accounts}) as srv:
        async def go():
            a = await natslab.connect(srv, quiet=True, user="a", password="pa")
            b = await natslab.connect(srv, quiet=True, user="b", password="pb")
            c = await natslab.connect(srv, quiet=True, user="c", password="pc")
            try:
                async def answer(msg):
                    await msg.respond(b"noon")
                await a.subscribe("svc.time", cb=answer)
                await a.subscribe("svc.private", cb=answer)
                await a.flush()  # a natslab connection: flush waits for the SUBs before it
                with_import = (await b.request("svc.time", b"", timeout=2)).data
                outcomes = []
                for nc, subject in ((c, "svc.time"), (b, "svc.private")):
                    try:
                        await nc.request(subject, b"", timeout=1)
                        outcomes.append("answered")
                    except Exception as exc:
                        outcomes.append(type(exc).__name__)
                crossing = await sec.delivered(a, c, "chat.x")
                within = await sec.delivered(a, a, "chat.x")
                return with_import, outcomes, crossing, within
            finally:
                for nc in (a, b, c):
                    await nc.close()
        with_import, outcomes, crossing, within = run(go())
    assert with_import == b"noon", "positive control: the imported service answers"
    assert outcomes == ["NoRespondersError", "NoRespondersError"], outcomes
    assert crossing is None and within is not None


# ------------------------------------------------------------------------------ JWT: expiry, revocation, limits
def test_expired_jwt_is_refused(backend):
    op = sec.Operator("T")
    acct = op.account("APP")
    valid, expired = acct.user("valid", expires=600), acct.user("old", expires=-5)
    with natslab.server("op", backend=backend, jetstream=False, config=op.server_config()) as srv:
        good = run(sec.attempt(srv, **valid.connect_options()))
        bad = run(sec.attempt(srv, **expired.connect_options()))
    assert good.ok, good
    assert not bad.ok and bad.cause == "the user's JWT has expired", bad


def test_jwt_expiring_while_connected_disconnects(backend):
    op = sec.Operator("T")
    user = op.account("APP").user("short", expires=2)
    with natslab.server("op", backend=backend, jetstream=False, config=op.server_config()) as srv:
        async def go():
            nc = await natslab.connect(srv, quiet=True, **user.connect_options())
            gone = await sec.wait_disconnected(nc, timeout=8)
            err = str(nc.last_error)
            await nc.close()
            return gone, err
        gone, err = run(go())
    assert gone and "expired" in err.lower(), err


def test_revoked_user_is_disconnected_and_refused(backend):
    op = sec.Operator("T")
    acct = op.account("APP", signing_key=True)
    victim, other = acct.user("victim"), acct.user("other")
    with natslab.server("op", backend=backend, jetstream=False, config=op.server_config(resolver="full")) as srv:
        async def go():
            v = await natslab.connect(srv, quiet=True, **victim.connect_options())
            o = await natslab.connect(srv, quiet=True, **other.connect_options())
            try:
                acct.revoke(victim)
                reply = await sec.push_account(srv, acct)
                gone = await sec.wait_disconnected(v, timeout=5)
                again = await sec.attempt(srv, **victim.connect_options())
                return reply, gone, str(v.last_error), again, o.is_connected
            finally:
                await v.close()
                await o.close()
        reply, gone, err, again, other_connected = run(go())
    assert reply.get("code") == 200, reply
    assert gone and "revoked" in err.lower(), err
    assert not again.ok and again.cause == "the user's JWT was revoked by its account", again
    assert other_connected, "positive control: another user of the account stays connected"


def test_tampered_and_foreign_jwts_are_refused(backend):
    op = sec.Operator("T")
    user = op.account("APP").user("u", pub="app.>")
    rogue_user = sec.Operator("ROGUE").account("APP").user("m")
    head, body, sig = user.jwt.split(".")
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data["nats"]["pub"] = {"allow": [">"]}
    forged = f"{head}.{base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b'=').decode()}.{sig}"
    forged_creds = sec.write_secret(op.dir / "forged.creds", sec.creds_text(forged, user.key.seed))
    with natslab.server("op", backend=backend, jetstream=False, config=op.server_config()) as srv:
        good = run(sec.attempt(srv, **user.connect_options()))
        tampered = run(sec.attempt(srv, user_credentials=str(forged_creds)))
        foreign = run(sec.attempt(srv, **rogue_user.connect_options()))
    assert good.ok, good
    assert not tampered.ok and "signature" in tampered.cause, tampered
    assert not foreign.ok and "does not know the user's account" in foreign.cause, foreign


def test_account_and_user_limits(backend):
    op = sec.Operator("T")
    acct = op.account("APP", limits={"conn": 1})
    user = acct.user("u", subs=1, payload=64)
    with natslab.server("op", backend=backend, jetstream=False, config=op.server_config()) as srv:
        async def go():
            first = await natslab.connect(srv, quiet=True, **user.connect_options())
            second = await sec.attempt(srv, **acct.user("u2").connect_options())
            await first.publish("x", b"y" * 32)
            await first.flush()
            small_ok = first.is_connected
            await first.publish("x", b"y" * 100)
            closed = await sec.wait_disconnected(first, timeout=3)
            err = str(first.last_error)
            await first.close()
            return second, small_ok, closed, err
        second, small_ok, closed, err = run(go())
    assert not second.ok and "connection limit" in second.cause, second
    assert small_ok, "positive control: a message under the payload limit is fine"
    assert closed and "payload" in err.lower(), err


# ------------------------------------------------------------------------------ auth callout
def test_auth_callout_admits_and_refuses(backend):
    issuer = sec.new_key("account")
    config = {"accounts": {"AUTH": {"users": [{"user": "svc", "password": "svcpw"}]}, "APP": {}},
              **sec.callout_config(issuer, ["svc"], "AUTH")}

    def decide(req):
        if req.user == "alice" and req.password == "right":
            return {"account": "APP", "pub": ["app.>"], "sub": ["_INBOX.>"]}
        return "no"

    with natslab.server("callout", backend=backend, jetstream=False, config=config) as srv:
        async def go():
            nc = await natslab.connect(srv, quiet=True, user="svc", password="svcpw")
            log: list = []
            try:
                await sec.serve(nc, issuer, decide, log=log)
                good = await sec.attempt(srv, keep=True, user="alice", password="right")
                account = {c.get("authorized_user"): c.get("account")
                           for c in srv.monitor("connz", auth=True)["connections"]}.get("alice")
                await good.nc.close()
                bad = await sec.attempt(srv, user="alice", password="wrong")
                return good.ok, account, bad, log
            finally:
                await nc.close()
        ok, account, bad, log = run(go())
    assert ok and account == "APP"
    assert not bad.ok and bad.cause == "the auth callout service refused the client", bad
    assert [d["decision"] for d in log] == ["allowed into APP", "refused: no"]


def test_jwt_accounts_share_a_service_and_a_stream_only_through_export_and_import(backend):
    """Account JWT exports and imports: what is exported and imported crosses, nothing else does."""
    op = sec.Operator("T")
    shop, billing = op.account("SHOP"), op.account("BILLING")
    billing.export_service("billing.quote")
    billing.export_stream("billing.events.>")
    shop.import_service(billing, "billing.quote")
    shop.import_stream(billing, "billing.events.>")
    clerk, accountant = shop.user("clerk"), billing.user("accountant")

    async def go():
        with natslab.server("share", backend=backend, jetstream=False, config=op.server_config()) as srv:
            b = await natslab.connect(srv, quiet=True, **accountant.connect_options())
            s = await natslab.connect(srv, quiet=True, **clerk.connect_options())
            try:
                async def quote(msg):
                    await msg.respond(b"42 EUR")
                await b.subscribe("billing.quote", cb=quote)
                await b.subscribe("billing.private", cb=quote)
                events = await s.subscribe("billing.events.>")
                await b.flush()
                await s.flush()
                answer = (await s.request("billing.quote", b"?", timeout=3)).data
                try:
                    await s.request("billing.private", b"?", timeout=1)
                    private = "answered"
                except Exception as exc:
                    private = type(exc).__name__
                await b.publish("billing.events.paid", b"order 7")
                await b.flush()
                got = await events.next_msg(timeout=3)
                return answer, private, (got.subject, got.data)
            finally:
                await s.close()
                await b.close()

    answer, private, event = run(go())
    assert answer == b"42 EUR", "the imported service answers across accounts"
    assert private == "NoRespondersError", "a subject that is not exported stays inside its account"
    assert event == ("billing.events.paid", b"order 7"), "the imported stream delivers across accounts"
