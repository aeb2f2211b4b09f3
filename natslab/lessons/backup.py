"""Views for lesson 08.3 (backup and restore): what a stream or consumer looked like, side by side.

The backup technique itself (snapshot request, chunks and acks, restore) is written out in the
notebook with nats-py; this module only lays out what the notebook measured.
"""
from __future__ import annotations

from typing import Mapping

from .streams import table


def stream_facts(info, digest: str | None = None) -> dict:
    """What must survive a backup of a stream: counts, sequence range, gaps (and a content digest)."""
    st = info.state
    out = {"messages": st.messages, "bytes": st.bytes, "first_seq": st.first_seq, "last_seq": st.last_seq,
           "num_deleted": st.num_deleted or 0, "consumers": st.consumer_count}
    if digest is not None:
        out["content sha256"] = digest[:16] + "..."
    return out


def consumer_facts(info) -> dict:
    """A consumer's position: what it delivered, what is acknowledged, what is left."""
    return {"delivered stream_seq": info.delivered.stream_seq, "delivered consumer_seq": info.delivered.consumer_seq,
            "ack_floor stream_seq": info.ack_floor.stream_seq, "ack_floor consumer_seq": info.ack_floor.consumer_seq,
            "num_ack_pending": info.num_ack_pending, "num_pending": info.num_pending,
            "num_redelivered": info.num_redelivered}


def compare(left_label: str, left: Mapping, right_label: str, right: Mapping) -> bool:
    """Print one row per fact with both sides and whether they agree; True when all agree."""
    keys = list(dict.fromkeys([*left, *right]))
    rows = []
    for k in keys:
        a, b = left.get(k, "(absent)"), right.get(k, "(absent)")
        rows.append({"": k, left_label: a, right_label: b, "same": "yes" if a == b else "NO"})
    table(rows)
    return all(r["same"] == "yes" for r in rows)


__all__ = ["stream_facts", "consumer_facts", "compare"]
