"""The whole test suite, in phases, with one summary at the end (run by `./course test`).

1. `natslab.labs --check`: labs/ is generated from solutions/ and up to date.
2. `pytest tests`: unit, failure-handling, lab, verdict and adversarial checker tests.  Tests that are
   about a backend name it (Docker cases skip, and say so, without an engine); the rest (checkers and
   their adversarial answers, whose logic does not depend on where the server runs) use the local
   backend unless NATSLAB_BACKEND is set, which keeps the phase inside CI's time.
3. nbval over notebooks/ and solutions/ on the local backend.
4. the same on the Docker backend (when an engine answers; a loud notice when not).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
# pytest-xdist processes per phase (NATSLAB_TEST_WORKERS=0 runs everything in one process).  A test
# file (for nbval: a notebook, whose cells share one kernel) always stays on one worker, so
# module fixtures start once and a notebook runs top to bottom.  Two workers, because the
# machines this runs on have two cores and every test also runs real servers.
WORKERS = os.environ.get("NATSLAB_TEST_WORKERS", "2").strip() or "0"
PARALLEL = ["-n", WORKERS, "--dist", "loadfile"] if WORKERS != "0" else []
NBVAL = ["-m", "pytest", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-cell-timeout=240",
         "--timeout=900", *PARALLEL, "notebooks", "solutions", "WORKSHOP.ipynb"]


def banner(text: str) -> None:
    line = "!" * 78
    print(f"\n{line}\n!! {text}\n{line}\n", flush=True)


def junit_counts(path: Path) -> dict:
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return counts
    for suite in root.iter("testsuite"):
        tests, fail, err, skip = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
        counts["failed"] += fail + err
        counts["skipped"] += skip
        counts["passed"] += tests - fail - err - skip
    return counts


def main(argv: list[str]) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="natslab-suite-"))
    try:
        return run(argv, tmp)
    finally:  # the run's progress file and reports go, whatever happened
        shutil.rmtree(tmp, ignore_errors=True)


def run(argv: list[str], tmp: Path) -> int:
    os.chdir(ROOT)
    env = dict(os.environ)
    env.setdefault("NATSLAB_PROGRESS", str(tmp / "progress.json"))
    env["PYTHONUNBUFFERED"] = "1"

    from natslab.runtime.backends.docker import engine_problem

    problem = engine_problem(timeout=5.0)
    if problem is None:
        print("==> Docker engine answers: preparing the nats-server image", flush=True)
        subprocess.run([PY, "-c", "import natslab.runtime.backends as b; print('image:', b.get('docker').image)"],
                       env=env, check=False)
    else:
        banner(f"NO DOCKER ENGINE ({problem}): Docker tests and the Docker notebook run are SKIPPED")

    phases = [
        ("labs up to date", [PY, "-m", "natslab.grading.labs", "--check"], {}, None),
        ("unit, failure and lab tests", [PY, "-m", "pytest", "-p", "no:cacheprovider", "--timeout=900",
                                         "-rs", *PARALLEL, "tests", *argv],
         {"NATSLAB_BACKEND": os.environ.get("NATSLAB_BACKEND", "local")}, "tests"),
        ("notebooks on the local backend", [PY, *NBVAL], {"NATSLAB_BACKEND": "local"}, "nb-local"),
    ]
    if problem is None:
        phases.append(("notebooks on the Docker backend", [PY, *NBVAL], {"NATSLAB_BACKEND": "docker"}, "nb-docker"))

    totals = {"passed": 0, "failed": 0, "skipped": 0}
    results = []
    for title, cmd, extra_env, junit in phases:
        print(f"\n==> {title}: {' '.join(cmd[1:])}", flush=True)
        if junit:
            cmd = cmd + [f"--junitxml={tmp / junit}.xml"]
        start = time.monotonic()
        rc = subprocess.run(cmd, env={**env, **extra_env}).returncode
        took = time.monotonic() - start
        counts = junit_counts(tmp / f"{junit}.xml") if junit else {"passed": int(rc == 0), "failed": int(rc != 0), "skipped": 0}
        if junit and rc not in (0,) and counts["failed"] == 0:
            counts["failed"] += 1  # a crash or a collection error counts as a failure
        for k in totals:
            totals[k] += counts[k]
        results.append((title, rc, took, counts))

    print("\n==> summary")
    for title, rc, took, c in results:
        print(f"  {'ok  ' if rc == 0 else 'FAIL'} {title:<34} {took:7.1f} s   "
              f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped")
    if problem is not None:
        print(f"  SKIP notebooks on the Docker backend: no Docker engine ({problem})")
    print(f"{totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped")
    return 0 if all(rc == 0 for _, rc, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
