"""Render nats-server configuration text from plain Python data.

The server reads exactly the text made here, on both backends, and ``Server.config_text``
shows it to the learner, so the output is meant to be read: one setting per line, blocks
indented, comments kept.
"""
from __future__ import annotations

import json
import re
from typing import Any, Mapping

_BARE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


class Raw(str):
    """A value written as-is, unquoted: sizes such as ``Raw("256MB")`` or variables ``$SYS``."""


def render(conf: Mapping[str, Any], comment: str = "") -> str:
    lines: list[str] = []
    if comment:
        lines += [f"# {line}".rstrip() for line in comment.splitlines()]
    _block(conf, 0, lines)
    return "\n".join(lines) + "\n"


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def _scalar(v: Any) -> str:
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    raise TypeError(f"cannot write {type(v).__name__} {v!r} into a nats-server config")


def _block(conf: Mapping[str, Any], depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    for k, v in conf.items():
        if v is None:
            continue
        if isinstance(v, Mapping):
            lines.append(f"{pad}{_key(k)} {{")
            _block(v, depth + 1, lines)
            lines.append(f"{pad}}}")
        elif isinstance(v, (list, tuple)):
            _list(_key(k) + ": ", v, depth, lines)
        else:
            lines.append(f"{pad}{_key(k)}: {_scalar(v)}")


def _list(prefix: str, items, depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    if all(not isinstance(i, (Mapping, list, tuple)) for i in items) and len(items) <= 1:
        lines.append(f"{pad}{prefix}[{', '.join(_scalar(i) for i in items)}]")
        return
    lines.append(f"{pad}{prefix}[")
    for item in items:
        if isinstance(item, Mapping):
            lines.append(f"{pad}  {{")
            _block(item, depth + 2, lines)
            lines.append(f"{pad}  }}")
        elif isinstance(item, (list, tuple)):
            _list("", item, depth + 1, lines)
        else:
            lines.append(f"{pad}  {_scalar(item)}")
    lines.append(f"{pad}]")


def merge(base: dict, extra: Mapping[str, Any] | None) -> dict:
    """Deep-merge ``extra`` into a copy of ``base``; a ``None`` value removes a key."""
    out = dict(base)
    for k, v in (extra or {}).items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(dict(out[k]), v)
        else:
            out[k] = v
    return out
