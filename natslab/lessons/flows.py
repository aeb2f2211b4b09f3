"""Message-flow diagrams drawn from what a RUNNING system really uses (lesson 07.2).

Nothing here is declared by hand: the diagram comes from the server's own view and from traffic
actually observed.

- ``/connz?subs=detail``: every connection by the name it gave (``nats.connect(name=...)``), its
  subscriptions (subject, queue group, messages delivered to each) and its message counts;
- ``/subsz?subs=1``: every subscription in the account (the same list seen per subject, with the
  server's fan-out figures), including the ones no client owns;
- ``/jsz?streams=1&consumers=1``: the streams and the subjects they capture (a stream is a subscriber
  too), their consumers, and (through a push consumer's deliver subject) the connection each feeds;
- a ``Tap``: one wildcard subscription that counts the messages per subject while traffic runs,
  and keeps each message's reply subject.  A request (``nc.request``) and a JetStream publish
  (``js.publish`` waits for the stream's ack) both carry a reply inbox, and the server's view says
  which connection subscribes to that inbox: that connection is the publisher.  A plain
  ``nc.publish`` carries no reply subject, so nobody downstream can tell who sent it: the diagram
  says "publisher not visible" instead of guessing.

``flow = flows.observe(srv, tap)`` builds the ``Flow``; ``flow.table()`` prints it as text,
``flow.mermaid()`` returns a Mermaid flowchart (JupyterLab draws it when displayed: ``flow`` as a
cell's last line), ``flow.answering(subject)`` lists who would receive a subject, from the server's
view alone.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from ..errors import NatslabError
from .subjects import matches

TAP_NAME = "natslab-flow-tap"
_HIDDEN = ("_INBOX.", "$JS.", "$SRV.", "$SYS.", "$KV.", "$O.", "_R_.")


def _hidden(subject: str) -> bool:
    return subject.startswith(_HIDDEN)


@dataclass
class Sub:
    """One subscription as the server reports it."""
    owner: str                # connection name (or "stream NAME", or "cid N" for an unnamed connection)
    subject: str
    queue: str | None
    delivered: int            # messages the server delivered to this subscription


@dataclass
class Consumer:
    """A JetStream consumer as the server reports it, with the connection its messages go to."""
    stream: str
    name: str
    filters: list[str]
    owner: str | None         # the connection subscribed to its deliver subject (push), None for pull
    delivered: int            # messages delivered so far (consumer sequence)
    pending: int              # messages in the stream it has not delivered yet


@dataclass
class Edge:
    publisher: str | None     # connection name, None when the messages carried no reply subject
    subject: str              # as seen, or with id tokens shown as * (``observe(..., ids=...)``)
    kind: str                 # "request" (a caller waits for a reply), "js publish" (a stream acks), "publish"
    count: int
    example: str = ""         # one concrete subject seen (what receivers are matched against)
    subjects: int = 1         # how many distinct concrete subjects this edge stands for

    def __post_init__(self):
        self.example = self.example or self.subject


@dataclass
class Flow:
    edges: list[Edge]
    subs: list[Sub]
    connections: dict[str, dict] = field(default_factory=dict)  # name -> {"cid", "in_msgs", "out_msgs"}
    subsz: dict = field(default_factory=dict)
    consumers: list[Consumer] = field(default_factory=list)

    def receivers(self, subject: str) -> list[Sub]:
        """The subscriptions (connections and streams) the server matches ``subject`` to."""
        return [s for s in self.subs if matches(s.subject, subject)]

    def answering(self, subject: str) -> list[Sub]:
        """Who receives a message on ``subject``: the server's subscriptions matching it (no inboxes)."""
        return [s for s in self.receivers(subject) if not _hidden(s.subject)]

    def table(self) -> str:
        lines = [f"{'publisher':<22} {'subject':<36} {'kind':<10} {'msgs':>5}  ->  receivers [queue group] (delivered)"]
        for e in sorted(self.edges, key=lambda e: e.subject):
            recv = ", ".join(f"{s.owner}" + (f" [{s.queue}]" if s.queue else "") + f" ({s.delivered})"
                             for s in self.receivers(e.example)) or "nobody (no subscription matched)"
            who = e.publisher or "? (no reply subject)"
            shown = e.subject + (f" ({e.subjects} ids)" if e.subjects > 1 else "")
            lines.append(f"{who:<22} {shown:<36} {e.kind:<10} {e.count:>5}  ->  {recv}")
        if self.consumers:
            lines.append("")
            lines.append(f"{'stream':<22} {'consumer':<14} {'filter':<24} {'delivered':>9} {'pending':>7}  ->  connection")
            for c in sorted(self.consumers, key=lambda c: (c.stream, c.name)):
                lines.append(f"{c.stream:<22} {c.name:<14} {','.join(c.filters) or '(all)':<24} {c.delivered:>9} "
                             f"{c.pending:>7}  ->  {c.owner or '(pull: whoever fetches)'}")
        return "\n".join(lines)

    def mermaid(self) -> str:
        """A Mermaid flowchart: boxes are connections, rounded boxes subjects, cylinders streams."""
        ids: dict[str, str] = {}
        decl: list[str] = []

        def node(label: str, shape: str) -> str:
            if label not in ids:
                ids[label] = f"n{len(ids)}"
                text = label.replace('"', "'")
                decl.append("  " + {"conn": f'{ids[label]}["{text}"]', "subject": f'{ids[label]}(["{text}"])',
                                    "stream": f'{ids[label]}[("{text}")]',
                                    "unknown": f'{ids[label]}{{{{"{text}"}}}}'}[shape])
            return ids[label]

        edges = []
        for e in sorted(self.edges, key=lambda e: e.subject):
            pub = node(e.publisher, "conn") if e.publisher else node("publisher not visible", "unknown")
            subj = node(e.subject, "subject")
            edges.append(f'  {pub} -->|"{e.kind} x{e.count}"| {subj}')
            for s in self.receivers(e.example):
                target = node(s.owner, "stream" if s.owner.startswith("stream ") else "conn")
                edges.append(f'  {subj} -->|"{(s.queue + " q: ") if s.queue else ""}{s.subject}"| {target}')
        for c in sorted(self.consumers, key=lambda c: (c.stream, c.name)):
            if c.owner:
                edges.append(f"  {node('stream ' + c.stream, 'stream')} -->|\"consumer {c.name}: "
                             f"{','.join(c.filters) or 'all'}\"| {node(c.owner, 'conn')}")
        return "\n".join(["flowchart LR", *decl, *dict.fromkeys(edges)])

    def _repr_markdown_(self) -> str:
        return "```mermaid\n" + self.mermaid() + "\n```"

    def __str__(self) -> str:
        return self.table()

    __repr__ = __str__


class Tap:
    """One wildcard subscription counting the messages per (subject, publisher inbox) while traffic runs.

    ``tap = await Tap.start(srv)`` opens its own connection (named ``natslab-flow-tap``, left out of
    the diagram); ``await tap.stop()`` closes it.  Subjects under ``_INBOX``, ``$JS``, ``$SRV``,
    ``$SYS`` (replies and API calls) are not counted.
    """

    def __init__(self, nc, subject: str):
        self.nc, self.subject = nc, subject
        self.seen: Counter = Counter()  # (subject, inbox prefix or None, has reply) -> count
        self.sub = None

    @classmethod
    async def start(cls, target, subject: str = ">"):
        from ..runtime.client import connect

        nc = await connect(target, name=TAP_NAME, quiet=True)
        tap = cls(nc, subject)
        tap.sub = await nc.subscribe(subject, cb=tap._on_msg)
        await nc.flush()  # natslab.connect's flush: the server has the subscription when this returns
        return tap

    async def _on_msg(self, msg) -> None:
        if _hidden(msg.subject) or (msg.reply or "").startswith("$JS.ACK."):
            return  # replies, API calls, and a consumer's deliveries (already counted by the consumer)
        self.seen[(msg.subject, msg.reply or None)] += 1

    async def stop(self) -> None:
        if not self.nc.is_closed:
            await self.nc.drain()

    def counts(self) -> Counter:
        out = Counter()
        for (subject, _), n in self.seen.items():
            out[subject] += n
        return out


def server_view(srv) -> tuple[list[Sub], dict[str, dict], dict[int, str], dict, list[Consumer]]:
    """(subscriptions, connections by name, cid -> name, the /subsz summary, consumers) from the server."""
    connz = srv.monitor("connz", subs="detail", limit=4096)
    names: dict[int, str] = {}
    conns: dict[str, dict] = {}
    subs: list[Sub] = []
    for c in connz.get("connections", []):
        name = c.get("name") or f"cid {c['cid']}"
        names[c["cid"]] = name
        if name == TAP_NAME:
            continue
        conns[name] = {"cid": c["cid"], "in_msgs": c.get("in_msgs", 0), "out_msgs": c.get("out_msgs", 0)}
        for s in c.get("subscriptions_list_detail") or []:
            subs.append(Sub(name, s["subject"], s.get("qgroup"), s.get("msgs", 0)))
    subsz = srv.monitor("subsz", subs=1, limit=4096)
    try:
        jsz = srv.monitor("jsz", streams=1, consumers=1, config=1)
    except Exception:  # JetStream off: no streams
        jsz = {}
    consumers: list[Consumer] = []
    deliver_owner = {s.subject: s.owner for s in subs}
    for acc in jsz.get("account_details") or []:
        for st in acc.get("stream_detail") or []:
            cfg = st.get("config") or {}
            for subj in cfg.get("subjects") or []:
                subs.append(Sub(f"stream {st['name']}", subj, None, st.get("state", {}).get("messages", 0)))
            for c in st.get("consumer_detail") or []:
                ccfg = c.get("config") or {}
                filters = list(ccfg.get("filter_subjects") or ([ccfg["filter_subject"]] if ccfg.get("filter_subject") else []))
                consumers.append(Consumer(st["name"], c["name"], filters, deliver_owner.get(ccfg.get("deliver_subject")),
                                          (c.get("delivered") or {}).get("consumer_seq", 0), c.get("num_pending", 0)))
    summary = {k: subsz.get(k) for k in ("num_subscriptions", "num_matches", "max_fanout", "avg_fanout")}
    return subs, conns, names, summary, consumers


def _inbox_owner(reply: str, subs: list[Sub]) -> str | None:
    """The connection whose inbox subscription (``_INBOX.<id>.*``) matches ``reply``."""
    for s in subs:
        if s.subject.startswith("_INBOX.") and matches(s.subject, reply):
            return s.owner
    return None


def _shape(subject: str, ids) -> str:
    if ids is None:
        return subject
    return ".".join("*" if ids.search(tok) else tok for tok in subject.split("."))


def observe(srv, tap: Tap, *, ids: str | None = r"\d") -> Flow:
    """The flow of the traffic ``tap`` saw, with publishers and receivers from ``srv``'s own view.

    Tokens matching the regular expression ``ids`` (default: any token with a digit, such as
    ``o-42``) are shown as ``*``, so five orders make one edge, not five; ``ids=None`` keeps every
    subject as seen.  Call it while the services still run (their connections and inboxes are what
    the server shows).
    """
    if not isinstance(tap, Tap):
        raise NatslabError(f"observe() needs the Tap that watched the traffic, got {tap!r}.",
                           "tap = await flows.Tap.start(srv) before the traffic, then flows.observe(srv, tap).")
    pattern = re.compile(ids) if ids else None
    subs, conns, _, summary, consumers = server_view(srv)
    visible = [s for s in subs if not _hidden(s.subject)]
    grouped: Counter = Counter()
    examples: dict[tuple, set] = defaultdict(set)
    for (subject, reply), n in tap.seen.items():
        if reply is None:
            key = (None, _shape(subject, pattern), "publish")
        else:
            owner = _inbox_owner(reply, subs)
            # nats-py's js.publish is a request to the stream: the reply inbox is the publisher's.
            stream_captures = any(s.owner.startswith("stream ") and matches(s.subject, subject) for s in subs)
            kind = "js publish" if stream_captures else "request"
            key = (owner or f"? (inbox {re.sub(r'[.][^.]*$', '.*', reply)})", _shape(subject, pattern), kind)
        grouped[key] += n
        examples[key].add(subject)
    edges = [Edge(pub, subject, kind, n, min(examples[(pub, subject, kind)]), len(examples[(pub, subject, kind)]))
             for (pub, subject, kind), n in grouped.items()]
    return Flow(edges, visible, conns, summary, consumers)
