"""Module 05 (Security): TLS, mutual TLS, permissions, accounts, JWTs, revocation, auth callout.

Every checker makes its own secrets (CAs, keys, passwords, subjects) at random, starts its own
servers, and then tries the forbidden things itself: they must be refused, and the permitted
things must work.
"""
from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from typing import Any, Mapping

from ...lessons import security as sec
from ..checks import Mismatch, call_learner, exercise, expect
from ...errors import NatslabError
from . import client, scratch_server


def _tag() -> str:
    return uuid.uuid4().hex[:6]


@contextlib.asynccontextmanager
async def _server_with(config: Any, what: str, **kwargs):
    """A scratch server started with the learner's config; a config the server rejects is a Mismatch."""
    expect(isinstance(config, Mapping), f"{what} must return a dict of server settings.",
           expected="a dict such as {\"tls\": {...}}", seen=f"{type(config).__name__}: {config!r}"[:120],
           hint="return the dict you would pass as natslab.server(config=...).")
    try:
        async with scratch_server(jetstream=False, config=dict(config), **kwargs) as srv:
            yield srv
    except NatslabError as exc:
        if isinstance(exc, Mismatch):
            raise
        raise Mismatch(f"nats-server did not start with the settings from {what}.",
                       expected="a configuration the server accepts",
                       seen=(exc.details or exc.what).strip().splitlines()[-1][:240],
                       hint="print(srv.config_text) of a server started with your dict and read the error line.") from None


async def _learner_dict(fn, *args, what: str, example: str) -> dict:
    """Call the learner's function and insist on a dict (permissions, accounts...)."""
    value = await call_learner(fn, *args, what=what)
    expect(isinstance(value, Mapping), f"{what} must return a dict.", expected=example,
           seen=f"{type(value).__name__}: {value!r}"[:160], hint="return the dict itself, not a string or a list.")
    return dict(value)


async def _logged(srv, before: int, text: str, timeout: float = 2.0) -> bool:
    """True once the server's log (after offset ``before``) contains ``text``; False after ``timeout``."""
    deadline = time.monotonic() + timeout
    while text.lower() not in srv.logs()[before:].lower():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.03)
    return True


def _refused(result: sec.Attempt, expected: str, problem: str, hint: str) -> None:
    expect(not result.ok, problem, expected=expected, seen="the connection was accepted", hint=hint)


def _accepted(result: sec.Attempt, problem: str, hint: str) -> None:
    expect(result.ok, problem, expected="the connection is accepted",
           seen=f"refused: {result.cause} ({result.client_error[:120]})", hint=hint)


# ------------------------------------------------------------------------------ 5.1
@exercise("5.1", "require TLS on a server",
          hints=('return {"tls": {"cert_file": cert_file, "key_file": key_file}}',))
async def tls_settings_check(tls_settings):
    ca = sec.CertificateAuthority(f"check-{_tag()}")
    files = ca.server_cert()
    config = await call_learner(tls_settings, str(files.cert), str(files.key),
                                what="tls_settings(cert_file, key_file)")
    async with _server_with(config, "tls_settings()") as srv:
        varz = srv.monitor("varz")
        expect(varz.get("tls_required") is True, "the server does not require TLS.",
               expected="/varz tls_required: True", seen=f"tls_required: {varz.get('tls_required')}",
               hint="a tls block with cert_file and key_file makes the server TLS-only.")
        good = await sec.attempt(srv, tls=ca.client_context())
        _accepted(good, "a client that trusts the right CA could not connect.",
                  "use the certificate and key you were given (cert_file, key_file), not others.")
        plain = await sec.attempt(srv, tls=ssl.create_default_context())
        _refused(plain, "refused (the client does not trust this CA)",
                 "a client that does not trust the checker's CA got in.",
                 "the server must present the certificate it was given.")
        return ("/varz says tls_required; a client trusting the CA connected and verified the server's "
                "certificate, a client with only public CAs was refused.")


# ------------------------------------------------------------------------------ 5.2
@exercise("5.2", "a client that verifies the server",
          hints=("return ssl.create_default_context(cafile=ca_file): it checks the certificate and the host name.",))
async def verifying_context_check(verifying_context):
    ca, impostor_ca = sec.CertificateAuthority(f"check-{_tag()}"), sec.CertificateAuthority(f"impostor-{_tag()}")
    ctx = await call_learner(verifying_context, str(ca.path), what="verifying_context(ca_file)")
    expect(isinstance(ctx, ssl.SSLContext), "verifying_context must return an ssl.SSLContext.",
           expected="ssl.SSLContext", seen=f"{type(ctx).__name__}", hint="ssl.create_default_context(cafile=ca_file)")
    async with scratch_server(jetstream=False, config=sec.tls_config(ca.server_cert())) as genuine, \
            scratch_server(jetstream=False, config=sec.tls_config(impostor_ca.server_cert())) as impostor, \
            scratch_server(jetstream=False, config=sec.tls_config(ca.server_cert("elsewhere.example"))) as misnamed:
        _accepted(await sec.attempt(genuine, tls=ctx), "your context could not connect to the genuine server.",
                  "load the CA file you were given: cafile=ca_file.")
        _refused(await sec.attempt(impostor, tls=ctx), "refused: certificate from an untrusted CA",
                 "your context accepted a server whose certificate comes from a CA you were not given.",
                 "keep verify_mode = CERT_REQUIRED and trust only ca_file; never CERT_NONE.")
        _refused(await sec.attempt(misnamed, tls=ctx), "refused: the certificate names another host",
                 "your context accepted a certificate issued for another host name.",
                 "keep check_hostname = True (ssl.create_default_context does).")
    return "it connected to the genuine server and refused both an impostor's CA and a certificate for another host."


# ------------------------------------------------------------------------------ 5.3
@exercise("5.3", "require client certificates (mutual TLS)",
          hints=('{"tls": {"cert_file": ..., "key_file": ..., "ca_file": ca_file, "verify": True}}',))
async def mtls_settings_check(mtls_settings):
    ca, other = sec.CertificateAuthority(f"check-{_tag()}"), sec.CertificateAuthority(f"other-{_tag()}")
    files = ca.server_cert()
    config = await call_learner(mtls_settings, str(files.cert), str(files.key), str(ca.path),
                                what="mtls_settings(cert_file, key_file, ca_file)")
    async with _server_with(config, "mtls_settings()") as srv:
        who = f"client-{_tag()}@example.com"
        _accepted(await sec.attempt(srv, tls=ca.client_context(ca.client_cert(who))),
                  "a client with a certificate from the CA was refused.",
                  "set ca_file to the CA you were given; don't require users the checker cannot know.")
        _refused(await sec.attempt(srv, tls=ca.client_context()), "refused: no client certificate",
                 "a client without a certificate got in.", "add verify: true to the tls block.")
        _refused(await sec.attempt(srv, tls=ca.client_context(other.client_cert(who))),
                 "refused: client certificate from another CA",
                 "a client certificate from another CA was accepted.",
                 "ca_file must be the CA you were given: the server trusts client certificates it signed.")
        varz = srv.monitor("varz")
        return (f"/varz tls_verify: {varz.get('tls_verify')}; a client certificate from the CA was accepted, "
                "no certificate and a certificate from another CA were refused.")


# ------------------------------------------------------------------------------ 5.4
@exercise("5.4", "exactly the permissions a service needs",
          hints=('{"subscribe": {"allow": [subject]}, "publish": {"deny": [">"]}, "allow_responses": True}',))
async def service_permissions_check(service_permissions):
    t = _tag()
    subject = f"svc.{t}.lookup"
    perms = await _learner_dict(service_permissions, subject, what=f"service_permissions({subject!r})",
                                example='a permissions dict like {"publish": ..., "subscribe": ...}')
    pw = {u: uuid.uuid4().hex for u in ("svc", "caller")}
    users = [{"user": "svc", "password": pw["svc"], "permissions": perms},
             {"user": "caller", "password": pw["caller"],
              "permissions": {"publish": [subject], "subscribe": ["_INBOX.>"]}}]
    async with _server_with({"authorization": {"users": users}}, "service_permissions()") as srv:
        errs = sec.ErrorLog()
        async with client(srv, user="svc", password=pw["svc"], error_cb=errs) as svc, \
                client(srv, user="caller", password=pw["caller"]) as caller:
            async def answer(msg):
                await msg.respond(b"found:" + msg.data)

            await svc.subscribe(subject, queue="svc", cb=answer)
            await sec.barrier(svc)
            refused = [e for e in errs.errors if "subscription" in e.lower()]
            expect(not refused, "the service may not subscribe to its own subject.",
                   expected=f"subscribe allowed on {subject}", seen=refused[0] if refused else "",
                   hint="allow the subject in subscribe (a queue subscription needs it too).")
            try:
                reply = await caller.request(subject, t.encode(), timeout=2)
            except Exception as exc:
                raise Mismatch("a request to the service got no answer.", expected=f"a reply to {subject}",
                               seen=f"{type(exc).__name__}: {exc}; errors: {errs.errors[:2]}",
                               hint="the service must be able to publish its reply: allow_responses: true.") from None
            expect(reply.data == b"found:" + t.encode(), "the reply was not the service's.",
                   expected="the service's answer", seen=repr(reply.data)[:60])
            for subj, why in ((f"other.{t}", "an unrelated subject"),
                              (f"_INBOX.{t}.unsolicited", "an inbox that sent no request")):
                await svc.publish(subj, b"x")
                await sec.barrier(svc)
                expect(await errs.next(timeout=0.5, contains=subj.lower()) is not None,
                       f"the service may publish to {why} ({subj}).", expected="Permissions Violation",
                       seen="accepted by the server",
                       hint="don't grant publish on _INBOX.> or >; allow_responses lets it reply and nothing more.")
            for subj in (">", f"svc.{t}.>"):
                sub = await svc.subscribe(subj)
                await sec.barrier(svc)
                await sub.unsubscribe()
                expect(await errs.next(timeout=0.5, contains=f'subscription to "{subj.lower()}"') is not None,
                       f"the service may subscribe to {subj}.", expected="Permissions Violation",
                       seen="subscription accepted",
                       hint=f"allow exactly {subject} (a * or > in the allow list also admits wider subscriptions).")
    return (f"the service answered a request on {subject}; publishing elsewhere, to an unsolicited inbox, "
            "and subscribing to > or a wider wildcard were refused.")


# ------------------------------------------------------------------------------ 5.5
@exercise("5.5", "a read-only user with a hidden branch",
          hints=('{"subscribe": {"allow": [f"{prefix}.>"], "deny": [f"{prefix}.{hidden}.>"]}, "publish": {"deny": [">"]}}',))
async def reader_permissions_check(reader_permissions):
    t = _tag()
    prefix, hidden = f"metrics{t}", f"billing{t[:3]}"
    perms = await _learner_dict(reader_permissions, prefix, hidden, what=f"reader_permissions({prefix!r}, {hidden!r})",
                                example='a permissions dict like {"publish": ..., "subscribe": ...}')
    pw = {u: uuid.uuid4().hex for u in ("reader", "admin")}
    users = [{"user": "reader", "password": pw["reader"], "permissions": perms},
             {"user": "admin", "password": pw["admin"]}]
    async with _server_with({"authorization": {"users": users}}, "reader_permissions()") as srv:
        subjects = [f"{prefix}.cpu", f"{prefix}.eu.cpu", f"{prefix}.{hidden}.invoices", f"other{t}.x", f"{prefix}.>", ">"]
        seen = await sec.probe(srv, subjects, user="reader", password=pw["reader"])
        want = {f"{prefix}.cpu": (False, True), f"{prefix}.eu.cpu": (False, True),
                f"{prefix}.{hidden}.invoices": (False, False), f"other{t}.x": (False, False),
                f"{prefix}.>": (None, True), ">": (None, False)}
        for subj, (pub, sub) in want.items():
            got = seen[subj]
            expect(got["subscribe"] == sub, f"subscribing to {subj} was {'refused' if sub else 'allowed'}.",
                   expected=f"subscribe {'allowed' if sub else 'refused'}",
                   seen=f"subscribe {'allowed' if got['subscribe'] else 'refused'}",
                   hint=f"allow {prefix}.> (every depth), deny {prefix}.{hidden}.>.")
            if pub is not None:
                expect(got["publish"] is False, f"the reader may publish to {subj}.", expected="publish refused",
                       seen="publish allowed", hint='a reader publishes nothing: publish {"deny": [">"]}.')
        async with client(srv, user="admin", password=pw["admin"]) as admin, \
                client(srv, user="reader", password=pw["reader"]) as reader:
            leaked = await sec.delivered(admin, reader, f"{prefix}.>", publish_subject=f"{prefix}.{hidden}.invoices")
            expect(leaked is None, f"a message on {prefix}.{hidden}.invoices reached the reader's {prefix}.> subscription.",
                   expected="not delivered", seen="delivered", hint=f"deny {prefix}.{hidden}.> in subscribe.")
            ok = await sec.delivered(admin, reader, f"{prefix}.>", publish_subject=f"{prefix}.eu.cpu")
            expect(ok is not None, f"a message on {prefix}.eu.cpu did not reach the reader.", expected="delivered",
                   seen="nothing")
    return f"the server let the reader subscribe under {prefix}. at any depth, kept {hidden} hidden even from {prefix}.>, and refused every publish."


# ------------------------------------------------------------------------------ 5.6
@exercise("5.6", "two isolated tenants sharing one service",
          hints=("three accounts: the shared one exports {'service': subject}; each tenant imports "
               "{'service': {'account': <shared account name>, 'subject': subject}}.",))
async def tenant_accounts_check(tenant_accounts):
    t = _tag()
    subject = f"pricing.{t}.quote"
    logins = {role: (f"{role}-{t}", uuid.uuid4().hex[:12]) for role in ("shared", "a", "b")}
    accounts = await _learner_dict(tenant_accounts, logins, subject, what="tenant_accounts(logins, subject)",
                                   example="the accounts block: a dict of accounts")
    expect(len(accounts) >= 3, "tenant_accounts must return at least three accounts.",
           expected="a dict of at least three accounts", seen=repr(accounts)[:160],
           hint='{"SHARED": {"users": [...], "exports": [...]}, "TENANT_A": {...}, "TENANT_B": {...}}')
    async with _server_with({"accounts": accounts}, "tenant_accounts()") as srv:
        conns = {}
        try:
            for role, (user, password) in logins.items():
                got = await sec.attempt(srv, keep=True, user=user, password=password)
                _accepted(got, f"the {role} user {user} could not log in.", "put each login in its account's users list.")
                conns[role] = got.nc
            accts = {c.get("authorized_user"): c.get("account") for c in srv.monitor("connz", auth=True)["connections"]}
            names = {role: accts.get(logins[role][0]) for role in logins}
            expect(len(set(names.values())) == 3, "the three users are not in three different accounts.",
                   expected="shared, a and b each in its own account", seen=names,
                   hint="one account per tenant, and one for the shared service.")

            async def quote(msg):
                await msg.respond(b"quote:" + msg.data)

            await conns["shared"].subscribe(subject, cb=quote)
            await conns["shared"].subscribe(f"internal.{t}", cb=quote)
            await sec.barrier(conns["shared"])
            for role in ("a", "b"):
                try:
                    reply = await conns[role].request(subject, role.encode(), timeout=2)
                except Exception as exc:
                    raise Mismatch(f"tenant {role} could not call the shared service on {subject}.",
                                   expected="a reply", seen=f"{type(exc).__name__}",
                                   hint="export the service from the shared account and import it into both tenants.") from None
                expect(reply.data == b"quote:" + role.encode(), "the reply came from elsewhere.",
                       expected="the shared service's reply", seen=repr(reply.data)[:60])
            for src, dst in (("a", "b"), ("b", "a"), ("a", "shared")):
                got = await sec.delivered(conns[src], conns[dst], f"chat.{t}")
                expect(got is None, f"a message from {src} reached {dst}: the tenants are not isolated.",
                       expected="not delivered", seen="delivered",
                       hint="don't export streams the tenants do not need; each tenant is its own account.")
            try:
                await conns["a"].request(f"internal.{t}", b"a", timeout=1)
                leaked = True
            except Exception:
                leaked = False
            expect(not leaked, f"tenant a reached the shared account's internal subject internal.{t}.",
                   expected="no responders", seen="a reply", hint=f"export only {subject}, not > or internal subjects.")
        finally:
            for nc in conns.values():
                await nc.close()
    return f"both tenants called the shared service on {subject}; messages did not cross between tenants or into the shared account."


# ------------------------------------------------------------------------------ 5.7
@exercise("5.7", "issue a user JWT with limits",
          hints=('account.user(name, pub="orders.>", sub=["orders.>", "_INBOX.>"], subs=3, payload=512, expires=600)',))
async def issue_user_check(issue_limited_user):
    op = sec.Operator(f"check{_tag()}")
    acct = op.account("SHOP", signing_key=True)
    name = f"clerk-{_tag()}"
    user = await call_learner(issue_limited_user, acct, name, what=f"issue_limited_user(account, {name!r})")
    expect(isinstance(user, sec.User), "issue_limited_user must return the User that account.user() made.",
           expected="a natslab.security User", seen=f"{type(user).__name__}")
    claims = sec.decode(user.jwt)
    nats = claims.get("nats", {})
    expect(claims["iss"] in (acct.public, *[k.public for k in acct.signing_keys]),
           "the user JWT was not issued by the account you were given.",
           expected=f"issuer {acct.public[:12]}... or its signing key", seen=claims["iss"][:12] + "...",
           hint="call account.user(...) on the account passed in.")
    now = time.time()
    exp = claims.get("exp")
    expect(exp is not None and now + 60 <= exp <= now + 3600, "the JWT must expire in 10 minutes (between 1 and 60).",
           expected="exp between now+60 s and now+3600 s", seen=f"exp in {int(exp - now)} s" if exp else "no exp",
           hint="expires=600 (seconds from now).")
    expect(nats.get("subs") == 3 and nats.get("payload") == 512, "the user's limits are not the ones asked for.",
           expected="subs 3, payload 512", seen=f"subs {nats.get('subs')}, payload {nats.get('payload')}",
           hint="subs=3, payload=512")
    async with scratch_server(jetstream=False, config=op.server_config()) as srv:
        opts = user.connect_options()
        _accepted(await sec.attempt(srv, **opts), "the server refused the user.",
                  "issue the user from the account given; don't change the JWT afterwards.")
        seen = await sec.probe(srv, ["orders.new", "billing.run"], **opts)
        expect(seen["orders.new"] == {"publish": True, "subscribe": True}, "orders.new is not fully allowed.",
               expected="publish and subscribe allowed", seen=seen["orders.new"], hint='pub="orders.>", sub=[..."orders.>"...]')
        expect(seen["billing.run"] == {"publish": False, "subscribe": False}, "the user may use billing.run.",
               expected="publish and subscribe refused", seen=seen["billing.run"], hint="allow only orders.> (and _INBOX.> for replies).")
        async with client(srv, **opts) as nc:
            for i in range(4):
                await nc.subscribe(f"orders.s{i}")
            closed = await sec.wait_disconnected(nc, timeout=3)
            expect(closed and "subscriptions" in str(nc.last_error).lower(), "a fourth subscription was accepted.",
                   expected="maximum subscriptions exceeded", seen=str(nc.last_error), hint="subs=3")
        async with client(srv, **opts) as nc:
            await nc.publish("orders.big", b"x" * 600)
            closed = await sec.wait_disconnected(nc, timeout=3)
            expect(closed and "payload" in str(nc.last_error).lower(), "a 600-byte message was accepted.",
                   expected="maximum payload violation", seen=str(nc.last_error), hint="payload=512")
    return (f"the JWT is signed by the account, expires in {int(exp - now)} s; the server admitted it, allowed "
            "orders.> only, and closed the connection at a 4th subscription and at a 600-byte message.")


# ------------------------------------------------------------------------------ 5.8
@exercise("5.8", "revoke a user on a running server",
          hints=("account.revoke(user); await sec.push_account(server, account)",))
async def revoke_check(revoke_user):
    op = sec.Operator(f"check{_tag()}")
    acct = op.account("TEAM", signing_key=True)
    victim, bystander = acct.user(f"leaked-{_tag()}"), acct.user(f"ok-{_tag()}")
    async with scratch_server(jetstream=False, config=op.server_config(resolver="full")) as srv:
        async with client(srv, **victim.connect_options()) as v_nc, client(srv, **bystander.connect_options()) as b_nc:
            await call_learner(revoke_user, srv, acct, victim, what="revoke_user(server, account, user)")
            gone = await sec.wait_disconnected(v_nc, timeout=5)
            expect(gone, "the revoked user is still connected.", expected="the server disconnects the user",
                   seen="still connected after 5 s",
                   hint="revoke in the account, then send the new account JWT to the server: await sec.push_account(server, account).")
            expect("revoked" in str(v_nc.last_error).lower(), "the user was disconnected, but not for revocation.",
                   expected="user authentication revoked", seen=str(v_nc.last_error))
            again = await sec.attempt(srv, **victim.connect_options())
            _refused(again, "refused: revoked", "the revoked user could log in again.", "revoke the user's public key.")
            expect(b_nc.is_connected, "another user of the account was disconnected too.",
                   expected="only the revoked user goes", seen="the bystander was disconnected",
                   hint="revoke one user (account.revoke(user)), not all ('*').")
            fresh = acct.user(f"new-{_tag()}")
            _accepted(await sec.attempt(srv, **fresh.connect_options()), "a newly issued user of the account was refused.",
                      "revoke only the one user.")
    return "the server disconnected the revoked user at once and refused its creds; other users stayed connected and new ones can log in."


# ------------------------------------------------------------------------------ 5.9
@exercise("5.9", "an auth callout responder",
          hints=("subscribe to $SYS.REQ.USER.AUTH; req = sec.AuthRequest.parse(msg.data); "
               "await msg.respond(req.allow(issuer, account=..., pub=..., sub=...) or req.deny(issuer, reason))",))
async def callout_check(start_auth_service):
    t = _tag()
    issuer = sec.new_key("account")
    svc_pw = uuid.uuid4().hex
    directory = {
        f"ann{t}": {"password": uuid.uuid4().hex[:10], "account": "TEAM1",
                    "publish": [f"team1.{t}.>"], "subscribe": [f"team1.{t}.>", "_INBOX.>"]},
        f"ben{t}": {"password": uuid.uuid4().hex[:10], "account": "TEAM2",
                    "publish": [f"team2.{t}.>"], "subscribe": [f"team2.{t}.>", "_INBOX.>"]},
    }
    config = {"accounts": {"AUTH": {"users": [{"user": "auth", "password": svc_pw}]}, "TEAM1": {}, "TEAM2": {}, "SYS": {}},
              "system_account": "SYS", **sec.callout_config(issuer, ["auth"], "AUTH")}
    async with scratch_server(jetstream=False, config=config) as srv, client(srv, user="auth", password=svc_pw) as nc:
        await call_learner(start_auth_service, nc, issuer, directory, what="start_auth_service(nc, issuer, directory)")
        await sec.barrier(nc)
        ann, ben = directory
        for user in (ann, ben):
            got = await sec.attempt(srv, user=user, password=directory[user]["password"], connect_timeout=4, timeout=6)
            _accepted(got, f"{user} with the right password was refused.",
                      "answer with req.allow(issuer, account=entry['account'], pub=..., sub=...) signed by issuer.")
        async with client(srv, user=ann, password=directory[ann]["password"]) as a_nc:
            acct = {c.get("authorized_user"): c.get("account") for c in srv.monitor("connz", auth=True)["connections"]}
            expect(acct.get(ann) == "TEAM1", f"{ann} landed in the wrong account.", expected="TEAM1", seen=acct.get(ann),
                   hint="account=directory[user]['account']")
        seen = await sec.probe(srv, [f"team1.{t}.x", f"team2.{t}.x"], user=ann, password=directory[ann]["password"])
        expect(seen[f"team1.{t}.x"]["publish"] and not seen[f"team2.{t}.x"]["publish"],
               f"{ann}'s permissions are not the directory's.", expected=f"publish team1.{t}.> only", seen=seen,
               hint="pass pub=entry['publish'], sub=entry['subscribe'] to req.allow.")
        for user, password, why in ((ben, "wrong-" + t, "a wrong password"), (f"eve{t}", "x", "an unknown user")):
            before = len(srv.logs())
            got = await sec.attempt(srv, user=user, password=password, connect_timeout=4, timeout=6)
            _refused(got, "refused", f"{why} was let in.", "answer req.deny(issuer, reason) unless the password matches.")
            expect(await _logged(srv, before, "callout service returned an error"),
                   f"{why} was refused, but not by an answer from your service.",
                   expected="the server log: 'Auth callout service returned an error: <your reason>'",
                   seen="; ".join(got.server_log[-2:]) or got.client_error,
                   hint="respond with req.deny(issuer, reason); a service that stays silent makes every client wait.")
    return "ann and ben got in with their passwords, into their accounts with the directory's permissions; a wrong password and an unknown user were refused by the service."
