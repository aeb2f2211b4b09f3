"""Start-up figures for both backends, printed as medians (run with `./course bench`).

- one server: start to ready (the server's own /healthz says ok)
- a 3-node JetStream cluster: start until a meta leader is elected
- the full notebook validation (nbval over notebooks/ and solutions/), wall time

Targets on the 2-core reference machine: one local server < 0.05 s, one Docker server < 0.6 s,
a local 3-node JetStream cluster < 1 s, a Docker one < 3 s.  These are printed, never asserted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {("server", "local"): 0.05, ("server", "docker"): 0.6,
           ("cluster", "local"): 1.0, ("cluster", "docker"): 3.0}


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        obj = fn()
        out.append(time.perf_counter() - t0)
        obj.close() if hasattr(obj, "close") else None
    return out


def line(label: str, samples: list[float], target: float | None = None) -> str:
    med = statistics.median(samples)
    verdict = "" if target is None else (f"  target < {target:g} s: " + ("met" if med < target else "MISSED"))
    return (f"{label:<44} median {med:7.3f} s  (min {min(samples):.3f}, max {max(samples):.3f}, "
            f"n={len(samples)}){verdict}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="runs per start-up figure")
    ap.add_argument("--nbval-runs", type=int, default=3, help="runs of the full notebook validation (0 skips)")
    args = ap.parse_args()
    os.environ.setdefault("NATSLAB_QUIET", "1")
    import natslab
    from natslab.runtime.backends.docker import engine_problem

    names = ["local"] + (["docker"] if engine_problem() is None else [])
    if "docker" not in names:
        print("no Docker engine answers: Docker figures skipped")
    print(f"nats-server {natslab.PINNED_VERSION}, {os.cpu_count()} cores")
    for b in names:
        natslab.server("warmup", backend=b, jetstream=False).close()  # image build, guard start-up
        print(line(f"one server, start to ready ({b})",
                   timed(lambda: natslab.server("bench", backend=b), args.runs), TARGETS[("server", b)]))
        print(line(f"3-node JetStream cluster to meta leader ({b})",
                   timed(lambda: natslab.cluster(3, backend=b), max(3, args.runs // 2)), TARGETS[("cluster", b)]))
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
