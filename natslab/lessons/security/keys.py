"""NKEYs and hashed passwords, made at run time.

An NKEY is an Ed25519 key pair written in NATS's own text form: the public key starts with a
letter saying what it belongs to (``O`` operator, ``A`` account, ``U`` user, ``N`` server), the
seed (the secret) starts with ``S`` and that same letter (``SO``, ``SA``, ``SU``).  The ``nkeys``
library encodes and signs; it has no key generator, so ``new_key`` draws 32 random bytes with
PyNaCl (which ``nkeys`` itself uses) and lets ``nkeys`` encode them.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import nacl.signing
import nkeys

from ...errors import NatslabError
from ...runtime.session import workdir

KINDS = {
    "operator": nkeys.PREFIX_BYTE_OPERATOR,
    "account": nkeys.PREFIX_BYTE_ACCOUNT,
    "user": nkeys.PREFIX_BYTE_USER,
    "server": nkeys.PREFIX_BYTE_SERVER,
}
_LETTER = {"O": "operator", "A": "account", "U": "user", "N": "server"}


@dataclass(frozen=True)
class Key:
    """One NKEY: ``public`` is safe to share, ``seed`` is the secret that signs."""

    seed: str = field(repr=False)
    public: str

    @property
    def kind(self) -> str:
        return _LETTER.get(self.public[:1], "unknown")

    def sign(self, data: bytes) -> bytes:
        return nkeys.from_seed(self.seed.encode()).sign(data)

    def save_seed(self, path: str | Path) -> Path:
        """Write the seed to ``path`` readable by its owner only (mode 0600)."""
        return write_secret(path, self.seed + "\n")

    def __str__(self) -> str:
        return self.public


def new_key(kind: str = "user") -> Key:
    """A fresh NKEY pair of the given kind: operator, account, user or server."""
    if kind not in KINDS:
        raise NatslabError(f"There is no NKEY kind {kind!r}.", f"use one of {', '.join(KINDS)}.")
    raw = bytes(nacl.signing.SigningKey.generate())
    seed = nkeys.encode_seed(raw, KINDS[kind])
    return key_from_seed(seed)


def key_from_seed(seed: str | bytes) -> Key:
    seed_b = seed.encode() if isinstance(seed, str) else bytes(seed)
    try:
        pair = nkeys.from_seed(bytearray(seed_b.strip()))
    except nkeys.NkeysError as exc:
        raise NatslabError(f"That is not an NKEY seed ({exc}).", "a seed starts with S and is 58 characters long.") from None
    return Key(seed=seed_b.strip().decode(), public=pair.public_key.decode())


def verify(public: str, data: bytes, signature: bytes) -> bool:
    """True when ``signature`` over ``data`` was made by the seed of ``public``."""
    import base64

    try:
        raw = base64.b32decode(public + "=" * (-len(public) % 8))[1:-2]
        nacl.signing.VerifyKey(raw).verify(data, signature)
        return True
    except Exception:
        return False


# ------------------------------------------------------------------------------ files
def secrets_dir(label: str) -> Path:
    """A fresh directory under ``natslab.workdir()`` for one set of secrets (mode 0700).

    Servers on both backends read files from there at the same absolute path.  The
    directory goes away with the natslab session; nothing secret is kept in the course.
    """
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in label)[:40] or "secrets"
    path = workdir() / f"{safe}-{uuid.uuid4().hex[:6]}"
    path.mkdir(parents=True)
    os.chmod(path, 0o700)
    return path


def write_secret(path: str | Path, text: str | bytes) -> Path:
    """Write ``text`` to ``path`` so that only the owner can read it (0600), from the first byte."""
    path = Path(path)
    data = text.encode() if isinstance(text, str) else text
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)
    return path


# ------------------------------------------------------------------------------ passwords
def _bcrypt_backend():
    """The ``bcrypt`` package, or the C library's crypt() (Linux, Python < 3.13) when it is missing."""
    try:
        import bcrypt

        return "bcrypt", bcrypt
    except ImportError:
        pass
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt
        if crypt.METHOD_BLOWFISH in crypt.methods:
            return "crypt", crypt
    except (ImportError, AttributeError):
        pass
    raise NatslabError("Hashing a password needs the bcrypt package.",
                       "pip install bcrypt (the course's requirements.txt lists it).")


def hash_password(password: str, cost: int = 11) -> str:
    """A bcrypt hash (``$2b$11$...``) that nats-server accepts in place of a clear password."""
    kind, lib = _bcrypt_backend()
    if kind == "bcrypt":
        return lib.hashpw(password.encode(), lib.gensalt(rounds=cost)).decode()
    return lib.crypt(password, lib.mksalt(lib.METHOD_BLOWFISH, rounds=2 ** cost))


def check_password(password: str, hashed: str) -> bool:
    """True when ``password`` matches the bcrypt ``hashed`` (as the server would decide)."""
    import hmac

    kind, lib = _bcrypt_backend()
    if kind == "bcrypt":
        return lib.checkpw(password.encode(), hashed.encode())
    return hmac.compare_digest(lib.crypt(password, hashed), hashed)
