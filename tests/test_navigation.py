"""Moving through the course in order: COURSE.ipynb (the contents, with the progress widget) lists
every lesson and lab present, and every lesson and lab ends with a "Next:" link that opens the next
file in course order (lessons of a module, then its lab, then the next module).

    .venv/bin/python tests/test_navigation.py --fix

rewrites COURSE.ipynb and the last cell of every notebooks/ and solutions/ notebook from the files
present (then run `python -m natslab.grading.labs` so labs/ gets the links too).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTENTS = ROOT / "COURSE.ipynb"
NEXT_MARK = "**Next:**"
LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def _src(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def title(path: Path) -> str:
    first = _src(json.loads(path.read_text())["cells"][0]).strip().splitlines()[0]
    return first.lstrip("#").strip()


def _lesson_key(path: Path):
    return [int(x) if x.isdigit() else x for x in path.stem.split("_")[:2]]


def modules() -> list[tuple[str, list[Path], Path | None]]:
    """(module number, its lessons in order, its lab in labs/ or None), in course order."""
    numbers = sorted({p.name[:2] for d in ("notebooks", "solutions") for p in (ROOT / d).glob("[0-9][0-9]_*.ipynb")})
    out = []
    for n in numbers:
        lessons = sorted((ROOT / "notebooks").glob(f"{n}_*.ipynb"), key=_lesson_key)
        solution = sorted((ROOT / "solutions").glob(f"{n}_*_lab.ipynb"))
        out.append((n, lessons, ROOT / "labs" / solution[0].name if solution else None))
    return out


def course_order() -> list[Path]:
    """Every lesson and lab (labs/ paths) in the order a learner takes them."""
    return [p for _, lessons, lab in modules() for p in [*lessons, *([lab] if lab else [])]]


def _rel(target: Path, source: Path) -> str:
    return os.path.relpath(target, source.parent).replace(os.sep, "/")


def next_cell_text(path: Path) -> str:
    """The closing markdown cell of ``path`` (a lessons/ or labs/ path; solutions/ uses its lab's)."""
    order = course_order()
    here = ROOT / "labs" / path.name if path.parent.name == "solutions" else path
    i = order.index(here)
    contents = f"[the course contents]({_rel(CONTENTS, here)})"
    if i + 1 < len(order):
        nxt = order[i + 1]
        return f"---\n{NEXT_MARK} [{title(_source_of(nxt))}]({_rel(nxt, here)})  (or back to {contents})"
    return f"---\n{NEXT_MARK} that was the capstone, the last part of the course: back to {contents} to see where you stand."


def _source_of(path: Path) -> Path:
    """Titles come from notebooks/ and solutions/ (labs/ is generated from solutions/)."""
    return ROOT / "solutions" / path.name if path.parent.name == "labs" else path


def contents_cells() -> list[tuple[str, str]]:
    cells = [("markdown", "# natslab: the course in order\n\n"
              "Open the lessons one after the other: each ends with a **Next** link to the one after it, and "
              "each module ends with its lab (exercises checked against real servers). This page lists "
              "every lesson and lab in order; the cell below shows where you stand (run it again to refresh; "
              "`natslab.progress().reset(\"1\")` forgets one module, `python -m natslab progress` prints the "
              "same in a terminal).")]
    cells.append(("code", "import natslab\n\nnatslab.progress()"))
    for n, lessons, lab in modules():
        name = title(_source_of(lab)).split("·", 1)[-1].strip() if lab else f"Module {n}"
        lines = [f"## {n} · {name}", ""]
        lines += [f"- [{title(p)}]({_rel(p, CONTENTS)})" for p in lessons]
        if lab:
            lines.append(f"- **Lab:** [{title(_source_of(lab))}]({_rel(lab, CONTENTS)})")
        cells.append(("markdown", "\n".join(lines)))
    return cells


def fix() -> list[Path]:
    import nbformat

    changed = []
    for path in [*sorted((ROOT / "notebooks").glob("*.ipynb")), *sorted((ROOT / "solutions").glob("*.ipynb"))]:
        nb = nbformat.read(path, as_version=4)
        text = next_cell_text(path)
        last = nb.cells[-1]
        if last.cell_type == "markdown" and NEXT_MARK in last.source:
            if last.source == text:
                continue
            last.source = text
        else:
            nb.cells.append(nbformat.v4.new_markdown_cell(text))
        nbformat.write(nb, path, version=4)
        changed.append(path)
    if CONTENTS.exists():
        current = [(c["cell_type"], _src(c)) for c in json.loads(CONTENTS.read_text())["cells"]]
        if current == contents_cells():
            return changed
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(s) if kind == "markdown" else nbformat.v4.new_code_cell(s)
                for kind, s in contents_cells()]
    nbformat.write(nb, CONTENTS, version=4)
    changed.append(CONTENTS)
    return changed


# ------------------------------------------------------------------------------ the tests
ALL = [p for d in ("notebooks", "labs", "solutions") for p in sorted((ROOT / d).glob("*.ipynb"))]


def _next_link(path: Path) -> tuple[str, str]:
    cells = json.loads(path.read_text())["cells"]
    last = cells[-1]
    assert last["cell_type"] == "markdown" and NEXT_MARK in _src(last), \
        f"{path.name} does not end with a '{NEXT_MARK}' link (run tests/test_navigation.py --fix)"
    links = LINK.findall(_src(last).split(NEXT_MARK, 1)[1])
    assert links, f"{path.name}: no link after {NEXT_MARK}"
    return links[0]


def test_course_order_has_every_lesson_and_lab():
    order = course_order()
    names = [p.name for p in order]
    assert names[0] == "00_welcome.ipynb" and names[1] == "00_welcome_lab.ipynb"
    assert len(order) == len(list((ROOT / "notebooks").glob("*.ipynb"))) + len(list((ROOT / "labs").glob("*.ipynb")))
    assert all(p.exists() for p in order)
    assert names.index("01_6_slow_consumers_and_mistakes.ipynb") < names.index("01_core_messaging_lab.ipynb") \
        < names.index("02_1_why_jetstream_and_streams.ipynb")


@pytest.mark.parametrize("path", ALL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_notebook_ends_with_a_link_to_the_next_one(path):
    text, target = _next_link(path)
    order = course_order()
    here = ROOT / "labs" / path.name if path.parent.name == "solutions" else path
    i = order.index(here)
    resolved = (path.parent / target).resolve()
    assert resolved.exists(), f"{path.name}: the Next link {target} points at nothing"
    if i + 1 < len(order):
        assert resolved == order[i + 1].resolve(), f"{path.name}: Next should open {order[i + 1].name}, not {target}"
        assert text == title(_source_of(order[i + 1]))
    else:
        assert resolved == CONTENTS
    if path.parent.name in ("labs", "solutions"):  # one cell serves both folders: the link must too
        assert target.startswith("../"), f"{path.name}: {target} only works from one of labs/ and solutions/"


def test_contents_lists_everything_in_order_and_is_current():
    nb = json.loads(CONTENTS.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3" and "widgets" not in nb["metadata"]
    got = [(c["cell_type"], _src(c)) for c in nb["cells"]]
    assert got == contents_cells(), "COURSE.ipynb is out of date: run tests/test_navigation.py --fix"
    for c in nb["cells"]:
        assert isinstance(c["source"], list)
        if c["cell_type"] == "code":
            assert not c["outputs"] and c["execution_count"] is None
    listed = [(ROOT / t).resolve() for kind, s in got if kind == "markdown" for _, t in LINK.findall(s)]
    assert listed == [p.resolve() for p in course_order()]


def test_contents_code_cell_runs_and_shows_the_progress_widget(tmp_path, monkeypatch):
    monkeypatch.setenv("NATSLAB_PROGRESS", str(tmp_path / "p.json"))
    monkeypatch.chdir(ROOT)  # the kernel of COURSE.ipynb runs in the course root
    code = next(s for kind, s in contents_cells() if kind == "code")
    ns: dict = {}
    exec(compile(code.replace("natslab.progress()", "shown = natslab.progress()"), "<cell>", "exec"), ns)
    assert "href='labs/00_welcome_lab.ipynb'" in ns["shown"]._repr_html_()


def test_course_open_has_no_news_popup_and_opens_the_welcome_lesson():
    """Start JupyterLab as `./course open` does (headless) and read its settings and start page."""
    jupyter = ROOT / ".venv" / "bin" / "jupyter"
    if not jupyter.exists() or os.environ.get("NATSLAB_VENV"):
        pytest.skip("needs the course's own .venv")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "natslab-nav-test"
    proc = subprocess.Popen([str(ROOT / "course"), "open", "--no-browser", f"--ServerApp.port={port}",
                             f"--IdentityProvider.token={token}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                req = urllib.request.Request(f"{base}/lab/api/settings/@jupyterlab/apputils-extension:notification",
                                             headers={"Authorization": f"token {token}"})
                settings = json.loads(urllib.request.urlopen(req, timeout=5).read())
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
                assert time.monotonic() < deadline, "JupyterLab did not answer within 90 s"
                time.sleep(0.5)
        props = settings["schema"]["properties"]
        assert props["fetchNews"]["default"] == "false" and props["checkForUpdates"]["default"] is False
        assert settings["settings"].get("fetchNews", "false") == "false"

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **k):
                return None
        opener = urllib.request.build_opener(NoRedirect)
        try:
            opener.open(urllib.request.Request(base + "/", headers={"Authorization": f"token {token}"}), timeout=10)
            location = ""
        except urllib.error.HTTPError as exc:
            location = exc.headers.get("Location", "")
        assert location.split("?")[0].endswith("/lab/tree/notebooks/00_welcome.ipynb"), location
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        proc.stdout.close()


if __name__ == "__main__":
    if sys.argv[1:] == ["--fix"]:
        for p in fix():
            print("rewrote", p.relative_to(ROOT))
    else:
        sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
