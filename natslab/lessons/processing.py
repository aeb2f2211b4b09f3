"""Views for the stream-processing and resilience lessons (07.7, 07.8): they draw and measure only.

The patterns themselves (windows, joins, breakers, retries, bulkheads) are written out in nats-py
calls in the notebooks; these functions only show what those notebooks recorded.

- ``plot_windows(events, size, ...)``: event time against arrival order, window boundaries, the
  watermark as it moved, late events marked.
- ``plot_breaker(calls)``: each call's latency and outcome, over the breaker's state.
- ``plot_arrivals({"label": [t, ...]}, bucket=)``: how many requests reached a service per time
  bucket (a thundering herd shows as spikes).
- ``latency_summary(seconds)``: count, p50, p95 and max in milliseconds.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank quantile (no interpolation): a value that was really measured."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_summary(seconds: Iterable[float]) -> dict:
    """``{"n", "p50_ms", "p95_ms", "max_ms"}`` of latencies given in seconds (nearest rank)."""
    values = sorted(float(s) for s in seconds)
    if any(v < 0 for v in values):
        raise ValueError("latencies cannot be negative")
    ms = lambda v: round(v * 1000, 1)  # noqa: E731
    return {"n": len(values), "p50_ms": ms(_quantile(values, 0.50)), "p95_ms": ms(_quantile(values, 0.95)),
            "max_ms": ms(values[-1]) if values else math.nan}


def plot_windows(events: Sequence[Mapping], size: float, *, slide: float | None = None,
                 watermarks: Sequence[float] | None = None, late: Iterable = (), key: str = "id",
                 time_key: str = "ts", origin: float = 0.0, title: str = ""):
    """Event time (x) against arrival order (y).

    ``events`` are dicts in the order the processor saw them, each with its event time under
    ``time_key``; ``watermarks[i]`` is the watermark after event ``i``; events whose ``key`` is in
    ``late`` are drawn as red crosses.  Grey lines are tumbling window boundaries every ``size``
    seconds (with ``slide``, the starts of the sliding windows).  ``origin`` is subtracted from
    every time so that the axis reads in seconds from the start.
    """
    import matplotlib.pyplot as plt

    if size <= 0 or (slide is not None and slide <= 0):
        raise ValueError("window size and slide must be positive")
    late = set(late)
    xs = [float(e[time_key]) - origin for e in events]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    on_time = [(x, i) for i, (x, e) in enumerate(zip(xs, events)) if e.get(key) not in late]
    too_late = [(x, i) for i, (x, e) in enumerate(zip(xs, events)) if e.get(key) in late]
    if on_time:
        ax.scatter(*zip(*on_time), s=12, label="event (on time)")
    if too_late:
        ax.scatter(*zip(*too_late), s=60, marker="x", color="red", label="late: its window had closed")
    if watermarks:
        ax.step([w - origin for w in watermarks], range(len(watermarks)), where="post", color="orange",
                label="watermark")
    if xs:
        step = slide or size
        start = math.floor(min(xs) / step) * step
        while start <= max(xs) + step:
            ax.axvline(start, color="grey", linewidth=0.5, alpha=0.6)
            start += step
    ax.set_xlabel("event time (s)")
    ax.set_ylabel("arrival order")
    ax.set_title(title or f"windows of {size:g} s" + (f", sliding every {slide:g} s" if slide else ""))
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


_STATE_COLOURS = {"closed": "#d8f0d8", "open": "#f6d0d0", "half_open": "#fbe8b8"}
_OUTCOME_COLOURS = {"ok": "green", "timeout": "red", "error": "red", "fast_fail": "grey"}


def plot_breaker(calls: Sequence[Mapping], *, title: str = "circuit breaker"):
    """One point per call: ``t`` (seconds) against ``latency`` (seconds), coloured by ``outcome``
    (ok / timeout / error / fast_fail), over bands of the breaker's ``state`` when it was called."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2))
    for i, c in enumerate(calls):
        end = calls[i + 1]["t"] if i + 1 < len(calls) else c["t"] + c["latency"]
        ax.axvspan(c["t"], end, color=_STATE_COLOURS.get(c["state"], "white"), linewidth=0)
    for outcome, colour in _OUTCOME_COLOURS.items():
        pts = [(c["t"], c["latency"] * 1000) for c in calls if c["outcome"] == outcome]
        if pts:
            ax.scatter(*zip(*pts), s=16, color=colour, label=outcome, zorder=3)
    for state, colour in _STATE_COLOURS.items():
        ax.bar(0, 0, color=colour, label=f"state: {state}")
    top = max((c["latency"] * 1000 for c in calls), default=1.0)
    ax.set_ylim(-0.05 * top, 1.6 * top)      # room above the points for the legend
    ax.set_xlabel("seconds")
    ax.set_ylabel("call latency (ms)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    return fig


def plot_arrivals(runs: Mapping[str, Sequence[float]], *, bucket: float = 0.05, title: str = ""):
    """Requests that reached a service per ``bucket`` seconds, one panel per run (times in seconds
    from the run's start)."""
    import matplotlib.pyplot as plt

    if bucket <= 0:
        raise ValueError("bucket must be positive")
    fig, axes = plt.subplots(len(runs), 1, figsize=(8, 1.9 * len(runs)), sharex=True, squeeze=False)
    end = max((max(ts) for ts in runs.values() if ts), default=bucket)
    edges = [i * bucket for i in range(int(end / bucket) + 2)]
    for ax, (label, ts) in zip(axes[:, 0], runs.items()):
        ax.hist(list(ts), bins=edges)
        ax.set_ylabel("requests")
        ax.set_title(f"{label}: {len(ts)} requests", fontsize=9)
    axes[-1, 0].set_xlabel(f"seconds (buckets of {bucket * 1000:g} ms)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
