"""The instructor's live view of the class: learners by exercise, from the class's own stream and KV.

Everything shown is folded from the ``VERDICTS`` stream (every verdict and hint request, by
learner) and the ``CLASS_ROSTER`` bucket, so a dashboard started again (a restarted notebook,
a second screen, the console) shows the same class.  ``ClassBoard`` does the folding;
``Dashboard`` keeps it up to date and draws it as an ipywidgets grid or as text.
"""
from __future__ import annotations

import asyncio
import html
import json
import time
from dataclasses import dataclass, field

from nats.js.api import ConsumerConfig, DeliverPolicy

from ..errors import NatslabError
from ..lessons.failover import retry
from ..runtime.client import connect
from .classroom import ROSTER_BUCKET, VERDICTS_STREAM, Classroom
from .membership import creds_file, read_class_file

STUCK_AFTER = 600.0   # seconds of failing attempts without a pass before a cell says "stuck"


@dataclass
class Cell:
    """One learner's standing on one exercise."""
    attempts: int = 0
    hints: int = 0
    passed: bool = False
    first_at: float | None = None
    last_at: float | None = None

    def state(self, now: float) -> str:
        if self.passed:
            return "passed"
        if self.attempts and self.first_at is not None and now - self.first_at > STUCK_AFTER:
            return "stuck"
        if self.attempts:
            return "failing"
        return "hints" if self.hints else "-"


@dataclass
class ClassBoard:
    roster: dict[str, dict] = field(default_factory=dict)
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    last_seq: int = 0

    def apply(self, subject: str, data: bytes, seq: int) -> None:
        """Fold one message of VERDICTS; the learner is the subject's last token, never the payload."""
        self.last_seq = max(self.last_seq, seq)
        learner = subject.rsplit(".", 1)[-1]
        try:
            event = json.loads(data)
            exercise = str(event["exercise"])
        except (ValueError, KeyError, TypeError):
            return
        cell = self.cells.setdefault((learner, exercise), Cell())
        cell.attempts = max(cell.attempts, int(event.get("attempts") or 0))
        cell.hints = max(cell.hints, int(event.get("hints") or 0))
        cell.passed = cell.passed or bool(event.get("passed")) or bool(event.get("ever_passed"))
        at = float(event.get("at") or time.time())
        cell.first_at = at if cell.first_at is None else min(cell.first_at, at)
        cell.last_at = at if cell.last_at is None else max(cell.last_at, at)
        self.roster.setdefault(learner, {"name": learner, "status": "active"})

    def learners(self) -> list[str]:
        return sorted(self.roster)

    def exercises(self) -> list[str]:
        ids = {ex for (_, ex) in self.cells}
        return sorted(ids, key=lambda e: [int(x) if x.isdigit() else x for x in e.split(".")])

    def state(self, learner: str, exercise: str, now: float | None = None) -> str:
        cell = self.cells.get((learner, exercise))
        return cell.state(now or time.time()) if cell else "-"

    def text(self) -> str:
        """The grid as plain text (the console's ``board``)."""
        now, exercises = time.time(), self.exercises()
        marks = {"passed": "ok", "failing": "x", "stuck": "STUCK", "hints": "?", "-": "."}
        width = max([7] + [len(n) for n in self.roster])
        lines = ["learner".ljust(width) + "  " + " ".join(e.rjust(5) for e in exercises)]
        for name in self.learners():
            row = []
            for ex in exercises:
                cell = self.cells.get((name, ex))
                mark = marks[cell.state(now)] if cell else "."
                if cell and cell.hints:
                    mark += f"+{cell.hints}h" if mark != "?" else f"{cell.hints}h"
                row.append(mark.rjust(5))
            status = self.roster[name].get("status", "active")
            lines.append(name.ljust(width) + "  " + " ".join(row) + ("" if status == "active" else f"  ({status})"))
        lines.append("ok passed, x failing, STUCK failing for 10+ min, +Nh hints asked, . not tried")
        return "\n".join(lines)

    def html(self) -> str:
        now, exercises = time.time(), self.exercises()
        colours = {"passed": "#c8e6c9", "failing": "#ffe0b2", "stuck": "#ffcdd2", "hints": "#e3f2fd", "-": "#fafafa"}
        head = "".join(f"<th>{html.escape(e)}</th>" for e in exercises)
        rows = []
        for name in self.learners():
            tds = []
            for ex in exercises:
                cell = self.cells.get((name, ex))
                st = cell.state(now) if cell else "-"
                label = {"passed": "passed", "failing": f"{cell.attempts if cell else 0} tries",
                         "stuck": "stuck", "hints": "hints", "-": ""}[st]
                if cell and cell.hints:
                    label += f" ({cell.hints} hint{'s' if cell.hints > 1 else ''})"
                tds.append(f'<td style="background:{colours[st]};padding:2px 6px">{html.escape(label)}</td>')
            status = self.roster[name].get("status", "active")
            who = html.escape(name) + ("" if status == "active" else f" <i>({html.escape(status)})</i>")
            rows.append(f"<tr><th style='text-align:left'>{who}</th>{''.join(tds)}</tr>")
        return (f"<table style='border-collapse:collapse;font-size:12px'><tr><th>learner</th>{head}</tr>"
                f"{''.join(rows)}</table>")


async def read_board(nc, timeout: float = 10.0) -> ClassBoard:
    """Fold the whole VERDICTS stream and the roster, as they stand now."""
    js = nc.jetstream(timeout=5)
    board = ClassBoard()
    try:
        kv = await js.key_value(ROSTER_BUCKET)
        for key in await kv.keys():
            entry = await kv.get(key)
            board.roster[key] = json.loads(entry.value)
    except Exception as exc:
        if "no keys" not in str(exc).lower():
            raise
    info = await js.stream_info(VERDICTS_STREAM)
    last = info.state.last_seq
    if info.state.messages:
        sub = await js.subscribe("verdicts.*", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
        try:
            deadline = time.monotonic() + timeout
            while board.last_seq < last:
                msg = await sub.next_msg(timeout=max(0.1, deadline - time.monotonic()))
                board.apply(msg.subject, msg.data, msg.metadata.sequence.stream)
        finally:
            await sub.unsubscribe()
    board.last_seq = max(board.last_seq, last)
    return board


class Dashboard:
    """A live grid of the class for the instructor's notebook.

    ``board = await Dashboard.open("…/instructor.json")`` (or a running ``Classroom``), then
    ``board.widget`` in a cell; it updates as verdicts arrive.  ``board.text()`` for a terminal."""

    def __init__(self, nc, board: ClassBoard):
        self.nc, self.board = nc, board
        self.widget = None
        self._sub = None
        self._roster_watch = None
        self._tasks: list[asyncio.Task] = []

    @classmethod
    async def open(cls, source) -> "Dashboard":
        nc = await _instructor_connection(source)
        dash = cls(nc, await retry(read_board, nc, timeout=60, per_try=20))
        await dash._follow()
        return dash

    async def _follow(self) -> None:
        js = self.nc.jetstream(timeout=5)

        async def on_verdict(msg):
            self.board.apply(msg.subject, msg.data, msg.metadata.sequence.stream)
            self._draw()

        start = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.board.last_seq + 1)
        self._sub = await js.subscribe("verdicts.*", ordered_consumer=True, cb=on_verdict, config=start)
        kv = await js.key_value(ROSTER_BUCKET)
        self._roster_watch = await kv.watchall(include_history=False)

        async def follow_roster():
            async for entry in self._roster_watch:
                if entry is None or entry.value is None:
                    continue
                try:
                    self.board.roster[entry.key] = json.loads(entry.value)
                except ValueError:
                    continue
                if json.loads(entry.value).get("reset_at"):
                    self.board.cells = {k: v for k, v in self.board.cells.items() if k[0] != entry.key}
                self._draw()

        self._tasks.append(asyncio.get_running_loop().create_task(follow_roster()))

    def _draw(self) -> None:
        if self.widget is not None:
            self.widget.value = self.board.html()

    def show(self):
        """The ipywidgets view (an HTML grid that redraws itself)."""
        import ipywidgets

        if self.widget is None:
            self.widget = ipywidgets.HTML(self.board.html())
        return self.widget

    def text(self) -> str:
        return self.board.text()

    def _repr_html_(self) -> str:
        return self.board.html()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._roster_watch is not None:
            try:
                await self._roster_watch.stop()
            except Exception:
                pass
        if not self.nc.is_closed:
            await self.nc.drain()


async def _instructor_connection(source):
    if isinstance(source, Classroom):
        return await source.connect_instructor()
    data = read_class_file(source)
    if data.get("learner") != "instructor":
        raise NatslabError("This is a learner's file, not the instructor's.",
                           "open the dashboard with instructor.json from the class directory.")
    return await connect(servers=data["servers"], quiet=True, user_credentials=str(creds_file(data)),
                         max_reconnect_attempts=-1, reconnect_time_wait=0.2)
