"""Parallel efficiency: one phase of 1, 4, 16 and 64 agents at 200 ms server latency.

Pliny's figure is ``latency / phase wall``, the wall read from the phase_started and
phase_completed events' timestamps. The baseline, measured in the same run, is the
raw ``AsyncOpenAI`` client sending the same n requests with ``asyncio.gather``: it shows
what the fake server and the event loop allow on this machine, so the ratio isolates
Pliny. ``execution.max_concurrency`` is raised to n (the default, 16, would run a
64-agent phase in four waves by design).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.bench_overhead import TASK, chat_call
from bench.benchkit import API_KEY, Result, Row, fake_server, make_workspace, write_framework

LATENCY_MS = 200.0
TARGET = 0.9  # at 16 agents


def _ts(event: Any) -> float:
    return datetime.fromisoformat(event.ts.replace("Z", "+00:00")).timestamp()


async def raw_gather(base_url: str, n: int) -> float:
    """Seconds for n concurrent calls through one client (the connection pool is warm)."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key=API_KEY, max_retries=0)
    await chat_call(client, 0)  # connect once, as Pliny's client has by its second phase
    t0 = time.perf_counter()
    await asyncio.gather(*(chat_call(client, i) for i in range(n)))
    wall = time.perf_counter() - t0
    await client.close()
    return wall


# Informational: the same phase without Pliny's durability work (no git checkpoint, no
# fsync of the audit log), to show how much of the gap to the raw client that work is.
NO_DURABILITY = {"execution": {"checkpoint": "none"}, "audit": {"fsync": "none"}}


async def pliny_phase(
    base_url: str, n: int, work: Path, extra: dict[str, Any] | None = None
) -> dict[str, float]:
    """Phase wall (event timestamps) and the engine's own duration_ms, in seconds."""
    from pliny.lifecycle.runner import RunOptions, execute

    seen: dict[str, Any] = {}
    overrides: dict[str, Any] = {"execution": {"max_concurrency": max(16, n)}}
    for key, values in (extra or {}).items():
        overrides[key] = {**overrides.get(key, {}), **values}
    outcome = await execute(
        RunOptions(
            workspace=work / "ws",
            framework=str(work / "fw.yaml"),
            task=TASK,
            overrides=overrides,
            env={"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": API_KEY},
            listeners=[lambda e: seen.setdefault(e.type, e)],
        )
    )
    if outcome.status != "completed":
        raise RuntimeError(f"pliny run ended {outcome.status}: {outcome.error}")
    started, done = seen["phase_started"], seen["phase_completed"]
    return {"wall": _ts(done) - _ts(started), "engine": done.duration_ms / 1000}


def _workdir(root: Path, tag: str, n: int) -> Path:
    work = root / tag
    work.mkdir()
    make_workspace(work, "ws")
    write_framework(work / "fw.yaml", [("work", n, True)])
    return work


def measure(base_url: str, sizes: list[int], reps: int) -> dict[int, dict[str, list[float]]]:
    out: dict[int, dict[str, list[float]]] = {
        n: {"pliny": [], "engine": [], "raw": [], "no_durability": []} for n in sizes
    }
    with tempfile.TemporaryDirectory(prefix="pliny-bench-parallel-") as tmp:
        for rep in range(reps + 1):  # round 0 warms imports; dropped
            for n in sizes:
                got = asyncio.run(pliny_phase(base_url, n, _workdir(Path(tmp), f"{n}-{rep}", n)))
                raw = asyncio.run(raw_gather(base_url, n))
                bare = (
                    asyncio.run(
                        pliny_phase(
                            base_url, n, _workdir(Path(tmp), f"{n}-{rep}b", n), NO_DURABILITY
                        )
                    )
                    if n == 16
                    else None
                )
                if rep:
                    out[n]["pliny"].append(got["wall"])
                    out[n]["engine"].append(got["engine"])
                    out[n]["raw"].append(raw)
                    if bare is not None:
                        out[n]["no_durability"].append(bare["wall"])
    return out


def run(quick: bool) -> Result:
    sizes = [1, 4, 16, 64]
    reps = 2 if quick else 5
    with fake_server(latency_ms=LATENCY_MS) as server:
        walls = measure(server.base_url, sizes, reps)
    latency = LATENCY_MS / 1000
    result = Result("parallel", details={"latency_ms": LATENCY_MS, "reps": reps, "sizes": {}})
    for n in sizes:
        pliny = statistics.median(walls[n]["pliny"])
        raw = statistics.median(walls[n]["raw"])
        result.details["sizes"][n] = {
            "pliny_wall_ms": pliny * 1000,
            "raw_wall_ms": raw * 1000,
            "engine_duration_ms": statistics.median(walls[n]["engine"]) * 1000,
            "pliny_efficiency": latency / pliny,
            "raw_efficiency": latency / raw,
            "runs_ms": {k: [round(x * 1000, 1) for x in v] for k, v in walls[n].items()},
        }
        target = n == 16
        if walls[n]["no_durability"]:
            bare = statistics.median(walls[n]["no_durability"])
            result.details["sizes"][n]["no_durability_efficiency"] = latency / bare
        result.rows.append(
            Row(
                f"parallel efficiency, {n} agents",
                latency / pliny,
                "",
                latency / raw,
                "raw gather",
                f">= {TARGET}" if target else "",
                latency / pliny >= TARGET if target else None,
            )
        )
        if walls[n]["no_durability"]:
            result.rows.append(
                Row(
                    "  same, checkpoint none + audit fsync none",
                    latency / bare,
                    "",
                    latency / raw,
                    "raw gather",
                )
            )
    return result
