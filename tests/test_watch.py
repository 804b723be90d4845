"""`pliny watch`: a real subprocess following an audit log another process appends to."""

from __future__ import annotations

import os
import pty
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pliny import events as ev
from pliny.audit.log import AuditLog
from pliny.lifecycle.store import SessionStore
from tests.support.cli import CLI

SID = "demo"
S = {"session": SID}


def research() -> list[ev.Event]:
    p = {**S, "phase": "research"}
    agents = ["research-code", "research-docs", "research-task"]
    out: list[ev.Event] = [
        ev.SessionStarted(**S, framework="rise", task="t"),
        ev.PhaseStarted(**p, agents=agents),
    ]
    for name in agents:
        out += [
            ev.AgentStarted(**p, agent=name),
            ev.LLMCall(
                **p, agent=name, model="m", prompt_tokens=100, completion_tokens=20, cost_usd=0.001
            ),
            ev.AgentCompleted(**p, agent=name, duration_ms=5),
        ]
    return [*out, ev.PhaseCompleted(**p, next="identify", succeeded=3)]


def identify_and_end() -> list[ev.Event]:
    p = {**S, "phase": "identify"}
    return [
        ev.PhaseStarted(**p, agents=["findings"]),
        ev.AgentStarted(**p, agent="findings"),
        ev.LLMCall(
            **p, agent="findings", model="m", prompt_tokens=50, completion_tokens=10, cost_usd=0.002
        ),
        ev.AgentCompleted(**p, agent="findings", duration_ms=5),
        ev.PhaseCompleted(**p, next="end", succeeded=1),
        ev.SessionCompleted(**S),
    ]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    store = SessionStore(tmp_path)
    state = store.create("Demo", SID)
    state.framework, state.task = "rise", "t"
    state.status = "in_progress"  # as the runner sets it when a run starts
    store.save(state)
    return tmp_path


def log_of(ws: Path) -> AuditLog:
    return AuditLog(ws / "audit-logs" / f"{SID}.jsonl", fsync="none")


def start_watch(ws: Path, *args: str, **popen: object) -> subprocess.Popen[str]:
    options: dict[str, object] = {
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
        "text": True,
        **popen,
    }
    return subprocess.Popen([*CLI, "watch", *args, "-w", str(ws)], cwd=ws, **options)  # type: ignore[call-overload]


def lines_of(stream: object) -> queue.Queue[str | None]:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def wait_for(lines: queue.Queue[str | None], text: str, seen: list[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        if line is None:
            break
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"{text!r} never printed; got:\n{''.join(seen)}")


def test_follows_a_running_session_line_by_line_until_it_completes(ws: Path) -> None:
    with SessionStore(ws).lock(SID):  # looks running: the lock is held, by this process
        proc = start_watch(ws, SID)
        try:
            lines, seen = lines_of(proc.stdout), []
            with log_of(ws) as log:
                for event in research():
                    log(event)
                # Printed while the session is still going: it follows, not reads at the end.
                wait_for(lines, "phase_completed", seen)
                assert proc.poll() is None
                for event in identify_and_end():
                    log(event)
            assert proc.wait(timeout=30) == 0, proc.stderr.read()  # type: ignore[union-attr]
            wait_for(lines, f"session {SID} completed", seen)
        finally:
            proc.kill()
            proc.wait()
    out = "".join(seen)
    assert len(seen) == len(research()) + len(identify_and_end()) + 1  # + the closing line
    assert "research/research-docs" in out and "identify/findings" in out
    assert "research✔ → identify▶ → synthesize· → execute·" in out  # the to_line summary
    assert "completed: 4 calls, 420 tokens, $0.0050" in seen[-1]


def test_finished_session_prints_the_final_table_once(ws: Path) -> None:
    t0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    events = research() + identify_and_end()
    for i, event in enumerate(events):  # agents of research take 12.5 s by their timestamps
        late = event.type == "agent_completed" and event.phase == "research"
        event.ts = (
            (t0 + timedelta(seconds=12.5 if late else 0) + timedelta(milliseconds=i))
            .isoformat()
            .replace("+00:00", "Z")
        )
    with log_of(ws) as log:
        for event in events:
            log(event)
    store = SessionStore(ws)
    state = store.load(SID)
    state.status = "completed"
    store.save(state)
    proc = start_watch(ws)  # the current session
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    for text in ("research-code", "findings", "planner", "✔ done", "· waiting", "12.5s"):
        assert text in out
    assert out.rstrip().endswith("session demo completed: 4 calls, 420 tokens, $0.0050")


@pytest.mark.slow  # ~3 s: real CLI runs
def test_exits_when_the_running_process_disappears(ws: Path) -> None:
    holder_code = (
        "import sys, time; from pathlib import Path\n"
        "from pliny.lifecycle.store import SessionStore\n"
        "with SessionStore(Path(sys.argv[1])).lock('demo'):\n"
        "    print('locked', flush=True); time.sleep(120)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code, str(ws)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"  # type: ignore[union-attr]
        with log_of(ws) as log:
            for event in research()[:3]:
                log(event)
        proc = start_watch(ws, SID)
        lines, seen = lines_of(proc.stdout), []
        wait_for(lines, "agent_started", seen)
        holder.send_signal(signal.SIGKILL)  # dies without a final event (a zombie until reaped)
        assert proc.wait(timeout=30) == 0
        wait_for(lines, "crashed", seen)
    finally:
        holder.kill()
        holder.wait()
    assert "pliny session resume demo" in "".join(seen)


def test_unknown_session_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = start_watch(tmp_path, "nope")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.count("\n") == 1 and "unknown session 'nope'" in err


def test_terminal_gets_the_live_table(ws: Path) -> None:
    master, slave = pty.openpty()
    with SessionStore(ws).lock(SID):
        proc = start_watch(ws, SID, stdout=slave, env={**os.environ, "COLUMNS": "120"})
        os.close(slave)
        try:
            with log_of(ws) as log:
                for event in research() + identify_and_end():
                    log(event)
            assert proc.wait(timeout=30) == 0, proc.stderr.read()  # type: ignore[union-attr]
        finally:
            proc.kill()
            proc.wait()
        screen = "".join(_drain(master))
    for text in ("research-task", "findings", "done", "session demo completed"):
        assert text in screen


def _drain(fd: int) -> Iterator[str]:
    try:
        while chunk := os.read(fd, 65536):
            yield chunk.decode(errors="replace")
    except OSError:  # EIO: the child side is closed
        pass
    finally:
        os.close(fd)
