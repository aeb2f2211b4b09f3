"""natslab: the helper package of the natslab NATS course.

Start real servers (``server``, ``cluster``, ``supercluster``, ``leafnode``), read their
monitoring endpoints (``monitor``), connect with clear errors (``connect``) and check
exercises (``check``).  See notebooks/00_welcome.ipynb for a tour.
"""
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
