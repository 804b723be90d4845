"""Crash tests: a real `pliny execute` subprocess is SIGKILLed mid-agent, between phases and
during a checkpoint commit, then `pliny session resume` must finish the job as if nothing
happened.

The fake OpenAI server runs in this process with 200 ms latency, so kills land while calls
are in flight. Each crashed run is compared with an uninterrupted reference run of the same
session id in another workspace: identical files, identical phase checkpoints, no recorded
call re-sent (the server's request count is the reference's plus the calls in flight at the
kill), no finished agent asking the model again, audit chain intact, `git fsck` clean, no
process left behind. Harness: bench/crashkit.py.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.crashkit import (
    SESSION,
    Ledger,
    Reference,
    create_session,
    events,
    execute_args,
    init_workspace,
    journal_hashes,
    kill,
    listed_status,
    reference_run,
    run,
    script,
    spawn,
    survivors,
    verify,
    wait_until,
)
from tests.fakeserver import FakeServer

pytestmark = pytest.mark.timeout(180)
LATENCY_MS = 200


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with FakeServer(latency_ms=LATENCY_MS) as srv:
        yield srv


@pytest.fixture(scope="module")
def reference(
    server: FakeServer, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Reference]:
    """The uninterrupted run per checkpoint mode, computed once per module."""
    cache: dict[str, Reference] = {}

    def get(mode: str) -> Reference:
        if mode not in cache:
            ws = tmp_path_factory.mktemp(f"reference-{mode}") / "ws"
            ws.mkdir()
            cache[mode] = reference_run(init_workspace(ws), server, SESSION, mode)
        return cache[mode]

    return get


def start(
    tmp_path: Path, server: FakeServer, mode: str, latency_ms: float = LATENCY_MS
) -> tuple[Path, subprocess.Popen[bytes], Ledger]:
    ws = tmp_path / "ws"
    ws.mkdir()
    init_workspace(ws)
    server.reset()
    server.latency_ms = latency_ms
    script(server)
    create_session(ws, server)
    return ws, spawn(ws, server, *execute_args(SESSION, mode)), Ledger(server, ws)


def crash_and_resume(
    ws: Path,
    proc: subprocess.Popen[bytes],
    ledger: Ledger,
    server: FakeServer,
    ref: Reference,
    group: bool = False,
) -> dict[str, Any]:
    """SIGKILL, check the crash is visible, resume, check every invariant; returns what the
    kill hit (for the scenario's own assertions)."""
    kill(proc, group=group)
    assert survivors(proc.pid) == [], "processes of the killed run are still alive"
    ledger.close(killed=True)
    before = events(ws)
    hit = {
        "completed": [e["agent"] for e in before if e["type"] == "agent_completed"],
        "checkpoints": [e["name"] for e in before if e["type"] == "checkpoint_created"],
        "last_event": before[-1]["type"] if before else None,
        "requests": len(server.requests),
        "lost_in_flight": ledger.lost,
        "journaled": len(journal_hashes(ws)),
    }
    print("kill hit:", hit)
    assert listed_status(ws, server) == "crashed", hit

    resumed = run(ws, server, "session", "resume", SESSION)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ledger.close(killed=False)
    assert verify(ws, server, ref, ledger) == [], hit

    after = events(ws)[len(before) :]
    kinds = [e["type"] for e in after]
    again = [
        e["agent"]
        for e in after
        if e["type"] == "llm_call" and not e["replayed"] and e["agent"] in hit["completed"]
    ]
    assert again == [], f"agents that had finished asked the model again: {again}"
    hit["reran_replayed"] = sorted(
        {e["agent"] for e in after if e["type"] == "agent_started"} & set(hit["completed"])
    )
    assert "session_resumed" in kinds
    assert "crash_detected" in kinds, f"no crash_detected after the kill: {kinds[:5]}"
    return hit


@pytest.mark.parametrize(
    ("mode", "k", "in_flight"),
    [
        ("agent", 7, "planner"),  # research and findings done, the planner's call in flight
        ("agent", 9, "executor"),  # executor's 2nd turn in flight, after its write_file tool ran
        ("phase", 4, "research"),  # three parallel researchers, some finished, some mid-call
    ],
)
@pytest.mark.slow  # ~11 s: SIGKILL and resume, real subprocesses
def test_kill_mid_agent(
    tmp_path: Path,
    server: FakeServer,
    reference: Callable[[str], Reference],
    mode: str,
    k: int,
    in_flight: str,
) -> None:
    ref = reference(mode)
    ws, proc, ledger = start(tmp_path, server, mode)
    assert server.wait_for(k, timeout=60), "the run never reached the kill point"
    hit = crash_and_resume(ws, proc, ledger, server, ref)
    assert hit["lost_in_flight"] >= 1, "the kill was meant to land while a call was in flight"
    assert in_flight not in hit["completed"]
    if in_flight == "planner":
        assert set(hit["completed"]) == {
            "research-code",
            "research-docs",
            "research-task",
            "findings",
        }


@pytest.mark.slow  # ~6 s: SIGKILL and resume, real subprocesses
def test_kill_between_phases(
    tmp_path: Path, server: FakeServer, reference: Callable[[str], Reference]
) -> None:
    """Kill as soon as the audit log shows research complete (its commit is about to run)."""
    ref = reference("agent")
    ws, proc, ledger = start(tmp_path, server, "agent")
    done = wait_until(
        lambda: any(
            e["type"] == "phase_completed" and e["phase"] == "research" for e in events(ws)
        ),
        proc,
    )
    assert done, "research never completed"
    hit = crash_and_resume(ws, proc, ledger, server, ref)
    assert {"research-code", "research-docs", "research-task"} <= set(hit["completed"])
    assert "findings" not in hit["completed"]


HOOK = """#!/bin/sh
# Blocks the checkpoint's ref transaction after git took its locks, so the test can kill
# Pliny (and git with it) in the middle of the commit.
[ "$1" = prepared ] || exit 0
if grep -q "checkpoints/{name}"; then touch "{marker}"; sleep 60; fi
exit 0
"""


@pytest.mark.slow  # ~7 s: SIGKILL and resume, real subprocesses
def test_kill_during_commit(
    tmp_path: Path, server: FakeServer, reference: Callable[[str], Reference]
) -> None:
    """SIGKILL the whole process group while `git update-ref` holds its ref locks for the
    per-agent checkpoint of `findings`: the commit object exists, the refs are locked."""
    ref = reference("agent")
    ws = tmp_path / "ws"
    ws.mkdir()
    init_workspace(ws)
    marker = tmp_path / "in-commit"
    hook = ws / ".git" / "hooks" / "reference-transaction"
    hook.write_text(HOOK.format(name="after-identify.findings", marker=marker))
    hook.chmod(0o755)
    server.reset()
    server.latency_ms = LATENCY_MS
    script(server)
    create_session(ws, server)
    proc = spawn(ws, server, *execute_args(SESSION, "agent"))
    assert wait_until(marker.exists, proc), "the commit of after-identify.findings never ran"
    ledger = Ledger(server, ws)
    kill(proc, group=True)
    hook.unlink()
    locks = sorted(p.name for p in (ws / ".git" / "refs" / "pliny").rglob("*.lock"))
    assert locks, "expected git's ref locks to be left behind by the kill"
    hit = crash_and_resume(ws, proc, ledger, server, ref)
    assert "findings" in hit["completed"]
    assert "after-identify.findings" not in hit["checkpoints"]


@pytest.mark.slow  # ~10 s: SIGKILL and resume, real subprocesses
def test_second_run_is_refused_while_running(
    tmp_path: Path, server: FakeServer, reference: Callable[[str], Reference]
) -> None:
    """The session lock: a second `execute`/`resume` on a running session is refused with one
    line and exit 2, and the first run finishes undisturbed."""
    ref = reference("agent")
    ws, proc, ledger = start(tmp_path, server, "agent", latency_ms=1000)
    try:
        assert server.wait_for(1, timeout=60)
        assert listed_status(ws, server) == "in_progress"
        for args in (execute_args(SESSION, "agent"), ["session", "resume", SESSION]):
            second = run(ws, server, *args)
            lines = second.stderr.strip().splitlines()
            assert second.returncode == 2, second.stderr
            assert len(lines) == 1 and "already running" in lines[0], lines
            assert str(proc.pid) in lines[0]
        assert proc.wait(timeout=120) == 0, "the first run was disturbed"
    finally:
        if proc.poll() is None:
            kill(proc)
    ledger.close(killed=False)
    assert verify(ws, server, ref, ledger) == []
    started = [e for e in events(ws) if e["type"] in ("session_started", "session_resumed")]
    assert len(started) == 1, "the refused process wrote to the audit log"
