"""Committed notebooks: no outputs or widget state, the python3 kernel, sources as lists of lines,
the lesson template.

    .venv/bin/python tests/test_notebook_hygiene.py --fix

rewrites every notebook under notebooks/ and solutions/ through nbformat, which stores each cell's
source as a list of lines (then run `.venv/bin/python -m natslab.grading.labs` for labs/).
"""
from __future__ import annotations

import json
import sys

import pytest

from notebook_runner import ROOT

ALL = sorted(p for d in ("notebooks", "labs", "solutions") for p in (ROOT / d).glob("*.ipynb"))
LESSONS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _src(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


@pytest.mark.parametrize("path", ALL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_without_outputs_and_with_python3_kernel(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3"
    assert "widgets" not in nb["metadata"], "widget state is committed"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, _src(cell)[:80]
            assert "asyncio.run(" not in _src(cell) or "except RuntimeError" in _src(cell), \
                "notebooks use top-level await, not asyncio.run"


@pytest.mark.parametrize("path", ALL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_sources_are_stored_as_lists_of_lines(path):
    """One line per list item, as nbformat writes them: reviews and diffs show the line that changed."""
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        src = cell["source"]
        assert isinstance(src, list), (
            f"cell {i} stores its source as one string; run `.venv/bin/python tests/test_notebook_hygiene.py "
            f"--fix` (labs/: `python -m natslab.grading.labs`): {_src(cell)[:60]!r}")
        assert all(line.endswith("\n") for line in src[:-1]) and all("\n" not in line[:-1] for line in src), \
            f"cell {i}: each list item must be exactly one line"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lessons_follow_the_template(path):
    cells = json.loads(path.read_text())["cells"]
    first = _src(cells[0])
    assert first.startswith("# ") and "you will" in first.lower(), "title and objectives first"
    assert any(c["cell_type"] == "markdown" and "## Recap" in _src(c) for c in cells), "a Recap section"
    last_code = [c for c in cells if c["cell_type"] == "code"][-1]
    assert "stop_all()" in _src(last_code) or ".close()" in _src(last_code), "teardown cell last"
    assert any("import natslab" in _src(c) for c in cells if c["cell_type"] == "code")


def store_sources_as_lines(paths=None) -> list:
    """Rewrite notebooks through nbformat (version 4): cell sources become lists of lines; nothing
    else changes.  Returns the notebooks that changed."""
    import nbformat

    changed = []
    for path in paths or [p for p in ALL if p.parent.name != "labs"]:  # labs/ is generated
        before = path.read_text()
        text = nbformat.writes(nbformat.read(str(path), as_version=4), version=4)
        text = text if text.endswith("\n") else text + "\n"
        if text != before:
            path.write_text(text)
            changed.append(path)
    return changed


if __name__ == "__main__":
    if sys.argv[1:] != ["--fix"]:
        sys.exit(__doc__)
    for p in store_sources_as_lines():
        print("rewrote", p.relative_to(ROOT))
    print("now regenerate the labs: .venv/bin/python -m natslab.grading.labs")
