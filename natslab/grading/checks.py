"""Exercise checks: one call per exercise, a verdict a learner can act on.

``await natslab.check("0.2", say_hello)`` runs the checker registered for exercise 0.2.  The
checker drives a real server itself (publishes, requests, restarts, reads monitoring
endpoints) and calls the learner's code; it never trusts a value the learner printed.

A pass shows a green card and is recorded in the progress file.  A failure shows a red card
and raises ``ExerciseFailed`` (an ``AssertionError``, so nbval and pytest see it) whose text
names the exercise, what was expected, what was seen, and a hint that names the concept.
``natslab.hint("0.2")`` reveals the next level of help (the API, then the solution line), and
the progress file records that it was asked for.

Whatever the learner's code does (raises, hangs, returns the wrong type, closes the connection it
was handed, raises a course error) ends in a verdict: nothing but ``ExerciseFailed`` leaves
``check``.
"""
from __future__ import annotations

import asyncio
import html
import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

from ..errors import NatslabError
from .progress import record, record_hint  # the progress file and the course view live in progress.py

CHECK_LIMIT = 300.0  # seconds a whole check may take before it is reported as stuck


# ------------------------------------------------------------------------------ registry
@dataclass
class Exercise:
    id: str
    title: str
    checker: Callable[..., Awaitable[str | None]]
    hints: tuple[str, ...] = ()  # level 1 names the concept, level 2 the API, the last the solution line


REGISTRY: dict[str, Exercise] = {}


def exercise(id: str, title: str, hints: tuple[str, ...] | list[str] = ()):
    """Register ``async def checker(*learner_objects) -> str | None`` for exercise ``id``.

    The checker raises ``Mismatch`` (through ``expect``) when the work is wrong and returns
    an optional sentence describing what it verified when the work is right.  ``hints`` go from
    the concept (shown with a failure when the mismatch has no hint of its own) to the API to the
    solution line (shown only when the learner asks, with ``natslab.hint``).
    """
    def register(fn):
        REGISTRY[id] = Exercise(id, title, fn, tuple(hints))
        return fn
    return register


def _module_of(id: str) -> str | None:
    head = id.split(".")[0]
    return f"natslab.grading.exercises.m{int(head):02d}" if head.isdigit() else None


def lookup(id: str) -> Exercise:
    id = str(id).strip()
    module = _module_of(id)
    if id not in REGISTRY and module:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the module exists but needs something missing
                raise NatslabError(f"The checks of exercise {id!r} could not be loaded: {exc}.",
                                   "install the course's requirements again (./course open sets them up) "
                                   "and restart the kernel.") from None
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


# What a learner's exception usually means, by class name (so no import of every library is
# needed here).  A checker adds its own with ``call_learner(..., hints={...})``.
EXCEPTION_HINTS: dict[str, str] = {
    "ConnectionClosedError": "the connection was closed before your code used it: close or drain only "
                             "connections you opened yourself, never the one the check hands you.",
    "ConnectionDrainingError": "the connection is draining: drain only connections you opened yourself.",
    "NoRespondersError": "nobody was subscribed to the subject you sent the request to (the server "
                         "answered with a no-responders status); check the subject.",
    "TimeoutError": "an await in your code timed out: a request nobody answered, a fetch on an empty "
                    "consumer, or a next_msg with nothing coming. Which call was it?",
    "KeyWrongLastSequenceError": "a compare-and-set write found another revision than the one you "
                                 "passed: someone wrote the key since you read it. Read again and retry "
                                 "(lesson 03.3).",
    "KeyNotFoundError": "the key does not exist (or its latest entry is a delete or purge marker).",
    "BucketNotFoundError": "the bucket does not exist: create it, or use the name you were given.",
    "MsgAlreadyAckdError": "a message was acknowledged twice: ack each message exactly once, after the "
                           "work is done (lesson 02.4).",
    "NotFoundError": "the server does not know that stream or consumer: check its name, and whether "
                     "it was created before you used it.",
    "BadRequestError": "the server refused the JetStream request as invalid; the error's description "
                       "says which setting (print it).",
    "ServiceUnavailableError": "JetStream did not answer: is it enabled on this server, and does the "
                               "cluster have a leader right now?",
    "PermissionError": "an operating-system permission error, not a NATS one: which file did your code open?",
    "UnicodeDecodeError": "those bytes are not UTF-8 text: decode only payloads that are text.",
    "JSONDecodeError": "that payload is not JSON: check what was published, and parse only what should be JSON.",
    "AttributeError": "an object did not have the attribute your code used: print the object to see its "
                      "type (a Msg, a PubAck, a KeyValue.Entry?).",
    "TypeError": "a value of the wrong type was passed: NATS payloads are bytes (use .encode()), subjects "
                 "are str.",
    "ErrBadSubject": "that subject is not valid: tokens are separated by dots, none empty, no spaces.",
    "BadSubjectError": "that subject is not valid: tokens are separated by dots, none empty, no spaces.",
    "MaxPayloadError": "the message is larger than the server's max_payload: split it (lesson 01.4).",
}


# Some libraries raise one generic class for many causes; their message tells the cause apart.
MESSAGE_HINTS: dict[str, str] = {
    "must use coroutine": "a callback handed to nats-py (subscribe(cb=...), error_cb=, ...) must be an "
                          "async def function: nats-py awaits it.",
}


def _hint_for(exc: BaseException, hints: Mapping | None) -> str:
    """The most specific hint for an exception: the checker's by class, then the course's by message,
    then by class."""
    classes = type(exc).__mro__
    for table in (hints or {}, None, EXCEPTION_HINTS):
        if table is None:
            message = str(exc).lower()
            for fragment, text in MESSAGE_HINTS.items():
                if fragment in message:
                    return text
            continue
        for cls in classes:
            if cls in table:
                return table[cls]
            if cls.__name__ in table:
                return table[cls.__name__]
    return ("read the error above; it was raised by your code, not by the check. Run your function on "
            "its own against natslab.server() to see where.")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, NatslabError):
        text = exc.what
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def call_learner(fn: Callable, *args, timeout: float = 20.0, what: str = "your function",
                       hints: Mapping | None = None):
    """Run learner code (sync or async) with a time limit, turning its failures into verdicts.

    ``hints`` maps exception classes (or class names) to what they mean in this exercise.
    """
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
            if task.cancelled():
                raise Mismatch(f"{what} was cancelled from inside (asyncio.CancelledError).",
                               expected="it returns", seen="cancelled",
                               hint="don't cancel the task your function runs in; cancel only tasks you created.")
            result = task.result()
        return result
    except NotImplementedError:
        raise Unsolved("not yet solved: the exercise still raises NotImplementedError.",
                       expected="your code in place of the stub", seen="the stub",
                       hint="replace the lines under `# YOUR CODE HERE` with your solution, run that cell, then this check.")
    except Mismatch:
        raise
    except NatslabError as exc:  # a course helper the learner called gave up: its own words explain why
        raise Mismatch(f"{what} called a natslab helper that gave up: {exc.what}",
                       expected="no exception", seen=_describe(exc),
                       hint=exc.fix or _hint_for(exc, hints))
    except Exception as exc:
        raise Mismatch(f"{what} raised {_describe(exc)}", expected="no exception",
                       seen=_describe(exc)[:200], hint=_hint_for(exc, hints))


async def _cancel(task: asyncio.Future, grace: float = 5.0) -> None:
    """Cancel the learner's task and wait for its clean-up; cancel again if a cancellation was lost
    (nats-py can swallow one that arrives while a flush completes)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while not task.done() and loop.time() < deadline:
        task.cancel()
        try:
            await asyncio.wait({task}, timeout=min(0.5, max(0.0, deadline - loop.time())))
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
        hint = m.hint or (ex.hints[0] if ex.hints else "")
        if hint:
            lines.append(f"  hint: {hint}")
        if len(ex.hints) > 1 and not isinstance(m, Unsolved):
            lines.append(f"  more help: natslab.hint(\"{ex.id}\")")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        return _card(self.text(), ok=self.passed)


def _card(text: str, ok: bool | None) -> str:
    color, bg = {True: ("#1a7f37", "#dafbe1"), False: ("#cf222e", "#ffebe9"), None: ("#0969da", "#ddf4ff")}[ok]
    lines = text.splitlines()
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


def _checker_broke(exc: BaseException) -> Mismatch:
    """A checker stopped on something other than a Mismatch: say what, in the learner's terms."""
    name = type(exc).__name__
    if name in ("ConnectionClosedError", "ConnectionDrainingError", "StaleConnectionError"):
        return Mismatch("the check could not go on: a connection it handed your code was closed or drained.",
                        expected="the connection you were given still open when your function returns",
                        seen=_describe(exc),
                        hint="close or drain only the connections you open yourself; the check owns the one "
                             "it hands you and still needs it afterwards.")
    if isinstance(exc, NatslabError):
        return Mismatch(f"the check could not go on: {exc.what}", expected="the check runs to the end",
                        seen=_describe(exc), hint=exc.fix or "run the check again.")
    return Mismatch(f"the check could not go on after your code ran: {_describe(exc)}",
                    expected="the check runs to the end", seen=_describe(exc)[:200],
                    hint="this usually follows something your code did to what it was handed (closed a "
                         "connection, deleted a stream or bucket the check uses) or returned (a value of "
                         "another type than the exercise asks for). Re-read the exercise text.")


async def check(id: str, *learner_objects: Any) -> Verdict:
    """Check exercise ``id`` against real servers; returns a Verdict or raises ExerciseFailed."""
    ex = lookup(id)
    task = asyncio.ensure_future(ex.checker(*learner_objects))
    try:
        done, _ = await asyncio.wait({task}, timeout=CHECK_LIMIT)
    except asyncio.CancelledError:  # the learner interrupted the cell: stop the checker and its servers
        await _cancel(task)
        raise
    try:
        if not done:
            await _cancel(task)
            raise Mismatch(f"the check did not finish within {CHECK_LIMIT:.0f} s.", expected="a verdict",
                           seen="still running", hint="your code kept something waiting; run the check again, "
                                                      "and look for an await that never completes.")
        detail = task.result()
    except Mismatch as m:
        mismatch = m
    except (Exception, asyncio.CancelledError) as exc:  # anything else is still a verdict, never a
        mismatch = _checker_broke(exc)                 # traceback (a WaitTimeout, a stray cancellation)
    else:
        verdict = Verdict(ex, True, detail if isinstance(detail, str) else "")
        record(ex, passed=True)
        return verdict
    verdict = Verdict(ex, False, mismatch=mismatch)
    record(ex, passed=False)
    _show(verdict)
    raise ExerciseFailed(verdict) from None


# ------------------------------------------------------------------------------ hints on request
@dataclass
class Hint:
    exercise: Exercise
    level: int  # 1-based; 0 when the exercise has no hints

    def text(self) -> str:
        ex, hints = self.exercise, self.exercise.hints
        if not hints:
            return f"Exercise {ex.id} ({ex.title}) has no further hints; re-read its text and the lesson it names."
        label = "the solution line" if self.level == len(hints) and self.level > 1 else f"hint {self.level}"
        more = (f"  (call natslab.hint(\"{ex.id}\") again for the next level)" if self.level < len(hints)
                else "  (that is all the help there is)")
        return f"Exercise {ex.id} ({ex.title}), {label} of {len(hints)}:\n  {hints[self.level - 1]}\n{more}"

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        return _card(self.text(), ok=None)


def hint(id: str) -> Hint:
    """The next level of help for exercise ``id``: concept, then API, then the solution line."""
    ex = lookup(id)
    return Hint(ex, min(record_hint(ex), len(ex.hints)))
