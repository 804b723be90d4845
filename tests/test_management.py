"""Managing runs end to end: clean-up and retention, stopping, metrics, partial runs,
the result cache and the Python API. Real `pliny` subprocesses, real git, the fake
OpenAI server; requests are counted at the server, never inferred from our own code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.crashkit import (
    agent_of,
    body_hash,
    env_for,
    events,
    git,
    init_workspace,
    journal_hashes,
    run,
    spawn,
    state,
    wait_until,
)
from pliny import api
from pliny.framework.model import load
from pliny.lifecycle.runner import RunOptions, execute
from tests.fakeserver import FakeServer

pytestmark = pytest.mark.timeout(90)
TASK = "Add a /health endpoint to the app and document it"
RISE = [(p.name, [a.name for a in p.agents]) for p in load("rise").phases]
OLD = "2020-01-01T00:00:00Z"
NO_GIT = {"execution": {"checkpoint": "none"}}
TINY = """\
name: tiny
phases:
  - name: gather
    agents:
      - name: gatherer
        role: You are a gatherer of notes.
        prompt: "Gather notes for: {{task}}"{cache}
      - name: checker
        role: You are a checker of facts.
        prompt: "Check the facts of: {{task}}"
      - name: critic
        role: You are a critic of plans.
        prompt: "Criticise: {{task}}"
  - name: write
    agents:
      - name: writer
        role: You are a writer of summaries.
        prompt: "Summarise: {{gatherer}} / {{checker}} / {{critic}}"
"""


# -- helpers -------------------------------------------------------------------------------
def ok(ws: Path, server: FakeServer, *args: str) -> str:
    proc = run(ws, server, *args)
    assert proc.returncode == 0, (args, proc.stdout[-1000:], proc.stderr[-2000:])
    return proc.stdout


def tiny(ws: Path, cache: bool = False) -> str:
    """A two-phase framework: three agents in parallel, then one writer."""
    path = ws / "tiny.yaml"
    path.write_text(TINY.replace("{cache}", "\n        cache: {ttl: 1h}" if cache else ""))
    return str(path)


def options(ws: Path, server: FakeServer, framework: str, name: str, **kw: Any) -> RunOptions:
    kw.setdefault("overrides", NO_GIT)
    return RunOptions(
        workspace=ws, framework=framework, task=TASK, name=name, env=env_for(server), **kw
    )


def run_inproc(ws: Path, server: FakeServer, framework: str, name: str, **kw: Any) -> str:
    """One in-process run in a new session; returns the session id."""
    return asyncio.run(execute(options(ws, server, framework, name, **kw))).session.id


async def _cancel_midway(opts: RunOptions, server: FakeServer) -> Any:
    task = asyncio.create_task(execute(opts))
    await asyncio.to_thread(server.wait_for, 1, 10)
    task.cancel()
    return await task  # the runner maps the cancellation to status `cancelled`


def age(ws: Path, session: str) -> None:
    """Fake a session's timestamps (what `clean --older-than` and retention look at)."""
    path = ws / ".pliny" / "sessions" / session / "state.json"
    data = json.loads(path.read_text())
    data["created"] = data["updated"] = OLD
    path.write_text(json.dumps(data))


def on_disk(ws: Path) -> set[str]:
    return {p.parent.name for p in ws.glob(".pliny/sessions/*/state.json")}


def sent(server: FakeServer, start: int = 0, stop: int | None = None) -> list[str]:
    """Agents that sent the server's requests[start:stop] (R-I-S-E by role, else the
    tiny framework's agent named in its role)."""
    names = ("gatherer", "checker", "critic", "writer")
    found = []
    for r in server.requests[start:stop]:
        agent = agent_of(r.body)
        found.append(agent if agent != "?" else next((n for n in names if n in r.system), "?"))
    return found


def everything(ws: Path) -> dict[str, bytes]:
    return {p.relative_to(ws).as_posix(): p.read_bytes() for p in ws.rglob("*") if p.is_file()}


def stop_spawned(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


# -- clean-up ---------------------------------------------------------------------------------
def test_rm_keeps_audit_log_and_refs(ws: Path, fake_server: FakeServer) -> None:
    init_workspace(ws)
    fw = tiny(ws)
    ids = [run_inproc(ws, fake_server, fw, f"s{i}", overrides={}) for i in (1, 2)]
    for sid in ids:
        assert (ws / ".pliny" / "sessions" / sid / "journal.sqlite").is_file()
        assert git(ws, "for-each-ref", f"refs/pliny/{sid}/").stdout.strip()
    ok(ws, fake_server, "session", "rm", ids[0])
    assert not (ws / ".pliny" / "sessions" / ids[0]).exists()
    assert "ok" in ok(ws, fake_server, "audit", "verify", ids[0])  # the kept log is intact
    assert git(ws, "for-each-ref", f"refs/pliny/{ids[0]}/").stdout.strip()
    ok(ws, fake_server, "session", "rm", ids[1], "--refs")
    assert git(ws, "for-each-ref", f"refs/pliny/{ids[1]}/").stdout.strip() == ""
    assert (ws / "audit-logs" / f"{ids[1]}.jsonl").is_file()
    assert on_disk(ws) == set()


def test_clean_by_status_and_age(ws: Path, fake_server: FakeServer) -> None:
    fw = tiny(ws)
    sids = {name: run_inproc(ws, fake_server, fw, name) for name in ("done-old", "done-new")}
    fake_server.fail(401)
    sids["failed-old"] = run_inproc(ws, fake_server, fw, "failed-old")
    fake_server.reset()
    fake_server.latency_ms = 2000
    cancelled = asyncio.run(_cancel_midway(options(ws, fake_server, fw, "cancelled"), fake_server))
    sids["cancelled-new"] = cancelled.session.id
    age(ws, sids["done-old"])
    age(ws, sids["failed-old"])
    statuses = {name: state(ws, sid)["status"] for name, sid in sids.items()}
    assert statuses == {
        "done-old": "completed",
        "done-new": "completed",
        "failed-old": "failed",
        "cancelled-new": "cancelled",
    }

    def left() -> set[str]:
        return {name for name, sid in sids.items() if sid in on_disk(ws)}

    ok(ws, fake_server, "session", "clean", "--older-than", "30d")
    assert left() == {"done-new", "failed-old", "cancelled-new"}
    ok(ws, fake_server, "session", "clean")
    assert left() == {"failed-old", "cancelled-new"}
    ok(ws, fake_server, "session", "clean", "--all", "--older-than", "30d")
    assert left() == {"cancelled-new"}
    ok(ws, fake_server, "session", "clean", "--all")
    assert left() == set()
    assert {p.stem for p in (ws / "audit-logs").glob("*.jsonl")} == set(sids.values())


def test_state_retention_at_start(ws: Path, fake_server: FakeServer) -> None:
    fw = tiny(ws)
    old, recent = run_inproc(ws, fake_server, fw, "old"), run_inproc(ws, fake_server, fw, "recent")
    fake_server.fail(401)
    old_failed = run_inproc(ws, fake_server, fw, "old-failed")
    fake_server.reset()
    age(ws, old)
    age(ws, old_failed)
    (ws / "pliny.yaml").write_text("sessions:\n  state_retention: 1d\n")
    ok(ws, fake_server, "execute", "-f", fw, "-t", "Another task", "--checkpoint", "none")
    left = on_disk(ws)
    assert old not in left and {recent, old_failed} <= left and len(left) == 3
    assert (ws / "audit-logs" / f"{old}.jsonl").is_file()


# -- stop ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["sigterm", "session-cancel"])
@pytest.mark.slow  # ~5 s: real CLI runs
def test_stop_then_resume(ws: Path, fake_server: FakeServer, how: str) -> None:
    fw = tiny(ws)
    ok(ws, fake_server, "session", "start", "stop me", "--id", "stop")
    fake_server.latency_ms = 5000  # long enough that nothing else is answered before the stop
    fake_server.script(system="critic", latency_ms=0)  # answered and recorded before the stop
    proc = spawn(
        ws,
        fake_server,
        "execute",
        "-f",
        fw,
        "-t",
        TASK,
        "--session",
        "stop",
        "--checkpoint",
        "none",
    )
    try:
        busy = lambda: fake_server.in_flight >= 2 and bool(journal_hashes(ws, "stop"))  # noqa: E731
        assert wait_until(busy, proc, 60, 0.05)
        stopped = time.monotonic()
        if how == "sigterm":
            os.kill(proc.pid, signal.SIGTERM)
        else:
            ok(ws, fake_server, "session", "cancel", "stop")
        assert proc.wait(timeout=20) == 130
        assert time.monotonic() - stopped < 15  # coarse: it did not run on to the end
    finally:
        stop_spawned(proc)
    assert state(ws, "stop")["status"] == "cancelled"
    assert "session_cancelled" in [e["type"] for e in events(ws, "stop")]
    assert "ok" in ok(ws, fake_server, "audit", "verify", "stop")
    shown = json.loads(ok(ws, fake_server, "session", "show", "stop", "--format", "json"))
    recorded, before = journal_hashes(ws, "stop"), len(fake_server.requests)
    assert sorted(sent(fake_server)) == ["checker", "critic", "gatherer"] and len(recorded) == 1
    fake_server.latency_ms = 0
    ok(ws, fake_server, "session", "resume", "stop")
    assert state(ws, "stop")["status"] == "completed"
    again = fake_server.requests[before:]
    assert not [r.id for r in again if body_hash(r.body) in recorded]  # nothing re-sent
    assert sorted(sent(fake_server, before)) == ["checker", "gatherer", "writer"]
    assert (ws / "pliny-runs" / "stop" / "write" / "writer.md").is_file()
    # The snapshot taken while it was stopped: nothing shown as still running.
    nodes = [*shown["phases"], *(a for p in shown["phases"] for a in p["agents"])]
    in_flight = [n["name"] for n in nodes if n["state"] == "running"]
    assert shown["status"] == "cancelled" and not in_flight, in_flight


@pytest.mark.slow  # ~8 s: real CLI runs
def test_timeout_fails_the_session_resumably(ws: Path, fake_server: FakeServer) -> None:
    fw = tiny(ws)
    ok(ws, fake_server, "session", "start", "slow", "--id", "slow")
    fake_server.latency_ms = 2000
    proc = run(
        ws,
        fake_server,
        "execute",
        "-f",
        fw,
        "-t",
        TASK,
        "--session",
        "slow",
        "--timeout",
        "1s",
        "--checkpoint",
        "none",
        "--json",
    )
    assert proc.returncode == 1, proc.stderr[-1500:]
    assert json.loads(proc.stdout)["error"]["code"] == "PLINY-TIMEOUT-SESSION"
    assert state(ws, "slow")["status"] == "failed"
    assert state(ws, "slow")["error"]["code"] == "PLINY-TIMEOUT-SESSION"
    # Resumable: the 1 s limit was for that run; a resume (each call 1.5 s) must finish.
    fake_server.latency_ms = 1500
    resumed = run(ws, fake_server, "session", "resume", "slow", "--json")
    assert resumed.returncode == 0, resumed.stdout[-250:]
    assert state(ws, "slow")["status"] == "completed"


# -- metrics -----------------------------------------------------------------------------------
def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


@pytest.mark.slow  # ~6 s: real CLI runs
def test_metrics_port_mid_run_and_metrics_command(ws: Path, fake_server: FakeServer) -> None:
    fw = tiny(ws)
    with socket.socket() as probe:  # a free port (released again for pliny to bind)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for agent in ("gatherer", "checker", "critic"):
        fake_server.script(system=agent, latency_ms=3000)
    ok(ws, fake_server, "session", "start", "metered", "--id", "metered")
    proc = spawn(
        ws,
        fake_server,
        "execute",
        "-f",
        fw,
        "-t",
        TASK,
        "--session",
        "metered",
        "--checkpoint",
        "none",
        "--metrics-port",
        str(port),
    )
    try:
        assert wait_until(lambda: fake_server.in_flight >= 3, proc, 60, 0.02)
        # Bound before the run starts, so it answers once requests are in flight.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            live = families(resp.read().decode())
        assert proc.wait(timeout=60) == 0
    finally:
        stop_spawned(proc)
    assert live["pliny_agents_in_flight"].samples[0].value == 3
    with pytest.raises(OSError):  # the endpoint went away with the run
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    after = families(ok(ws, fake_server, "metrics", "metered"))
    calls = [s for s in after["pliny_llm_calls"].samples if s.name == "pliny_llm_calls_total"]
    assert sum(s.value for s in calls) == len(fake_server.requests) == 4
    assert {s.labels["agent"] for s in calls} == {"gatherer", "checker", "critic", "writer"}
    assert sum(s.value for s in after["pliny_tokens"].samples if s.name.endswith("_total")) > 0
    assert after["pliny_agents_in_flight"].samples[0].value == 0


def test_metrics_port_busy(ws: Path, fake_server: FakeServer) -> None:
    fw = tiny(ws)
    before = everything(ws)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        proc = run(ws, fake_server, "execute", "-f", fw, "-t", TASK, "--metrics-port", port)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and port in lines[0], lines
    assert everything(ws) == before, "a refused run wrote files"
    assert not fake_server.requests


# -- partial runs -----------------------------------------------------------------------------
def outputs_of(ws: Path, session: str, phases: tuple[str, ...]) -> dict[str, tuple[bytes, int]]:
    found = {}
    for phase in phases:
        for path in (ws / "pliny-runs" / session / phase).iterdir():
            found[path.name] = (path.read_bytes(), path.stat().st_mtime_ns)
    return found


@pytest.mark.slow  # ~7 s: real CLI runs
def test_until_phase_then_continue_then_from_phase(ws: Path, fake_server: FakeServer) -> None:
    ok(ws, fake_server, "session", "start", "partial", "--id", "part")
    base = ["execute", "-f", "rise", "-t", TASK, "--session", "part", "--checkpoint", "none"]
    ok(ws, fake_server, *base, "--until-phase", "identify")
    assert state(ws, "part")["status"] == "paused"
    assert sorted(sent(fake_server)) == sorted([*RISE[0][1], "findings"])
    shown = json.loads(ok(ws, fake_server, "session", "show", "part", "--format", "json"))
    want = {"research": "done", "identify": "done", "synthesize": "pending", "execute": "pending"}
    assert {p["name"]: p["state"] for p in shown["phases"]} == want

    n = len(fake_server.requests)
    ok(ws, fake_server, "execute", "--session", "part")
    assert state(ws, "part")["status"] == "completed"
    assert sorted(sent(fake_server, n)) == ["executor", "planner"]

    kept = outputs_of(ws, "part", ("research", "identify"))
    n = len(fake_server.requests)
    ok(ws, fake_server, "execute", "--session", "part", "--from-phase", "synthesize")
    assert state(ws, "part")["status"] == "completed"
    assert sorted(sent(fake_server, n)) == ["executor", "planner"]
    assert outputs_of(ws, "part", ("research", "identify")) == kept

    before = everything(ws)
    proc = run(ws, fake_server, "execute", "--session", "part", "--from-phase", "nope")
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "nope" in proc.stderr and everything(ws) == before


# -- caching -------------------------------------------------------------------------------------
def test_cache_hit_sends_nothing(ws: Path, fake_server: FakeServer) -> None:
    fw = tiny(ws, cache=True)
    sessions, starts = [], []
    for i in range(3):
        if i == 2:
            assert "removed 1 " in ok(ws, fake_server, "cache", "clear")
        starts.append(len(fake_server.requests))
        sessions.append(run_inproc(ws, fake_server, fw, f"run{i}"))
    starts.append(len(fake_server.requests))
    per_run = [sorted(sent(fake_server, a, b)) for a, b in zip(starts, starts[1:], strict=False)]
    everyone = ["checker", "critic", "gatherer", "writer"]
    assert per_run == [everyone, ["checker", "critic", "writer"], everyone]

    def gatherer_calls(session: str) -> list[dict[str, Any]]:
        return [
            e for e in events(ws, session) if e["type"] == "llm_call" and e["agent"] == "gatherer"
        ]

    hit = gatherer_calls(sessions[1])
    assert len(hit) == 1 and hit[0]["cache_hit"] is True and hit[0]["cost_usd"] == 0
    assert [e["cache_hit"] for e in gatherer_calls(sessions[2])] == [False]
    outputs = [(ws / "pliny-runs" / s / "gather" / "gatherer.md").read_text() for s in sessions[:2]]
    assert outputs[0] == outputs[1]


# -- the Python API -------------------------------------------------------------------------------


def test_stream_yields_the_run_in_order(ws: Path, fake_server: FakeServer) -> None:
    async def collect() -> list[Any]:
        stream = api.stream("rise", TASK, workspace=ws, env=env_for(fake_server), overrides=NO_GIT)
        return [event async for event in stream]

    seen = asyncio.run(collect())
    kinds = [e.type for e in seen]
    assert kinds[0] == "session_started" and kinds[-1] == "session_completed"
    assert [e.phase for e in seen if e.type == "phase_started"] == [p for p, _ in RISE]
    for phase, agents in RISE:
        entered = next(
            i for i, e in enumerate(seen) if e.type == "phase_started" and e.phase == phase
        )
        left = next(
            i for i, e in enumerate(seen) if e.type == "phase_completed" and e.phase == phase
        )
        finished = [
            i for i, e in enumerate(seen) if e.type == "agent_completed" and e.agent in agents
        ]
        assert len(finished) == len(agents) and all(entered < i < left for i in finished), phase
    assert kinds.count("llm_call") == len(fake_server.requests)
    assert [e["type"] for e in events(ws, seen[0].session)] == kinds  # the audit log's order


def test_progress_callbacks(ws: Path, fake_server: FakeServer) -> None:
    got: dict[str, list[str]] = {"phases": [], "agents": [], "calls": []}
    outcome = api.run(
        "rise",
        TASK,
        workspace=ws,
        env=env_for(fake_server),
        overrides=NO_GIT,
        on_phase_start=lambda e: got["phases"].append(e.phase),
        on_agent_end=lambda e: got["agents"].append(e.agent),
        on_llm_call=lambda e: got["calls"].append(e.agent),
    )
    assert outcome.status == "completed" and outcome.exit_code == 0
    assert got["phases"] == [p for p, _ in RISE]
    assert sorted(got["agents"]) == sorted(a for _, agents in RISE for a in agents)
    assert sorted(got["calls"]) == sorted(sent(fake_server))


def test_closing_a_stream_cancels_its_run(ws: Path, fake_server: FakeServer) -> None:
    fake_server.latency_ms = 1000

    async def first_agent() -> str:
        stream = api.stream("rise", TASK, workspace=ws, env=env_for(fake_server), overrides=NO_GIT)
        async with contextlib.aclosing(stream) as running:
            async for event in running:
                if event.type == "agent_started":
                    return event.session or ""
        raise AssertionError("no agent started")

    sid = asyncio.run(first_agent())
    assert state(ws, sid)["status"] == "cancelled"
    assert events(ws, sid)[-1]["type"] == "session_cancelled"
