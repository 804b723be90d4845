"""The quick start as a user types it: `session start`, then `execute` runs that session.

Real CLI subprocesses, the fake OpenAI server, real git workspaces.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.crashkit import TASK, env_for, init_workspace, run, script, state
from pliny.lifecycle.views import cost_text
from tests.fakeserver import FakeServer

pytestmark = pytest.mark.timeout(120)
EXECUTE = ["execute", "--framework", "rise", "--checkpoint", "phase"]


@pytest.fixture(autouse=True)
def scripted(server: FakeServer) -> None:
    server.reset()
    script(server)


def ok(ws: Path, server: FakeServer, *args: str, **env: str) -> str:
    proc = run(ws, server, *args, env=env_for(server) | env)
    assert proc.returncode == 0, proc.stderr[-1500:]
    return proc.stdout


def bad(ws: Path, server: FakeServer, *args: str) -> str:
    proc = run(ws, server, *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stderr[-1500:])
    return lines[0]


def listed(ws: Path, server: FakeServer, *args: str) -> list[dict]:
    return json.loads(ok(ws, server, "session", "list", "--json", *args))


@pytest.mark.slow  # ~3 s: real CLI runs
def test_quick_start_runs_the_current_session_with_its_task(
    tmp_path: Path, server: FakeServer
) -> None:
    init_workspace(tmp_path)
    sid = ok(tmp_path, server, "session", "start", "Health endpoint", "-t", TASK).strip()
    ok(tmp_path, server, *EXECUTE)
    assert [(s["id"], s["status"], s["task"]) for s in listed(tmp_path, server)] == [
        (sid, "completed", TASK)
    ]


@pytest.mark.slow  # ~5 s: real CLI runs
def test_task_given_at_execute_goes_into_the_current_session(
    tmp_path: Path, server: FakeServer
) -> None:
    init_workspace(tmp_path)
    ok(tmp_path, server, "session", "start", "Health endpoint", "--id", "first")
    assert "no task" in bad(tmp_path, server, *EXECUTE)  # neither then nor now
    assert state(tmp_path, "first")["status"] == "created"  # the refusal changed nothing
    ok(tmp_path, server, *EXECUTE, "-t", TASK)
    assert [(s["id"], s["status"]) for s in listed(tmp_path, server)] == [("first", "completed")]
    assert state(tmp_path, "first")["task"] == TASK
    # The current session has run: a new task makes a new session, and says so.
    again = run(tmp_path, server, *EXECUTE, "-t", "Document the endpoint")
    assert again.returncode == 0, again.stderr[-1500:]
    sessions = listed(tmp_path, server)
    assert [s["id"] for s in sessions][1] == "first" and len(sessions) == 2
    assert (
        f"session first has already run (completed); started a new session {sessions[0]['id']}"
        in again.stderr
    )


@pytest.mark.slow  # ~6 s: real CLI runs
def test_ids_accept_a_unique_prefix(tmp_path: Path, server: FakeServer) -> None:
    init_workspace(tmp_path)
    for sid in ("alpha-one", "alpha-two", "beta-1"):
        ok(tmp_path, server, "session", "start", sid, "--id", sid, "-t", TASK)
    ok(tmp_path, server, *EXECUTE, "--session", "bet")  # runs beta-1, creates nothing new
    assert {s["id"]: s["status"] for s in listed(tmp_path, server)}["beta-1"] == "completed"
    assert len(listed(tmp_path, server)) == 3
    for args in (
        ["session", "show", "bet"],
        ["session", "status", "bet"],
        ["audit", "summary", "bet"],
        ["audit", "verify", "bet"],
        ["metrics", "bet"],
    ):
        assert "beta-1" in ok(tmp_path, server, *args), args
    for args in (
        ["session", "show", "alpha"],
        ["session", "rm", "alpha"],
        [*EXECUTE, "--session", "alpha"],
        ["checkpoint", "list", "--session", "alpha"],
    ):
        line = bad(tmp_path, server, *args)
        assert "ambiguous session id 'alpha'" in line and "alpha-one, alpha-two" in line, line
    assert "removed alpha-two" in ok(tmp_path, server, "session", "rm", "alpha-t")
    assert [s["id"] for s in listed(tmp_path, server)] == ["beta-1", "alpha-one"]


@pytest.mark.slow  # ~3 s: real CLI runs
def test_status_summary(tmp_path: Path, server: FakeServer) -> None:
    init_workspace(tmp_path)
    ok(tmp_path, server, "session", "start", "never run", "--id", "idle")
    idle = json.loads(ok(tmp_path, server, "session", "status", "--json"))
    assert idle["status"] == "created" and idle["resumable"] is False and idle["calls"] == 0
    server.fail(400, system="careful implementer")  # the executor fails, not retried
    failed = run(tmp_path, server, *EXECUTE, "--session", "idle", "-t", TASK)
    assert failed.returncode == 1, failed.stderr[-1500:]
    got = json.loads(ok(tmp_path, server, "session", "status", "idle", "--json"))
    assert got["status"] == "failed" and got["resumable"] is True and got["error"]
    assert got["framework"] == "rise" and got["agents_total"] == 6
    assert 0 < got["agents_done"] < 6 and got["calls"] > 0 and got["tokens"] > 0
    assert got["elapsed_s"] >= 0
    text = ok(tmp_path, server, "session", "status", "idle")
    assert "resumable: yes" in text and "pliny session resume idle" in text
    assert (
        f"{got['agents_done']}/6 done" in text and f"${got['cost_usd']:.4f}" in text
    )  # the fake model has no price


def test_list_never_truncates_ids_and_has_limit_and_verbose(
    tmp_path: Path, server: FakeServer
) -> None:
    ids = [
        ok(
            tmp_path, server, "session", "start", f"Add a health endpoint, take {n}", "-t", TASK
        ).strip()
        for n in range(2)
    ]
    longest = "x" * 64  # the longest id allowed: wider than the terminal, folded, never cut
    ok(tmp_path, server, "session", "start", "long", "--id", longest)
    ids.append(longest)
    for args in ([], ["-v"]):
        table = ok(tmp_path, server, "session", "list", *args, COLUMNS="60")
        assert all(len(line) <= 60 for line in table.splitlines()), table
        for sid in ids[:2]:
            assert sid in table, table  # one piece, copyable
        assert longest in "".join(c for c in table if c == "x"), table
    newest = [s["id"] for s in listed(tmp_path, server, "--limit", "2")]
    assert newest == [ids[2], ids[1]]
    verbose = ok(tmp_path, server, "session", "list", "-v", "-n", "2", COLUMNS="250")
    assert ids[2] in verbose and ids[1] in verbose and ids[0] not in verbose
    assert all(col in verbose for col in ("task", "tokens", "cost", "checkpoint", "status"))


def test_cost_text_says_unpriced() -> None:
    figures = {"calls": 2, "cost_usd": 0.0, "unpriced_calls": 2}
    assert cost_text(figures) == "unpriced"
    assert cost_text(figures | {"calls": 3, "cost_usd": 0.01}) == "$0.0100 + unpriced"
