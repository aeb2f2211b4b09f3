"""natslab: the helper package of the natslab NATS course.

Start real servers (``server``, ``cluster``, ``supercluster``, ``leafnode``), read their
monitoring endpoints (``monitor``), connect with clear errors (``connect``) and check
exercises (``check``).  See notebooks/00_welcome.ipynb for a tour.
"""
import os as _os

from .runtime.backends import PINNED_VERSION
from .errors import BackendUnavailable, NatslabError, NotSupported, PortInUse, ServerStartError
from .runtime.monitor import monitor
from .runtime.server import Server, server
from .runtime.session import stop_all, workdir

__all__ = [
    "PINNED_VERSION", "BackendUnavailable", "NatslabError", "NotSupported", "PortInUse",
    "ServerStartError", "Server", "monitor", "server", "stop_all", "workdir",
]

from .runtime.waiting import WaitTimeout, until, until_sync  # noqa: E402
from .runtime.topology import Cluster, LeafTopology, SuperCluster, cluster, leafnode, supercluster  # noqa: E402

__all__ += ["WaitTimeout", "until", "until_sync", "Cluster", "LeafTopology", "SuperCluster", "cluster", "leafnode", "supercluster"]

from .grading.checks import ExerciseFailed, check, hint  # noqa: E402
from .grading.progress import progress, reset_progress  # noqa: E402
from .runtime.client import ConnectFailed, connect  # noqa: E402

__all__ += ["ExerciseFailed", "check", "hint", "progress", "reset_progress", "ConnectFailed", "connect"]
from .lessons.magics import autoload as _autoload_magics; _autoload_magics()  # noqa: E402,E702  %nats in IPython


async def join(source=None, *, catch_up: bool = True):
    """Workshop mode: report every check to your class (the file your instructor gave you)."""
    from .workshop import join as _join

    return await _join(source, catch_up=catch_up)


async def leave():
    """Workshop mode: stop reporting to the class."""
    from .workshop import leave as _leave

    await _leave()


__all__ += ["join", "leave"]
if _os.environ.get("NATSLAB_CLASS"):  # started for a class: join at the first check
    from .workshop import join_from_environment as _join_from_environment; _join_from_environment()  # noqa: E402,E702
