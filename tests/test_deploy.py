"""Module 08.1: the Compose projects the course ships are what deploy.py generates, and they run.

Generation is tested on any machine; each shipped project is brought up with the installed Compose
on Docker, checked from the servers' own endpoints, taken down, and nothing of it may remain.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from natslab.lessons import deploy
from natslab.runtime import session

from natslab.runtime.backends.docker import engine_problem

ROOT = Path(__file__).resolve().parents[1]


def compose_problem() -> str | None:
    problem = engine_problem(timeout=3.0)
    if problem is not None:
        return f"no Docker engine answered: {problem}"
    try:
        deploy.find_compose()
    except Exception as exc:
        return str(exc).splitlines()[0]
    return None


_PROBLEM = compose_problem()
needs_compose = pytest.mark.skipif(_PROBLEM is not None, reason=f"Compose projects cannot run here: {_PROBLEM}")


def test_shipped_files_match_the_generator():
    assert deploy.drift() == [], ("docker/compose/ differs from what natslab.lessons.deploy generates; "
                                  "regenerate with `python -m natslab.lessons.deploy --write`")


@pytest.mark.parametrize("topology", deploy.TOPOLOGIES)
def test_generation(topology, tmp_path):
    files = deploy.render(topology)
    services = [s["name"] for s in deploy._services(topology)]
    assert set(files) == {"compose.yaml"} | {f"{s}.conf" for s in services}
    compose = files["compose.yaml"]
    assert "pull_policy: never" in compose and deploy.IMAGE in compose
    # every published port is on 127.0.0.1, and only client and monitor ports are published
    published = [l.strip() for l in compose.splitlines() if re.match(r'\s+- ".*:(4222|8222)"$', l)]
    assert len(published) == 2 * len(services)
    assert all(l.startswith('- "127.0.0.1:') for l in published)
    for port in (6222, 7222, 7422):
        assert f":{port}\"" not in compose
    # every config is one the pinned nats-server accepts
    from natslab.runtime.backends.local import find_binary

    deploy.write(topology, tmp_path)
    for s in services:
        r = subprocess.run([find_binary(), "-t", "-c", str(tmp_path / f"{s}.conf")], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f'server_name: "{s}"' in files[f"{s}.conf"]


def test_configs_join_the_topology():
    cluster = deploy.render("cluster")
    assert "nats-route://c1-n2:6222" in cluster["c1-n1.conf"] and "c1-n1:6222" not in cluster["c1-n1.conf"]
    sc = deploy.render("supercluster")
    assert 'name: "west"' in sc["east-n1.conf"] and "nats://west-n3:7222" in sc["east-n1.conf"]
    leaf = deploy.render("leaf")
    assert "nats-leaf://hub:7422" in leaf["leaf.conf"] and "7422" in leaf["hub.conf"]


def test_bad_topology_is_explained():
    with pytest.raises(Exception, match="not a topology natslab can deploy"):
        deploy.render("mesh")


def test_no_compose_says_what_to_install(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(Exception, match="apt-get install docker-compose"):
        deploy.find_compose()


@needs_compose
@pytest.mark.docker
@pytest.mark.parametrize("topology", deploy.TOPOLOGIES)
def test_shipped_project_runs(topology):
    project = deploy.up(topology)
    try:
        assert project in session.groups()
        seen = project.check(quiet=True)
        assert set(seen["servers"]) == set(project.services)
        assert all(row["healthz"] == "ok" for row in seen["servers"].values())
        assert seen["across"][2] == "hello across"
    finally:
        project.down()
    assert project.leftovers() == []
    assert project not in session.groups()


@needs_compose
@pytest.mark.docker
def test_stop_all_takes_a_project_down():
    project = deploy.up("single")
    session.stop_all()
    assert project.closed and project.leftovers() == []


@needs_compose
@pytest.mark.docker
def test_a_killed_process_leaves_nothing(tmp_path):
    script = ("import os\nfrom natslab.lessons import deploy\np = deploy.up('single')\n"
              "print(p.name, flush=True)\nos.kill(os.getpid(), 9)\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                       cwd=ROOT, env={**os.environ, "NATSLAB_QUIET": "1"})
    name = r.stdout.strip().splitlines()[-1]
    assert name.startswith("natslab-single-"), r.stdout + r.stderr
    project = deploy.Project.__new__(deploy.Project)
    project.name = name
    from natslab.runtime.waiting import until_sync

    assert until_sync(lambda: project.leftovers() == [], "the clean-up guard to run compose down -v",
                      timeout=90, every=0.5, error=False), project.leftovers()


def test_helm_values_pin_the_course_version():
    import yaml

    from natslab.runtime.backends import PINNED_VERSION

    files = sorted((ROOT / "docker" / "helm").glob("*.yaml"))
    assert len(files) == 6
    for f in files:
        values = yaml.safe_load(f.read_text())
        assert values["container"]["image"]["tag"] == f"{PINNED_VERSION}-alpine", f.name
        assert values["config"]["monitor"]["enabled"] is True, f.name


@pytest.mark.parametrize("topology", deploy.TOPOLOGIES)
def test_the_same_topology_with_natslab(topology):
    """What the lesson runs where Compose cannot: natslab servers under the services' names,
    checked the same way (on whichever backend the suite runs)."""
    run = deploy.run_with_natslab(topology)
    try:
        seen = run.check(quiet=True)
        assert set(seen["servers"]) == set(run.services)
        assert seen["across"][2] == "hello across"
    finally:
        run.down()
