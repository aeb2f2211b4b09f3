"""A real Prometheus for the monitoring lessons, its rule tester, and a tiny evaluator for when it is missing.

- ``prometheus(targets, rules=...)`` starts the ``prometheus`` binary (Debian's package installs
  ``/usr/bin/prometheus``) on 127.0.0.1 with a generated configuration that scrapes ``targets``
  every second and evaluates ``rules``.  It is cleaned up like a server: ``natslab.stop_all()``,
  the end of the process, and (Linux) the death of the kernel that started it.
- ``test_rules(expr, series, ...)`` runs ``promtool test rules``: an alert rule checked against
  input series at chosen times, with no scraping at all.
- ``evaluate(expr, series, at)`` is natslab's own evaluator for the simple threshold rules the
  lessons use (a selector, ``rate``/``increase``/``delta``/``changes`` over a range, a comparison,
  ``sum``/``max``/``min``/``avg``/``count by (...)``).  It stands in when Prometheus is not
  installed, and says so when an expression is beyond it.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from ..errors import NatslabError
from ..runtime import guard, ports as portlib, session
from ..runtime.waiting import until_sync

INSTALL = ("install it with `sudo apt-get install prometheus` (Debian/Ubuntu: it brings promtool too) "
           "or download it from prometheus.io; natslab looks for it on PATH and in /usr/bin.")


def binary(name: str = "prometheus") -> str | None:
    """The path of ``prometheus`` or ``promtool``, or None when it is not installed."""
    found = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    return found


def available() -> bool:
    return binary("prometheus") is not None and binary("promtool") is not None


# ------------------------------------------------------------------------------ series
def expand(values: str) -> list[float | None]:
    """promtool's series notation: ``"0x3 5 5+1x2 _"`` -> [0,0,0,0, 5, 5,6,7, None]."""
    out: list[float | None] = []
    for part in values.split():
        if part == "_":
            out.append(None)
            continue
        m = re.fullmatch(r"(-?[\d.]+)(?:([+-][\d.]+))?x(\d+)", part)
        if m:
            start, step, n = float(m.group(1)), float(m.group(2) or 0), int(m.group(3))
            out.extend(start + step * i for i in range(n + 1))
        else:
            out.append(float(part))
    return out


def _series_yaml(series: dict[str, str]) -> str:
    return "\n".join(f"      - series: '{name}'\n        values: '{values}'" for name, values in series.items())


def _parse_series_name(text: str) -> tuple[str, dict[str, str]]:
    m = re.fullmatch(r"\s*([a-zA-Z_:][\w:]*)\s*(?:\{(.*)\})?\s*", text)
    if not m:
        raise ValueError(f"not a series name: {text!r}")
    labels = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', m.group(2) or ""))
    return m.group(1), labels


# ------------------------------------------------------------------------------ promtool
def test_rules(expr: str, series: dict[str, str], cases: list[tuple[str, list[dict]]], *,
               interval: str = "1m", alert: str = "NatslabAlert", for_: str = "0m") -> list[dict]:
    """Run ``promtool test rules`` on one alert rule; one result per (eval_time, expected alerts) case.

    Each result: ``{"at": "16m", "ok": bool, "got": [label dicts] or None, "error": text}``.
    Raises NatslabError when promtool is missing, and ValueError (with promtool's words) when the
    expression is not valid PromQL.
    """
    tool = binary("promtool")
    if tool is None:
        raise NatslabError("promtool is not installed.", INSTALL)
    work = Path(tempfile.mkdtemp(prefix="natslab-promtool-"))
    try:
        rules = {"groups": [{"name": "natslab", "rules": [{"alert": alert, "expr": expr, "for": for_}]}]}
        (work / "rules.yml").write_text(json.dumps(rules))  # JSON is YAML
        checked = subprocess.run([tool, "check", "rules", str(work / "rules.yml")], capture_output=True,
                                 text=True, timeout=30)
        if checked.returncode != 0:
            said = (checked.stderr + checked.stdout).strip().splitlines()
            raise ValueError(next((l.strip() for l in said if "parse error" in l or "error" in l.lower()),
                                  said[-1] if said else "promtool rejected the rule"))
        results = []
        for at, expected in cases:
            exp = [{"exp_labels": labels} for labels in expected]
            test = {"rule_files": ["rules.yml"], "evaluation_interval": interval,
                    "tests": [{"interval": interval,
                               "input_series": [{"series": k, "values": v} for k, v in series.items()],
                               "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": exp}]}]}
            (work / "test.yml").write_text(json.dumps(test))
            run = subprocess.run([tool, "test", "rules", "test.yml"], capture_output=True, text=True,
                                 cwd=work, timeout=30)
            text = run.stdout + run.stderr
            got = None
            if run.returncode != 0:
                got_part = text.split("got:", 1)[1] if "got:" in text else ""
                got = [dict(re.findall(r'(\w+)="([^"]*)"', block))
                       for block in re.findall(r"Labels:\{([^}]*)\}", got_part)]
            results.append({"at": at, "ok": run.returncode == 0, "got": got, "error": text.strip()})
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------ evaluator
class Unsupported(ValueError):
    """The expression uses PromQL that natslab's tiny evaluator does not implement."""


_DUR = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(text: str) -> float:
    total, rest = 0.0, text.strip()
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", rest):
        total += float(num) * _DUR[unit]
    if not total and rest not in ("0", "0s", "0m"):
        raise ValueError(f"not a duration: {text!r}")
    return total


_TOKEN = re.compile(r"\s*(?:(?P<num>\d+(?:\.\d+)?(?:e[+-]?\d+)?)(?![\w])|(?P<dur>\[\s*\d+[smhd]\s*\])|"
                    r"(?P<op>==|!=|>=|<=|>|<)|(?P<arith>[-+*/])|(?P<name>[a-zA-Z_:][\w:]*)|(?P<brace>\{[^}]*\})|(?P<p>[(),])|(?P<bad>\S))")


def _tokens(expr: str) -> list[tuple[str, str]]:
    out = []
    for m in _TOKEN.finditer(expr):
        kind = m.lastgroup
        if kind == "bad":
            raise Unsupported(f"natslab's evaluator does not understand {m.group(kind)!r} in {expr!r}")
        out.append((kind, m.group(kind)))
    return out


_RANGE_FUNCS = {"rate", "increase", "delta", "changes", "irate", "resets", "max_over_time", "min_over_time",
                "avg_over_time"}
_AGGS = {"sum", "max", "min", "avg", "count"}


def evaluate(expr: str, series: dict[str, str], at: str | float, *, interval: str = "1m") -> list[tuple[dict, float]]:
    """Evaluate ``expr`` at time ``at`` over promtool-style ``series``; the resulting (labels, value) list.

    Covers the simple alert rules of the lessons; anything else raises ``Unsupported`` (install
    Prometheus to evaluate it for real).
    """
    step = seconds(interval)
    data = []
    for name, values in series.items():
        metric, labels = _parse_series_name(name)
        data.append((metric, labels, [(i * step, v) for i, v in enumerate(expand(values)) if v is not None]))
    t = seconds(at) if isinstance(at, str) else float(at)
    toks = _tokens(expr)
    pos = 0

    def peek(k=0):
        return toks[pos + k] if pos + k < len(toks) else ("end", "")

    def take(kind=None, value=None):
        nonlocal pos
        tok = peek()
        if (kind and tok[0] != kind) or (value and tok[1] != value):
            raise Unsupported(f"natslab's evaluator expected {value or kind} at {tok[1]!r} in {expr!r}")
        pos += 1
        return tok[1]

    def selector():
        name = take("name")
        want = {}
        if peek()[0] == "brace":
            body = take("brace")[1:-1]
            for k, op, v in re.findall(r'(\w+)\s*(=~|!=|=)\s*"([^"]*)"', body):
                if op != "=":
                    raise Unsupported("natslab's evaluator only matches labels with =")
                want[k] = v
        return [(labels, samples) for metric, labels, samples in data
                if metric == name and all(labels.get(k) == v for k, v in want.items())]

    def range_fn(fn, rng, matched):
        out = []
        for labels, samples in matched:
            inside = [(ts, v) for ts, v in samples if t - rng < ts <= t]
            val = _range_value(fn, inside, t - rng, t, rng)
            if val is not None:
                out.append((dict(labels), val))
        return out

    def primary():
        kind, val = peek()
        if kind == "p" and val == "(":
            take("p", "(")
            r = comparison()
            take("p", ")")
            return r
        if kind == "num":
            raise Unsupported("natslab's evaluator needs a metric on the left of a comparison")
        if kind == "name" and val in _RANGE_FUNCS:
            take()
            take("p", "(")
            matched = selector()
            rng = seconds(take("dur").strip("[] "))
            take("p", ")")
            return range_fn(val, rng, matched)
        if kind == "name" and val in _AGGS:
            take()
            by = None
            if peek()[1] in ("by", "without"):
                if take() == "without":
                    raise Unsupported("natslab's evaluator supports `by`, not `without`")
                by = labels_list()
            take("p", "(")
            inner = comparison()
            take("p", ")")
            if peek()[1] == "by":
                take()
                by = labels_list()
            return _aggregate(val, inner, by or [])
        if kind == "name":
            matched = selector()
            out = []
            for labels, samples in matched:
                recent = [(ts, v) for ts, v in samples if t - 300 < ts <= t]  # 5 min lookback
                if recent:
                    out.append(({k: v for k, v in labels.items()}, recent[-1][1]))
            return out
        raise Unsupported(f"natslab's evaluator does not understand {val!r} in {expr!r}")

    def labels_list():
        take("p", "(")
        names = []
        while peek()[1] != ")":
            names.append(take("name"))
            if peek()[1] == ",":
                take()
        take("p", ")")
        return names

    def arithmetic():
        left = primary()
        while peek()[0] == "arith":
            op = take()
            if peek()[0] == "num":
                k = float(take())
                left = [(l, _arith(op, v, k)) for l, v in left]
                continue
            right = {tuple(sorted(l.items())): v for l, v in primary()}
            left = [(l, _arith(op, v, right[key])) for l, v in left
                    if (key := tuple(sorted(l.items()))) in right]  # one-to-one matching on all labels
        return left

    def comparison():
        left = arithmetic()
        if peek()[0] == "op":
            op = take()
            keep = True
            if peek()[1] == "bool":
                raise Unsupported("natslab's evaluator does not do `bool` comparisons")
            right = float(take("num"))
            left = [(l, v) for l, v in left if _compare(op, v, right)] if keep else left
        return left

    result = comparison()
    if pos != len(toks):
        raise Unsupported(f"natslab's evaluator did not understand the part from {peek()[1]!r} in {expr!r}")
    return result


def _arith(op, a, b) -> float:
    if op == "/":
        return a / b if b else math.nan
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def _compare(op, a, b) -> bool:
    return {">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b, "==": a == b, "!=": a != b}[op]


def _aggregate(fn, vectors, by):
    groups: dict[tuple, list[float]] = {}
    for labels, v in vectors:
        groups.setdefault(tuple((k, labels.get(k, "")) for k in by), []).append(v)
    agg = {"sum": sum, "max": max, "min": min, "count": len, "avg": lambda vs: sum(vs) / len(vs)}[fn]
    return [({k: v for k, v in key if v}, float(agg(vs))) for key, vs in groups.items()]


def _range_value(fn, inside, start, end, rng):
    if fn in ("max_over_time", "min_over_time", "avg_over_time"):
        vs = [v for _, v in inside]
        if not vs:
            return None
        return {"max_over_time": max, "min_over_time": min, "avg_over_time": lambda x: sum(x) / len(x)}[fn](vs)
    if fn == "changes":
        return float(sum(1 for a, b in zip(inside, inside[1:]) if a[1] != b[1])) if inside else None
    if fn == "resets":
        return float(sum(1 for a, b in zip(inside, inside[1:]) if b[1] < a[1])) if inside else None
    if len(inside) < 2:
        return None
    if fn == "irate":
        (t1, v1), (t2, v2) = inside[-2], inside[-1]
        return ((v2 - v1) if v2 >= v1 else v2) / (t2 - t1)
    counter = fn in ("rate", "increase")
    # Prometheus' extrapolatedRate
    first_t, first_v = inside[0]
    last_t, last_v = inside[-1]
    result = last_v - first_v
    if counter:
        prev = first_v
        for _, v in inside[1:]:
            if v < prev:
                result += prev
            prev = v
    sampled = last_t - first_t
    if sampled <= 0:
        return None
    to_start, to_end = first_t - start, end - last_t
    avg = sampled / (len(inside) - 1)
    if counter and result > 0 and first_v >= 0:
        to_zero = sampled * (first_v / result)
        to_start = min(to_start, to_zero)
    threshold = avg * 1.1
    span = sampled + (to_start if to_start < threshold else avg / 2) + (to_end if to_end < threshold else avg / 2)
    result *= span / sampled
    return result / rng if fn == "rate" else result


def alerts_at(expr: str, series: dict[str, str], at: str, *, interval: str = "1m") -> list[dict]:
    """The alerts ``expr`` (an alert rule with ``for: 0m``) has firing at ``at``: their label sets."""
    return [labels for labels, value in evaluate(expr, series, at, interval=interval)
            if not (isinstance(value, float) and math.isnan(value))]


# ------------------------------------------------------------------------------ the server


class Prometheus:
    """One Prometheus process on 127.0.0.1, registered in the session like a server group, so
    ``natslab.stop_all()`` and the end of the process remove it, and with the clean-up guard, as
    servers are, so a kernel killed with SIGKILL does not leave it behind."""

    def __init__(self, targets: list[str], rules: list[dict] | None = None, *, scrape_interval: str = "1s",
                 evaluation_interval: str = "1s"):
        exe = binary("prometheus")
        if exe is None:
            raise NatslabError("Prometheus is not installed.", INSTALL)
        self.id, self.kind, self.backend, self.servers = uuid.uuid4().hex[:8], "prometheus", "none", []
        self.dir = session.root() / f"prometheus-{self.id}"
        self.dir.mkdir()
        session.register(self)  # stop_all() and the end of the process close it, like servers
        self.targets, self.rules = list(targets), list(rules or [])
        self.port = portlib.reserve(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        (self.dir / "data").mkdir()
        rule_file = self.dir / "rules.yml"
        rule_file.write_text(json.dumps({"groups": [{"name": "natslab", "rules": self.rules}]}, indent=1))
        self.config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
            "rule_files": [str(rule_file)],
            "scrape_configs": [{"job_name": "natslab-fleet", "static_configs": [{"targets": self.targets}]}],
        }
        self.config_path = self.dir / "prometheus.yml"
        self.config_path.write_text(json.dumps(self.config, indent=1))
        self.log_path = self.dir / "prometheus.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [exe, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.dir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, close_fds=True)
        guard.watch("pid", self.proc.pid)
        try:
            until_sync(self._ready, "Prometheus answering /-/ready", timeout=30, every=0.1)
        except BaseException:
            self.close()
            raise

    @property
    def config_text(self) -> str:
        return self.config_path.read_text()

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise NatslabError("Prometheus exited while starting.", "read its log: prom.logs().",
                               details="\n".join(self.logs().splitlines()[-8:]))
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def api(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}" + (f"?{query}" if query else ""), timeout=5) as r:
            body = json.loads(r.read())
        if body.get("status") != "success":
            raise NatslabError(f"Prometheus said: {body.get('error')}", "check the PromQL expression.")
        return body["data"]

    def query(self, expr: str) -> list[tuple[dict, float]]:
        """An instant query: [(labels, value), ...]."""
        data = self.api("query", query=expr)
        return [(r["metric"], float(r["value"][1])) for r in data.get("result", [])]

    def alerts(self) -> list[dict]:
        return self.api("alerts").get("alerts", [])

    def targets_up(self) -> bool:
        active = self.api("targets").get("activeTargets", [])
        return bool(active) and all(t.get("health") == "up" for t in active)

    def running(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        guard.stop_process(self.proc)
        portlib.release([self.port])
        shutil.rmtree(self.dir, ignore_errors=True)
        session.unregister(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"<natslab Prometheus {self.url} {'running' if self.running() else 'stopped'} scraping {self.targets}>"


def prometheus(targets: list[str], rules: list[dict] | None = None, **kw) -> Prometheus:
    """Start a real Prometheus scraping ``targets`` (``host:port``) with alert ``rules``; ready when it answers."""
    return Prometheus(targets, rules, **kw)


def wait_scraped(prom: Prometheus, timeout: float = 30.0) -> None:
    until_sync(lambda: prom.targets_up(), "Prometheus scraping every target", timeout=timeout, every=0.2,
               retry=(OSError, NatslabError))



def series_from_exposition(text: str) -> dict[str, str]:
    """The samples of a /metrics page as one-sample promtool-style series (for ``evaluate`` at "0m")."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = repr(float(s.value))
    return out
