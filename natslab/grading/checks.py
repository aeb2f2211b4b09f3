"""Exercise checks: one call per exercise, a verdict a learner can act on.

``await natslab.check("0.2", say_hello)`` runs the checker registered for exercise 0.2.  The
checker drives a real server itself (publishes, requests, restarts, reads monitoring
endpoints) and calls the learner's code; it never trusts a value the learner printed.

A pass shows a green card and is recorded in the progress file.  A failure shows a red card
and raises ``ExerciseFailed`` (an ``AssertionError``, so nbval and pytest see it) whose text
names the exercise, what was expected, what was seen, and a hint.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import html
import importlib
import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from ..errors import NatslabError

# ------------------------------------------------------------------------------ registry
@dataclass
class Exercise:
    id: str
    title: str
    checker: Callable[..., Awaitable[str | None]]
    hint: str = ""


REGISTRY: dict[str, Exercise] = {}


def exercise(id: str, title: str, hint: str = ""):
    """Register ``async def checker(*learner_objects) -> str | None`` for exercise ``id``.

    The checker raises ``Mismatch`` (through ``expect``) when the work is wrong and returns
    an optional sentence describing what it verified when the work is right.
    """
    def register(fn):
        REGISTRY[id] = Exercise(id, title, fn, hint)
        return fn
    return register


def lookup(id: str) -> Exercise:
    module = f"natslab.grading.exercises.m{int(id.split('.')[0]):02d}" if id.split(".")[0].isdigit() else None
    if id not in REGISTRY and module:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            pass
    if id not in REGISTRY:
        raise NatslabError(f"There is no exercise {id!r}.", "copy the check call from the lab notebook; "
                           "exercise ids look like \"1.3\".")
    return REGISTRY[id]


# ------------------------------------------------------------------------------ failures
class Mismatch(Exception):
    """Raised inside a checker: what was wrong, expected versus seen, and a hint."""

    def __init__(self, problem: str, expected: Any = None, seen: Any = None, hint: str = ""):
        super().__init__(problem)
        self.problem, self.expected, self.seen, self.hint = problem, expected, seen, hint


class Unsolved(Mismatch):
    """The learner's code still raises the lab's NotImplementedError stub."""


def expect(ok: bool, problem: str, *, expected: Any = None, seen: Any = None, hint: str = "") -> None:
    if not ok:
        raise Mismatch(problem, expected, seen, hint)


class ExerciseFailed(AssertionError):
    """The exercise is not solved yet, or not solved right; the message says how to fix it."""

    def __init__(self, verdict: "Verdict"):
        self.verdict = verdict
        super().__init__(verdict.text())

    def _render_traceback_(self):  # IPython: show the verdict, not a traceback
        return ["\x1b[1;31mExerciseFailed\x1b[0m: " + self.verdict.text()]


async def call_learner(fn: Callable, *args, timeout: float = 20.0, what: str = "your function"):
    """Run learner code (sync or async) with a time limit, turning its failures into verdicts."""
    if not callable(fn):
        raise Mismatch(f"{what} is not a function.", expected="a function (def or async def)",
                       seen=f"{type(fn).__name__}: {fn!r}"[:120],
                       hint="pass the function itself, without calling it: check(\"x.y\", my_function).")
    try:
        result = fn(*args)
        if inspect.isawaitable(result):
            # A hang is a task still running at the deadline; a TimeoutError the learner's own
            # code raised (an empty fetch, a request with no reply) is an exception like any other.
            task = asyncio.ensure_future(result)
            try:
                done, _ = await asyncio.wait({task}, timeout=timeout)
            except asyncio.CancelledError:  # the checker cancelled us: cancel the learner's code too,
                await _cancel(task)         # so its finally blocks (watcher.stop(), ...) run
                raise
            if not done:
                await _cancel(task)
                raise Mismatch(f"{what} did not finish within {timeout:.0f} s.", expected="it returns",
                               seen="still running",
                               hint="an await that never completes? (a subscription waiting for a message "
                                    "that never comes, a request with no responder, a missing flush)")
            result = task.result()
        return result
    except NotImplementedError:
        raise Unsolved("not yet solved: the exercise still raises NotImplementedError.",
                       expected="your code in place of the stub", seen="the stub",
                       hint="replace the lines under `# YOUR CODE HERE` with your solution, run that cell, then this check.")
    except (Mismatch, NatslabError):
        raise
    except Exception as exc:
        raise Mismatch(f"{what} raised {type(exc).__name__}: {exc}", expected="no exception",
                       seen=f"{type(exc).__name__}: {exc}"[:200],
                       hint="run your cell on its own and read the error; the exercise text says what to do.")


async def _cancel(task: asyncio.Future, grace: float = 5.0) -> None:
    task.cancel()
    try:
        await asyncio.wait({task}, timeout=grace)
    except asyncio.CancelledError:
        pass


# ------------------------------------------------------------------------------ verdicts
@dataclass
class Verdict:
    exercise: Exercise
    passed: bool
    detail: str = ""
    mismatch: Mismatch | None = None
    extra: dict = field(default_factory=dict)

    def text(self) -> str:
        ex = self.exercise
        head = f"Exercise {ex.id} ({ex.title})"
        if self.passed:
            return f"✓ {head}: passed." + (f" {self.detail}" if self.detail else "")
        m = self.mismatch
        lines = [f"✗ {head}: {m.problem}"]
        if m.expected is not None or m.seen is not None:
            lines.append(f"  expected: {m.expected}")
            lines.append(f"  seen:     {m.seen}")
        hint = m.hint or ex.hint
        if hint:
            lines.append(f"  hint: {hint}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        ok = self.passed
        color, bg = ("#1a7f37", "#dafbe1") if ok else ("#cf222e", "#ffebe9")
        lines = self.text().splitlines()
        body = "".join(f"<div style='margin-left:1.2em'>{html.escape(l.strip())}</div>" for l in lines[1:])
        return (f"<div style='border-left:6px solid {color};background:{bg};padding:6px 10px;"
                f"font-family:var(--jp-code-font-family,monospace)'><b style='color:{color}'>"
                f"{html.escape(lines[0])}</b>{body}</div>")


def _show(verdict: Verdict) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display

        if get_ipython() is not None and not verdict.passed:
            display(HTML(verdict._repr_html_()))
    except ImportError:
        pass


async def check(id: str, *learner_objects: Any) -> Verdict:
    """Check exercise ``id`` against real servers; returns a Verdict or raises ExerciseFailed."""
    ex = lookup(id)
    try:
        detail = await ex.checker(*learner_objects)
    except Mismatch as m:
        verdict = Verdict(ex, False, mismatch=m)
        _show(verdict)
        raise ExerciseFailed(verdict) from None
    verdict = Verdict(ex, True, detail or "")
    record_pass(ex)
    return verdict


# ------------------------------------------------------------------------------ progress
def progress_path() -> Path:
    return Path(os.environ.get("NATSLAB_PROGRESS") or Path.home() / ".natslab" / "progress.json")


def load_progress() -> dict:
    try:
        return json.loads(progress_path().read_text())
    except (OSError, ValueError):
        return {}


def record_pass(ex: Exercise) -> None:
    data = load_progress()
    data[ex.id] = {"title": ex.title, "passed_at": _dt.datetime.now().isoformat(timespec="seconds")}
    path = progress_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # progress is a convenience; a read-only home must not fail a passed exercise


class Progress:
    """Every exercise of the course with its state, shown as a table."""

    def __init__(self):
        for n in range(10):
            try:
                importlib.import_module(f"natslab.grading.exercises.m{n:02d}")
            except ModuleNotFoundError:
                pass
        self.passed = load_progress()
        self.rows = [(ex.id, ex.title, self.passed.get(ex.id, {}).get("passed_at"))
                     for ex in sorted(REGISTRY.values(), key=lambda e: [int(x) for x in e.id.split(".")])]

    def __repr__(self) -> str:
        done = sum(1 for r in self.rows if r[2])
        lines = [f"{done}/{len(self.rows)} exercises passed"]
        lines += [f"  {'✓' if when else '·'} {i:<5} {t}" + (f"  ({when})" if when else "") for i, t, when in self.rows]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        done = sum(1 for r in self.rows if r[2])
        rows = "".join(f"<tr><td>{'✅' if w else '⬜'}</td><td>{i}</td><td>{html.escape(t)}</td><td>{w or ''}</td></tr>"
                       for i, t, w in self.rows)
        return f"<p><b>{done}/{len(self.rows)}</b> exercises passed</p><table>{rows}</table>"


def progress() -> Progress:
    return Progress()
