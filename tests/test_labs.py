"""Labs come from solutions, and every check can fail: the unsolved lab and each blanked exercise."""
from __future__ import annotations

import json

import pytest

from natslab.grading import labs
from notebook_runner import ROOT, cut_after_check, run

SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
CASES = [(s, ex) for s in SOLUTIONS for ex in labs.exercise_ids(json.loads(s.read_text()))]
LOCAL = {"NATSLAB_BACKEND": "local"}


def test_every_solution_has_a_lab_and_exercises():
    assert SOLUTIONS, "no solution notebooks found"
    for sol in SOLUTIONS:
        assert labs.exercise_ids(json.loads(sol.read_text())), f"{sol.name} has no '# BEGIN SOLUTION x.y' region"
        assert (ROOT / "labs" / sol.name).exists(), f"labs/{sol.name} is missing"


def test_labs_match_their_solutions():
    stale = labs.generate(ROOT, check_only=True)
    assert not stale, f"labs/ is stale, run `python -m natslab.grading.labs`: {stale}"


def test_stub_keeps_indentation_and_names_the_exercise():
    src = "async def f(nc):\n    x = 1\n    # BEGIN SOLUTION 9.9\n    await nc.publish('a', b'')\n    # END SOLUTION\n    return x\n"
    out, ids = labs.blank_source(src)
    assert ids == ["9.9"]
    assert "    # YOUR CODE HERE (exercise 9.9)\n    raise NotImplementedError(\"exercise 9.9 is not solved yet\")\n" in out
    assert "publish" not in out and out.endswith("    return x\n")


def test_unterminated_region_is_an_error():
    with pytest.raises(ValueError, match="no END SOLUTION"):
        labs.blank_source("# BEGIN SOLUTION 1.1\nx = 1\n")


@pytest.mark.slow
@pytest.mark.parametrize("sol", SOLUTIONS, ids=lambda p: p.stem)
def test_lab_as_shipped_fails_at_its_first_exercise(sol):
    first = labs.exercise_ids(json.loads(sol.read_text()))[0]
    lab = json.loads((ROOT / "labs" / sol.name).read_text())
    err = run(lab, ROOT / "labs", env=LOCAL)
    assert err is not None, f"labs/{sol.name} ran without error: its checks cannot fail"
    assert err.ename == "ExerciseFailed", f"first error was {err.ename}: {err.evalue}"
    assert f"Exercise {first} " in err.evalue and "not yet solved" in err.evalue, err.evalue


@pytest.mark.slow
@pytest.mark.parametrize("sol,ex", CASES, ids=[f"{s.stem}-{e}" for s, e in CASES])
def test_each_exercise_blanked_alone_fails_its_own_check(sol, ex):
    nb = labs.make_lab(json.loads(sol.read_text()), only=ex, keep_solution_cells=True)
    err = run(cut_after_check(nb, ex), ROOT / "solutions", env=LOCAL)
    assert err is not None, f"exercise {ex} blanked still passed its check"
    assert err.ename == "ExerciseFailed" and f"Exercise {ex} " in err.evalue, f"{err.ename}: {err.evalue}"
