"""Resume latency: `pliny session resume` until the first new LLM request reaches the server.

For each size (about 10, 100 and 1,000 audit events) one crashed session is built for
real: a framework with a phase of k parallel agents and a last phase of one agent
whose request hangs at the fake server; `pliny execute` runs in a subprocess and is
killed with SIGKILL once the server holds that request. The crashed workspace is then
copied once per repetition; each copy is resumed (the hang removed) and timed from
spawning `pliny session resume` to the first request arriving at the server. After
the resume completes it checks that only the unanswered call was sent again.

Baseline in the same run: `python -c "import pliny.cli"` (the CLI's import cost).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.benchkit import (
    Result,
    Row,
    agent_role,
    bench_env,
    fake_server,
    make_workspace,
    pliny_argv,
    timed,
    write_framework,
)

SESSION = "bench"
TASK = "Resume benchmark"
BASE_EVENTS = 7  # session/phase/checkpoint events around the agents (measured, not assumed)
EVENTS_PER_AGENT = 4  # agent_started, llm_call, tool_call (output), agent_completed
TARGET_S = 0.5  # at 1,000 events
# What any process that sends a request through LangGraph + openai imports first.
FLOOR = "import openai, langgraph.graph, langgraph.checkpoint.sqlite.aio"


def _pliny(ws: Path, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """`pliny ARGS` in the workspace, in its own process group (SIGKILL takes it all);
    its output goes to ``<ws>/../pliny.log`` (a pipe nobody reads could fill and block it)."""
    with (ws.parent / "pliny.log").open("ab") as log:
        return subprocess.Popen(
            pliny_argv(*args), cwd=ws, env=env, stdout=log, stderr=log, start_new_session=True
        )


def _log_tail(ws: Path) -> str:
    path = ws.parent / "pliny.log"
    return path.read_text(errors="replace")[-800:] if path.exists() else ""


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group if it is still there, and wait for it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def audit_events(ws: Path) -> int:
    path = ws / "audit-logs" / f"{SESSION}.jsonl"
    return sum(1 for line in path.read_bytes().splitlines() if line.strip())


def build_crashed(server: Any, root: Path, agents: int) -> Path:
    """A workspace whose session was SIGKILLed while its last agent's call was in flight."""
    work = root / f"crashed-{agents}"
    work.mkdir()
    ws = make_workspace(work, "ws")
    fw = write_framework(work / "fw.yaml", [("work", agents, True), ("last", 1, True)])
    server.reset()
    hang = server.fail("hang", system=agent_role(agents))
    env = bench_env(server.base_url)
    start = subprocess.run(
        pliny_argv("session", "start", "bench", "--id", SESSION),
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
    )
    if start.returncode != 0:
        raise RuntimeError(f"session start failed: {start.stderr.strip()}")
    proc = _pliny(ws, env, "execute", "-f", str(fw), "-t", TASK, "--session", SESSION)
    deadline = time.monotonic() + 120
    try:
        while hang.hits == 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the run ended before its last call hung: {_log_tail(ws)}")
            time.sleep(0.01)
    finally:
        _reap(proc)  # the crash itself: SIGKILL, no cleanup
    server.reset()  # wakes the hung handler; no rules: the resumed call gets an answer
    return work


def time_resume(server: Any, crashed: Path, copy: Path) -> dict[str, float]:
    """Seconds from spawning `pliny session resume` to the first request at the server."""
    shutil.copytree(crashed, copy, symlinks=True)
    ws = copy / "ws"
    server.reset()
    t0 = time.perf_counter()
    proc = _pliny(ws, bench_env(server.base_url), "session", "resume", SESSION)
    try:
        arrived = server.wait_for(1, timeout=60)
        first = time.perf_counter() - t0
        code = proc.wait(timeout=120)
        total = time.perf_counter() - t0
    finally:
        _reap(proc)
    if not arrived or code != 0:
        raise RuntimeError(f"resume exited {code} (request seen: {arrived}): {_log_tail(ws)}")
    return {
        "first_request_s": first,
        "resume_total_s": total,
        "requests_sent": float(len(server.requests)),
    }


def import_time(code: str, reps: int) -> float:
    """Median seconds of ``python -c CODE`` (interpreter start + imports)."""
    return statistics.median(
        timed(lambda: subprocess.run([sys.executable, "-c", code], check=True), reps)
    )


def run(quick: bool) -> Result:
    targets = [10, 100, 1000]
    reps = 2 if quick else 5
    result = Result("resume", details={"reps": reps, "sizes": {}})
    baseline = import_time("import pliny.cli", reps * 2 + 1)
    floor = import_time(FLOOR, reps * 2 + 1)
    result.details["import_pliny_cli_s"] = baseline
    result.details["import_floor_s"] = floor
    result.rows.append(
        Row("resume floor: import openai + langgraph", floor, "s", baseline, "import pliny.cli")
    )
    with (
        fake_server(latency_ms=0) as server,
        tempfile.TemporaryDirectory(prefix="pliny-bench-resume-") as tmp,
    ):
        for target in targets:
            agents = max(1, round((target - BASE_EVENTS) / EVENTS_PER_AGENT))
            crashed = build_crashed(server, Path(tmp), agents)
            events = audit_events(crashed / "ws")
            runs = [
                time_resume(server, crashed, Path(tmp) / f"copy-{agents}-{i}") for i in range(reps)
            ]
            first = statistics.median(r["first_request_s"] for r in runs)
            result.details["sizes"][target] = {
                "agents": agents + 1,
                "audit_events": events,
                "first_request_s": first,
                "resume_total_s": statistics.median(r["resume_total_s"] for r in runs),
                "requests_sent_on_resume": max(r["requests_sent"] for r in runs),
                "runs_first_request_s": [round(r["first_request_s"], 4) for r in runs],
            }
            is_target = target == 1000
            result.rows.append(
                Row(
                    f"resume to first request, {events} events",
                    first,
                    "s",
                    baseline,
                    "import pliny.cli",
                    f"<= {TARGET_S} s" if is_target else "",
                    first <= TARGET_S if is_target else None,
                )
            )
    resent = [s for s in result.details["sizes"].values() if s["requests_sent_on_resume"] != 1]
    if resent:
        result.notes.append(f"a resume sent more than the one unanswered call: {resent}")
    return result
