"""Shared test set-up: progress goes to a temp file, Docker tests skip (and say why) without an engine."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

if "NATSLAB_PROGRESS" not in os.environ:  # a run's progress file, never the learner's; removed at exit
    _progress_dir = tempfile.mkdtemp(prefix="natslab-progress-")
    os.environ["NATSLAB_PROGRESS"] = os.path.join(_progress_dir, "progress.json")
    atexit.register(shutil.rmtree, _progress_dir, True)
os.environ.setdefault("NATSLAB_QUIET", "1")

_docker_reason: list = []


def docker_problem():
    if not _docker_reason:
        from natslab.runtime.backends.docker import engine_problem

        _docker_reason.append(engine_problem(timeout=3.0))
    return _docker_reason[0]


BACKENDS = ["local", pytest.param("docker", marks=pytest.mark.docker)]


def pytest_collection_modifyitems(config, items):
    if not any(item.get_closest_marker("docker") for item in items):
        return
    problem = docker_problem()
    if problem is None:
        return
    skip = pytest.mark.skip(reason=f"no Docker engine answered: {problem}")
    for item in items:
        if item.get_closest_marker("docker"):
            item.add_marker(skip)


def pytest_report_header(config):
    problem = docker_problem()
    return "docker engine: " + ("answers" if problem is None else f"NONE ({problem}); docker tests will be skipped")


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param
