"""Workshop mode against a real class cluster (3 nodes, operator mode): joining, verdicts reaching the
dashboard, every isolation boundary probed from the attacker's side, revocation, bad credentials,
a node kill, and the instructor's console.  Each refusal has its positive control next to it.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import nats
import nats.errors
import pytest

import natslab
from natslab.grading.checks import ExerciseFailed
from natslab.lessons import security as sec
from natslab.workshop import Classroom, Dashboard, Membership, join, leave
from natslab.workshop.membership import read_class_file
from natslab.workshop.classroom import check_name

ROOT = Path(__file__).resolve().parents[1]


def run(coro):
    return asyncio.run(coro)


async def errors_of(nc_errors: list, what: str, timeout: float = 5.0) -> str:
    """The first error the client was told about that names ``what`` (nats-py lower-cases them)."""
    what = what.lower()
    await natslab.until(lambda: any(what in str(e).lower() for e in nc_errors), f"an error about {what}",
                        timeout=timeout)
    return next(str(e) for e in nc_errors if what in str(e).lower())


def test_names_are_subject_safe():
    for bad in ("Alice", "a.b", "a b", "*", ">", "instructor", "", "x" * 40):
        with pytest.raises(natslab.NatslabError):
            check_name(bad)
    assert check_name("alice_2") == "alice_2"


@pytest.fixture(autouse=True)
def own_progress(tmp_path, monkeypatch):
    """Each test's learner starts with no progress (other tests' passes would show on the board)."""
    monkeypatch.setenv("NATSLAB_PROGRESS", str(tmp_path / "progress.json"))
    yield
    asyncio.run(leave())          # a test that failed half-way leaves no membership to the next


def test_a_class_from_join_to_dashboard_with_its_boundaries(tmp_path):
    async def main():
        room = await Classroom.start(["alice", "bob"], name="wk1", directory=tmp_path)
        try:
            files = {n: room.learner_file(n) for n in ("alice", "bob")}
            assert all(p.exists() and (p.stat().st_mode & 0o077) == 0 for p in files.values())
            assert (tmp_path / "sheet.html").read_text().count("<tr>") == 3

            # alice joins and solves 0.1 after one wrong try; both verdicts reach the stream
            alice = await join(files["alice"], catch_up=False)
            with pytest.raises(ExerciseFailed):
                await natslab.check("0.1", lambda: natslab.server("welcome", jetstream=False))
            await natslab.check("0.1", lambda: natslab.server("welcome", jetstream=True))
            natslab.hint("0.2")
            await alice.flush()
            board = await room.board()
            assert board.state("alice", "0.1") == "passed", board.text()
            assert board.cells[("alice", "0.1")].attempts >= 2
            assert board.state("alice", "0.2") == "hints"

            # the dashboard: a live one sees a new verdict; a second one, opened later, sees the same
            dash = await Dashboard.open(room)
            dash.show()
            bob = await Membership(read_class_file(files["bob"])).open()   # another learner's kernel
            await bob.send({"event": "verdict", "exercise": "1.1", "title": "t", "passed": False,
                            "attempts": 1, "hints": 0})
            await natslab.until(lambda: dash.board.state("bob", "1.1") == "failing", "bob's verdict on the dashboard")
            assert "bob" in dash.widget.value and "1 tries" in dash.widget.value
            again = await Dashboard.open(tmp_path / "instructor.json")
            assert again.text() == dash.text()
            await again.close()

            # attacker: bob's payload claims to be alice; the class files it under bob
            await bob.send({"event": "verdict", "exercise": "1.2", "title": "t", "passed": True,
                            "attempts": 1, "hints": 0, "learner": "alice"})
            await natslab.until(lambda: dash.board.state("bob", "1.2") == "passed", "bob's claim, filed as bob")
            assert dash.board.state("alice", "1.2") == "-"

            # attacker: with alice's credentials, reach for bob, the instructor and JetStream
            errs: list = []

            async def on_error(e):
                errs.append(e)
            creds = str(alice.creds)
            spy = await nats.connect(room.urls, user_credentials=creds, error_cb=on_error)
            await spy.subscribe("verdicts.>")
            assert "permissions violation" in await errors_of(errs, '"verdicts.>"')
            await spy.publish("verdicts.bob", b'{"exercise":"9.9","passed":true}')
            assert "permissions violation" in await errors_of(errs, '"verdicts.bob"')
            with pytest.raises((nats.errors.Error, asyncio.TimeoutError)):
                await spy.request("$JS.API.STREAM.INFO.VERDICTS", b"", timeout=1)
            assert "permissions violation" in await errors_of(errs, "$JS.API.STREAM.INFO")
            # alice may use her inboxes, but bob's replies live in bob's account: she sees none
            seen: list = []

            async def snoop(msg):
                seen.append(msg.subject)
            await spy.subscribe("_INBOX.>", cb=snoop)
            await spy.flush()
            for i in range(3):
                await bob.send({"event": "verdict", "exercise": "1.3", "title": "t", "passed": False,
                                "attempts": i + 1, "hints": 0})
            await asyncio.sleep(0.5)
            assert seen == [], seen
            # the positive control: alice's own channel works
            ack = json.loads((await spy.request("class.verdict", b'{"exercise":"0.4","attempts":1}', timeout=5)).data)
            assert ack.get("stream") == "VERDICTS"
            await spy.close()

            # the class chat: every learner sees the others and the instructor, each under their own name
            heard: list = []
            await alice.listen(lambda who, text: heard.append((who, text)))
            await alice.nc.flush()
            await bob.say("hello from bob")
            await room.say("welcome, everyone")
            await natslab.until(lambda: {("bob", "hello from bob"), ("instructor", "welcome, everyone")} <= set(heard),
                                "the chat messages at alice", timeout=10)

            # reset clears bob on the dashboard; the stream keeps alice's verdicts
            gone = await room.reset("bob")
            assert gone >= 3
            await natslab.until(lambda: dash.board.state("bob", "1.1") == "-", "bob reset on the dashboard")
            assert dash.board.state("alice", "0.1") == "passed"
            await dash.close()
            await bob.close()
            await leave()
        finally:
            await room.stop()
        return room

    room = run(main())
    assert not any(s.running for s in room.topology)      # the class cluster is gone with the class
    natslab.stop_all()                                     # the servers exercise 0.1 started


def test_revocation_and_credentials_that_do_not_work(tmp_path):
    async def main():
        room = await Classroom.start(["carol", "dave"], name="wk2", directory=tmp_path)
        try:
            carol = await join(room.learner_file("carol"), catch_up=False)
            dropped = asyncio.Event()

            async def on_closed():
                dropped.set()
            watcher = await nats.connect(room.urls, user_credentials=str(carol.creds), closed_cb=on_closed,
                                         max_reconnect_attempts=2, reconnect_time_wait=0.2)
            await room.revoke("carol")
            await asyncio.wait_for(dropped.wait(), 20)            # the server disconnected her
            assert watcher.is_closed
            with pytest.raises(natslab.NatslabError, match="did not let carol in"):
                await join(room.learner_file("carol"))
            # a file whose JWT is dave's but whose seed is not dave's key
            data = json.loads(room.learner_file("dave").read_text())
            other = sec.new_key("user")
            data["creds"] = data["creds"].split("-----BEGIN USER NKEY SEED-----")[0] + \
                "-----BEGIN USER NKEY SEED-----\n" + other.seed + "\n------END USER NKEY SEED------\n"
            with pytest.raises(natslab.NatslabError, match="did not let dave in"):
                await join(data)
            # expired credentials of a real class account
            account, _ = room.learners["dave"]
            expired = account.user("dave", expires=-60)
            data = json.loads(room.learner_file("dave").read_text())
            data["creds"] = sec.creds_text(expired.jwt, expired.key.seed)
            with pytest.raises(natslab.NatslabError, match="did not let dave in"):
                await join(data)
            # not a class file at all
            bad = tmp_path / "notes.txt"
            bad.write_text("hello")
            with pytest.raises(natslab.NatslabError, match="not a class file"):
                await join(bad)
            # positive control: dave's own file still works
            dave = await join(room.learner_file("dave"), catch_up=False)
            assert "error" not in await dave.send({"event": "verdict", "exercise": "0.1", "title": "t",
                                                   "passed": True, "attempts": 1, "hints": 0})
            await leave()
        finally:
            await room.stop()

    run(main())


def test_a_class_node_killed_loses_no_verdict(tmp_path):
    async def main():
        room = await Classroom.start(["erin"], name="wk3", directory=tmp_path)
        try:
            erin = await join(room.learner_file("erin"), catch_up=False)
            first = erin.nc.connected_url.port
            victim = next(s for s in room.topology if s.ports["client"] == first)
            sends = [asyncio.ensure_future(erin.send({"event": "verdict", "exercise": f"2.{i}", "title": "t",
                                                      "passed": i % 2 == 0, "attempts": 1, "hints": 0}))
                     for i in range(1, 6)]
            victim.kill()
            sends += [asyncio.ensure_future(erin.send({"event": "verdict", "exercise": f"3.{i}", "title": "t",
                                                       "passed": True, "attempts": 1, "hints": 0}))
                      for i in range(1, 6)]
            acks = await asyncio.gather(*sends)
            assert all("error" not in a for a in acks), acks
            board = await room.board()
            assert sum(1 for (who, _) in board.cells if who == "erin") == 10, board.text()
            await leave()
        finally:
            await room.stop()

    run(main())


def test_the_instructor_console(tmp_path):
    env = {**os.environ, "NATSLAB_BACKEND": os.environ.get("NATSLAB_BACKEND", "local")}
    script = "learners\nadd frank\nsay hello\nboard\nrevoke frank\nlearners\nquit\n"
    out = subprocess.run([sys.executable, "-m", "natslab", "class", "start", "gina", "--dir", str(tmp_path)],
                         input=script, capture_output=True, text=True, timeout=240, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "learners" / "gina.json").exists() and (tmp_path / "learners" / "frank.json").exists()
    assert "frank  revoked" in out.stdout, out.stdout
    assert "learner" in out.stdout and "gina" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "natslab", "class", "start", "Bad.Name", "--dir", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert bad.returncode != 0 and "cannot be a learner's name" in bad.stderr and "Traceback" not in bad.stderr


def test_a_learner_started_with_NATSLAB_CLASS_reports_without_calling_join(tmp_path):
    """The one step a learner takes: the class file in $NATSLAB_CLASS; the first check joins by itself."""
    async def main():
        room = await Classroom.start(["hana"], name="wk4", directory=tmp_path)
        try:
            learner = r'''
import asyncio, natslab, natslab.workshop
async def main():
    await natslab.check("0.1", lambda: natslab.server("welcome", jetstream=True))
    await natslab.workshop.flush()
    print("member:", natslab.workshop.current())
    natslab.stop_all()
asyncio.run(main())
'''
            env = {**os.environ, "NATSLAB_CLASS": str(room.learner_file("hana")),
                   "NATSLAB_PROGRESS": str(tmp_path / "hana-progress.json"), "NATSLAB_BACKEND": "local"}
            out = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", learner], capture_output=True,
                                          text=True, timeout=180, env=env, cwd=ROOT)
            assert out.returncode == 0 and "member: <class wk4: hana" in out.stdout, out.stdout + out.stderr[-2000:]
            board = await room.board()
            assert board.state("hana", "0.1") == "passed", board.text()
            # a wrong file in $NATSLAB_CLASS: the check still gives its verdict, and one clear line says why
            env["NATSLAB_CLASS"] = str(tmp_path / "missing.json")
            out = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", learner], capture_output=True,
                                          text=True, timeout=180, env=env, cwd=ROOT)
            assert out.returncode == 0 and "not reporting to the class: Cannot read the class file" in out.stdout, \
                out.stdout + out.stderr[-2000:]
        finally:
            await room.stop()

    run(main())
