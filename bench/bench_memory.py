"""Peak memory: `pliny execute` with one phase of 64 parallel agents, as a subprocess.

Peak RSS comes from the kernel (``ru_maxrss`` from ``wait4``, the child's high-water
mark including any process it waited for, e.g. git) and, as a cross-check, from psutil
polling the process tree every 10 ms. A small launcher process forks `pliny`: Linux
keeps a process's ``maxrss`` across exec, so a child forked straight from this (large)
benchmark process would report this process's size. The fake server answers after 200 ms so all 64
calls are in flight together (``execution.max_concurrency`` raised to 64). Baseline in
the same run: the same command with a single agent.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.benchkit import Result, Row, bench_env, make_workspace, pliny_argv, write_framework

AGENTS = 64
TARGET_MB = 300
LATENCY_MS = 200.0


# argv: result file, command...; writes the command's ru_maxrss (KiB), exits with its code
LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _poll_tree(pid: int, stop: threading.Event, peak: list[int]) -> None:
    """Sum of RSS over the launcher's descendants (pliny and whatever it runs)."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    while not stop.is_set():
        try:
            procs = root.children(recursive=True)
            peak[0] = max(peak[0], sum(p.memory_info().rss for p in procs))
        except psutil.Error:
            pass
        stop.wait(0.01)


def peak_rss_mb(server: Any, root: Path, agents: int) -> dict[str, float]:
    """Run one session with ``agents`` parallel agents; peak RSS in MiB (kernel, polled)."""
    work = root / f"mem-{agents}-{time.monotonic_ns()}"
    work.mkdir()
    ws = make_workspace(work, "ws")
    (ws / "pliny.yaml").write_text(f"execution:\n  max_concurrency: {max(16, agents)}\n")
    fw = write_framework(work / "fw.yaml", [("work", agents, True)])
    server.reset()
    server.latency_ms = LATENCY_MS
    maxrss = work / "maxrss"
    argv = pliny_argv("execute", "-f", str(fw), "-t", "memory benchmark")
    log = work / "pliny.log"  # not a pipe: nobody reads it while the run goes on
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, str(maxrss), *argv],
            cwd=ws,
            env=bench_env(server.base_url),
            stdout=out,
            stderr=out,
        )
    stop, polled = threading.Event(), [0]
    poller = threading.Thread(target=_poll_tree, args=(proc.pid, stop, polled), daemon=True)
    poller.start()
    proc.wait()
    stop.set()
    poller.join()
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-800:]
        raise RuntimeError(f"pliny execute exited {proc.returncode}: {tail}")
    if server.max_in_flight < agents:
        raise RuntimeError(f"only {server.max_in_flight} of {agents} calls were in flight at once")
    return {
        "kernel_mb": int(maxrss.read_text()) / 1024,
        "polled_mb": polled[0] / 2**20,
        "max_in_flight": float(server.max_in_flight),
    }


def run(quick: bool) -> Result:
    from bench.benchkit import fake_server

    reps = 1 if quick else 3
    runs: dict[int, list[dict[str, float]]] = {1: [], AGENTS: []}
    with (
        fake_server(latency_ms=LATENCY_MS) as server,
        tempfile.TemporaryDirectory(prefix="pliny-bench-memory-") as tmp,
    ):
        for _ in range(reps):
            for agents in runs:
                runs[agents].append(peak_rss_mb(server, Path(tmp), agents))
    # The larger of the two readings: the kernel's peak of the biggest process, or the
    # polled sum over the tree (which may miss a short spike between polls).
    med = {
        n: statistics.median(max(r["kernel_mb"], r["polled_mb"]) for r in rs)
        for n, rs in runs.items()
    }
    result = Result(
        "memory",
        details={
            "reps": reps,
            "latency_ms": LATENCY_MS,
            "peak_rss_mb": med,
            "per_extra_agent_mb": (med[AGENTS] - med[1]) / (AGENTS - 1),
            "runs": {n: rs for n, rs in runs.items()},
        },
    )
    result.rows.append(
        Row(
            f"peak RSS, {AGENTS} parallel agents",
            med[AGENTS],
            "MiB",
            med[1],
            "1 agent",
            f"<= {TARGET_MB} MB",
            med[AGENTS] <= TARGET_MB,
        )
    )
    return result
