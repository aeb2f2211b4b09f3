"""The course site (site/build.py, `./course site`) and the GitHub Actions workflow that builds it.

The full build executes every lesson (minutes); here a small subset is built: the welcome lesson
and a lesson with a plot, and the pages must show real executed outputs and an embedded image.
"""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

import natslab

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "site" / "build.py"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
SUBSET = ["00_welcome", "01_3_queue_groups"]  # 01.3 draws a matplotlib plot


def build(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BUILD), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def outputs_text(page: str) -> str:
    """The text of the page's output areas (not the cells' sources)."""
    return " ".join(re.sub(r"<[^>]+>", " ", m) for m in
                    re.findall(r'class="[^"]*jp-OutputArea-output[^"]*"[^>]*>(.*?)</div>', page, re.S))


@pytest.mark.timeout(900)
def test_site_shows_executed_outputs_and_plots(tmp_path):
    out = tmp_path / "html"
    run = build(*SUBSET, "--out", str(out))
    assert run.returncode == 0, run.stdout + run.stderr

    index = (out / "index.html").read_text()
    for stem in SUBSET:
        assert f'href="{stem}.html"' in index, f"the front page does not link {stem}"
    assert "Welcome to natslab" in index and "Queue groups" in index  # titles from the notebooks

    welcome = (out / "00_welcome.html").read_text()
    shown = outputs_text(welcome)
    # the set-up cell printed what the real server reported: executed, not the notebook's source
    assert re.search(r"nats-server version:\s*2\.15\.1", shown), shown[:2000]
    assert "Traceback" not in shown
    # the lessons are linked in order, between their pages
    assert 'href="01_3_queue_groups.html"' in welcome

    queues = (out / "01_3_queue_groups.html").read_text()
    assert re.search(r'<img[^>]+src="data:image/png;base64,[A-Za-z0-9+/]{200}', queues), \
        "the queue-group lesson's plot is not embedded in its page"
    assert 'href="00_welcome.html"' in queues and 'href="index.html"' in queues


def test_a_cell_error_fails_the_build(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# 99 · Broken"), nbformat.v4.new_code_cell("print('ran')"),
                nbformat.v4.new_code_cell("raise RuntimeError('boom in a lesson')")]
    path = tmp_path / "99_broken.ipynb"
    nbformat.write(nb, path)
    run = build(str(path), "--out", str(tmp_path / "html"))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "99_broken failed" in run.stderr and "RuntimeError: boom in a lesson" in run.stderr
    page = (tmp_path / "html" / "99_broken.html").read_text()
    assert "boom in a lesson" in page  # the page is written, showing the error


@pytest.mark.timeout(300)
def test_a_lesson_past_its_time_limit_fails_the_build_and_leaves_no_server(tmp_path):
    url_file = tmp_path / "url"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# 98 · Slow"),
                nbformat.v4.new_code_cell("import pathlib, natslab\nsrv = natslab.server('site-slow')\n"
                                          f"pathlib.Path({str(url_file)!r}).write_text(srv.url)"),
                nbformat.v4.new_code_cell("import time\ntime.sleep(600)")]
    path = tmp_path / "98_slow.ipynb"
    nbformat.write(nb, path)
    run = build(str(path), "--out", str(tmp_path / "html"), "--notebook-timeout", "20")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "ran past its time limit (20 s)" in run.stderr
    host, port = url_file.read_text().rsplit("/", 1)[-1].split(":")

    def refused() -> bool:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return False
        except OSError:
            return True
    assert natslab.until_sync(refused, "the lesson's server to stop with its kernel", timeout=30)


def test_an_unknown_lesson_is_a_clear_error(tmp_path):
    run = build("01_9_no_such_lesson", "--out", str(tmp_path / "html"), timeout=120)
    assert run.returncode == 2
    assert "no lesson '01_9_no_such_lesson'" in run.stderr


def test_course_site_command_and_readme():
    course = (ROOT / "course").read_text()
    assert re.search(r"^\s*site\)\n(.*\n){0,3}.*site/build\.py", course, re.M), "`./course site` does not run site/build.py"
    readme = (ROOT / "README.md").read_text()
    assert "./course site" in readme
    out = json.loads((ROOT / "site" / "site.json").read_text())["out"]
    assert out.startswith("site/_build/") and "site/_build/" in (ROOT / ".gitignore").read_text().split()


def _workflow() -> dict:
    wf = yaml.safe_load(WORKFLOW.read_text())
    wf["on"] = wf.pop(True, wf.get("on"))  # YAML 1.1 reads the key `on` as true
    return wf


def _runs(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def _uses(job: dict) -> list[str]:
    return [step["uses"] for step in job.get("steps", []) if "uses" in step]


def test_workflow_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^    (\./course test)\s*$", readme, re.M)
    assert commands, "the README no longer names its test command"
    wf = _workflow()
    assert {"push", "pull_request"} <= set(wf["on"])
    test = wf["jobs"]["test"]
    assert test["runs-on"] == "ubuntu-latest"
    assert re.search(r"^\./course test\s*$", _runs(test), re.M), "CI does not run the README's test command"
    assert any(u.startswith("actions/setup-python@") for u in _uses(test))
    setup = next(s for s in test["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    assert str(setup["with"]["python-version"]) == "3.11"
    apt = next(s for s in test["steps"] if "apt-get install" in s.get("run", ""))
    assert apt.get("continue-on-error") is True and "chromium" in apt["run"] and "prometheus" in apt["run"]
    upload = next(s for s in test["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload.get("if") == "always()" and "tests/browser/output" in upload["with"]["path"]


def test_workflow_publishes_the_site():
    wf = _workflow()
    site, deploy = wf["jobs"]["site"], wf["jobs"]["deploy"]
    assert re.search(r"^\./course site\s*$", _runs(site), re.M)
    artifact = next(s for s in site["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact@"))
    assert artifact["with"]["path"] == json.loads((ROOT / "site" / "site.json").read_text())["out"]
    assert any(u.startswith("actions/deploy-pages@") for u in _uses(deploy))
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert set(deploy["needs"]) == {"test", "site"}
