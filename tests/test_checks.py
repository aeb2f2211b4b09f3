"""The check framework: verdicts name exercise, expected, seen and hint; passes are recorded."""
from __future__ import annotations

import asyncio
import json

import pytest

import natslab
from natslab.grading import checks


def test_failure_is_an_assertion_with_expected_seen_and_hint():
    async def wrong(nc):
        await nc.publish("greetings.World", b"hello, NATS")

    with pytest.raises(natslab.ExerciseFailed) as err:
        asyncio.run(natslab.check("0.2", wrong))
    assert isinstance(err.value, AssertionError)
    text = str(err.value)
    assert text.startswith("✗ Exercise 0.2 (publish a first message):")
    assert "expected: subject greetings.world" in text and "seen:     subject greetings.World" in text
    assert "hint:" in text
    assert "#cf222e" in err.value.verdict._repr_html_()


def test_unsolved_stub_says_not_yet_solved():
    def stub():
        raise NotImplementedError("exercise 0.1 is not solved yet")

    with pytest.raises(natslab.ExerciseFailed, match="Exercise 0.1 .*not yet solved"):
        asyncio.run(natslab.check("0.1", stub))


def test_not_a_function_and_hanging_code_are_explained():
    with pytest.raises(natslab.ExerciseFailed, match="is not a function"):
        asyncio.run(natslab.check("0.4", 42))

    async def hangs(nc):
        await asyncio.sleep(3600)

    async def quick():
        return await checks.call_learner(hangs, None, timeout=0.2)
    with pytest.raises(checks.Mismatch, match="did not finish"):
        asyncio.run(quick())


def test_a_timeout_raised_by_learner_code_is_not_called_a_hang():
    async def gives_up(nc):
        raise asyncio.TimeoutError()

    async def quick():
        return await checks.call_learner(gives_up, None, timeout=5)
    with pytest.raises(checks.Mismatch, match="raised TimeoutError"):
        asyncio.run(quick())


def test_cancelling_a_check_cancels_the_learner_code_and_runs_its_cleanup():
    cleaned = []

    async def forever():
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.append(True)

    async def go():
        task = asyncio.ensure_future(checks.call_learner(forever, timeout=60))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    asyncio.run(go())
    assert cleaned == [True]


def test_pass_is_recorded_in_progress(tmp_path, monkeypatch):
    monkeypatch.setenv("NATSLAB_PROGRESS", str(tmp_path / "p.json"))

    def count(server):
        return server.monitor("varz")["connections"]
    verdict = asyncio.run(natslab.check("0.4", count))
    assert verdict.passed and verdict.text().startswith("✓ Exercise 0.4")
    assert "0.4" in json.loads((tmp_path / "p.json").read_text())
    prog = natslab.progress()
    assert "[x] 0.4" in repr(prog) and "[ ] 0.1" in repr(prog)  # plain marks: no emoji font needed


def test_unknown_exercise_is_a_clear_error():
    with pytest.raises(natslab.NatslabError, match="no exercise"):
        asyncio.run(natslab.check("99.9", print))


def test_hints_come_in_levels_and_asking_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("NATSLAB_PROGRESS", str(tmp_path / "p.json"))
    ex = checks.lookup("0.2")
    assert len(ex.hints) >= 2, "every exercise has at least a concept hint and a solution line"
    first = natslab.hint("0.2")
    assert first.level == 1 and "hint 1 of" in first.text()
    levels = [natslab.hint("0.2").level for _ in range(len(ex.hints) + 1)]
    assert levels[-1] == len(ex.hints) and "solution line" in natslab.hint("0.2").text()
    assert json.loads((tmp_path / "p.json").read_text())["0.2"]["hints"] == len(ex.hints) + 3


def test_a_failure_shows_the_concept_not_the_solution_line():
    async def wrong(nc):
        await nc.publish("greetings.World", b"hello, NATS")

    with pytest.raises(natslab.ExerciseFailed) as err:
        asyncio.run(natslab.check("0.2", wrong))
    text = str(err.value)
    assert checks.lookup("0.2").hints[-1] not in text
    assert 'natslab.hint("0.2")' in text


@pytest.mark.parametrize("behaviour", ["closes", "drains", "course_error", "cancels", "base_exception_free"])
def test_whatever_learner_code_does_ends_in_a_verdict(behaviour):
    async def learner(nc):
        if behaviour == "closes":
            await nc.close()
        elif behaviour == "drains":
            await nc.drain()
        elif behaviour == "course_error":
            raise natslab.NatslabError("a helper gave up", "do the thing")
        elif behaviour == "cancels":
            raise asyncio.CancelledError()
        else:
            return object()

    with pytest.raises(natslab.ExerciseFailed) as err:
        asyncio.run(natslab.check("0.2", learner))
    assert str(err.value).startswith("✗ Exercise 0.2")
