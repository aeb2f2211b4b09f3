"""Module 05 (security), answered as learners would: correct answers written differently from the
solutions must pass; plausible wrong ones (leaks above all) must fail with a verdict naming the mistake.
"""
from __future__ import annotations

import ssl

import nats

from natslab.lessons import security as sec
from .harness import fails, passes


# ------------------------------------------------------------------------------ 5.1 require TLS
def test_5_1_tls_block_written_out():
    passes("5.1", lambda cert, key: {"tls": {"cert_file": cert, "key_file": key, "timeout": 3}})


def test_5_1_built_step_by_step():
    def tls_settings(cert_file, key_file):
        config = {}
        config["tls"] = dict(cert_file=cert_file, key_file=key_file)
        return config
    passes("5.1", tls_settings)


def test_5_1_settings_outside_a_tls_block_fail():
    fails("5.1", lambda cert, key: {"cert_file": cert, "key_file": key}, says=("did not start", "unknown field"))


def test_5_1_tls_settings_left_out_fails():
    fails("5.1", lambda cert, key: {"port": 4222, "max_payload": 1048576}, says="does not require TLS")


def test_5_1_allow_non_tls_fails():
    fails("5.1", lambda cert, key: {"tls": {"cert_file": cert, "key_file": key}, "allow_non_tls": True},
          says=("does not require TLS", "allow_non_tls"))


def test_5_1_verify_true_locks_out_clients_fails():
    fails("5.1", lambda cert, key: {"tls": {"cert_file": cert, "key_file": key, "verify": True}},
          says=("could not connect", "mutual TLS"))


def test_5_1_string_instead_of_dict_fails():
    fails("5.1", lambda cert, key: f"tls {{ cert_file: {cert}, key_file: {key} }}", says="must return a dict")


# ------------------------------------------------------------------------------ 5.2 verifying client
def test_5_2_client_context_loaded_by_hand():
    def verifying_context(ca_file):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(ca_file)
        return ctx
    passes("5.2", verifying_context)


def test_5_2_default_context_then_load():
    def verifying_context(ca_file):
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ctx.load_verify_locations(cafile=ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx
    passes("5.2", verifying_context)


def test_5_2_verification_off_fails():
    def verifying_context(ca_file):
        ctx = ssl.create_default_context(cafile=ca_file)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    fails("5.2", verifying_context, says=("impostor", "CA you were not given"))


def test_5_2_hostname_check_off_fails():
    def verifying_context(ca_file):
        ctx = ssl.create_default_context(cafile=ca_file)
        ctx.check_hostname = False
        return ctx
    fails("5.2", verifying_context, says=("another host", "check_hostname"))


def test_5_2_public_cas_only_fails():
    fails("5.2", lambda ca_file: ssl.create_default_context(), says=("genuine server", "CA in ca_file"))


def test_5_2_path_instead_of_context_fails():
    fails("5.2", lambda ca_file: ca_file, says="must return an ssl.SSLContext")


# ------------------------------------------------------------------------------ 5.3 mutual TLS
def test_5_3_with_timeout_and_order_changed():
    passes("5.3", lambda cert, key, ca: {"tls": {"verify": True, "ca_file": ca, "key_file": key,
                                                  "cert_file": cert, "timeout": 2}})


def test_5_3_verify_and_map_also_requires_certificates():
    # with no users configured, verify_and_map still demands a certificate from the CA
    passes("5.3", lambda cert, key, ca: {"tls": {"cert_file": cert, "key_file": key, "ca_file": ca,
                                                  "verify_and_map": True}})


def test_5_3_verify_missing_fails():
    fails("5.3", lambda cert, key, ca: {"tls": {"cert_file": cert, "key_file": key, "ca_file": ca}},
          says=("without a certificate got in", "verify"))


def test_5_3_allow_non_tls_fails():
    fails("5.3", lambda cert, key, ca: {"tls": {"cert_file": cert, "key_file": key, "ca_file": ca, "verify": True},
                                        "allow_non_tls": True},
          says=("without a certificate got in",))


def test_5_3_trusting_the_wrong_ca_fails():
    other = sec.CertificateAuthority("adversarial-other")
    fails("5.3", lambda cert, key, ca: {"tls": {"cert_file": cert, "key_file": key, "ca_file": str(other.path),
                                                "verify": True}},
          says="certificate from the CA was refused")



# ------------------------------------------------------------------------------ 5.4 service permissions
def test_5_4_allow_responses_as_a_map_and_lists():
    passes("5.4", lambda subject: {"subscribe": [subject], "publish": {"deny": ">"},
                                   "allow_responses": {"max": 1, "expires": "1m"}})


def test_5_4_publish_allows_nothing_but_replies():
    def service_permissions(subject):
        return {"publish": {"deny": [">"]}, "subscribe": {"allow": [subject], "deny": ["_INBOX.>"]},
                "allow_responses": True}
    passes("5.4", service_permissions)


def test_5_4_subscribing_to_inboxes_fails():
    fails("5.4", lambda s: {"subscribe": {"allow": [s, "_INBOX.>"]}, "publish": {"deny": [">"]},
                            "allow_responses": True},
          says=("_INBOX.>", "read everyone's replies"))


def test_5_4_publish_to_inboxes_instead_of_allow_responses_fails():
    fails("5.4", lambda s: {"subscribe": {"allow": [s]}, "publish": {"allow": ["_INBOX.>"]}},
          says=("inbox that sent no request", "Permissions Violation"))


def test_5_4_wildcard_subscription_fails():
    fails("5.4", lambda s: {"subscribe": {"allow": [s.rsplit(".", 1)[0] + ".>"]}, "publish": {"deny": [">"]},
                            "allow_responses": True},
          says="may subscribe to a wildcard above its subject")


def test_5_4_deeper_subjects_allowed_fails():
    fails("5.4", lambda s: {"subscribe": {"allow": [s, s + ".>"]}, "publish": {"deny": [">"]},
                            "allow_responses": True},
          says="one level deeper")


def test_5_4_no_allow_responses_fails():
    fails("5.4", lambda s: {"subscribe": {"allow": [s]}, "publish": {"deny": [">"]}},
          says=("got no answer", "reply"))


def test_5_4_publish_unrestricted_fails():
    fails("5.4", lambda s: {"subscribe": {"allow": [s]}, "publish": {"allow": [">"]}},
          says="may publish to an unrelated subject")


# ------------------------------------------------------------------------------ 5.5 reader with hidden branch
def test_5_5_deny_listed_twice_and_publish_deny_string():
    def reader_permissions(prefix, hidden):
        return {"subscribe": {"allow": [prefix + ".>"], "deny": [f"{prefix}.{hidden}", f"{prefix}.{hidden}.>"]},
                "publish": {"deny": ">"}}
    passes("5.5", reader_permissions)


def test_5_5_sub_and_pub_keys_built_separately():
    def reader_permissions(prefix, hidden):
        perms = {"publish": {"deny": [">"]}}
        perms["subscribe"] = {"deny": [f"{prefix}.{hidden}.>"], "allow": [f"{prefix}.>"]}
        return perms
    passes("5.5", reader_permissions)


def test_5_5_deny_only_one_token_deep_fails():
    fails("5.5", lambda p, h: {"subscribe": {"allow": [f"{p}.>"], "deny": [f"{p}.{h}.*"]}, "publish": {"deny": [">"]}},
          says=("every depth",))


def test_5_5_allow_one_token_only_fails():
    fails("5.5", lambda p, h: {"subscribe": {"allow": [f"{p}.*"], "deny": [f"{p}.{h}.>"]}, "publish": {"deny": [">"]}},
          says=("refused", "every depth"))


def test_5_5_publish_not_denied_fails():
    fails("5.5", lambda p, h: {"subscribe": {"allow": [f"{p}.>"], "deny": [f"{p}.{h}.>"]}},
          says=("may publish", "publish denied everywhere"))


def test_5_5_allow_everything_fails():
    fails("5.5", lambda p, h: {"subscribe": {"allow": [">"], "deny": [f"{p}.{h}.>"]}, "publish": {"deny": [">"]}},
          says="was allowed")


def test_5_5_deny_in_publish_only_fails():
    fails("5.5", lambda p, h: {"subscribe": {"allow": [f"{p}.>"]}, "publish": {"deny": [">", f"{p}.{h}.>"]}},
          says="deny rule does not cover")


# ------------------------------------------------------------------------------ 5.6 tenants and a shared service
def _accounts(logins, shared_extra=None, tenant_extra=None, names=("SHARED", "TENANT_A", "TENANT_B")):
    shared_name, a_name, b_name = names

    def users(role):
        return [{"user": logins[role][0], "password": logins[role][1]}]
    return {shared_name: {"users": users("shared"), **(shared_extra or {})},
            a_name: {"users": users("a"), **(tenant_extra or {})},
            b_name: {"users": users("b"), **(tenant_extra or {})}}


def test_5_6_private_export_to_named_tenants():
    def tenant_accounts(logins, subject):
        return _accounts(logins, {"exports": [{"service": subject, "accounts": ["ACME", "GLOBEX"]}]},
                         {"imports": [{"service": {"account": "PRICING", "subject": subject}, "to": subject}]},
                         names=("PRICING", "ACME", "GLOBEX"))
    passes("5.6", tenant_accounts)


def test_5_6_written_out_by_hand():
    def tenant_accounts(logins, subject):
        (su, sp), (au, ap), (bu, bp) = logins["shared"], logins["a"], logins["b"]
        imp = {"service": {"account": "svc", "subject": subject}}
        return {"svc": {"users": [{"user": su, "password": sp}], "exports": [{"service": subject, "response_type": "singleton"}]},
                "t1": {"users": [{"user": au, "password": ap}], "imports": [imp]},
                "t2": {"users": [{"user": bu, "password": bp}], "imports": [dict(imp)]}}
    passes("5.6", tenant_accounts)


def test_5_6_shared_stream_export_of_everything_leaks_between_tenants():
    def tenant_accounts(logins, subject):
        return _accounts(logins, {"exports": [{"service": subject}, {"stream": ">"}]},
                         {"imports": [{"service": {"account": "SHARED", "subject": subject}},
                                      {"stream": {"account": "SHARED", "subject": ">"}}]})
    fails("5.6", tenant_accounts, says=("read tenant", "stream export"))


def test_5_6_wildcard_service_export_reaches_internals_fails():
    def tenant_accounts(logins, subject):
        return _accounts(logins, {"exports": [{"service": ">"}]},
                         {"imports": [{"service": {"account": "SHARED", "subject": ">"}}]})
    fails("5.6", tenant_accounts, says=("not isolated", "wildcard"))


def test_5_6_one_account_for_everyone_fails():
    def tenant_accounts(logins, subject):
        users = [{"user": u, "password": p} for u, p in logins.values()]
        return {"ALL": {"users": users}, "SPARE1": {}, "SPARE2": {}}
    fails("5.6", tenant_accounts, says="three different accounts")


def test_5_6_second_tenant_without_import_fails():
    def tenant_accounts(logins, subject):
        accts = _accounts(logins, {"exports": [{"service": subject}]},
                          {"imports": [{"service": {"account": "SHARED", "subject": subject}}]})
        del accts["TENANT_B"]["imports"]
        return accts
    fails("5.6", tenant_accounts, says=("tenant b could not call", "import"))


def test_5_6_import_under_another_subject_fails():
    def tenant_accounts(logins, subject):
        return _accounts(logins, {"exports": [{"service": subject}]},
                         {"imports": [{"service": {"account": "SHARED", "subject": subject}, "to": "prices.quote"}]})
    fails("5.6", tenant_accounts, says="could not call the shared service")


# ------------------------------------------------------------------------------ 5.7 user JWT with limits
def test_5_7_timedelta_and_tuples_signed_by_the_account_key():
    import datetime

    def issue_limited_user(account, name):
        return account.user(name, pub=["orders.>"], sub=("orders.>", "_INBOX.>"), payload=512, subs=3,
                            expires=datetime.timedelta(minutes=10), signing_key=False)
    passes("5.7", issue_limited_user)


def test_5_7_absolute_expiry():
    import datetime

    def issue_limited_user(account, name):
        when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=600)
        user = account.user(name, pub="orders.>", sub=["orders.>", "_INBOX.>"], subs=3, payload=512, expires=when)
        return user
    passes("5.7", issue_limited_user)


def test_5_7_one_token_wildcard_fails():
    fails("5.7", lambda a, n: a.user(n, pub="orders.*", sub=["orders.*", "_INBOX.>"], subs=3, payload=512, expires=600),
          says=("orders.eu.new", "every depth"))


def test_5_7_no_inbox_fails():
    fails("5.7", lambda a, n: a.user(n, pub="orders.>", sub="orders.>", subs=3, payload=512, expires=600),
          says=("_INBOX", "replies"))


def test_5_7_an_hour_fails():
    fails("5.7", lambda a, n: a.user(n, pub="orders.>", sub=["orders.>", "_INBOX.>"], subs=3, payload=512, expires=3600),
          says="expire in 10 minutes")


def test_5_7_off_by_one_subs_fails():
    fails("5.7", lambda a, n: a.user(n, pub="orders.>", sub=["orders.>", "_INBOX.>"], subs=4, payload=512, expires=600),
          says="limits are not the ones asked for")


def test_5_7_everything_allowed_fails():
    fails("5.7", lambda a, n: a.user(n, subs=3, payload=512, expires=600), says="permissions on")


def test_5_7_returning_the_jwt_text_fails():
    fails("5.7", lambda a, n: a.user(n, pub="orders.>", sub=["orders.>", "_INBOX.>"], subs=3, payload=512,
                                     expires=600).jwt,
          says="returned str")


# ------------------------------------------------------------------------------ 5.8 revocation
def test_5_8_pushed_with_plain_nats_py():
    async def revoke_user(server, account, user):
        account.revoke(user.public)
        nc = await nats.connect(server.url, user_credentials=str(account.operator.system_user.creds))
        try:
            reply = await nc.request("$SYS.REQ.CLAIMS.UPDATE", account.jwt.encode(), timeout=3)
            assert b"error" not in reply.data, reply.data
        finally:
            await nc.drain()
    passes("5.8", revoke_user)


def test_5_8_account_specific_update_subject():
    async def revoke_user(server, account, user):
        account.revoke(user)
        nc = await nats.connect(server.url, user_credentials=str(account.operator.system_user.creds))
        await nc.request(f"$SYS.REQ.ACCOUNT.{account.public}.CLAIMS.UPDATE", account.jwt.encode(), timeout=3)
        await nc.close()
    passes("5.8", revoke_user)


def test_5_8_revoked_but_never_pushed_fails():
    async def revoke_user(server, account, user):
        account.revoke(user)
    fails("5.8", revoke_user, says=("still connected", "never sent to the server"))


def test_5_8_pushed_without_revoking_fails():
    async def revoke_user(server, account, user):
        await sec.push_account(server, account)
    fails("5.8", revoke_user, says="still connected")


def test_5_8_revoking_everyone_fails():
    async def revoke_user(server, account, user):
        account.revoke("*")
        await sec.push_account(server, account)
    fails("5.8", revoke_user, says="another user of the account was disconnected")


def test_5_8_revoking_the_name_not_the_key_fails():
    async def revoke_user(server, account, user):
        account.revoke(user.name)
        await sec.push_account(server, account)
    fails("5.8", revoke_user, says="still connected")


# ------------------------------------------------------------------------------ 5.9 auth callout
def test_5_9_with_the_serve_helper():
    async def start_auth_service(nc, issuer, directory):
        def decide(req):
            entry = directory.get(req.user or "")
            if not entry or entry["password"] != req.password:
                return "unknown user or wrong password"
            return {"account": entry["account"], "pub": entry["publish"], "sub": entry["subscribe"]}
        return await sec.serve(nc, issuer, decide)
    passes("5.9", start_auth_service)


def test_5_9_plain_nats_py_subscription_with_compare_digest():
    import hmac

    async def start_auth_service(nc, issuer, directory):
        async def handle(msg):
            req = sec.AuthRequest.parse(msg.data)
            entry = directory.get(req.user)
            good = entry is not None and hmac.compare_digest((req.password or "").encode(), entry["password"].encode())
            answer = (req.allow(issuer, account=entry["account"], pub=entry["publish"], sub=entry["subscribe"])
                      if good else req.deny(issuer, "no"))
            await nc.publish(msg.reply, answer)
        sub = await nc.subscribe("$SYS.REQ.USER.AUTH", cb=handle)
        await nc.flush()
        return sub
    passes("5.9", start_auth_service)


def _service(decide_account=None, check_password=True, perms=True, deny=True, any_password=False):
    async def start_auth_service(nc, issuer, directory):
        async def handle(msg):
            req = sec.AuthRequest.parse(msg.data)
            entry = directory.get(req.user)
            ok = entry is not None and (not check_password or req.password == entry["password"])
            if any_password:
                ok = entry is not None and req.password in {e["password"] for e in directory.values()}
            if not ok:
                if deny:
                    await msg.respond(req.deny(issuer, "no"))
                return
            kwargs = {"pub": entry["publish"], "sub": entry["subscribe"]} if perms else {}
            await msg.respond(req.allow(issuer, account=decide_account or entry["account"], **kwargs))
        return await nc.subscribe("$SYS.REQ.USER.AUTH", cb=handle)
    return start_auth_service


def test_5_9_everyone_in_one_account_fails():
    fails("5.9", _service(decide_account="TEAM1"), says=("landed in the wrong account", "not one account for all"))


def test_5_9_permissions_left_out_fails():
    fails("5.9", _service(perms=False), says="permissions are not the directory's")


def test_5_9_password_not_checked_fails():
    fails("5.9", _service(check_password=False), says="a wrong password was let in")


def test_5_9_any_directory_password_fails():
    fails("5.9", _service(any_password=True), says="another user's password was let in")


def test_5_9_silent_instead_of_deny_fails():
    fails("5.9", _service(deny=False), says="not by an answer from your service")


def test_5_9_handler_that_raises_is_named():
    async def start_auth_service(nc, issuer, directory):
        async def handle(msg):
            req = sec.AuthRequest.parse(msg.data)
            entry = directory[req.user]  # KeyError for unknown users... and bytes for everyone
            await msg.respond(req.allow(issuer, account=entry["account"], pub=entry["publish"].encode()))
        return await nc.subscribe("$SYS.REQ.USER.AUTH", cb=handle)
    fails("5.9", start_auth_service, says=("right password was refused", "your handler raised"))


def test_5_9_plain_def_handler_is_named():
    async def start_auth_service(nc, issuer, directory):
        def handle(msg):
            pass
        return await nc.subscribe("$SYS.REQ.USER.AUTH", cb=handle)
    fails("5.9", start_auth_service, says=("coroutine", "must be an async def"))
