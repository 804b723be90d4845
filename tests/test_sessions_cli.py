"""`pliny session ...`, and bad input to the session commands, through the real CLI.

Bad input must give exit 2, one line on stderr naming the problem, and change nothing
(every file of the workspace, .git and .pliny included, compared byte for byte). Session
commands are run on a copy of one completed R-I-S-E run (fake server, real git).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.crashkit import (
    SESSION,
    TASK,
    completed_run,
    env_for,
    events,
    execute_args,
    git,
    init_workspace,
    listed_status,
    run,
    script,
    spawn,
)
from pliny.lifecycle.store import SessionState
from tests.fakeserver import FakeServer

pytestmark = pytest.mark.timeout(120)
STATE = f".pliny/sessions/{SESSION}/state.json"


@pytest.fixture(autouse=True)
def fresh_server(server: FakeServer) -> None:
    server.reset()
    script(server)


@pytest.fixture
def ws(completed: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "ws"
    shutil.copytree(completed, copy, symlinks=True)
    return copy


def everything(ws: Path) -> dict[str, bytes]:
    return {p.relative_to(ws).as_posix(): p.read_bytes() for p in ws.rglob("*") if p.is_file()}


def refused(ws: Path, server: FakeServer, *args: str, env: dict[str, str] | None = None) -> str:
    """Run a command that must fail as bad input and change nothing; returns its one line."""
    before = everything(ws)
    proc = run(ws, server, *args, env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-1500:])
    assert len(lines) == 1, lines
    assert everything(ws) == before, f"`pliny {' '.join(args)}` changed the workspace"
    return lines[0]


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["session", "show", "nope"],
        ["session", "resume", "nope"],
        ["session", "rm", "nope"],
        ["session", "cancel", "nope"],
        ["execute", "--session", "nope"],
        ["rollback", "after-research", "--session", "nope"],
    ],
)
def test_unknown_session_id(ws: Path, server: FakeServer, args: list[str]) -> None:
    line = refused(ws, server, *args)
    assert "'nope'" in line and SESSION in line  # names it and the sessions that exist


def test_unknown_checkpoint_lists_the_known_ones(ws: Path, server: FakeServer) -> None:
    line = refused(ws, server, "rollback", "after-nothing")
    assert "after-nothing" in line
    assert all(n in line for n in ("after-research", "after-identify", "after-execute"))


@pytest.mark.parametrize(
    "args",
    [
        ["session", "show", SESSION],
        ["session", "resume", SESSION],
        ["execute", "--session", SESSION],
        ["rollback", "after-research"],
        ["checkpoint", "list"],
    ],
)
def test_corrupt_state_file(ws: Path, server: FakeServer, args: list[str]) -> None:
    (ws / STATE).write_text('{"id": "torture", "status": "in_prog')
    line = refused(ws, server, *args)
    assert str(ws / STATE) in line and "corrupt" in line


def test_corrupt_checkpoint_state(ws: Path, server: FakeServer) -> None:
    path = ws / ".pliny" / "sessions" / SESSION / "checkpoints.json"
    path.write_text("{not json")
    assert str(path) in refused(ws, server, "rollback", "after-research")


def _conflict(ws: Path) -> None:
    """Two branches that both change README.md."""
    git(ws, "checkout", "-q", "-b", "other")
    (ws / "README.md").write_text("theirs\n")
    git(ws, "commit", "-q", "-am", "theirs")
    git(ws, "checkout", "-q", "main")
    (ws / "README.md").write_text("ours\n")
    git(ws, "commit", "-q", "-am", "ours")


@pytest.mark.parametrize(
    ("setup", "word"),
    [
        (lambda ws: (_conflict(ws), git(ws, "merge", "other", check=False)), "merge"),
        (lambda ws: (_conflict(ws), git(ws, "rebase", "other", check=False)), "rebase"),
        (lambda ws: git(ws, "checkout", "-q", "--detach"), "detached"),
    ],
    ids=["merge", "rebase", "detached"],
)
def test_busy_git_workspace_is_refused(
    tmp_path: Path, server: FakeServer, setup: Callable[[Path], object], word: str
) -> None:
    ws = init_workspace(tmp_path)
    setup(ws)
    line = refused(ws, server, "execute", "-f", "rise", "-t", TASK)
    assert word in line
    assert not (ws / ".pliny").exists() and not (ws / "audit-logs").exists()
    assert server.count() == 0


def test_git_missing(tmp_path: Path, server: FakeServer) -> None:
    ws = init_workspace(tmp_path)
    env = env_for(server, PATH=str(Path(sys.executable).parent))  # the venv: python, no git
    assert shutil.which("git", path=env["PATH"]) is None
    line = refused(ws, server, "execute", "-f", "rise", "-t", TASK, env=env)
    assert "git" in line
    assert not (ws / ".pliny").exists()


# -- the session commands ---------------------------------------------------------------------
def test_start_list_show(tmp_path: Path, server: FakeServer) -> None:
    started = run(tmp_path, server, "session", "start", "My first try", "--id", "try-1")
    assert started.returncode == 0 and started.stdout.strip() == "try-1"
    auto = run(tmp_path, server, "session", "start", "Second one")
    assert auto.stdout.strip().startswith("second-one-")
    listed = json.loads(run(tmp_path, server, "session", "list", "--json").stdout)
    assert sorted((s["id"], s["name"], s["current"]) for s in listed) == [
        (auto.stdout.strip(), "Second one", True),
        ("try-1", "My first try", False),
    ]
    assert "try-1" in run(tmp_path, server, "session", "show", "try-1").stdout
    assert "already exists" in refused(tmp_path, server, "session", "start", "x", "--id", "try-1")
    assert "invalid session id" in refused(tmp_path, server, "session", "start", "x", "--id", "a/b")


def test_a_new_session_is_not_crashed(tmp_path: Path, server: FakeServer) -> None:
    """`session start` makes a session nobody ran yet: not `crashed`, and its first run
    is a start, not a crash recovery."""
    run(tmp_path, server, "session", "start", "fresh", "--id", "fresh")
    assert listed_status(tmp_path, server, "fresh") != "crashed"


@pytest.mark.slow  # ~4 s: real CLI runs
def test_execute_with_a_new_session_id_creates_it(tmp_path: Path, server: FakeServer) -> None:
    init_workspace(tmp_path)
    script(server)
    proc = run(tmp_path, server, *execute_args("brand-new", "none"))
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert listed_status(tmp_path, server, "brand-new") == "completed"
    kinds = [e["type"] for e in events(tmp_path, "brand-new")]
    assert kinds[0] == "session_started" and "crash_detected" not in kinds


@pytest.mark.slow  # ~3 s: real CLI runs
def test_show_formats(ws: Path, server: FakeServer) -> None:
    def show(*fmt: str) -> str:
        proc = run(ws, server, "session", "show", SESSION, *fmt)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    data = json.loads(show("--json"))
    assert data["session"]["status"] == "completed" and data["session"]["task"] == TASK
    assert [p["name"] for p in data["phases"]] == ["research", "identify", "synthesize", "execute"]
    assert json.loads(show("--format", "json")) == data
    assert SESSION in show() and "completed" in show("--format", "text")
    assert show("--format", "dot").startswith("digraph")
    assert show("--format", "mermaid").startswith("flowchart")
    line = show("--format", "line")
    assert line.count("\n") == 1 and line.startswith("completed")
    assert "unknown format" in refused(ws, server, "session", "show", "--format", "bogus")


@pytest.mark.slow  # ~4 s: real CLI runs
def test_rm_keeps_the_audit_log_and_refs_unless_asked(ws: Path, server: FakeServer) -> None:
    refs = ["for-each-ref", f"refs/pliny/{SESSION}/"]
    assert run(ws, server, "session", "rm", SESSION).returncode == 0
    assert not (ws / ".pliny" / "sessions" / SESSION).exists()
    assert (ws / "audit-logs" / f"{SESSION}.jsonl").exists()
    assert git(ws, *refs).stdout.strip()  # refs kept
    assert json.loads(run(ws, server, "session", "list", "--json").stdout) == []
    completed_run(ws / "again", server, "phase", "other")
    assert run(ws / "again", server, "session", "rm", "other", "--refs").returncode == 0
    assert git(ws / "again", "for-each-ref", "refs/pliny/other/").stdout.strip() == ""


def _fake_session(ws: Path, session_id: str, status: str, updated: str) -> None:
    """A session state written through the model, with a chosen status and age."""
    state = SessionState(id=session_id, name=session_id, status=status, updated=updated)
    path = ws / ".pliny" / "sessions" / session_id / "state.json"
    path.parent.mkdir(parents=True)
    path.write_text(state.model_dump_json(indent=2))


@pytest.mark.slow  # ~3 s: real CLI runs
def test_clean(tmp_path: Path, server: FakeServer) -> None:
    old, new = "2020-01-01T00:00:00Z", "2999-01-01T00:00:00Z"
    sessions = [
        ("old-done", "completed", old),
        ("new-done", "completed", new),
        ("old-failed", "failed", old),
        ("new-paused", "paused", new),
    ]
    for sid, status, updated in sessions:
        _fake_session(tmp_path, sid, status, updated)

    def clean(*args: str) -> str:
        proc = run(tmp_path, server, "session", "clean", *args)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def left() -> set[str]:
        listed = run(tmp_path, server, "session", "list", "--json").stdout
        return {s["id"] for s in json.loads(listed)}

    assert "old-done" in clean("--older-than", "30d")
    assert left() == {"new-done", "old-failed", "new-paused"}
    assert "old-failed" in clean("--all", "--older-than", "30d")
    assert left() == {"new-done", "new-paused"}
    clean()
    assert left() == {"new-paused"}
    clean("--all")
    assert left() == set()
    assert "--older-than" in refused(tmp_path, server, "session", "clean", "--older-than", "soon")


@pytest.mark.slow  # ~7 s: real CLI runs
def test_cancel_then_resume(tmp_path: Path, server: FakeServer) -> None:
    init_workspace(tmp_path)
    run(tmp_path, server, "session", "start", "slow", "--id", SESSION)
    server.latency_ms = 2000
    proc = spawn(tmp_path, server, *execute_args(SESSION, "phase"))
    try:
        assert server.wait_for(1, timeout=60)
        cancel = run(tmp_path, server, "session", "cancel", SESSION)
        assert cancel.returncode == 0, cancel.stderr
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert listed_status(tmp_path, server) == "cancelled"
    assert "not running" in refused(tmp_path, server, "session", "cancel", SESSION)
    server.latency_ms = 0
    resumed = run(tmp_path, server, "session", "resume", SESSION)
    assert resumed.returncode == 0, resumed.stderr[-1500:]
    assert listed_status(tmp_path, server) == "completed"
    kinds = [e["type"] for e in events(tmp_path)]
    assert kinds.index("session_cancelled") < kinds.index("session_resumed")
    assert (tmp_path / "DELIVERABLE.md").exists()


def test_session_list_without_a_workspace_state(tmp_path: Path, server: FakeServer) -> None:
    assert json.loads(run(tmp_path, server, "session", "list", "--json").stdout) == []
    proc = run(tmp_path, server, "session", "list")
    assert proc.returncode == 0 and "no sessions" in proc.stdout
    assert os.listdir(tmp_path) == []
