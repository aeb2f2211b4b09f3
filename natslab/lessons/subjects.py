"""Subjects: check that a subject or a pattern is well formed, explain a wildcard match token by
token, and confirm the answer with a real subscription on a real server.

    >>> from natslab import subjects
    >>> subjects.match("orders.*.new", "orders.eu.new").matched
    True
    >>> await subjects.server_delivers(nc, "orders.*.new", "orders.eu.new")   # the server's word
    True

``SubjectMatcher(nc)`` is a small ipywidgets form: type a subject and a pattern and it shows
whether and why they match, next to what the server really did with a test message.
"""
from __future__ import annotations

import asyncio
import html
import re
import uuid
from dataclasses import dataclass, field

_WHITESPACE = re.compile(r"[ \t\r\n\f\v]")
_PLAIN = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclass
class SubjectCheck:
    """The verdict on one subject (or pattern): ``ok``, hard ``problems``, soft ``warnings``."""
    text: str
    kind: str  # "subject" or "pattern"
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        head = f"{self.kind} {self.text!r}: " + ("valid" if self.ok else "INVALID")
        return "\n".join([head] + [f"  ✗ {p}" for p in self.problems] + [f"  ! {w}" for w in self.warnings])

    __repr__ = __str__


def check(text: str, *, pattern: bool = False) -> SubjectCheck:
    """Is ``text`` a valid publish subject (``pattern=False``) or subscription pattern?

    Hard rules (the server or the client refuses, or the server silently drops the message):
    not empty, no whitespace, no empty token (leading, trailing or double dot); in a publish
    subject no wildcard tokens; in a pattern ``>`` only as the last token.  Soft rules are the
    naming conventions: plain tokens of letters, digits, ``-`` and ``_``; ``$`` prefixes are
    reserved for the system; ``*``/``>`` inside a longer token are literal characters.
    """
    kind = "pattern" if pattern else "subject"
    res = SubjectCheck(text, kind)
    if not isinstance(text, str) or text == "":
        res.problems.append("it is empty: a subject needs at least one token")
        return res
    if _WHITESPACE.search(text):
        res.problems.append("it contains whitespace (space, tab or line break), which ends a subject in "
                            "the protocol")
    tokens = text.split(".")
    if any(t == "" for t in tokens):
        where = ("starts with a dot" if tokens[0] == "" else "ends with a dot" if tokens[-1] == ""
                 else "has two dots in a row")
        res.problems.append(f"it {where}: every token between dots must be non-empty")
    for i, tok in enumerate(tokens):
        if tok in ("*", ">"):
            if not pattern:
                res.problems.append(f"token {i + 1} is the wildcard {tok!r}: wildcards belong in subscriptions, "
                                    "a published message goes to one concrete subject")
            elif tok == ">" and i != len(tokens) - 1:
                res.problems.append(f"'>' is token {i + 1} of {len(tokens)}: it matches the rest of the subject, "
                                    "so it can only be the last token")
        elif tok and ("*" in tok or ">" in tok):
            res.warnings.append(f"token {tok!r} contains '*' or '>' inside a longer token: that is a literal "
                                "character there, not a wildcard (confusing; avoid it)")
        elif tok and not _PLAIN.match(tok) and not _WHITESPACE.search(tok):
            if tok.startswith("$") and i == 0:
                res.warnings.append(f"{tok!r}: subjects starting with '$' are reserved for the system "
                                    "($SYS, $JS, $KV, ...)")
            else:
                res.warnings.append(f"token {tok!r} has characters beyond letters, digits, '-' and '_' "
                                    "(allowed, but harder to type, quote and match)")
    if text.startswith("_INBOX.") and not pattern:
        res.warnings.append("'_INBOX.' is the prefix clients use for reply subjects")
    return res


@dataclass
class Match:
    """Whether ``pattern`` matches ``subject``, with one line per token explaining why."""
    pattern: str
    subject: str
    matched: bool
    steps: list[str]

    def __bool__(self) -> bool:
        return self.matched

    def __str__(self) -> str:
        verdict = "MATCHES" if self.matched else "does NOT match"
        return "\n".join([f"{self.pattern!r} {verdict} {self.subject!r}"] + [f"  {s}" for s in self.steps])

    __repr__ = __str__


def match(pattern: str, subject: str) -> Match:
    """Compare token by token: ``*`` takes exactly one token, ``>`` one or more at the end."""
    p_ok, s_ok = check(pattern, pattern=True), check(subject)
    if not p_ok or not s_ok:
        why = [f"{c.kind} {c.text!r}: {c.problems[0]}" for c in (p_ok, s_ok) if not c.ok]
        return Match(pattern, subject, False, ["not compared: " + "; ".join(why)])
    pt, st = pattern.split("."), subject.split(".")
    steps: list[str] = []
    for i, p in enumerate(pt):
        if p == ">":
            rest = st[i:]
            if not rest:
                steps.append(f"token {i + 1}: '>' needs at least one more token, the subject has none left")
                return Match(pattern, subject, False, steps)
            steps.append(f"tokens {i + 1}..{len(st)}: '>' takes the remaining {len(rest)} token(s) "
                         f"{'.'.join(rest)!r}")
            return Match(pattern, subject, True, steps)
        if i >= len(st):
            steps.append(f"token {i + 1}: the pattern wants {p!r}, the subject has only {len(st)} token(s)")
            return Match(pattern, subject, False, steps)
        if p == "*":
            steps.append(f"token {i + 1}: '*' takes exactly one token, {st[i]!r}")
        elif p == st[i]:
            steps.append(f"token {i + 1}: {p!r} == {st[i]!r}")
        else:
            why = " (subjects are case-sensitive)" if p.lower() == st[i].lower() else ""
            steps.append(f"token {i + 1}: {p!r} != {st[i]!r}{why}")
            return Match(pattern, subject, False, steps)
    if len(st) > len(pt):
        steps.append(f"the subject has {len(st) - len(pt)} more token(s) ({'.'.join(st[len(pt):])!r}) and the "
                     "pattern has nothing left to take them (only a final '>' would)")
        return Match(pattern, subject, False, steps)
    steps.append("same number of tokens: every token accounted for")
    return Match(pattern, subject, True, steps)


def matches(pattern: str, subject: str) -> bool:
    return match(pattern, subject).matched


async def server_delivers(nc, pattern: str, subject: str, timeout: float = 5.0) -> bool:
    """Ask the server: subscribe to ``pattern``, publish one message to ``subject``, see if it arrives.

    No guessing with a sleep: after the test message the same connection publishes a marker
    on a subject of its own.  The server delivers one publisher's messages to one connection
    in order, so once the marker is here the test message is here too, or it never will be.
    """
    token = uuid.uuid4().hex
    marker_subject = f"_NATSLAB.marker.{token}"
    sub = await nc.subscribe(pattern)
    marker = await nc.subscribe(marker_subject)
    try:
        await nc.publish(subject, token.encode())
        await nc.publish(marker_subject, token.encode())
        await nc.flush(timeout=timeout)
        await marker.next_msg(timeout=timeout)
        while sub.pending_msgs:
            msg = await sub.next_msg(timeout=timeout)
            if msg.subject == subject and msg.data == token.encode():
                return True
        return False
    finally:
        await sub.unsubscribe()
        await marker.unsubscribe()


async def compare(nc, patterns, subject_list) -> str:
    """A table: for each pattern and subject, the rules' answer and the server's, side by side.

    ``✓`` / ``·`` is what the rules in ``match`` say; a ``!`` marks a cell where the server
    (a real subscription and a real message) disagreed with them.
    """
    width = max(len(p) for p in patterns) + 2
    cols = [max(len(s), 3) for s in subject_list]
    lines = [" " * width + "  ".join(s.ljust(c) for s, c in zip(subject_list, cols))]
    disagreements = 0
    for p in patterns:
        cells = []
        for s, c in zip(subject_list, cols):
            rule = matches(p, s)
            server = await server_delivers(nc, p, s)
            disagreements += rule != server
            cells.append((("✓" if rule else "·") + ("!" if rule != server else "")).ljust(c))
        lines.append(p.ljust(width) + "  ".join(cells))
    lines.append(f"(✓ match, · no match; the server was asked {len(patterns) * len(subject_list)} times and "
                 f"disagreed with the rules {disagreements} times)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ the widget
class SubjectMatcher:
    """Type a subject and a pattern; see the rule-by-rule answer and the server's answer.

    ``m = SubjectMatcher(nc); m`` shows the form.  ``await m.set("orders.eu.new", "orders.*.new")``
    changes both fields from code (as CI does) and returns the finished result text.
    """

    def __init__(self, nc, subject: str = "orders.eu.new", pattern: str = "orders.*.new"):
        import ipywidgets as w

        self.nc = nc
        self.loop = asyncio.get_event_loop()
        self.subject = w.Text(value=subject, description="subject", continuous_update=False)
        self.pattern = w.Text(value=pattern, description="pattern", continuous_update=False)
        self.output = w.HTML()
        self.box = w.VBox([w.HBox([self.subject, self.pattern]), self.output])
        self.result = ""
        self._task: asyncio.Task | None = None
        self.subject.observe(self._changed, names="value")
        self.pattern.observe(self._changed, names="value")
        self._changed()

    def _changed(self, _change=None) -> None:
        def schedule():
            if self._task is not None and not self._task.done():
                self._task.cancel()
            self._task = self.loop.create_task(self._evaluate(self.subject.value, self.pattern.value))
        self.loop.call_soon_threadsafe(schedule)

    async def _evaluate(self, subject: str, pattern: str) -> str:
        s_check, p_check = check(subject), check(pattern, pattern=True)
        rule = match(pattern, subject)
        lines = [str(p_check), str(s_check), "", "rules: " + str(rule)]
        if s_check.ok and p_check.ok:
            try:
                server = await server_delivers(self.nc, pattern, subject)
                agree = "agrees" if server == rule.matched else "DISAGREES"
                lines.append(f"server: a subscription on {pattern!r} {'received' if server else 'did not receive'} "
                             f"a message published to {subject!r} ({agree} with the rules)")
            except Exception as exc:  # a closed connection, a server that is gone
                lines.append(f"server: could not ask ({type(exc).__name__}: {exc})")
        else:
            lines.append("server: not asked, fix the invalid input first")
        self.result = "\n".join(lines)
        colour = "#1a7f37" if rule.matched else "#cf222e"
        self.output.value = (f"<pre style='border-left:4px solid {colour};padding-left:8px'>"
                             f"{html.escape(self.result)}</pre>")
        return self.result

    async def settled(self) -> str:
        """Wait for the latest evaluation (one started by typing or by ``set``) and return its text."""
        await asyncio.sleep(0)  # let a scheduled evaluation start
        while self._task is not None and not self._task.done():
            try:
                await asyncio.shield(self._task)
            except asyncio.CancelledError:
                await asyncio.sleep(0)
        return self.result

    async def set(self, subject: str | None = None, pattern: str | None = None) -> str:
        if subject is not None:
            self.subject.value = subject
        if pattern is not None:
            self.pattern.value = pattern
        return await self.settled()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.box)
