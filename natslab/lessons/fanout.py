"""How messages fan out to subscribers: a live view of a queue group's spread, and a bare
protocol client (to see the wire format, or to stop reading and become a slow consumer).

    spread = Spread(["a", "b", "c"])
    spread                      # live bars in Jupyter (text in a terminal)
    spread.record("a", seq=1)   # call from each member's callback
    spread.mark("c left")       # a vertical line in the timeline plot
    spread.plot()               # counts per member and who got which message

Waiting for the server is plain nats-py: ``await nc.flush()`` on a ``natslab.connect`` client
(whose flush is queued behind pending commands), or the server's own view
(``srv.monitor("subsz", test=subject)``) for any client; lesson 01.5 shows why a plain nats-py
2.16 client's flush is not enough on its own.
"""
from __future__ import annotations

import json
import socket
from collections import Counter


class Spread:
    """Which member of a queue group handled which message: counts, a timeline, a widget, a plot."""

    def __init__(self, members=(), every: int = 25):
        self.members: list[str] = list(members)
        self.counts: Counter = Counter({m: 0 for m in self.members})
        self.timeline: list[tuple[int, str]] = []  # (message number, member)
        self.marks: list[tuple[int, str]] = []
        self.every = every
        self._bars = None

    # -- recording ----------------------------------------------------------------------------
    def record(self, member: str, seq: int | None = None) -> None:
        if member not in self.members:
            self.members.append(member)
        self.counts[member] += 1
        self.timeline.append((len(self.timeline) + 1 if seq is None else seq, member))
        if self._bars is not None and len(self.timeline) % self.every == 0:
            self.refresh()

    def mark(self, label: str) -> None:
        """Note an event (a member left, one joined) at the current point of the timeline."""
        self.marks.append((len(self.timeline), label))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def between(self, start: int, end: int | None = None) -> Counter:
        """Counts per member for the messages recorded from position ``start`` to ``end``."""
        return Counter(m for _, m in self.timeline[start:end])

    # -- views --------------------------------------------------------------------------------
    def summary(self, width: int = 40) -> str:
        top = max(self.counts.values(), default=0) or 1
        lines = [f"{self.total} messages over {len(self.members)} members"]
        for m in self.members:
            n = self.counts[m]
            lines.append(f"  {m:>10} {'█' * round(width * n / top):<{width}} {n:5d} "
                         f"({100 * n / max(self.total, 1):4.1f}%)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def widget(self):
        """Live bars (ipywidgets), refreshed every ``every`` messages and by ``refresh()``."""
        import ipywidgets as w

        self._bars = {}
        rows = []
        for m in self.members:
            bar = w.IntProgress(value=0, min=0, max=1, description=m, bar_style="info")
            label = w.Label("0")
            self._bars[m] = (bar, label)
            rows.append(w.HBox([bar, label]))
        self._total = w.Label()
        self._box = w.VBox(rows + [self._total])
        self.refresh()
        return self._box

    def refresh(self) -> None:
        if self._bars is None:
            return
        top = max(self.counts.values(), default=0) or 1
        for m, (bar, label) in self._bars.items():
            bar.max = top
            bar.value = self.counts[m]
            label.value = str(self.counts[m])
        self._total.value = f"{self.total} messages handled"

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget())

    def plot(self, title: str = "queue group spread"):
        """Two panels: messages per member, and which member got each message over time."""
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2), gridspec_kw={"width_ratios": [1, 2]})
        left.bar(self.members, [self.counts[m] for m in self.members], color="#4c72b0")
        left.set_ylabel("messages")
        left.set_title("messages per member")
        index = {m: i for i, m in enumerate(self.members)}
        xs = [seq for seq, _ in self.timeline]
        ys = [index[m] for _, m in self.timeline]
        right.scatter(xs, ys, s=6, alpha=0.6, color="#4c72b0")
        right.set_yticks(range(len(self.members)), self.members)
        right.set_xlabel("message number")
        right.set_title("who handled each message")
        for pos, label in self.marks:
            right.axvline(pos + 0.5, color="#cf222e", linestyle="--")
            right.text(pos + 0.5, len(self.members) - 0.45, f" {label}", color="#cf222e", va="center")
        right.set_ylim(-0.5, len(self.members) - 0.2)
        fig.suptitle(title)
        fig.tight_layout()
        return fig


class RawClient:
    """A real client speaking the plain NATS text protocol over a TCP socket.

    It subscribes to ``subject`` and then only reads when asked: ``read()`` returns the raw
    protocol text the server sent (``MSG``/``HMSG`` lines, header blocks, payloads).  A raw
    client that never reads is what a frozen process, or an event loop blocked inside a
    callback, looks like to the server: bytes pile up in the server's buffer for this
    connection until they pass its ``max_pending`` and the server cuts the client off as a
    slow consumer.
    """

    def __init__(self, srv, subject: str, name: str = "raw-client", *, user: str | None = None,
                 password: str | None = None):
        self.name = name
        self.sock = socket.create_connection(("127.0.0.1", srv.ports["client"]), timeout=5)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills sooner
        self._read_until(b"\r\n")  # the server's INFO line
        connect = {"verbose": False, "pedantic": False, "headers": True, "name": name,
                   "lang": "raw-socket", "version": "0"}
        if user is not None:
            connect.update(user=user, **{"pass": password})
        self.sock.sendall(f"CONNECT {json.dumps(connect)}\r\nSUB {subject} 1\r\nPING\r\n".encode())
        self._read_until(b"PONG\r\n")  # the server has the subscription

    def _read_until(self, end: bytes, timeout: float = 5.0) -> bytes:
        self.sock.settimeout(timeout)
        data = b""
        while not data.endswith(end):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"the server closed the connection (read so far: {data[:200]!r})")
            data += chunk
        return data

    def read(self, timeout: float = 5.0) -> str:
        """Send PING and return everything the server sent before its PONG (the PONG excluded)."""
        self.sock.sendall(b"PING\r\n")
        data = self._read_until(b"PONG\r\n", timeout)
        return data[: -len(b"PONG\r\n")].decode(errors="replace")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
