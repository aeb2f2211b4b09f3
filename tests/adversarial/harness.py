"""How the adversarial suite states its cases: an answer, and what its verdict must say.

Answers are written as a learner would write them (plain ``nats.connect`` included), not by
tweaking the solution.  ``passes`` asserts a pass; ``fails`` asserts an ``ExerciseFailed`` whose
text names the mistake (every fragment in ``says`` must appear, case-insensitively).
"""
from __future__ import annotations

import asyncio
import re

import natslab


def run(coro):
    return asyncio.run(coro)


def passes(exercise: str, *answer) -> str:
    try:
        verdict = run(natslab.check(exercise, *answer))
    except natslab.ExerciseFailed as failed:
        raise AssertionError(f"a correct answer to {exercise} was rejected:\n{failed}") from None
    assert verdict.passed
    return verdict.text()


def fails(exercise: str, *answer, says: str | tuple[str, ...]) -> str:
    try:
        verdict = run(natslab.check(exercise, *answer))
    except natslab.ExerciseFailed as failed:
        text = str(failed)
    else:
        raise AssertionError(f"a wrong answer to {exercise} passed:\n{verdict.text()}")
    for fragment in ([says] if isinstance(says, str) else says):
        assert re.search(re.escape(fragment), text, re.IGNORECASE), (
            f"the verdict for a wrong answer to {exercise} does not say {fragment!r}:\n{text}")
    return text
