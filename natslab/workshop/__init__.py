"""Workshop mode: a class on one secured NATS cluster, with a live view of where everyone stands.

Instructor: ``python -m natslab class start alice bob ...`` (or ``await Classroom.start([...])``)
starts the class cluster and writes one file per learner.  Learner: ``await natslab.join("alice.json")``
or ``NATSLAB_CLASS=alice.json ./course open``.  Instructor's view: ``await Dashboard.open(...)``.
"""
from .board import ClassBoard, Dashboard, read_board
from .classroom import Classroom
from .membership import Membership, current, flush, join, join_from_environment, leave

__all__ = ["ClassBoard", "Classroom", "Dashboard", "Membership", "current", "flush", "join", "join_from_environment",
           "leave", "read_board"]
