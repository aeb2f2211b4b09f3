"""Instructor console: start a topology, show its configs and state, break it on purpose.

    python -m natslab up server|cluster|supercluster|leaf [--size N] [--backend docker|local]
    python -m natslab progress [--reset MODULE|all]   where you stand (what natslab.progress() shows)
    python -m natslab class start NAME ... [--dir D]  workshop mode: a class cluster (see its own help)

Then type commands at the prompt (or pipe them in):

    status                 every server: running?, client URL, routes/gateways/leafs, JetStream role
    urls                   the client URLs to hand out to the room
    config NAME            the config text a server runs with
    kill|stop|start|restart|pause|resume|lame-duck|cut|heal NAME
    logs NAME [N]          the last N log lines (default 20)
    quit                   stop everything and exit (also Ctrl-D / Ctrl-C)
"""
from __future__ import annotations

import argparse
import shlex
import sys

from .runtime import session
from .errors import NatslabError

ACTIONS = {"kill": "kill", "stop": "stop", "start": "start", "restart": "restart", "pause": "pause",
           "resume": "resume", "lame-duck": "lame_duck", "cut": "cut", "heal": "heal"}


def start_topology(kind: str, size: int, backend: str | None):
    from .runtime import topology
    from .runtime.server import server

    if kind == "server":
        return [server("nats", backend=backend, leafnodes=True)]
    if kind == "cluster":
        return list(topology.cluster(size, backend=backend))
    if kind == "supercluster":
        return list(topology.supercluster(("east", "west"), size=size, backend=backend))
    if kind == "leaf":
        lt = topology.leafnode(backend=backend)
        return [lt.hub, lt.leaf]
    raise NatslabError(f"unknown topology {kind!r}", "use server, cluster, supercluster or leaf.")


def status_line(s) -> str:
    """One line per server from its own endpoints: peers by name, leaf links, JetStream role."""
    if not s.running:
        return f"{s.name:<12} DOWN      {s.url}"
    try:
        v = s.monitor("varz", timeout=1)
        peers = sorted({r.get("remote_name", "?") for r in s.monitor("routez", timeout=1).get("routes") or []})
        gws = sorted(s.monitor("gatewayz", timeout=1).get("outbound_gateways") or {})
        js = s.monitor("jsz", timeout=1)
    except Exception:
        return f"{s.name:<12} NO ANSWER {s.url}  (paused or hung)"
    meta = (js.get("meta_cluster") or {}).get("leader")
    role = "" if not js.get("config") else ("  META LEADER" if meta == s.name else f"  meta leader: {meta or 'none'}")
    return (f"{s.name:<12} up        {s.url}  clients={v.get('connections')} routes->{','.join(peers) or '-'}"
            f" gateways->{','.join(gws) or '-'} leafs={v.get('leafnodes')}{role}")


def run_console(servers, stdin=sys.stdin, out=sys.stdout) -> None:
    say = lambda text: print(text, file=out, flush=True)  # noqa: E731
    say(f"natslab console: {len(servers)} server(s) on the {servers[0].backend} backend. Type 'help'.")
    for s in servers:
        say(status_line(s))
    interactive = stdin.isatty()
    while True:
        if interactive:
            out.write("natslab> ")
            out.flush()
        line = stdin.readline()
        if not line:
            break
        words = shlex.split(line)
        if not words:
            continue
        cmd, args = words[0].lower(), words[1:]
        if cmd in ("quit", "exit"):
            break
        if cmd == "help":
            say(__doc__)
        elif not server_command(servers, cmd, args, say):
            say(f"unknown command {cmd!r}; type 'help'")


def server_command(servers, cmd: str, args: list[str], say) -> bool:
    """The console's server commands (status, urls, config, logs, kill ...); False if ``cmd`` is not one."""
    by_name = {s.name: s for s in servers}
    try:
        if cmd == "status":
            for s in servers:
                say(status_line(s))
        elif cmd == "urls":
            say(",".join(s.url for s in servers))
        elif cmd in ("config", "logs") or cmd in ACTIONS:
            if not args or args[0] not in by_name:
                say(f"name a server: {', '.join(by_name)}")
                return True
            s = by_name[args[0]]
            if cmd == "config":
                say(s.config_text)
            elif cmd == "logs":
                n = int(args[1]) if len(args) > 1 else 20
                say("\n".join(s.logs().splitlines()[-n:]))
            else:
                getattr(s, ACTIONS[cmd])()
                say(f"{cmd} {s.name}: done")
        else:
            return False
    except NatslabError as exc:
        say(f"! {exc}")
    return True


def show_progress(reset: str | None, out=sys.stdout) -> int:
    """Print the course progress (``natslab.progress()``'s text); with ``reset``, forget a module first."""
    from .grading.progress import progress, progress_path, reset_progress

    try:
        if reset is not None:
            removed = reset_progress(reset)
            which = "the whole course" if reset.strip().lower() == "all" else f"module {reset}"
            print(f"natslab: reset {which}: {removed} exercise entr{'y' if removed == 1 else 'ies'} removed "
                  f"from {progress_path()}", file=out)
        print(repr(progress()), file=out)
    except NatslabError as exc:
        print(f"natslab: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m natslab",
                                 description="Start and break NATS topologies; show your course progress.")
    sub = ap.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a topology and open the console")
    up.add_argument("topology", choices=["server", "cluster", "supercluster", "leaf"])
    up.add_argument("--size", type=int, default=3, help="servers per cluster (default 3)")
    up.add_argument("--backend", choices=["auto", "docker", "local"], default=None)
    prog = sub.add_parser("progress", help="where you stand across the course (what natslab.progress() shows)")
    prog.add_argument("--reset", metavar="MODULE", help='forget one module\'s progress first ("3"), or "all"')
    klass = sub.add_parser("class", help="workshop mode: start a class cluster with an account per learner")
    klass.add_argument("action", choices=["start"])
    klass.add_argument("learners", nargs="*", help="learners' names (more can be added in the console)")
    klass.add_argument("--name", default="class", help="the class's name (default: class)")
    klass.add_argument("--dir", help="where to write the learners' files (default: natslab's work dir)")
    klass.add_argument("--size", type=int, default=3, help="servers in the class cluster (default 3)")
    klass.add_argument("--backend", choices=["auto", "docker", "local"], default=None)
    args = ap.parse_args(argv)
    if args.command == "progress":
        return show_progress(args.reset)
    if args.command == "class":
        from .workshop.console import run_class

        return until_stopped(lambda: run_class(args.learners, name=args.name, directory=args.dir, size=args.size,
                                               backend=args.backend))
    return until_stopped(lambda: run_console(start_topology(args.topology, args.size, args.backend)))


def until_stopped(console) -> int:
    """Run a console until it ends (quit, Ctrl-D, Ctrl-C); every server stops; a course error is one line."""
    try:
        console()
    except NatslabError as exc:
        print(f"natslab: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        session.stop_all()
    return 0
