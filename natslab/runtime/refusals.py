"""Refusal rules: the text patterns that turn a client error or a server log line into a cause.

A refused connection, a dropped publish or a closed session reaches a learner as a terse text:
``nats: user authentication revoked``, ``tls: client didn't provide a certificate``,
``Permissions Violation for Publish to "x"``.  ``RULES`` maps such texts (client exceptions,
``-ERR`` lines, server ``[ERR]``/``[WRN]`` log lines) to a short cause and to what it means and
what to do.  ``runtime.client`` uses them to explain a failed ``natslab.connect``, and the
security lessons (``natslab.lessons.security``) to explain an attempt, an error callback, a log.

This module imports nothing from natslab, so both layers can use it without import cycles.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

# (pattern in the client's error or the server's log, short cause, what it means and what to do)
RULES: list[tuple[str, str, str]] = [
    # TLS alerts the client *received*: the server refused the client's side of the handshake
    (r"alert certificate required|didn't provide a certificate|certificate required",
     "the server requires a client certificate (mutual TLS) and none was sent",
     "Load a client certificate signed by the CA the server trusts: "
     "ctx.load_cert_chain(cert_file, key_file) before connecting."),
    (r"alert unknown ca|alert bad certificate|failed to verify certificate|signed by unknown authority",
     "the server did not accept the client's certificate",
     "With mutual TLS the server checks the client's certificate against its ca_file. Use a client "
     "certificate signed by that CA (and not expired)."),
    (r"unable to get local issuer certificate|self[- ]signed certificate|unknown ca",
     "the client does not trust the server's certificate",
     "The server's certificate was signed by a CA the client does not trust. Give the client that CA "
     "(ssl.create_default_context(cafile=ca_file)). Switching verification off would 'fix' it by also "
     "trusting any impostor on the path: don't."),
    (r"ip address mismatch|hostname mismatch|doesn't match|not valid for",
     "the server's certificate does not name the address the client dialled",
     "TLS checks that the certificate names the host you connected to. Issue the server certificate "
     "for that name (natslab servers are reached at 127.0.0.1 and localhost), or connect with "
     "tls_hostname set to a name the certificate does carry. Turning hostname checks off lets any "
     "certificate from a trusted CA impersonate this server."),
    (r"certificate has expired|certificate expired",
     "a certificate has expired",
     "Certificates are valid only between their not-before and not-after dates. Issue a new one."),
    (r"tls required|secure connection - tls required",
     "the server only accepts TLS connections",
     "Connect with tls=<ssl.SSLContext> that trusts the server's CA."),
    (r"user authentication expired|jwt.*expired|claim is expired",
     "the user's JWT has expired",
     "A user JWT stops working at its 'exp' time, and the server disconnects users whose JWT "
     "expires while connected. Issue a fresh JWT (a new creds file)."),
    (r"user authentication revoked|revoke[ds]",
     "the user's JWT was revoked by its account",
     "The account JWT lists this user's public key under 'revocations'. Every JWT of that user issued "
     "before the revocation time is refused; issue a new user (a new key) if access should return."),
    (r"maximum account active connections|account.*connections exceeded",
     "the account's connection limit is reached",
     "The account JWT limits how many clients may be connected at once (limits.conn). Close a "
     "connection or raise the limit in the account JWT."),
    (r"maximum connections exceeded",
     "the server's connection limit is reached",
     "max_connections in the server config caps all clients together. Close connections or raise it."),
    (r"maximum payload",
     "the message is larger than allowed",
     "The server (max_payload) or the user/account JWT (limits.payload) caps the size of one message; the "
     "server closes the connection of a client that sends more. Send smaller messages (chunk them, "
     "or use the object store)."),
    (r"maximum subscriptions exceeded",
     "the connection has as many subscriptions as it may",
     "The user or account JWT limits subscriptions (limits.subs). Unsubscribe from something first."),
    (r"permissions violation for publish|publish violation",
     "the user may not publish to that subject",
     "The user's publish permissions do not allow that subject (or a deny rule matches). The message "
     "was dropped and the connection stays open. Grant the subject, or publish elsewhere."),
    (r"permissions violation for subscription|subscription violation",
     "the user may not subscribe to that subject",
     "The user's subscribe permissions do not allow that subject (or a deny rule matches). The "
     "subscription delivers nothing. Grant the subject, or subscribe to an allowed one."),
    (r"authentication timeout",
     "the client did not finish authenticating in time",
     "The server closes a connection that has not sent valid credentials within auth timeout "
     "(authorization { timeout: ... })."),
    (r"signature does not match|tampered",
     "the user JWT's signature does not match its contents",
     "Someone changed the JWT after it was signed (or signed it with another key). Only the account "
     "(or its signing key) can issue a valid user JWT: issue a new one instead of editing it."),
    (r"account fetch failed|account missing|account not found|unknown account",
     "the server does not know the user's account",
     "In operator mode the server loads account JWTs from its resolver. This account's JWT is not there, "
     "or it was signed by an operator the server does not trust. Add the account to the resolver "
     "(resolver_preload, or push it) and issue users from accounts of the trusted operator."),
    (r"auth callout|callout service returned an error",
     "the auth callout service refused the client",
     "An external service decides who may connect; its answer said no (the server log shows its reason)."),
    (r"authorization violation|authentication error|authorization error",
     "the server did not accept the credentials",
     "No user, token, NKEY or JWT in the server's configuration matches what the client sent. Check the "
     "credentials against the authorization block (srv.config_text)."),
    (r"no responders",
     "nobody is subscribed to the request's subject",
     "A request needs a responder subscribed to that subject in the same account (or one reachable "
     "through an import)."),
    (r"connection (lost|reset)|eof",
     "the server closed the connection during the handshake",
     "A server that requires something the client did not bring (a client certificate, TLS) closes "
     "the connection; its log says which."),
]


GENERIC = ("the server did not accept the credentials", "the server closed the connection during the handshake")


def rule_for(text: Any) -> tuple[str, str] | None:
    """``(cause, advice)`` of the first rule whose pattern occurs in ``text``, or None."""
    low = str(text).lower()
    for pattern, cause, advice in RULES:
        if re.search(pattern, low):
            return cause, advice
    return None


def specific_rule_for(text: Any) -> tuple[str, str] | None:
    """Like ``rule_for``, but None for the generic causes (credentials refused, connection lost)."""
    rule = rule_for(text)
    return rule if rule and rule[0] not in GENERIC else None


def best_rule(texts: Iterable[Any]) -> tuple[str, str] | None:
    """The first specific cause among ``texts`` (in order), else the first generic one, else None."""
    found = [r for r in (rule_for(t) for t in texts if t) if r]
    specific = [r for r in found if r[0] not in GENERIC]
    return (specific or found or [None])[0]


def explain_refusal(*texts: Any) -> str:
    """A plain explanation for error texts (client error first, then server log lines)."""
    rule = best_rule(texts)
    if rule is None:
        return "Not a recognised security refusal: read the client's error and the server's log (srv.logs())."
    cause, advice = rule
    return f"{cause[0].upper()}{cause[1:]}. {advice}"


def server_errors(text: str) -> list[str]:
    """The [ERR]/[WRN] lines of a server log, without the timestamp prefix."""
    out = []
    for line in str(text).splitlines():
        m = re.search(r"\[(ERR|WRN)\]\s*(.*)", line)
        if m:
            out.append(f"[{m.group(1)}] {m.group(2)}")
    return out
