"""natslab.progress(): one bar per module, the next exercise as a link to its lab, hints, time;
plain-text marks (no emoji); `python -m natslab progress [--reset MODULE]`; the file format check() writes."""
from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

import natslab
from natslab import cli
from natslab.grading import progress as P

ROOT = Path(__file__).resolve().parents[1]

SAMPLE = {
    "0.1": {"title": "start a server", "attempts": 2, "hints": 1,
            "first_tried_at": "2026-11-30T10:00:00", "passed_at": "2026-11-30T10:07:00"},
    "0.2": {"title": "publish a first message", "attempts": 1, "hints": 0,
            "first_tried_at": "2026-11-30T10:10:00", "passed_at": "2026-11-30T10:10:30"},
    "1.1": {"title": "route by wildcard", "attempts": 3, "hints": 2, "first_tried_at": "2026-11-30T11:00:00"},
}


@pytest.fixture
def sample(tmp_path, monkeypatch):
    path = tmp_path / "progress.json"
    monkeypatch.setenv("NATSLAB_PROGRESS", str(path))
    path.write_text(json.dumps(SAMPLE))
    return path


def _no_emoji(text: str) -> None:
    for ch in text:
        assert ord(ch) < 0x2190, f"{ch!r} ({unicodedata.name(ch, '?')}) needs a symbol font"


def test_text_shows_a_bar_per_module_next_exercise_hints_and_time(sample, monkeypatch):
    monkeypatch.chdir(ROOT / "notebooks")
    text = repr(natslab.progress())
    _no_emoji(text)
    assert text.splitlines()[0].startswith("natslab progress: 2/")
    welcome = next(l for l in text.splitlines() if l.startswith("  00 Welcome"))
    total0 = len([r for r in natslab.progress().rows if r.id.startswith("0.")])
    assert f" 2/{total0} " in welcome + " " and "hints 1" in welcome and "time 7 min" in welcome
    assert "[#" in welcome and "-]" in welcome
    core = next(l for l in text.splitlines() if l.startswith("  01 "))
    assert "hints 2" in core and "time 0 s" in core  # an exercise not passed yet adds no time
    assert "next: exercise 0.3" in text and "../labs/00_welcome_lab.ipynb" in text
    assert "[x] 0.1" in text and "[ ] 0.3" in text and "[2 hints asked]" in text


def test_html_widget_has_bars_links_to_the_lab_and_no_emoji(sample, monkeypatch):
    monkeypatch.chdir(ROOT / "notebooks")
    page = natslab.progress()._repr_html_()
    _no_emoji(page)
    assert page.count("class='natslab-bar'") == len(natslab.progress().modules) >= 7
    assert "href='../labs/00_welcome_lab.ipynb'" in page and "href='../labs/01_core_messaging_lab.ipynb'" in page
    assert "width:50%" in page  # module 00: 2 of 4 passed
    monkeypatch.chdir(ROOT)
    assert "href='labs/00_welcome_lab.ipynb'" in natslab.progress()._repr_html_()


def test_every_next_link_points_at_a_lab_that_exists(tmp_path, monkeypatch):
    monkeypatch.setenv("NATSLAB_PROGRESS", str(tmp_path / "empty.json"))
    for m in natslab.progress().modules:
        assert m.lab is not None and m.lab.exists(), f"module {m.key} has exercises but no lab"
        assert m.next is m.rows[0]


def test_reset_one_module_keeps_the_others(sample):
    prog = natslab.progress()
    assert prog.reset("00") == 2
    data = json.loads(sample.read_text())
    assert set(data) == {"1.1"} and data["1.1"] == SAMPLE["1.1"]  # the file format is untouched
    assert prog.passed == 0 and "[ ] 0.1" in repr(prog)
    assert P.reset_progress("all") == 1 and json.loads(sample.read_text()) == {}


def test_reset_names_a_module_or_says_what_is_wrong(sample):
    with pytest.raises(natslab.NatslabError, match="not a module"):
        P.reset_progress("jetstream")
    with pytest.raises(natslab.NatslabError, match="no module '42'"):
        P.reset_progress("42")
    assert json.loads(sample.read_text()) == SAMPLE


def test_check_and_hint_write_the_documented_format(tmp_path, monkeypatch):
    path = tmp_path / "p.json"
    monkeypatch.setenv("NATSLAB_PROGRESS", str(path))

    def count(server):
        return server.monitor("varz")["connections"]
    assert asyncio.run(natslab.check("0.4", count)).passed
    natslab.hint("0.4")
    entry = json.loads(path.read_text())["0.4"]
    assert set(entry) == {"title", "attempts", "hints", "first_tried_at", "passed_at"}
    assert entry["attempts"] == 1 and entry["hints"] == 1
    row = next(r for r in natslab.progress().rows if r.id == "0.4")
    assert row.passed_at == entry["passed_at"] and row.hints == 1


def test_cli_prints_the_same_and_resets(sample):
    out = io.StringIO()
    assert cli.show_progress(None, out=out) == 0
    assert out.getvalue().strip().splitlines()[:8] == repr(natslab.progress()).splitlines()[:8]
    out = io.StringIO()
    assert cli.show_progress("1", out=out) == 0
    assert "reset module 1: 1 exercise entry removed" in out.getvalue()
    assert set(json.loads(sample.read_text())) == {"0.1", "0.2"}
    assert cli.show_progress("nope", out=io.StringIO()) == 1


def test_python_m_natslab_progress_runs(sample):
    run = subprocess.run([sys.executable, "-m", "natslab", "progress"], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "NATSLAB_PROGRESS": str(sample)})
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("natslab progress: 2/") and "00 Welcome" in run.stdout
    _no_emoji(run.stdout)
