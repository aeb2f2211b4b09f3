"""Start-up and messaging figures for both backends, each as a ratio to its bare limit (`./course bench`).

Start-up, natslab against the bare thing measured in the same run:
- one server to ready (the server's own /healthz): natslab.server() vs a bare nats-server process
  (local) or a bare `docker run` of the same image (Docker), both with JetStream;
- a 3-node JetStream cluster to a meta leader: natslab.cluster(3) vs three bare nats-server
  processes with hand-written route configs (local), or three bare `docker run`s on a bare network;
- messaging (benchmarks/perf.py): raw-socket publish limit, nats-py publish, pub/sub, request/reply,
  JetStream publish, request latency, the best tuned publisher, each as a ratio to the raw limit.

Targets on the 2-core reference machine: natslab within 1.5 x its bare limit.  Figures are printed,
never asserted.  The whole run is bounded (about two minutes with Docker); `--nbval-runs N` adds
N timed runs of the full notebook validation (minutes each), off by default.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET_RATIO = 1.5


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        obj = fn()
        out.append(time.perf_counter() - t0)
        obj.close() if hasattr(obj, "close") else None
    return out


def line(label: str, samples: list[float], bare: list[float] | None = None) -> str:
    med = statistics.median(samples)
    text = f"{label:<48} median {med:7.3f} s  (min {min(samples):.3f}, max {max(samples):.3f}, n={len(samples)})"
    if bare:
        ratio = med / statistics.median(bare)
        text += f"  {ratio:4.2f} x bare" + ("" if ratio <= TARGET_RATIO else f"  (target <= {TARGET_RATIO:g} x: MISSED)")
    return text


# ------------------------------------------------------------------------------ bare limits
def _ready(monitor_port: int, timeout: float = 30.0, meta: bool = False) -> None:
    """Poll the server's own /healthz (and, for a cluster, /jsz for a meta leader) until true."""
    from natslab.runtime.waiting import until_sync

    def ok():
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/"
                                    + ("jsz" if meta else "healthz"), timeout=1) as r:
            body = json.loads(r.read())
        return bool((body.get("meta_cluster") or {}).get("leader")) if meta else body.get("status") == "ok"
    until_sync(ok, "a bare server ready", timeout=timeout, every=0.005, retry=(OSError, ValueError))


class _Bare:
    """Bare processes or containers, removed on close."""

    def __init__(self):
        from natslab.runtime import ports

        self.ports, self.procs, self.containers, self.network = ports, [], [], None
        self.reserved: list[int] = []
        self.dir = Path(tempfile.mkdtemp(prefix="natslab-bare-"))

    def take(self, n: int) -> list[int]:
        got = self.ports.reserve(n)
        self.reserved += got
        return got

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.containers:
            subprocess.run(["docker", "rm", "-f", *self.containers], capture_output=True)
        if self.network:
            subprocess.run(["docker", "network", "rm", self.network], capture_output=True)
        self.ports.release(self.reserved)
        shutil.rmtree(self.dir, ignore_errors=True)


def bare_server(binary: str) -> _Bare:
    b = _Bare()
    client, http = b.take(2)
    b.procs.append(subprocess.Popen([binary, "-a", "127.0.0.1", "-p", str(client), "-m", str(http),
                                     "-js", "-sd", str(b.dir / "js")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    _ready(http)
    return b


def _cluster_conf(i: int, client: int, http: int, routes: list[int], peer: str, bind: str, store: str) -> str:
    """A bare cluster node's config; ``peer`` formats a node's host ({j}), ``bind`` is where to listen."""
    urls = ", ".join(f'"nats-route://{peer.format(j=j)}:{p}"' for j, p in enumerate(routes) if j != i)
    return (f'server_name: "n{i}"\nlisten: "{bind}:{client}"\nhttp: "{bind}:{http}"\n'
            f'jetstream {{ store_dir: "{store}" }}\n'
            f'cluster {{ name: "bare"\n  listen: "{bind}:{routes[i]}"\n  routes: [{urls}] }}\n')


def bare_cluster(binary: str) -> _Bare:
    b = _Bare()
    ports = b.take(9)
    routes = ports[6:9]
    for i in range(3):
        conf = b.dir / f"n{i}.conf"
        conf.write_text(_cluster_conf(i, ports[i], ports[3 + i], routes, "127.0.0.1", "127.0.0.1",
                                       str(b.dir / f"js{i}")))
        b.procs.append(subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
    for i in range(3):
        _ready(ports[3 + i], meta=True)
    return b


def _docker_run(b: _Bare, image: str, name: str, publish: dict[int, int], args: list[str],
                network: str | None = None, mount: Path | None = None) -> None:
    cmd = ["docker", "run", "-d", "--rm", "--name", name]
    for inside, outside in publish.items():
        cmd += ["-p", f"127.0.0.1:{outside}:{inside}"]
    if network:
        cmd += ["--network", network]
    if mount:
        cmd += ["-v", f"{mount}:{mount}"]
    out = subprocess.run(cmd + [image, *args], capture_output=True, text=True, check=True)
    b.containers.append(out.stdout.strip())


def bare_docker_server(image: str) -> _Bare:
    b = _Bare()
    client, http = b.take(2)
    _docker_run(b, image, f"natslab-bare-{client}", {4222: client, 8222: http}, ["-js", "-m", "8222"])
    _ready(http)
    return b


def bare_docker_cluster(image: str) -> _Bare:
    b = _Bare()
    ports = b.take(3)
    b.network = f"natslab-bare-{ports[0]}"
    subprocess.run(["docker", "network", "create", b.network], capture_output=True, check=True)
    routes = [6222] * 3
    for i in range(3):
        conf = b.dir / f"n{i}.conf"
        text = _cluster_conf(i, 4222, 8222, routes, f"{b.network}-n{{j}}", "0.0.0.0", str(b.dir / f"js{i}"))
        conf.write_text(text)
        _docker_run(b, image, f"{b.network}-n{i}", {8222: ports[i]}, ["-c", str(conf)],
                    network=b.network, mount=b.dir)
    for p in ports:
        _ready(p, meta=True)
    return b


# ------------------------------------------------------------------------------ main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per start-up figure")
    ap.add_argument("--nbval-runs", type=int, default=0, help="runs of the full notebook validation (0 skips)")
    ap.add_argument("--no-messaging", action="store_true", help="skip the messaging figures (benchmarks/perf.py)")
    args = ap.parse_args()
    os.environ.setdefault("NATSLAB_QUIET", "1")
    import natslab
    from natslab.runtime import backends
    from natslab.runtime.backends.docker import engine_problem
    from natslab.runtime.backends.local import find_binary

    import perf

    t_all = time.perf_counter()
    names = ["local"] + (["docker"] if engine_problem() is None else [])
    if "docker" not in names:
        print("no Docker engine answers: Docker figures skipped")
    print(f"nats-server {natslab.PINNED_VERSION}, {os.cpu_count()} cores")
    binary = find_binary()
    for b in names:
        natslab.server("warmup", backend=b, jetstream=False).close()  # image build, guard start-up
        runs, cruns = args.runs, max(3, args.runs // 2)
        if b == "local":
            bare_one, bare_three = timed(lambda: bare_server(binary), runs), timed(lambda: bare_cluster(binary), cruns)
            l1, l3 = "bare nats-server process", "3 bare nats-server processes"
        else:
            image = backends.get("docker").image
            bare_one = timed(lambda: bare_docker_server(image), runs)
            bare_three = timed(lambda: bare_docker_cluster(image), cruns)
            l1, l3 = f"bare docker run ({image})", "3 bare docker runs, one network"
        print(line(f"{l1}, to ready", bare_one))
        print(line(f"natslab.server() ({b}), to ready", timed(lambda: natslab.server("bench", backend=b), runs),
                   bare_one))
        print(line(f"{l3}, to meta leader", bare_three))
        print(line(f"natslab.cluster(3) ({b}), to meta leader", timed(lambda: natslab.cluster(3, backend=b), cruns),
                   bare_three))
        if not args.no_messaging:
            for text in asyncio.run(perf.run(b)):
                print(text, flush=True)
    natslab.stop_all()
    for b in names if args.nbval_runs else []:
        samples = []
        for _ in range(args.nbval_runs):
            t0 = time.perf_counter()
            rc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                                 "--nbval-cell-timeout=240", "notebooks", "solutions"], cwd=ROOT,
                                env={**os.environ, "NATSLAB_BACKEND": b}, capture_output=True).returncode
            samples.append(time.perf_counter() - t0)
            if rc:
                print(f"  (notebook validation on {b} failed; timing still reported)")
        print(line(f"full notebook validation ({b})", samples))
    print(f"(whole bench: {time.perf_counter() - t_all:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
