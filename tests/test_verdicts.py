"""No learner behaviour escapes a check as anything but ExerciseFailed (a verdict, never a traceback).

Every registered exercise is fed the same stubs a learner might write by mistake: code that raises,
raises a course error, returns a wrong type, returns bytes, closes or drains every connection it is
handed.  Each must end in a verdict naming the exercise.
"""
from __future__ import annotations

import asyncio

import nats.aio.client
import pytest

import natslab
from natslab.grading import checks

for _n in range(10):
    try:
        __import__(f"natslab.grading.exercises.m{_n:02d}")
    except ModuleNotFoundError:
        pass
EXERCISES = sorted(checks.REGISTRY, key=lambda e: [int(x) for x in e.split(".")])


def _connections(args):
    return [a for a in args if isinstance(a, nats.aio.client.Client)]


async def _raises(*args, **kw):
    raise RuntimeError("my code broke")


async def _course_error(*args, **kw):
    raise natslab.NatslabError("a course helper gave up", "do the thing")


async def _wrong_type(*args, **kw):
    return object()


async def _bytes(*args, **kw):
    return b"bytes, not what was asked"


async def _closes(*args, **kw):
    for nc in _connections(args):
        await nc.close()


async def _drains(*args, **kw):
    for nc in _connections(args):
        await nc.drain()


def _sync_none(*args, **kw):
    return None


STUBS = {"raises": _raises, "course_error": _course_error, "wrong_type": _wrong_type, "bytes": _bytes,
         "closes": _closes, "drains": _drains, "sync_none": _sync_none}


def _arity(ex_id: str) -> int:
    """How many learner objects the exercise's check call takes."""
    import inspect
    sig = inspect.signature(checks.REGISTRY[ex_id].checker)
    return sum(1 for p in sig.parameters.values() if p.default is inspect.Parameter.empty
               and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


# Where a stub is the exercise's answer (1.9 asks for exactly a drain), it must pass instead.
CORRECT_BY_DESIGN = {("1.9", "drains")}


@pytest.mark.parametrize("stub", sorted(STUBS))
@pytest.mark.parametrize("ex_id", EXERCISES)
def test_every_behaviour_ends_in_a_verdict(ex_id, stub):
    answer = [STUBS[stub]] * _arity(ex_id)
    if (ex_id, stub) in CORRECT_BY_DESIGN:
        assert asyncio.run(natslab.check(ex_id, *answer)).passed
        return
    with pytest.raises(natslab.ExerciseFailed) as failed:
        asyncio.run(natslab.check(ex_id, *answer))
    assert str(failed.value).startswith(f"✗ Exercise {ex_id} ")


@pytest.mark.parametrize("ex_id", EXERCISES)
def test_every_exercise_has_hints_in_levels(ex_id):
    hints = checks.REGISTRY[ex_id].hints
    assert len(hints) >= 3, f"{ex_id}: hints go concept -> API -> solution line (at least 3 levels)"
    assert all(h.strip() for h in hints)
