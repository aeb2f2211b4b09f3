"""Errors a learner can act on.

Every failure natslab raises says what went wrong and what to do next.  In Jupyter the
exception prints as that message alone (``_render_traceback_``) instead of a traceback
reaching deep into asyncio or docker internals, which teaches nothing.
"""
from __future__ import annotations


class NatslabError(Exception):
    """A problem natslab can explain: ``what`` happened and ``fix`` says what to do."""

    def __init__(self, what: str, fix: str = "", details: str = ""):
        self.what = what
        self.fix = fix
        self.details = details
        super().__init__(self.text())

    def text(self) -> str:
        parts = [self.what]
        if self.details:
            parts.append(_indent(self.details.rstrip()))
        if self.fix:
            parts.append("What to do: " + self.fix)
        return "\n".join(parts)

    def _render_traceback_(self):  # IPython calls this instead of printing a traceback
        return [f"\x1b[1;31m{type(self).__name__}\x1b[0m: " + self.text()]


class BackendUnavailable(NatslabError):
    """The requested backend (Docker engine, nats-server binary) cannot be used."""


class ServerStartError(NatslabError):
    """A server did not become ready; ``details`` carries the server's own last log lines."""


class PortInUse(NatslabError):
    """A port the learner asked for is taken by another program."""


class NotSupported(NatslabError):
    """The operation cannot be done on this backend (for example a network cut on local)."""


def _indent(text: str, prefix: str = "  | ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())
