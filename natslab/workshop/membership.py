"""The learner's side of workshop mode: join a class, and every check reports to it.

``await natslab.join("alice.json")`` (the file the instructor handed out), or start JupyterLab
with ``NATSLAB_CLASS=/path/to/alice.json``: the first check then joins by itself.  Lessons and
checks keep starting their own servers; joining only adds a connection to the class cluster,
over which each verdict and hint request is sent to the instructor's ``VERDICTS`` stream and
acknowledged by it (resent with the same ``Nats-Msg-Id`` until it is, so a class node going
down loses nothing and stores nothing twice).
"""
from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path

from ..errors import NatslabError
from ..grading import progress
from ..lessons.security.keys import write_secret
from ..runtime import session
from ..runtime.client import ConnectFailed, connect
from .classroom import FEED_SUBJECT, SAY_SUBJECT, VERDICT_SUBJECT

ENV = "NATSLAB_CLASS"
SEND_PATIENCE = 30.0   # seconds a verdict is retried for (a class node failing over takes a few)

_current: "Membership | None" = None


def read_class_file(source) -> dict:
    """The class file's contents (a path or an already-read dict), with a clear error when it is not one."""
    if isinstance(source, dict):
        data = source
    else:
        path = Path(source).expanduser()
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise NatslabError(f"Cannot read the class file {path}: {exc.strerror or exc}.",
                               "check the path of the file your instructor gave you.") from None
        except ValueError:
            raise NatslabError(f"{path} is not a class file (it is not JSON).",
                               "use the .json file your instructor gave you, not the .creds or the sheet.") from None
    missing = [k for k in ("class", "learner", "servers", "creds") if not data.get(k)]
    if missing:
        raise NatslabError(f"The class file lacks {', '.join(missing)}.",
                           "ask your instructor for your file again.")
    return data


def creds_file(data: dict) -> Path:
    """The class file's credentials as a private creds file in natslab's work dir (gone with the session)."""
    return write_secret(session.workdir() / f"class-{data['learner']}-{uuid.uuid4().hex[:6]}.creds", data["creds"])


class Membership:
    """A learner's connection to the class: verdicts out, the class chat in."""

    def __init__(self, data: dict):
        self.class_name = data["class"]
        self.learner = data["learner"]
        self.servers = list(data["servers"])
        self.creds = creds_file(data)
        self.nc = None
        self._pending: set[asyncio.Task] = set()
        self._queued: list[dict] = []      # events recorded with no event loop to send them on

    async def open(self) -> "Membership":
        try:
            self.nc = await connect(servers=self.servers, quiet=True, max_reconnect_attempts=-1,
                                    reconnect_time_wait=0.2, user_credentials=str(self.creds),
                                    name=f"natslab-class-{self.learner}")
        except ConnectFailed as exc:
            raise NatslabError(
                f"The class server did not let {self.learner} in: {exc}",
                "your credentials may be revoked, expired or from another class: ask your instructor "
                "for a new file. If the class has ended, leave it with natslab.leave().") from None
        return self

    # -- verdicts ---------------------------------------------------------------------------
    def listener(self, event: dict) -> None:
        """progress.on_record callback: send now if an event loop runs, else queue for the next send."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._queued.append(event)
            return
        task = loop.create_task(self.send(event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def send(self, event: dict) -> dict:
        """One event to the class stream, resent until acknowledged (for at most SEND_PATIENCE s)."""
        queued, self._queued = self._queued, []
        for old in queued:
            await self.send(old)
        event = {**event, "learner": self.learner, "at": time.time()}
        msg_id = (f"{self.learner}:{event['exercise']}:{event['event']}:{event['attempts']}:"
                  f"{event['hints']}:{event.get('passed')}")
        data = json.dumps(event).encode()
        deadline, delay = time.monotonic() + SEND_PATIENCE, 0.1
        while True:
            try:
                reply = await self.nc.request(VERDICT_SUBJECT, data, timeout=2, headers={"Nats-Msg-Id": msg_id})
                ack = json.loads(reply.data or b"{}")
                if "error" not in ack:
                    return ack
                problem = ack["error"].get("description", "refused")
            except Exception as exc:   # no responders while a leader is elected, a timeout, reconnecting
                problem = f"{type(exc).__name__}: {exc}"
            if time.monotonic() + delay > deadline or self.nc.is_closed:
                print(f"natslab: the class did not take your {event['event']} for {event['exercise']} "
                      f"({problem}); it is kept in your own progress.")
                return {"error": problem}
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def flush(self, timeout: float = SEND_PATIENCE + 5) -> None:
        """Wait until every event recorded so far has been sent (or given up on)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout)

    async def catch_up(self) -> int:
        """Send the latest state of every exercise in the local progress file (e.g. after joining late)."""
        sent = 0
        for ex_id, entry in sorted(progress.load_progress().items()):
            if not isinstance(entry, dict) or not entry.get("attempts"):
                continue
            await self.send({"event": "verdict", "exercise": ex_id, "title": entry.get("title", ""),
                             "passed": bool(entry.get("passed_at")), "ever_passed": bool(entry.get("passed_at")),
                             "attempts": int(entry.get("attempts", 0)), "hints": int(entry.get("hints", 0))})
            sent += 1
        return sent

    # -- the class chat ------------------------------------------------------------------------
    async def say(self, text: str) -> None:
        """Post to the class chat; everyone sees it on ``class.chat.<your name>``."""
        await self.nc.publish(SAY_SUBJECT, str(text).encode())
        await self.nc.flush()

    async def listen(self, cb):
        """Subscribe to the class chat: ``cb(who, text)`` for each message (returns the subscription)."""
        async def handler(msg):
            result = cb(msg.subject.rsplit(".", 1)[-1], msg.data.decode(errors="replace"))
            if asyncio.iscoroutine(result):
                await result
        return await self.nc.subscribe(f"{FEED_SUBJECT}.*", cb=handler)

    async def close(self) -> None:
        """Send what is pending, stop reporting, drain the connection.  Never raises: a membership
        left from an event loop that has ended (a re-run notebook, a script) just goes."""
        progress.off_record(self.listener)
        try:
            await self.flush()
            if self.nc is not None and not self.nc.is_closed:
                await self.nc.drain()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "connected" if self.nc is not None and self.nc.is_connected else "not connected"
        return f"<class {self.class_name}: {self.learner}, {state} to {', '.join(self.servers)}>"


async def join(source=None, *, catch_up: bool = True) -> Membership:
    """Join a class with the file the instructor handed out (or ``$NATSLAB_CLASS``).

    From then on each check's verdict and each hint request is reported to the class."""
    global _current
    source = source if source is not None else os.environ.get(ENV)
    if not source:
        raise NatslabError("No class file given.",
                           f'pass the file your instructor gave you: await natslab.join("you.json"), '
                           f"or set {ENV} to its path before starting JupyterLab.")
    member = await Membership(read_class_file(source)).open()
    if _current is not None:
        await _current.close()
    _current = member
    progress.on_record(member.listener)
    if catch_up:
        await member.catch_up()
    return member


async def leave() -> None:
    """Stop reporting to the class."""
    global _current
    if _current is not None:
        await _current.close()
    _current = None


def current() -> Membership | None:
    return _current


async def flush() -> None:
    """Wait until joining (with ``$NATSLAB_CLASS``) and every report so far are done (scripts and tests)."""
    if _startup:
        await asyncio.wait(set(_startup))
    if _current is not None:
        await _current.flush()


def join_from_environment() -> None:
    """With ``$NATSLAB_CLASS`` set, join at the first check (called on import; never raises)."""
    if not os.environ.get(ENV):
        return

    def first(event: dict) -> None:
        progress.off_record(first)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return

        async def go():
            try:
                member = await join(catch_up=True)   # catch_up sends this event too
            except NatslabError as exc:
                print(f"natslab: not reporting to the class: {exc}")
                return
            await member.flush()

        task = loop.create_task(go())
        _startup.add(task)
        task.add_done_callback(_startup.discard)

    progress.on_record(first)


_startup: set = set()
