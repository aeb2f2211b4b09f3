"""TLS material made at run time with ``trustme``: a throwaway CA, server and client certificates.

Every file goes under ``natslab.workdir()``, so a server on either backend reads it at the
path the config names.  Clients always reach natslab servers at 127.0.0.1, so a server
certificate must name ``127.0.0.1`` (an IP address SAN) and ``localhost``; ``server_cert``
does that unless you ask for other names (as the lesson on a wrong host name does).
"""
from __future__ import annotations

import datetime as _dt
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme

from .keys import secrets_dir, write_secret

SERVER_NAMES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class CertFiles:
    """A certificate (``cert``, PEM chain) and its private key (``key``, mode 0600) on disk."""

    cert: Path
    key: Path
    identities: tuple[str, ...]

    def describe(self) -> dict:
        return describe_cert(self.cert)


class CertificateAuthority:
    """A CA for this session only: ``server_cert``, ``client_cert``, ``client_context``.

    ``ca.path`` is the CA certificate (public) that servers and clients trust; the CA's own
    private key never leaves memory.
    """

    def __init__(self, name: str = "natslab-ca"):
        self.name = name
        self._ca = trustme.CA(organization_name="natslab", organization_unit_name=name)
        self.dir = secrets_dir(f"tls-{name}")
        self.path = self.dir / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.path))
        self._n = 0

    def _issue(self, stem: str, identities: tuple[str, ...], **kwargs) -> CertFiles:
        self._n += 1
        leaf = self._ca.issue_cert(*identities, **kwargs)
        cert = self.dir / f"{stem}-{self._n}.pem"
        key = self.dir / f"{stem}-{self._n}-key.pem"
        cert.write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
        write_secret(key, leaf.private_key_pem.bytes())
        return CertFiles(cert, key, identities)

    def server_cert(self, *names: str, expired: bool = False) -> CertFiles:
        """A server certificate for ``names`` (default 127.0.0.1 and localhost)."""
        names = names or SERVER_NAMES
        return self._issue("server", tuple(names), **_validity(expired))

    def client_cert(self, identity: str, expired: bool = False) -> CertFiles:
        """A client certificate whose identity is ``identity`` (an e-mail address or a name).

        The server's ``verify_and_map`` looks users up by the certificate's e-mail SAN first,
        then its DNS names, then the full subject, so an e-mail address maps cleanly.
        """
        return self._issue("client", (identity,), common_name=identity, **_validity(expired))

    def client_context(self, cert: CertFiles | None = None) -> ssl.SSLContext:
        """An ``ssl.SSLContext`` that trusts this CA (and checks host names), with ``cert`` if given."""
        return client_context(self.path, cert)

    def __repr__(self) -> str:
        return f"<CertificateAuthority {self.name} {self.path}>"


def _validity(expired: bool) -> dict:
    if not expired:
        return {}
    now = _dt.datetime.now(_dt.timezone.utc)
    return {"not_before": now - _dt.timedelta(days=2), "not_after": now - _dt.timedelta(days=1)}


def client_context(ca_file: str | Path | None, cert: CertFiles | None = None) -> ssl.SSLContext:
    """A verifying client context: trusts ``ca_file``, checks the host name, optional client cert."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None)
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return ctx


def tls_config(server: CertFiles, ca: CertificateAuthority | str | Path | None = None, *,
               verify: bool = False, map_users: bool = False, timeout: float = 2.0) -> dict:
    """The ``tls`` block for ``natslab.server(config=...)``.

    ``verify=True`` asks every client for a certificate signed by ``ca`` (mutual TLS);
    ``map_users=True`` (``verify_and_map``) also takes the user name from the certificate.
    """
    block: dict[str, Any] = {"cert_file": str(server.cert), "key_file": str(server.key)}
    if ca is not None:
        block["ca_file"] = str(ca.path if isinstance(ca, CertificateAuthority) else ca)
    if map_users:
        block["verify_and_map"] = True
    elif verify:
        block["verify"] = True
    block["timeout"] = timeout
    return {"tls": block}


def describe_cert(path: str | Path) -> dict:
    """Subject, issuer, names and validity of the first certificate in a PEM file."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(v) for v in san.get_values_for_type(x509.DNSName)]
        names += [str(v) for v in san.get_values_for_type(x509.IPAddress)]
        names += [str(v) for v in san.get_values_for_type(x509.RFC822Name)]
    except x509.ExtensionNotFound:
        names = []
    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
            "names": names, "not_after": cert.not_valid_after_utc.isoformat(timespec="seconds")}
