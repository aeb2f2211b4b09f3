"""Who held a role when: a timeline of leadership (or lock) intervals, for lesson 07.6.

The election and lock code is written out in the notebook with nats-py calls; this module only
records what each participant says about itself (``begin``/``end``), marks events (a kill, a
pause), finds overlapping intervals (two leaders at once), and draws it all on one time axis
together with the server's own record: the KV entries written for the key (their revision and
the server's timestamp).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from .kvstore import Table


@dataclass
class Interval:
    who: str
    start: float
    end: float | None = None      # None: still holding

    def overlaps(self, other: "Interval") -> bool:
        end_a = self.end if self.end is not None else float("inf")
        end_b = other.end if other.end is not None else float("inf")
        return self.start < end_b and other.start < end_a


class Timeline:
    """Intervals during which each participant believed it held the role, on the wall clock."""

    def __init__(self, title: str = "who held the role"):
        self.title = title
        self.t0 = time.time()
        self.intervals: list[Interval] = []
        self.marks: list[tuple[float, str]] = []

    def begin(self, who: str, at: float | None = None) -> None:
        """``who`` starts holding the role (ignored if it already holds it)."""
        if self.holding(who) is None:
            self.intervals.append(Interval(who, time.time() if at is None else at))

    def end(self, who: str, at: float | None = None) -> None:
        """``who`` stops holding the role (ignored if it does not hold it)."""
        current = self.holding(who)
        if current is not None:
            current.end = time.time() if at is None else at

    def mark(self, label: str, at: float | None = None) -> None:
        """An event worth seeing on the axis (a kill, a pause, a step-down)."""
        self.marks.append((time.time() if at is None else at, label))

    def holding(self, who: str) -> Interval | None:
        return next((i for i in self.intervals if i.who == who and i.end is None), None)

    def overlaps(self) -> list[tuple[Interval, Interval]]:
        """Every pair of intervals of different participants that overlap in time."""
        return [(a, b) for n, a in enumerate(self.intervals) for b in self.intervals[n + 1:]
                if a.who != b.who and a.overlaps(b)]

    def table(self) -> Table:
        """One row per interval, in seconds since the timeline began."""
        rel = lambda t: "" if t is None else f"{t - self.t0:.2f}"
        return Table(({"who": i.who, "from s": rel(i.start), "to s": rel(i.end) or "(holding)",
                       "held s": "" if i.end is None else f"{i.end - i.start:.2f}"}
                      for i in sorted(self.intervals, key=lambda i: i.start)), title=self.title)

    def plot(self, entries=(), ttl: float | None = None):
        """Bars: who held the role when. Dots: the KV ``entries`` the server stored for the key (drawn
        on the row of the name they hold, at the server's timestamp). Dashed lines: the marks.
        With ``ttl``, a thin line after each entry shows until when it would keep the key alive."""
        import matplotlib.pyplot as plt

        who = list(dict.fromkeys([i.who for i in self.intervals] +
                                 [_text(e.value) for e in entries if e.value]))
        row = {name: n for n, name in enumerate(who)}
        now = time.time()
        times = [t for i in self.intervals for t in (i.start, i.end or now)] + [at for at, _ in self.marks]
        span = (max(times) - min(times)) if times else 1.0
        fig, ax = plt.subplots(figsize=(9, 1.2 + 0.6 * max(len(who), 1)))
        for i in self.intervals:
            end = i.end if i.end is not None else now
            width = max(end - i.start, span * 0.005)            # a few milliseconds stay visible
            ax.barh(row[i.who], width, left=i.start - self.t0, height=0.5, color="#1a7f37", alpha=0.75)
        for e in entries:
            name = _text(e.value)
            if not name or e.created is None:
                continue
            x = e.created.timestamp() - self.t0
            ax.plot([x], [row[name]], "o", color="#0969da", markersize=4)
            if ttl:
                ax.plot([x, x + ttl], [row[name] + 0.33] * 2, color="#0969da", linewidth=0.8, alpha=0.5)
        for k, (at, label) in enumerate(sorted(self.marks)):
            ax.axvline(at - self.t0, color="#cf222e", linestyle="--", linewidth=1)
            ax.text(at - self.t0, -0.75 + 0.3 * (k % 2), " " + label, color="#cf222e", fontsize="small", va="center")
        ax.set_yticks(range(len(who)), who)
        ax.set_ylim(-0.95, max(len(who), 1) - 0.4)
        ax.set_xlim(left=min(0.0, *(t - self.t0 for t in times)) if times else 0.0)
        ax.invert_yaxis()
        ax.set_xlabel("seconds")
        ax.set_title(self.title + " (bars: the participant's own view; dots: revisions on the server)"
                     if entries else self.title, fontsize="medium")
        fig.tight_layout()
        return fig

    def __repr__(self) -> str:
        return repr(self.table())


def _text(value) -> str:
    try:
        return bytes(value or b"").decode()
    except UnicodeDecodeError:
        return ""
