"""Module 05 (Security): TLS, mutual TLS, permissions, accounts, JWTs, revocation, auth callout.

Every checker makes its own secrets (CAs, keys, passwords, subjects) at random, starts its own
servers, and then attacks: it tries what the user must not do, from the attacker's side (one
level deeper with wildcards, ``_INBOX.>`` and other clients' replies, the other tenant's traffic
in every direction, every user's account), and what the user must do must still work.
"""
from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from typing import Any, Mapping

from nats.aio.subscription import Subscription

from ...errors import NatslabError
from ...lessons import security as sec
from ...runtime.waiting import until
from ..checks import Mismatch, call_learner, exercise, expect
from . import client, interest, learner_client, of_type, scratch_server, token


@contextlib.asynccontextmanager
async def _server_with(config: Any, what: str, **kwargs):
    """A scratch server started with the learner's config; a config the server rejects is a Mismatch."""
    expect(isinstance(config, Mapping), f"{what} must return a dict of server settings.",
           expected="a dict such as {\"tls\": {...}}", seen=f"{type(config).__name__}: {config!r}"[:120],
           hint="return the dict you would pass as natslab.server(config=...), not a string or a list.")
    try:
        async with scratch_server(jetstream=False, config=dict(config), **kwargs) as srv:
            yield srv
    except NatslabError as exc:
        if isinstance(exc, Mismatch):
            raise
        raise Mismatch(f"nats-server did not start with the settings from {what}.",
                       expected="a configuration the server accepts",
                       seen=(exc.details or exc.what).strip().splitlines()[-1][:240],
                       hint="start natslab.server(config=...) with your dict yourself and read the error "
                            "line the server printed (a misspelt key, a file that does not exist).") from None


async def _learner_dict(fn, *args, what: str, example: str, hints: Mapping | None = None) -> dict:
    """Call the learner's function and insist on a dict (permissions, accounts...)."""
    value = await call_learner(fn, *args, what=what, hints=hints)
    expect(isinstance(value, Mapping), f"{what} must return a dict.", expected=example,
           seen=f"{type(value).__name__}: {value!r}"[:160], hint="return the dict itself, not a string or a list.")
    return dict(value)


def _refused(result: sec.Attempt, expected: str, problem: str, hint: str) -> None:
    expect(not result.ok, problem, expected=expected, seen="the connection was accepted", hint=hint)
    if result.nc is not None:
        asyncio.ensure_future(result.nc.close())


def _accepted(result: sec.Attempt, problem: str, hint: str) -> None:
    expect(result.ok, problem, expected="the connection is accepted",
           seen=f"refused: {result.cause} ({result.client_error[:120]})", hint=hint)


async def _violation(errs: sec.ErrorLog, kind: str, subject: str, timeout: float = 1.0) -> bool:
    """True if the server reported a permissions violation for ``kind`` ("publish"/"subscription")."""
    return await errs.next(timeout=timeout, contains=f'for {kind} to "{subject.lower()}"') is not None


class _Listener:
    """A subscription to ``>`` on one connection: everything its account lets it see."""

    def __init__(self):
        self.seen: list[tuple[str, bytes]] = []

    async def on_msg(self, msg) -> None:
        self.seen.append((msg.subject, msg.data))

    def containing(self, secret: bytes) -> list[str]:
        return [subject for subject, data in self.seen if secret in data]


TLS_HINTS = {"SSLError": "ssl could not load a file: pass the paths you were given as they are.",
             "FileNotFoundError": "a path your code used does not exist: use the arguments you were given."}


# ------------------------------------------------------------------------------ 5.1
@exercise("5.1", "require TLS on a server", hints=(
    "a server accepts only TLS connections once its configuration has a tls block that names its "
    "certificate and private key (lesson 05.1, 'TLS on the server').",
    "the server's tls block takes cert_file and key_file; leave allow_non_tls off, and don't ask "
    "for client certificates (verify) here.",
    'return {"tls": {"cert_file": cert_file, "key_file": key_file}}'))
async def tls_settings_check(tls_settings):
    ca = sec.CertificateAuthority(f"check-{token()}")
    files = ca.server_cert()
    config = await call_learner(tls_settings, str(files.cert), str(files.key),
                                what="tls_settings(cert_file, key_file)", hints=TLS_HINTS)
    async with _server_with(config, "tls_settings()") as srv:
        varz = srv.monitor("varz")
        expect(varz.get("tls_required") is True, "the server does not require TLS.",
               expected="/varz tls_required: True", seen=f"tls_required: {varz.get('tls_required')}",
               hint="the server still accepts plain-text clients: without a tls block naming a certificate "
                    "and key it speaks plain text, and allow_non_tls lets clients skip TLS.")
        good = await sec.attempt(srv, tls=ca.client_context())
        _accepted(good, "a client that trusts the right CA could not connect.",
                  "the server must present the certificate you were given (cert_file, key_file), and must "
                  "not ask the client for a certificate of its own: that is mutual TLS, exercise 5.3.")
        plain = await sec.attempt(srv)
        _refused(plain, "refused: the server only accepts TLS",
                 "a client without TLS got in: the server still accepts plain-text connections.",
                 "allow_non_tls lets clients in without encryption; a TLS-only server leaves it off.")
        public = await sec.attempt(srv, tls=ssl.create_default_context())
        _refused(public, "refused (the client does not trust this CA)",
                 "a client that does not trust the checker's CA got in.",
                 "the server must present the certificate it was given.")
        return ("/varz says tls_required; a client trusting the CA connected and verified the server's "
                "certificate; a plain-text client and a client with only public CAs were refused.")


# ------------------------------------------------------------------------------ 5.2
@exercise("5.2", "a client that verifies the server", hints=(
    "a TLS client must check two things: that a CA it trusts signed the server's certificate, and that "
    "the certificate names the host it dialled (lesson 05.1, 'verifying the server').",
    "ssl.create_default_context(cafile=...) verifies the chain and the host name; "
    "SSLContext.load_verify_locations adds a CA to a context.",
    "return ssl.create_default_context(cafile=ca_file)"))
async def verifying_context_check(verifying_context):
    ca, impostor_ca = sec.CertificateAuthority(f"check-{token()}"), sec.CertificateAuthority(f"impostor-{token()}")
    ctx = await call_learner(verifying_context, str(ca.path), what="verifying_context(ca_file)", hints=TLS_HINTS)
    expect(isinstance(ctx, ssl.SSLContext), "verifying_context must return an ssl.SSLContext.",
           expected="ssl.SSLContext", seen=f"{type(ctx).__name__}: {ctx!r}"[:120],
           hint="return the context object itself (nats.connect takes it as tls=), not a path or a dict.")
    async with scratch_server(jetstream=False, config=sec.tls_config(ca.server_cert())) as genuine, \
            scratch_server(jetstream=False, config=sec.tls_config(impostor_ca.server_cert())) as impostor, \
            scratch_server(jetstream=False, config=sec.tls_config(ca.server_cert("elsewhere.example"))) as misnamed:
        _accepted(await sec.attempt(genuine, tls=ctx), "your context could not connect to the genuine server.",
                  "the context must trust the CA in ca_file (the public CAs alone do not know it), and be a "
                  "client-side context.")
        _refused(await sec.attempt(impostor, tls=ctx), "refused: certificate from an untrusted CA",
                 "your context accepted a server whose certificate comes from a CA you were not given.",
                 "the context does not verify the certificate chain (verify_mode CERT_NONE?): any impostor "
                 "on the path would be trusted.")
        _refused(await sec.attempt(misnamed, tls=ctx), "refused: the certificate names another host",
                 "your context accepted a certificate issued for another host name.",
                 "the context does not check the host name (check_hostname is off): any certificate from "
                 "the CA, issued to anyone, would impersonate this server.")
    return "it connected to the genuine server and refused both an impostor's CA and a certificate for another host."


# ------------------------------------------------------------------------------ 5.3
@exercise("5.3", "require client certificates (mutual TLS)", hints=(
    "with mutual TLS the server also asks every client for a certificate and checks it against the "
    "CA it trusts (lesson 05.1, 'mutual TLS').",
    "the tls block takes ca_file (the CA client certificates must come from) and verify: true; "
    "allow_non_tls must stay off.",
    '{"tls": {"cert_file": cert_file, "key_file": key_file, "ca_file": ca_file, "verify": True}}'))
async def mtls_settings_check(mtls_settings):
    ca, other = sec.CertificateAuthority(f"check-{token()}"), sec.CertificateAuthority(f"other-{token()}")
    files = ca.server_cert()
    config = await call_learner(mtls_settings, str(files.cert), str(files.key), str(ca.path),
                                what="mtls_settings(cert_file, key_file, ca_file)", hints=TLS_HINTS)
    async with _server_with(config, "mtls_settings()") as srv:
        who = f"client-{token()}@example.com"
        _accepted(await sec.attempt(srv, tls=ca.client_context(ca.client_cert(who))),
                  "a client with a certificate from the CA was refused.",
                  "the server must trust client certificates signed by ca_file, and must not require "
                  "users the checker cannot know (verify_and_map maps certificates to configured users).")
        _refused(await sec.attempt(srv, tls=ca.client_context()), "refused: no client certificate",
                 "a client without a certificate got in.",
                 "the server never insists on a client certificate (verify is off, or allow_non_tls lets "
                 "clients skip TLS and with it the certificate).")
        _refused(await sec.attempt(srv, tls=ca.client_context(other.client_cert(who))),
                 "refused: client certificate from another CA",
                 "a client certificate from another CA was accepted.",
                 "the server checks client certificates against another CA than the one you were given.")
        _refused(await sec.attempt(srv), "refused: the server only accepts TLS",
                 "a client without TLS (and so without a certificate) got in.",
                 "allow_non_tls lets clients skip TLS, and with it the client certificate.")
        varz = srv.monitor("varz")
        return (f"/varz tls_verify: {varz.get('tls_verify')}; a client certificate from the CA was accepted; "
                "no certificate, a certificate from another CA and a plain-text client were refused.")


# ------------------------------------------------------------------------------ 5.4
@exercise("5.4", "exactly the permissions a service needs", hints=(
    "least privilege for a service: subscribe to its own subject, and reply only to the requests it "
    "received; replies go to the requester's inbox, which the service must not be able to read or "
    "write at will (lesson 05.3, 'allow_responses').",
    "a permissions dict has subscribe and publish (each a list, or {allow: [...], deny: [...]}) and "
    "allow_responses, which grants one reply per request received.",
    '{"subscribe": {"allow": [subject]}, "publish": {"deny": [">"]}, "allow_responses": True}'))
async def service_permissions_check(service_permissions):
    t = token()
    subject = f"svc.{t}.lookup"
    perms = await _learner_dict(service_permissions, subject, what=f"service_permissions({subject!r})",
                                example='a permissions dict like {"publish": ..., "subscribe": ...}')
    pw = {u: uuid.uuid4().hex for u in ("svc", "caller", "other")}
    users = [{"user": "svc", "password": pw["svc"], "permissions": perms},
             {"user": "caller", "password": pw["caller"]},
             {"user": "other", "password": pw["other"]}]
    async with _server_with({"authorization": {"users": users}}, "service_permissions()") as srv:
        errs = sec.ErrorLog()
        async with client(srv, user="svc", password=pw["svc"], error_cb=errs) as svc, \
                client(srv, user="caller", password=pw["caller"]) as caller, \
                client(srv, user="other", password=pw["other"]) as other:
            async def answer(msg):
                await msg.respond(b"found:" + msg.data)

            await svc.subscribe(subject, queue="svc", cb=answer)
            await svc.flush()
            refused = [e for e in errs.errors if "subscription" in e.lower()]
            expect(not refused, "the service may not subscribe to its own subject.",
                   expected=f"subscribe allowed on {subject}", seen=refused[0] if refused else "",
                   hint="the subject is not in the subscribe allow list (a queue subscription needs it too).")
            try:
                reply = await caller.request(subject, t.encode(), timeout=5)
            except Exception as exc:
                raise Mismatch("a request to the service got no answer.", expected=f"a reply to {subject}",
                               seen=f"{type(exc).__name__}: {exc}; errors: {errs.errors[:2]}",
                               hint="the service could not publish its reply to the requester's inbox: "
                                    "replying needs a permission of its own.") from None
            expect(reply.data == b"found:" + t.encode(), "the reply was not the service's.",
                   expected="the service's answer", seen=repr(reply.data)[:60])
            # as the service, attack: publish elsewhere, into inboxes that asked nothing
            for subj, why in ((f"other.{t}", "an unrelated subject"), (subject, "its own request subject"),
                              (f"_INBOX.{t}.unsolicited", "an inbox that sent no request")):
                await svc.publish(subj, b"x")
                await svc.flush()
                expect(await _violation(errs, "publish", subj), f"the service may publish to {why} ({subj}).",
                       expected="Permissions Violation", seen="accepted by the server",
                       hint="publish permissions that allow inboxes (_INBOX.>) or everything let the service "
                            "write to any client's inbox; allow_responses admits only the replies to requests it got.")
            # as the service, try to read other clients' replies and wider subjects
            other_inbox = f"_INBOX.{t}other"
            await other.subscribe(f"{other_inbox}.*")
            for subj, why in (("_INBOX.>", "every client's inbox (it would read everyone's replies)"),
                              (f"{other_inbox}.*", "another client's inbox"),
                              (">", "everything"), (f"svc.{t}.>", "a wildcard above its subject"),
                              (f"{subject}.>", "subjects one level deeper than its own")):
                sub = await svc.subscribe(subj)
                await svc.flush()
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
                expect(await _violation(errs, "subscription", subj), f"the service may subscribe to {why}: {subj}.",
                       expected="Permissions Violation", seen="subscription accepted",
                       hint="the subscribe allow list is wider than the service's one subject (a wildcard, or "
                            "_INBOX.> added for replies: a responder needs no inbox subscription).")
    return (f"the service answered a request on {subject}; publishing elsewhere (its own subject, an unsolicited "
            "inbox) and subscribing to _INBOX.>, another client's inbox, > or wider/deeper wildcards were refused.")


# ------------------------------------------------------------------------------ 5.5
@exercise("5.5", "a read-only user with a hidden branch", hints=(
    "subscribe permissions match subjects token by token: * is one token, > is one or more; a deny "
    "must cover every depth of the hidden branch, and a subscription to a wide wildcard still must "
    "not deliver denied subjects (lesson 05.3, 'deny beats allow').",
    "permissions: subscribe {allow: [...], deny: [...]} and publish {deny: [...]} (or allow of nothing).",
    '{"subscribe": {"allow": [f"{prefix}.>"], "deny": [f"{prefix}.{hidden}.>"]}, "publish": {"deny": [">"]}}'))
async def reader_permissions_check(reader_permissions):
    t = token()
    prefix, hidden = f"metrics{t}", f"billing{t[:3]}"
    perms = await _learner_dict(reader_permissions, prefix, hidden, what=f"reader_permissions({prefix!r}, {hidden!r})",
                                example='a permissions dict like {"publish": ..., "subscribe": ...}')
    pw = {u: uuid.uuid4().hex for u in ("reader", "admin")}
    users = [{"user": "reader", "password": pw["reader"], "permissions": perms},
             {"user": "admin", "password": pw["admin"]}]
    p, h = prefix, f"{prefix}.{hidden}"
    async with _server_with({"authorization": {"users": users}}, "reader_permissions()") as srv:
        # (publish expected?, subscribe expected?) None: not tried (wildcards cannot be published to)
        want = {f"{p}.cpu": (False, True), f"{p}.eu.cpu": (False, True), f"{p}.eu.west.cpu": (False, True),
                f"{p}.>": (None, True), f"{p}.*": (None, True), f"{p}.*.cpu": (None, True),
                f"{h}.invoices": (False, False), f"{h}.eu.invoices": (False, False),
                f"{h}.>": (None, False), f"{h}.*": (None, False), f"{h}.eu.>": (None, False),
                f"other{t}.x": (False, False), ">": (None, False)}
        seen = await sec.probe(srv, list(want), user="reader", password=pw["reader"])
        for subj, (pub, sub) in want.items():
            got = seen[subj]
            hidden_one = subj.startswith(h + ".")
            expect(got["subscribe"] == sub, f"subscribing to {subj} was {'refused' if sub else 'allowed'}.",
                   expected=f"subscribe {'allowed' if sub else 'refused'}",
                   seen=f"subscribe {'allowed' if got['subscribe'] else 'refused'}",
                   hint=(f"the deny rule does not cover every depth under {h}. (a * stops after one token)"
                         if hidden_one else
                         f"the allow rule must admit every depth under {p}. (a * matches one token only) and nothing outside it"
                         if sub else "the allow rule reaches beyond the prefix."))
            if pub is not None:
                expect(got["publish"] is False, f"the reader may publish to {subj}.", expected="publish refused",
                       seen="publish allowed", hint="without publish permissions a user may publish anywhere: "
                                                    "a reader needs publish denied everywhere.")
        # the attacker's view: wide subscriptions must not deliver the hidden branch, at any depth
        async with client(srv, user="admin", password=pw["admin"]) as admin, \
                client(srv, user="reader", password=pw["reader"]) as reader:
            for listen, publish in ((f"{p}.>", f"{h}.invoices"), (f"{p}.>", f"{h}.eu.invoices"),
                                    (f"{p}.*.invoices", f"{h}.invoices"), (f"{p}.*.eu.invoices", f"{h}.eu.invoices")):
                leaked = await sec.delivered(admin, reader, listen, publish_subject=publish)
                expect(leaked is None, f"a message on {publish} reached the reader's {listen} subscription.",
                       expected="not delivered", seen="delivered",
                       hint=f"the deny rule does not cover {publish}: a deny must reach every depth of the hidden branch.")
            ok = await sec.delivered(admin, reader, f"{p}.>", publish_subject=f"{p}.eu.cpu")
            expect(ok is not None, f"a message on {p}.eu.cpu did not reach the reader.", expected="delivered",
                   seen="nothing", hint="the reader must receive everything under the prefix outside the hidden branch.")
    return (f"the server let the reader subscribe under {p}. at any depth, refused {h} at every depth (also "
            f"through {p}.> and {p}.*.invoices), and refused every publish.")


# ------------------------------------------------------------------------------ 5.6
@exercise("5.6", "two isolated tenants sharing one service", hints=(
    "accounts isolate: nothing crosses between accounts unless one exports and another imports; a "
    "service export lets requests in and replies out, a stream export lets messages out to whoever "
    "imports it (lesson 05.4, 'exports and imports').",
    "accounts: {NAME: {users: [...], exports: [{service: subject}], imports: [{service: {account: NAME, "
    "subject: subject}}]}}",
    'three accounts: SHARED with exports [{"service": subject}]; TENANT_A and TENANT_B each with '
    'imports [{"service": {"account": "SHARED", "subject": subject}}]'))
async def tenant_accounts_check(tenant_accounts):
    t = token()
    subject = f"pricing.{t}.quote"
    logins = {role: (f"{role}-{t}", uuid.uuid4().hex[:12]) for role in ("shared", "a", "b")}
    accounts = await _learner_dict(tenant_accounts, dict(logins), subject, what="tenant_accounts(logins, subject)",
                                   example="the accounts block: a dict of accounts")
    expect(len(accounts) >= 3, "tenant_accounts must return at least three accounts.",
           expected="a dict of at least three accounts", seen=repr(accounts)[:160],
           hint="one account for the shared service and one for each tenant.")
    async with _server_with({"accounts": accounts}, "tenant_accounts()") as srv:
        conns = {}
        try:
            for role, (user, password) in logins.items():
                got = await sec.attempt(srv, keep=True, user=user, password=password)
                _accepted(got, f"the {role} user {user} could not log in.",
                          "each login from logins must be a user (with its password) of its account.")
                conns[role] = got.nc
            accts = {c.get("authorized_user"): c.get("account") for c in srv.monitor("connz", auth=True)["connections"]}
            names = {role: accts.get(logins[role][0]) for role in logins}
            expect(len(set(names.values())) == 3, "the three users are not in three different accounts.",
                   expected="shared, a and b each in its own account", seen=names,
                   hint="users of one account see each other's traffic: isolation needs an account per tenant.")

            async def quote(msg):
                await msg.respond(b"quote:" + msg.data)

            # every account listens to everything it can see: the attacker's view, in every direction
            listeners = {role: _Listener() for role in conns}
            for role, nc in conns.items():
                await nc.subscribe(">", cb=listeners[role].on_msg)
            await conns["shared"].subscribe(subject, cb=quote)
            await conns["shared"].subscribe(f"internal.{t}", cb=quote)
            for nc in conns.values():
                await nc.flush()
            secret = {role: f"secret-{role}-{token(10)}".encode() for role in ("a", "b", "shared")}
            for role in ("a", "b"):
                try:
                    reply = await conns[role].request(subject, secret[role], timeout=5)
                except Exception as exc:
                    raise Mismatch(f"tenant {role} could not call the shared service on {subject}.",
                                   expected="a reply", seen=f"{type(exc).__name__}",
                                   hint=f"tenant {role}'s account has no way into the shared account's {subject}: "
                                        "the shared account must export it and this tenant must import it, "
                                        "under the same subject.") from None
                expect(reply.data == b"quote:" + secret[role], "the reply came from elsewhere.",
                       expected="the shared service's reply", seen=repr(reply.data)[:60])
            chat = {role: b"chat-" + secret[role] for role in secret}
            for role in ("a", "b"):
                await conns[role].publish(f"chat.{t}", chat[role])
            await conns["shared"].publish(f"internal.{t}.news", chat["shared"])
            try:
                await conns["a"].request(f"internal.{t}", b"probe", timeout=1)
                reached_internal = True
            except Exception:
                reached_internal = False
            for nc in conns.values():
                await nc.flush()
            for nc in conns.values():  # whatever was routed to a listener is in now
                await nc.flush()
            for src, dst in (("a", "b"), ("b", "a")):
                where = listeners[dst].containing(secret[src])
                expect(not where, f"tenant {dst} read tenant {src}'s traffic: its request to the shared service "
                                  f"or the reply (on {where[0] if where else ''}).",
                       expected=f"nothing of tenant {src} in tenant {dst}'s account", seen=f"delivered on {where}",
                       hint="a stream export carries everything published on its subjects in the shared account "
                            "(the tenants' requests and the replies included) to every importer.")
            for src, dst in (("a", "b"), ("b", "a"), ("a", "shared"), ("b", "shared"), ("shared", "a"), ("shared", "b")):
                where = listeners[dst].containing(chat[src])
                expect(not where, f"a message published by {src} on chat.{t} / internal.{t}.news reached {dst}: "
                                  "the accounts are not isolated.",
                       expected="not delivered", seen=f"delivered on {where}",
                       hint="only the one service subject may cross between accounts; an export or import of a "
                            "wildcard (or of >) lets other traffic through.")
            expect(not reached_internal, f"tenant a reached the shared account's internal subject internal.{t}.",
                   expected="no responders", seen="a reply",
                   hint="the shared account exports (or the tenants import) more than the one service subject.")
        finally:
            for nc in conns.values():
                with contextlib.suppress(Exception):
                    await nc.close()
    return (f"both tenants called the shared service on {subject}; listening to > in every account, no tenant "
            "saw the other's requests, replies or messages, nothing crossed into or out of the shared account, "
            "and its internal subject stayed out of reach.")


# ------------------------------------------------------------------------------ 5.7
@exercise("5.7", "issue a user JWT with limits", hints=(
    "a user JWT carries the user's permissions, limits and expiry, signed by its account; the server "
    "enforces them (lesson 05.5, 'issuing users').",
    "account.user(name, pub=..., sub=..., subs=..., payload=..., expires=...) issues a user; pub and sub "
    "take lists of subjects, expires seconds from now.",
    'return account.user(name, pub="orders.>", sub=["orders.>", "_INBOX.>"], subs=3, payload=512, expires=600)'))
async def issue_user_check(issue_limited_user):
    op = sec.Operator(f"check{token()}")
    acct = op.account("SHOP", signing_key=True)
    name = f"clerk-{token()}"
    user = await call_learner(issue_limited_user, acct, name, what=f"issue_limited_user(account, {name!r})",
                              hints={"TypeError": "account.user takes the name, then keyword arguments only "
                                                  "(pub=, sub=, subs=, payload=, expires=): help(account.user)."})
    of_type(user, sec.User, "issue_limited_user", "the User that account.user(...) issued")
    claims = sec.decode(user.jwt)
    nats = claims.get("nats", {})
    expect(claims["iss"] in (acct.public, *[k.public for k in acct.signing_keys]),
           "the user JWT was not issued by the account you were given.",
           expected=f"issuer {acct.public[:12]}... or its signing key", seen=claims["iss"][:12] + "...",
           hint="a user issued by another account (or operator) is not a user of this one.")
    expect(claims.get("name") == name, "the user does not carry the name you were given.", expected=name,
           seen=claims.get("name"), hint="issue the user with the name passed in.")
    now = time.time()
    exp = claims.get("exp")
    expect(exp is not None and now + 540 <= exp <= now + 660, "the JWT must expire in 10 minutes.",
           expected="exp 10 minutes from now (540 to 660 s)", seen=f"exp in {int(exp - now)} s" if exp else "no exp",
           hint="expires counts seconds from now.")
    expect(nats.get("subs") == 3 and nats.get("payload") == 512, "the user's limits are not the ones asked for.",
           expected="subs 3, payload 512", seen=f"subs {nats.get('subs')}, payload {nats.get('payload')}",
           hint="subs limits the number of subscriptions, payload the bytes of one message.")
    async with scratch_server(jetstream=False, config=op.server_config()) as srv:
        opts = user.connect_options()
        _accepted(await sec.attempt(srv, **opts), "the server refused the user.",
                  "a JWT changed after signing, or issued by a key the account does not list, is refused.")
        want = {"orders.new": {"publish": True, "subscribe": True},
                "orders.eu.new": {"publish": True, "subscribe": True},
                "orders.>": {"publish": None, "subscribe": True},
                "_INBOX.x1": {"publish": False, "subscribe": True},
                "billing.run": {"publish": False, "subscribe": False},
                ">": {"publish": None, "subscribe": False}}
        seen = await sec.probe(srv, list(want), **opts)
        for subj, row in want.items():
            expect(seen[subj] == row, f"the permissions on {subj} are not the ones asked for.",
                   expected=sec.probe_table({subj: row}).splitlines()[-1], seen=sec.probe_table({subj: seen[subj]}).splitlines()[-1],
                   hint=("orders.> covers every depth under orders. (orders.* only one token)" if subj.startswith("orders")
                         else "replies to the user's requests arrive on _INBOX.<...>: it must be allowed to subscribe there"
                         if subj.startswith("_INBOX") else "allow only orders.> (and _INBOX.> to subscribe)."))
        async with client(srv, **opts) as nc:
            for i in range(4):
                await nc.subscribe(f"orders.s{i}")
            closed = await sec.wait_disconnected(nc, timeout=3)
            expect(closed and "subscriptions" in str(nc.last_error).lower(), "a fourth subscription was accepted.",
                   expected="maximum subscriptions exceeded", seen=str(nc.last_error),
                   hint="the user's subs limit is not 3.")
        async with client(srv, **opts) as nc:
            await nc.publish("orders.big", b"x" * 600)
            closed = await sec.wait_disconnected(nc, timeout=3)
            expect(closed and "payload" in str(nc.last_error).lower(), "a 600-byte message was accepted.",
                   expected="maximum payload violation", seen=str(nc.last_error),
                   hint="the user's payload limit is not 512 bytes.")
    return (f"the JWT is signed by the account, expires in {int(exp - now)} s; the server admitted it, allowed "
            "orders.> at every depth and _INBOX.> for replies and nothing else, and closed the connection at a "
            "4th subscription and at a 600-byte message.")


# ------------------------------------------------------------------------------ 5.8
@exercise("5.8", "revoke a user on a running server", hints=(
    "revocation lives in the account JWT: the account lists the user's public key with a time, and "
    "the server must receive the new account JWT to act on it (lesson 05.5, 'revocation').",
    "account.revoke(user) adds the revocation; sec.push_account(server, account), or a request with "
    "account.jwt to $SYS.REQ.CLAIMS.UPDATE as the operator's system user, updates the server.",
    "account.revoke(user); await sec.push_account(server, account)"))
async def revoke_check(revoke_user):
    op = sec.Operator(f"check{token()}")
    acct = op.account("TEAM", signing_key=True)
    victim, bystander = acct.user(f"leaked-{token()}"), acct.user(f"ok-{token()}")
    async with scratch_server(jetstream=False, config=op.server_config(resolver="full")) as srv:
        async with client(srv, **victim.connect_options()) as v_nc, client(srv, **bystander.connect_options()) as b_nc:
            await call_learner(revoke_user, srv, acct, victim, what="revoke_user(server, account, user)",
                               hints={"NoRespondersError": "nothing answered the claims update: send it as the "
                                                           "operator's system user (account.operator.system_user)."})
            gone = await sec.wait_disconnected(v_nc, timeout=5)
            expect(gone, "the revoked user is still connected.", expected="the server disconnects the user",
                   seen="still connected after 5 s",
                   hint="the server acts only on the account JWT it holds: a revocation made in Python and never "
                        "sent to the server (or sent to the wrong subject) changes nothing.")
            expect("revoked" in str(v_nc.last_error).lower(), "the user was disconnected, but not for revocation.",
                   expected="user authentication revoked", seen=str(v_nc.last_error))
            again = await sec.attempt(srv, **victim.connect_options())
            _refused(again, "refused: revoked", "the revoked user could log in again.",
                     "the revocation does not name this user's public key.")
            expect(b_nc.is_connected, "another user of the account was disconnected too.",
                   expected="only the revoked user goes", seen="the bystander was disconnected",
                   hint="a revocation of '*' (every user) or of the wrong key hits users who did nothing.")
            fresh = acct.user(f"new-{token()}")
            _accepted(await sec.attempt(srv, **fresh.connect_options()), "a newly issued user of the account was refused.",
                      "revoke only the one user, not the account or every user.")
    return "the server disconnected the revoked user at once and refused its creds; other users stayed connected and new ones can log in."


# ------------------------------------------------------------------------------ 5.9
@exercise("5.9", "an auth callout responder", hints=(
    "with auth callout the server asks a service, on $SYS.REQ.USER.AUTH, whether each client may "
    "connect; the signed answer names the account and permissions of that one user (lesson 05.6, "
    "'auth callout').",
    "subscribe on nc to $SYS.REQ.USER.AUTH; sec.AuthRequest.parse(msg.data) gives .user and .password; "
    "answer with msg.respond(req.allow(issuer, account=..., pub=..., sub=...)) or req.deny(issuer, reason).",
    'entry = directory.get(req.user); await msg.respond(req.allow(issuer, account=entry["account"], '
    'pub=entry["publish"], sub=entry["subscribe"]) if entry and req.password == entry["password"] '
    'else req.deny(issuer, "bad user or password"))'))
async def callout_check(start_auth_service):
    t = token()
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
    handler_errors = sec.ErrorLog()
    async with scratch_server(jetstream=False, config=config) as srv, \
            learner_client(srv, user="auth", password=svc_pw, error_cb=handler_errors.callback) as nc:
        copy = {user: dict(entry) for user, entry in directory.items()}
        try:
            sub = await call_learner(start_auth_service, nc, issuer, copy,
                                     what="start_auth_service(nc, issuer, directory)")
        except Mismatch as m:
            if "coroutine" in str(m.seen):  # nats-py's plain Error for a def (not async def) callback
                m.hint = "nats-py calls only coroutine functions: the message handler must be an async def."
            raise
        expect(not nc.is_closed and not nc.is_draining, "the connection you were handed was closed or drained.",
               expected="nc still open: the service answers on it", seen="closed" if nc.is_closed else "draining",
               hint="the service's subscription lives on nc; closing it stops the service.")
        of_type(sub, Subscription, "start_auth_service", "the subscription that answers the requests")
        expect(await interest(srv, sec.callout.SUBJECT) > 0, "nothing is subscribed to $SYS.REQ.USER.AUTH.",
               expected="a subscription on $SYS.REQ.USER.AUTH", seen="no subscriber at the server",
               hint="the server sends its authorization requests to $SYS.REQ.USER.AUTH, in the service's account.")

        def trouble(problem: str, expected: str, seen: str, hint: str) -> Mismatch:
            raised = handler_errors.errors[-1] if handler_errors.errors else ""
            if raised:
                return Mismatch(problem, expected=expected, seen=f"{seen}; your handler raised: {raised}"[:240],
                                hint="the handler raised instead of answering (the error above), so the client "
                                     "waited and was refused.")
            return Mismatch(problem, expected=expected, seen=seen, hint=hint)

        teams = {}
        for user, entry in directory.items():
            got = await sec.attempt(srv, keep=True, user=user, password=entry["password"], connect_timeout=4, timeout=6)
            if not got.ok:
                raise trouble(f"{user} with the right password was refused.", "accepted",
                              f"refused: {got.cause} ({got.client_error[:80]})",
                              "the answer admitting a user must be req.allow(...) signed by issuer.")
            accts = {c.get("cid"): c.get("account") for c in srv.monitor("connz", auth=True)["connections"]}
            teams[user] = accts.get(got.nc.client_id)
            await got.nc.close()
        for user, entry in directory.items():
            expect(teams[user] == entry["account"], f"{user} landed in the wrong account.",
                   expected=entry["account"], seen=teams[user],
                   hint="each user belongs in the account its directory entry names, not one account for all.")
        for user, entry in directory.items():
            own, other = entry["publish"][0].replace(">", "x"), [e for u, e in directory.items() if u != user][0]
            foreign = other["publish"][0].replace(">", "x")
            seen = await sec.probe(srv, [own, foreign, "_INBOX.x1", f"x{t}.y"], user=user, password=entry["password"])
            want = {own: {"publish": True, "subscribe": True}, foreign: {"publish": False, "subscribe": False},
                    "_INBOX.x1": {"publish": False, "subscribe": True}, f"x{t}.y": {"publish": False, "subscribe": False}}
            expect(seen == want, f"{user}'s permissions are not the directory's.", expected=sec.probe_table(want),
                   seen=sec.probe_table(seen),
                   hint="the user JWT in your answer carries the permissions: the entry's publish and subscribe lists.")
        ann, ben = directory
        for user, password, why in ((ben, "wrong-" + t, "a wrong password"),
                                    (ann, directory[ben]["password"], "another user's password"),
                                    (f"eve{t}", "x", "an unknown user")):
            before = len(srv.logs())
            got = await sec.attempt(srv, user=user, password=password, connect_timeout=4, timeout=6)
            _refused(got, "refused", f"{why} was let in.",
                     "the service admits clients whose password does not match their own directory entry.")
            answered = await until(lambda: "callout service returned an error" in srv.logs()[before:].lower(),
                                   "the callout's refusal in the server log", timeout=2, error=False)
            if not answered:
                raise trouble(f"{why} was refused, but not by an answer from your service.",
                              "the server log: 'Auth callout service returned an error: <your reason>'",
                              "; ".join(got.server_log[-2:]) or got.client_error,
                              "a service that stays silent makes every client wait for the callout timeout: "
                              "refuse with a signed answer that gives the reason.")
    return ("each directory user got in with their password, into their own account with the directory's "
            "permissions; a wrong password, another user's password and an unknown user were refused by the "
            "service's answer.")
