"""Where a learner stands across the course: the progress file, ``natslab.progress()`` and its reset.

The progress file (``~/.natslab/progress.json``, or ``$NATSLAB_PROGRESS``) maps each exercise id to
``{title, attempts, hints, first_tried_at, passed_at}``; ``check`` and ``hint`` write it.
``natslab.progress()`` shows one bar per module (passed/total), the next unsolved exercise as a
link to its lab, the hints asked and the time spent (first try to pass, summed over passed
exercises); the terminal gets the same from ``python -m natslab progress``.  Marks are plain text
and CSS, never emoji, so they read the same without an emoji font.
"""
from __future__ import annotations

import datetime as _dt
import html
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import NatslabError

ROOT = Path(__file__).resolve().parents[2]  # the course checkout: notebooks/, labs/, solutions/


# ------------------------------------------------------------------------------ the file
def progress_path() -> Path:
    return Path(os.environ.get("NATSLAB_PROGRESS") or Path.home() / ".natslab" / "progress.json")


def load_progress() -> dict:
    try:
        data = json.loads(progress_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save(data: dict) -> None:
    path = progress_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # progress is a convenience; a read-only home must not fail a check


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def _update(ex, **changes) -> None:
    data = load_progress()
    entry = data.get(ex.id) if isinstance(data.get(ex.id), dict) else {}
    entry.update(title=ex.title, **changes)
    entry.setdefault("first_tried_at", _now())
    data[ex.id] = entry
    _save(data)


_listeners: list = []


def on_record(listener) -> None:
    """Call ``listener(event)`` after every recorded attempt or hint request.

    ``event`` is ``{"event": "verdict"|"hint", "exercise", "title", "passed", "attempts", "hints"}``.
    Workshop mode (``natslab.join``) uses it to report to the class.  A listener that fails
    is reported in one line and never fails the check."""
    if listener not in _listeners:
        _listeners.append(listener)


def off_record(listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def _tell(ex, kind: str, passed: bool | None) -> None:
    entry = load_progress().get(ex.id) or {}
    event = {"event": kind, "exercise": ex.id, "title": ex.title, "passed": passed,
             "ever_passed": bool(entry.get("passed_at")),
             "attempts": int(entry.get("attempts", 0)), "hints": int(entry.get("hints", 0))}
    for listener in list(_listeners):
        try:
            listener(event)
        except Exception as exc:  # reporting is a convenience: the learner's verdict stands
            print(f"natslab: could not report {ex.id} ({type(exc).__name__}: {exc})")


def record_hint(ex) -> int:
    """One more hint asked for ``ex``: recorded; returns how many have been asked."""
    asked = int((load_progress().get(ex.id) or {}).get("hints", 0)) + 1
    _update(ex, hints=asked)
    _tell(ex, "hint", None)
    return asked


def record(ex, passed: bool) -> None:
    """One attempt at ``ex``: counted, and the first pass timed."""
    entry = load_progress().get(ex.id) or {}
    changes = {"attempts": int(entry.get("attempts", 0)) + 1}
    if passed and not entry.get("passed_at"):
        changes["passed_at"] = _now()
    _update(ex, **changes)
    _tell(ex, "verdict", passed)


# ------------------------------------------------------------------------------ course layout
def _module_key(module) -> str:
    """"3", "03", 3, "m03", "module 3" -> "3"; anything else is a clear error."""
    text = str(module).strip().lower().removeprefix("module").strip().removeprefix("m")
    if not text.isdigit():
        raise NatslabError(f"{module!r} is not a module.", 'name a module by its number, e.g. "3" or "03".')
    return str(int(text))


def lab_file(module: str) -> Path | None:
    """The lab notebook of ``module`` ("1" -> labs/01_core_messaging_lab.ipynb), if present."""
    found = sorted((ROOT / "labs").glob(f"{int(module):02d}_*_lab.ipynb"))
    return found[0] if found else None


def notebook_title(path: Path) -> str:
    """The first line of a notebook's first cell, without the '#'."""
    try:
        first = json.loads(path.read_text())["cells"][0]["source"]
        text = "".join(first) if isinstance(first, list) else first
        return text.strip().splitlines()[0].lstrip("#").strip()
    except (OSError, ValueError, KeyError, IndexError):
        return path.stem


def module_title(module: str) -> str:
    lab = lab_file(module)
    if lab is None:
        return f"Module {int(module):02d}"
    title = notebook_title(lab)  # "Lab 01 · Core messaging"
    return title.split("·", 1)[1].strip() if "·" in title else title


def _exercises() -> list:
    from .checks import REGISTRY

    for n in range(10):
        try:
            importlib.import_module(f"natslab.grading.exercises.m{n:02d}")
        except ModuleNotFoundError:
            pass
    return sorted(REGISTRY.values(), key=lambda e: [int(x) for x in e.id.split(".")])


# ------------------------------------------------------------------------------ figures
def _seconds(entry: dict) -> float:
    try:
        start = _dt.datetime.fromisoformat(entry["first_tried_at"])
        end = _dt.datetime.fromisoformat(entry["passed_at"])
        return max(0.0, (end - start).total_seconds())
    except (KeyError, TypeError, ValueError):
        return 0.0


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def bar(done: int, total: int, width: int = 10) -> str:
    filled = round(width * done / total) if total else 0
    return "[" + "#" * filled + "-" * (width - filled) + "]"


@dataclass
class Row:
    id: str
    title: str
    passed_at: str | None
    hints: int
    attempts: int
    seconds: float


@dataclass
class Module:
    key: str
    title: str
    rows: list[Row]
    lab: Path | None

    @property
    def passed(self) -> int:
        return sum(1 for r in self.rows if r.passed_at)

    @property
    def hints(self) -> int:
        return sum(r.hints for r in self.rows)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.rows)

    @property
    def next(self) -> Row | None:
        return next((r for r in self.rows if not r.passed_at), None)


class Progress:
    """Every exercise of the course with its state: one bar per module, the next exercise to do."""

    def __init__(self):
        self.entries = load_progress()
        self.modules: list[Module] = []
        for ex in _exercises():
            e = self.entries.get(ex.id) if isinstance(self.entries.get(ex.id), dict) else {}
            row = Row(ex.id, ex.title, e.get("passed_at"), int(e.get("hints", 0) or 0),
                      int(e.get("attempts", 0) or 0), _seconds(e) if e.get("passed_at") else 0.0)
            key = ex.id.split(".")[0]
            if not self.modules or self.modules[-1].key != key:
                self.modules.append(Module(key, module_title(key), [], lab_file(key)))
            self.modules[-1].rows.append(row)
        self.rows = [r for m in self.modules for r in m.rows]

    # figures over the course
    @property
    def passed(self) -> int:
        return sum(m.passed for m in self.modules)

    @property
    def next(self) -> tuple[Module, Row] | None:
        """The first exercise not passed yet, in course order."""
        return next(((m, m.next) for m in self.modules if m.next), None)

    def summary(self) -> str:
        hints = sum(m.hints for m in self.modules)
        spent = sum(m.seconds for m in self.modules)
        return (f"{self.passed}/{len(self.rows)} exercises passed, {hints} hint{'s' if hints != 1 else ''} "
                f"asked, {duration(spent)} from first try to pass")

    def _where(self, lab: Path | None) -> str:
        if lab is None:
            return ""
        try:
            return os.path.relpath(lab, os.getcwd())
        except ValueError:
            return str(lab)

    def reset(self, module) -> int:
        """Forget every exercise of ``module`` ("3", "03" or 3); returns how many entries went."""
        removed = reset_progress(module)
        self.__init__()
        return removed

    def __repr__(self) -> str:
        lines = [f"natslab progress: {self.summary()}"]
        width = max((len(m.title) for m in self.modules), default=10)
        for m in self.modules:
            line = (f"  {int(m.key):02d} {m.title:<{width}} {bar(m.passed, len(m.rows))} {m.passed:>2}/{len(m.rows):<2}"
                    f"  hints {m.hints:<2}  time {duration(m.seconds)}")
            lines.append(line.rstrip())
        nxt = self.next
        if nxt:
            m, r = nxt
            lines.append(f"next: exercise {r.id} ({r.title}) in {self._where(m.lab) or 'its lab'}")
        else:
            lines.append("next: nothing left, every exercise has passed")
        lines.append("exercises ([x] passed, [ ] open):")
        for r in self.rows:
            extra = f"  (passed {r.passed_at})" if r.passed_at else ""
            extra += f"  [{r.hints} hint{'s' if r.hints != 1 else ''} asked]" if r.hints else ""
            lines.append(f"  {'[x]' if r.passed_at else '[ ]'} {r.id:<5} {r.title}{extra}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        esc = html.escape
        rows = []
        for m in self.modules:
            pct = 100 * m.passed / len(m.rows) if m.rows else 0
            color = "#1a7f37" if m.passed == len(m.rows) else "#0969da"
            link = ""
            if m.next:
                where = self._where(m.lab)
                label = f"{esc(m.next.id)} {esc(m.next.title)}"
                link = f"<a href='{esc(where)}' target='_self'>{label}</a>" if where else label
            rows.append(
                f"<tr><td style='text-align:left'>{int(m.key):02d} {esc(m.title)}</td>"
                f"<td style='min-width:12em'><div class='natslab-bar' style='background:#d0d7de;height:0.9em;"
                f"border-radius:3px'><div style='background:{color};width:{pct:.0f}%;height:100%;"
                f"border-radius:3px'></div></div></td><td>{m.passed}/{len(m.rows)}</td>"
                f"<td>{m.hints}</td><td>{esc(duration(m.seconds))}</td>"
                f"<td style='text-align:left'>{link or 'done'}</td></tr>")
        nxt = self.next
        head = (f"<p><b>{self.passed}/{len(self.rows)}</b> exercises passed. {esc(self.summary().split(', ', 1)[1])}."
                + (f" Next: exercise <b>{esc(nxt[1].id)}</b> ({esc(nxt[1].title)})." if nxt else
                   " Every exercise has passed.") + "</p>")
        return (f"<div class='natslab-progress'>{head}<table><tr><th style='text-align:left'>module</th>"
                f"<th>progress</th><th>passed</th><th>hints asked</th><th>time</th>"
                f"<th style='text-align:left'>next exercise</th></tr>{''.join(rows)}</table></div>")


def progress() -> Progress:
    """Where you stand: one bar per module, the next exercise (a link to its lab), hints and time."""
    return Progress()


def reset_progress(module) -> int:
    """Forget the progress of one module ("3") or of the whole course ("all"); returns how many
    exercise entries were removed."""
    data = load_progress()
    if str(module).strip().lower() == "all":
        keep = {}
    else:
        key = _module_key(module)
        known = {ex.id.split(".")[0] for ex in _exercises()}
        if key not in known:
            raise NatslabError(f"There is no module {module!r} with exercises.",
                               f"modules with exercises: {', '.join(sorted(known, key=int))} (or \"all\").")
        keep = {k: v for k, v in data.items() if str(k).split(".")[0] != key}
    removed = len(data) - len(keep)
    _save(keep)
    return removed
