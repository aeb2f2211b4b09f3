"""Security helpers for module 05: TLS material, NKEYs, JWTs, auth callout, clear refusals.

Everything secret is made at run time and written under ``natslab.workdir()`` (mode 0600),
where servers on both backends read it; nothing secret is part of the course files.

- TLS: ``CertificateAuthority`` (``server_cert``, ``client_cert``, ``client_context``),
  ``tls_config`` for the server's ``tls`` block, ``describe_cert``.
- NKEYs and passwords: ``new_key``, ``key_from_seed``, ``hash_password`` (bcrypt).
- Decentralized JWT auth: ``Operator`` -> ``Account`` -> ``User`` (creds files, signing keys,
  permissions, limits, expiry, revocation), ``Operator.server_config`` (memory or full
  resolver), ``push_account`` (update an account on a running server), ``decode``, ``describe``.
- Auth callout: ``callout_config``, ``AuthRequest`` (``allow``/``deny``), ``serve``.
- Refusals explained: ``attempt`` (one connection try, with the client's error, the server's
  log and an explanation), ``explain_refusal`` (rules in ``natslab.runtime.refusals``), ``ErrorLog`` (collects asynchronous errors),
  ``probe`` (which subjects a user may publish and subscribe to, as the server decides).
- Practice: ``review`` (least-privilege findings about a server), ``exposed_secrets``, ``file_mode``.
"""
from __future__ import annotations

from .callout import AuthRequest, callout_config, serve
from .explain import Attempt, ErrorLog, attempt, explain_refusal, server_errors
from .jwt import (NO_LIMIT, Account, JWTError, Operator, User, creds_text, decode, describe, encode,
                  push_account)
from .keys import Key, check_password, hash_password, key_from_seed, new_key, secrets_dir, write_secret
from .probing import delivered, probe, probe_table, wait_disconnected
from .review import exposed_secrets, file_mode, review
from .tls import CertFiles, CertificateAuthority, client_context, describe_cert, tls_config

__all__ = [
    "AuthRequest", "callout_config", "serve",
    "Attempt", "ErrorLog", "attempt", "explain_refusal", "server_errors",
    "NO_LIMIT", "Account", "JWTError", "Operator", "User", "creds_text", "decode", "describe", "encode",
    "push_account",
    "Key", "check_password", "hash_password", "key_from_seed", "new_key", "secrets_dir", "write_secret",
    "delivered", "probe", "probe_table", "wait_disconnected", "exposed_secrets", "file_mode", "review",
    "CertFiles", "CertificateAuthority", "client_context", "describe_cert", "tls_config",
]
