"""Committed notebooks: no outputs or widget state, the python3 kernel, the lesson template."""
from __future__ import annotations

import json

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


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lessons_follow_the_template(path):
    cells = json.loads(path.read_text())["cells"]
    first = _src(cells[0])
    assert first.startswith("# ") and "you will" in first.lower(), "title and objectives first"
    assert any(c["cell_type"] == "markdown" and "## Recap" in _src(c) for c in cells), "a Recap section"
    last_code = [c for c in cells if c["cell_type"] == "code"][-1]
    assert "stop_all()" in _src(last_code) or ".close()" in _src(last_code), "teardown cell last"
    assert any("import natslab" in _src(c) for c in cells if c["cell_type"] == "code")
