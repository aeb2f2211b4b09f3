"""The instructor's side of workshop mode: one secured class cluster, its accounts and files.

A class runs on a JetStream cluster (3 nodes by default) in operator (JWT) mode, with the
*full* account resolver, so accounts can be added and users revoked while the class runs.

Accounts and who can reach what:

- one account per learner.  Its imports are fixed by the instructor, who signs the account:
  ``class.verdict`` is a service import of the instructor's ``verdicts.<learner>``, so a verdict
  arrives under the learner's own name whatever its payload says; ``class.say`` posts to the
  class chat as ``chat.from.<learner>``; ``class.chat.<who>`` is the class feed.  The learner's
  user may publish on those two subjects and subscribe to the feed and its own inboxes, nothing else.
- ``INSTRUCTOR`` holds the ``VERDICTS`` stream and the ``CLASS_ROSTER`` key-value bucket that
  the dashboard is built from; they survive a restart of the instructor's notebook.
- ``CLASS`` is the shared space.  Messages that arrive in an account through a service import do
  not travel on through that account's stream exports (the server prevents such chains), so the
  class runs a small relay: it reads ``chat.from.*`` in CLASS and republishes each message as
  ``feed.<who>``, which every learner imports as ``class.chat.<who>``.
"""
from __future__ import annotations

import asyncio
import html
import json
import re
import time
from pathlib import Path
from typing import Any

from nats.js.api import KeyValueConfig, StorageType, StreamConfig

from ..errors import NatslabError
from ..lessons.failover import retry
from ..lessons.security.jwt import Operator, creds_text, push_account
from ..lessons.security.keys import write_secret
from ..runtime import session
from ..runtime.client import connect
from ..runtime.topology import cluster as start_cluster

# learner-side subjects (each learner account maps them to its own name)
VERDICT_SUBJECT = "class.verdict"
SAY_SUBJECT = "class.say"
FEED_SUBJECT = "class.chat"
# the instructor's side
VERDICTS_STREAM = "VERDICTS"
ROSTER_BUCKET = "CLASS_ROSTER"
RESERVED = {"instructor", "class", "sys", "relay"}
NAME_RULE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def check_name(name: str) -> str:
    """A learner's name becomes a subject token and a file name: lower case, no dots or spaces."""
    if not isinstance(name, str) or not NAME_RULE.match(name) or name in RESERVED:
        raise NatslabError(f"{name!r} cannot be a learner's name in the class.",
                           "use 1-32 lower-case letters, digits, '-' or '_', starting with a letter "
                           f"(and not one of {', '.join(sorted(RESERVED))}).")
    return name


class Classroom:
    """A running class: ``await Classroom.start(["alice", "bob"])``, then add, reset, revoke."""

    def __init__(self, name: str, directory: Path, topology, operator: Operator):
        self.name = name
        self.dir = directory
        self.topology = topology
        self.operator = operator
        self.instructor_account = operator.accounts["INSTRUCTOR"]
        self.class_account = operator.accounts["CLASS"]
        self.instructor = self.instructor_account.user("instructor")
        self.learners: dict[str, Any] = {}       # name -> (account, user)
        self._relay_nc = None
        self.id = f"class-{name}"

    # -- start and stop -----------------------------------------------------------------------
    @classmethod
    async def start(cls, learners=(), *, name: str = "class", directory: str | Path | None = None,
                    size: int = 3, backend: str | None = None) -> "Classroom":
        """Start the class cluster, its accounts, stream, roster and relay; write every learner's file."""
        names = [check_name(n) for n in learners]
        if len(set(names)) != len(names):
            raise NatslabError("A learner's name appears twice.", "give every learner a name of their own.")
        operator = Operator(name)
        instructor = operator.account("INSTRUCTOR", jetstream=True)
        shared = operator.account("CLASS")
        instructor.export_service("verdicts.*", "class verdicts")
        shared.export_service("chat.from.*", "class chat, in")
        shared.export_stream("feed.>", "class chat, out")
        instructor.import_service(shared, "chat.from.instructor", SAY_SUBJECT)
        instructor.import_stream(shared, "feed.>", f"{FEED_SUBJECT}.>")
        conf = operator.server_config("memory")
        # each server keeps its own copy of the account JWTs, in its own directory ("jwt" is
        # relative to the server's directory), and takes updates pushed on $SYS.REQ.CLAIMS.UPDATE
        conf["resolver"] = {"type": "full", "dir": "jwt", "allow_delete": False, "interval": "2m",
                            "timeout": "2s"}
        topology = start_cluster(size, name=name, config=conf, backend=backend, replace=False)
        where = Path(directory) if directory else session.workdir() / f"class-{name}"
        (where / "learners").mkdir(parents=True, exist_ok=True)
        room = cls(name, where, topology, operator)
        session.register(room)
        try:
            await room._set_up_storage(min(3, size))
            await room._start_relay()
            write_secret(where / "instructor.json", json.dumps(room._file_for("instructor", room.instructor), indent=2))
            for learner in names:
                await room.add(learner)
        except BaseException:
            room.close()
            raise
        return room

    async def _set_up_storage(self, replicas: int) -> None:
        nc = await self.connect_instructor()
        try:
            js = nc.jetstream(timeout=5)
            await retry(js.add_stream, StreamConfig(
                name=VERDICTS_STREAM, subjects=["verdicts.*"], num_replicas=replicas,
                storage=StorageType.FILE, duplicate_window=120.0,
                description="every verdict and hint request of the class, by learner"), timeout=60)
            await retry(js.create_key_value, KeyValueConfig(bucket=ROSTER_BUCKET, replicas=replicas, history=5),
                        timeout=60)
        finally:
            await nc.close()

    async def _start_relay(self) -> None:
        relay = self.class_account.user("relay")
        self._relay_nc = nc = await connect(self.topology, quiet=True, max_reconnect_attempts=-1,
                                            reconnect_time_wait=0.2, **relay.connect_options())

        async def forward(msg):
            who = msg.subject.rsplit(".", 1)[-1]
            await nc.publish(f"feed.{who}", msg.data)

        await nc.subscribe("chat.from.*", cb=forward)
        await nc.flush()

    def close(self) -> None:
        """Stop the relay and the class cluster (also done by ``natslab.stop_all()``)."""
        nc, self._relay_nc = self._relay_nc, None
        if nc is not None and not nc.is_closed:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                loop.create_task(nc.close())
        self.topology.close()
        session.unregister(self)

    async def stop(self) -> None:
        if self._relay_nc is not None and not self._relay_nc.is_closed:
            await self._relay_nc.close()
        self._relay_nc = None
        self.close()

    # -- people -------------------------------------------------------------------------------
    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.topology]

    def _file_for(self, who: str, user) -> dict:
        return {"class": self.name, "learner": who, "servers": self.urls,
                "creds": creds_text(user.jwt, user.key.seed)}

    def learner_file(self, name: str) -> Path:
        return self.dir / "learners" / f"{name}.json"

    async def add(self, name: str) -> Path:
        """A new learner: an account with the class imports, a user, a file to hand out."""
        check_name(name)
        if name in self.learners:
            raise NatslabError(f"{name} is already in the class.", "use reset or revoke for them.")
        account = self.operator.account(name)
        account.import_service(self.instructor_account, f"verdicts.{name}", VERDICT_SUBJECT)
        account.import_service(self.class_account, f"chat.from.{name}", SAY_SUBJECT)
        account.import_stream(self.class_account, "feed.>", f"{FEED_SUBJECT}.>")
        user = account.user(name, pub=[VERDICT_SUBJECT, SAY_SUBJECT], sub=["_INBOX.>", f"{FEED_SUBJECT}.>"])
        await push_account(self.topology, account)
        self.learners[name] = (account, user)
        path = write_secret(self.learner_file(name), json.dumps(self._file_for(name, user), indent=2))
        await self._roster(name, "active")
        self.write_sheet()
        return path

    async def revoke(self, name: str) -> None:
        """Revoke the learner's credentials: the servers disconnect them and refuse them from now on."""
        account, user = self._learner(name)
        account.revoke(user)
        await push_account(self.topology, account)
        await self._roster(name, "revoked")

    async def reset(self, name: str) -> int:
        """Forget the learner's verdicts (a fresh start on the dashboard); returns how many went."""
        self._learner(name)
        nc = await self.connect_instructor()
        try:
            js = nc.jetstream(timeout=5)
            before = (await js.stream_info(VERDICTS_STREAM, subjects_filter=f"verdicts.{name}")).state
            await js.purge_stream(VERDICTS_STREAM, subject=f"verdicts.{name}")
        finally:
            await nc.close()
        await self._roster(name, "active", reset=True)
        return int(before.messages or 0)

    async def say(self, text: str) -> None:
        """Post to the class chat as the instructor (every learner's ``class.chat.instructor``)."""
        nc = await self.connect_instructor()
        try:
            await nc.publish(SAY_SUBJECT, text.encode())
            await nc.flush()
        finally:
            await nc.close()

    def _learner(self, name: str):
        if name not in self.learners:
            raise NatslabError(f"There is no learner {name!r} in this class.",
                               f"the class has: {', '.join(sorted(self.learners)) or 'nobody yet'}.")
        return self.learners[name]

    async def _roster(self, name: str, status: str, reset: bool = False) -> None:
        nc = await self.connect_instructor()
        try:
            kv = await nc.jetstream(timeout=5).key_value(ROSTER_BUCKET)
            entry = {"name": name, "status": status, "changed_at": time.time()}
            if reset:
                entry["reset_at"] = entry["changed_at"]
            await kv.put(name, json.dumps(entry).encode())
        finally:
            await nc.close()

    async def board(self):
        """The class grid as it stands now (``board.text()``), read from the class's stream and roster."""
        from .board import read_board

        nc = await self.connect_instructor()
        try:   # the class's JetStream may be electing a leader (a node just went down): ask again
            return await retry(read_board, nc, timeout=60, per_try=20)
        finally:
            await nc.close()

    async def connect_instructor(self, **options):
        return await connect(self.topology, quiet=True, **self.instructor.connect_options(), **options)

    # -- what the instructor hands out ---------------------------------------------------------
    def write_sheet(self) -> Path:
        """A printable page: how to join, and each learner's file."""
        rows = "\n".join(
            f"<tr><td>{html.escape(n)}</td><td><code>{html.escape(str(self.learner_file(n)))}</code></td></tr>"
            for n in sorted(self.learners))
        page = f"""<!doctype html><meta charset="utf-8"><title>natslab class {html.escape(self.name)}</title>
<h1>natslab class {html.escape(self.name)}</h1>
<p>Servers: <code>{html.escape(", ".join(self.urls))}</code></p>
<p>To join: copy your file next to the course, then either start JupyterLab with
<code>NATSLAB_CLASS=/path/to/you.json ./course open</code>, or run
<code>await natslab.join("/path/to/you.json")</code> in any notebook. Your checks then report to the class.</p>
<table border="1" cellpadding="4"><tr><th>learner</th><th>file</th></tr>
{rows}
</table>
"""
        path = self.dir / "sheet.html"
        path.write_text(page)
        return path

    def __repr__(self) -> str:
        return f"<Classroom {self.name}: {len(self.learners)} learner(s) on {', '.join(self.urls)}; files in {self.dir}>"
