"""The instructor's class console: ``python -m natslab class start alice bob --dir ./class``.

Commands at the prompt (or piped in):

    learners               who is in the class, and whether they are active or revoked
    add NAME               a new learner: account, credentials, file to hand out
    revoke NAME            disconnect NAME and refuse their credentials from now on
    reset NAME             clear NAME's verdicts from the dashboard (a fresh start)
    say TEXT               post to the class chat as the instructor
    board                  the class grid: learners by exercise
    status | urls | kill|stop|start|restart|pause|resume|lame-duck|cut|heal NODE | logs NODE
                           the class cluster, as in `python -m natslab up`
    quit                   stop the class (every server) and exit (also Ctrl-D / Ctrl-C)

The class runs while this console does: its asyncio loop serves the chat relay between commands.
"""
from __future__ import annotations

import asyncio
import shlex
import sys

from ..cli import server_command, status_line
from ..errors import NatslabError
from .classroom import Classroom


async def _console(room: Classroom, stdin, out) -> None:
    say = lambda text: print(text, file=out, flush=True)  # noqa: E731
    loop = asyncio.get_running_loop()
    servers = list(room.topology)
    say(f"natslab class {room.name!r}: {len(servers)} server(s) on the {servers[0].backend} backend.")
    for s in servers:
        say(status_line(s))
    say(f"learners' files: {room.dir / 'learners'}   printable sheet: {room.dir / 'sheet.html'}")
    say(f"instructor's file (for the dashboard): {room.dir / 'instructor.json'}   Type 'help'.")
    interactive = stdin.isatty()
    while True:
        if interactive:
            out.write("class> ")
            out.flush()
        line = await loop.run_in_executor(None, stdin.readline)   # the relay keeps running meanwhile
        if not line:
            break
        words = shlex.split(line)
        if not words:
            continue
        cmd, args = words[0].lower(), words[1:]
        try:
            if cmd in ("quit", "exit"):
                break
            elif cmd == "help":
                say(__doc__)
            elif cmd == "learners":
                board = await room.board()
                for name in sorted(board.roster):
                    say(f"{name}  {board.roster[name].get('status', 'active')}")
            elif cmd in ("add", "revoke", "reset") and len(args) != 1:
                say(f"usage: {cmd} NAME")
            elif cmd == "add":
                say(f"added {args[0]}: hand out {await room.add(args[0])}")
            elif cmd == "revoke":
                await room.revoke(args[0])
                say(f"revoked {args[0]}: disconnected, and refused from now on")
            elif cmd == "reset":
                say(f"reset {args[0]}: {await room.reset(args[0])} verdict(s) cleared")
            elif cmd == "say":
                await room.say(" ".join(args))
                say("said.")
            elif cmd == "board":
                say((await room.board()).text())
            elif not server_command(servers, cmd, args, say):
                say(f"unknown command {cmd!r}; type 'help'")
        except NatslabError as exc:
            say(f"! {exc}")


def run_class(learners, *, name: str = "class", directory=None, size: int = 3, backend=None,
              stdin=sys.stdin, out=sys.stdout) -> None:
    """Start the class and run its console until quit; the class stops with it."""
    async def main() -> None:
        room = await Classroom.start(learners, name=name, directory=directory, size=size, backend=backend)
        try:
            await _console(room, stdin, out)
        finally:
            await room.stop()

    asyncio.run(main())
