"""Overhead per agent: Pliny vs the raw openai client vs a hand-built LangGraph graph.

One phase of N serial agents against the zero-latency fake server, the same N requests
(same system prompt, user prompt, model, temperature, max_tokens) made three ways:

- raw: ``AsyncOpenAI.chat.completions.create`` in a loop;
- langgraph: a hand-built ``StateGraph`` chain, one node per call, ``AsyncSqliteSaver``
  with ``durability="sync"`` (what Pliny uses, so both survive a crash between nodes);
- pliny: ``pliny.lifecycle.runner.execute`` (checkpoint none, and phase), audit fsync every_event.

Each variant runs at two sizes (5 and N agents) and the per-agent cost is the slope
``(T(N) - T(5)) / (N - 5)``: fixed start-up cost (settings, session, SQLite files)
cancels out and is reported on its own as the intercept. Medians over repetitions,
variants interleaved so drift hits all of them alike.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

from bench.benchkit import (
    API_KEY,
    Result,
    Row,
    agent_role,
    fake_server,
    make_workspace,
    write_framework,
)

TASK = "Summarise the bench workspace"
MODEL = "gpt-4o-mini"  # Pliny's default model name; the fake server accepts any
TEMPERATURE = 0.2  # Pliny's default
MAX_TOKENS = 64  # set on every bench agent
TARGET_MS = 3.0
Runner = Callable[[str, int, Path], Awaitable[float]]


def messages(index: int) -> list[dict[str, str]]:
    """What Pliny sends for bench agent ``index`` (see benchkit.write_framework)."""
    return [
        {"role": "system", "content": agent_role(index)},
        {"role": "user", "content": f"{TASK} (part {index})"},
    ]


async def chat_call(client: Any, index: int) -> str:
    reply = await client.chat.completions.create(
        model=MODEL, messages=messages(index), temperature=TEMPERATURE, max_tokens=MAX_TOKENS
    )
    return reply.choices[0].message.content or ""


# -- the three ways ------------------------------------------------------------------
async def run_raw(base_url: str, n: int, _work: Path) -> float:
    """Returns the seconds spent making the calls (the whole run is timed outside)."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key=API_KEY, max_retries=0)
    t0 = time.perf_counter()
    for i in range(n):
        await chat_call(client, i)
    calls = time.perf_counter() - t0
    await client.close()
    return calls


def _merge(left: dict[str, str] | None, right: dict[str, str] | None) -> dict[str, str]:
    return {**(left or {}), **(right or {})}


class _State(TypedDict, total=False):
    results: Annotated[dict[str, str], _merge]


async def run_langgraph(base_url: str, n: int, work: Path) -> float:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.graph import END, START, StateGraph
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key=API_KEY, max_retries=0)

    def node(i: int) -> Callable[[_State], Awaitable[dict[str, Any]]]:
        async def call(_state: _State) -> dict[str, Any]:
            return {"results": {f"a{i:04d}": await chat_call(client, i)}}

        return call

    builder = StateGraph(_State)
    names = [f"a{i:04d}" for i in range(n)]
    for i, name in enumerate(names):
        builder.add_node(name, node(i))
    for src, dst in zip([START, *names], [*names, END], strict=True):
        builder.add_edge(src, dst)
    async with AsyncSqliteSaver.from_conn_string(str(work / "graph.sqlite")) as saver:
        graph = builder.compile(checkpointer=saver)
        t0 = time.perf_counter()
        await graph.ainvoke(
            {"results": {}}, {"configurable": {"thread_id": "bench"}}, durability="sync"
        )
        calls = time.perf_counter() - t0
    await client.close()
    return calls


def pliny_runner(checkpoint: str, fsync: str = "every_event") -> Runner:
    async def run_pliny(base_url: str, n: int, work: Path) -> float:
        """Returns phase_started -> session_completed: the agents, the phase's checkpoint."""
        from pliny.lifecycle.runner import RunOptions, execute

        marks: dict[str, float] = {}
        outcome = await execute(
            RunOptions(
                workspace=work / "ws",
                framework=str(work / "fw.yaml"),
                task=TASK,
                overrides={"execution": {"checkpoint": checkpoint}, "audit": {"fsync": fsync}},
                env={"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": API_KEY},
                listeners=[lambda event: marks.setdefault(event.type, time.perf_counter())],
            )
        )
        if outcome.status != "completed":
            raise RuntimeError(f"pliny run ended {outcome.status}: {outcome.error}")
        return marks["session_completed"] - marks["phase_started"]

    return run_pliny


VARIANTS: dict[str, Runner] = {
    "raw": run_raw,
    "langgraph": run_langgraph,
    "pliny-none": pliny_runner("none"),
    "pliny-phase": pliny_runner("phase"),
}


# -- measuring ----------------------------------------------------------------------
def _prepare(root: Path, tag: str, n: int) -> Path:
    """A fresh directory per run: workspace (git repo) + framework file, made untimed."""
    work = root / tag
    work.mkdir()
    make_workspace(work, "ws")
    write_framework(work / "fw.yaml", [("work", n, False)])
    return work


Times = dict[str, dict[str, dict[int, list[float]]]]  # variant -> total|calls -> n -> secs


def measure(
    base_url: str, sizes: tuple[int, int], reps: int, variants: dict[str, Runner] | None = None
) -> Times:
    variants = variants or VARIANTS
    times: Times = {
        v: {k: {n: [] for n in sizes} for k in ("total", "calls", "cpu")} for v in variants
    }
    with tempfile.TemporaryDirectory(prefix="pliny-bench-overhead-") as tmp:
        root = Path(tmp)
        for rep in range(reps + 1):  # round 0 warms imports and caches; dropped
            for n in sizes:
                for name, fn in variants.items():
                    work = _prepare(root, f"{name}-{n}-{rep}", n)
                    t0, c0 = time.perf_counter(), time.process_time()
                    calls = asyncio.run(fn(base_url, n, work))
                    if rep:
                        times[name]["total"][n].append(time.perf_counter() - t0)
                        times[name]["cpu"][n].append(time.process_time() - c0)
                        times[name]["calls"][n].append(calls)
    return times


def _slope(by_n: dict[int, list[float]], sizes: tuple[int, int]) -> tuple[float, float]:
    """(ms per agent, fixed ms) from the fastest run at each of the two sizes.

    The fastest, not the median: on a shared 2-core machine a slow run is
    another process's noise, and a noisy small-size run made the slope
    negative in --quick mode (2-3 runs a size).
    """
    small, big = sizes
    med = {n: min(v) * 1000 for n, v in by_n.items()}
    slope = (med[big] - med[small]) / (big - small)
    return slope, med[big] - slope * big


def summarise(times: Times, sizes: tuple[int, int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, kinds in times.items():
        per_agent, fixed = _slope(kinds["total"], sizes)
        in_calls, _ = _slope(kinds["calls"], sizes)
        cpu, _ = _slope(kinds["cpu"], sizes)
        out[name] = {
            "per_agent_ms": per_agent,
            "fixed_ms": fixed,
            "per_agent_running_ms": in_calls,
            "per_agent_cpu_ms": cpu,  # this process, fake server thread included
            "median_total_ms": {n: statistics.median(v) * 1000 for n, v in kinds["total"].items()},
            "runs_total_ms": {
                n: [round(x * 1000, 2) for x in v] for n, v in kinds["total"].items()
            },
        }
    return out


def check_same_requests(server: Any) -> None:
    """The comparison is only fair if all variants send byte-for-byte the same bodies."""
    bodies = {}
    with tempfile.TemporaryDirectory(prefix="pliny-bench-overhead-") as tmp:
        for name, fn in VARIANTS.items():
            server.reset()
            asyncio.run(fn(server.base_url, 2, _prepare(Path(tmp), name, 2)))
            bodies[name] = [r.body for r in server.requests]
    server.reset()
    if any(b != bodies["raw"] for b in bodies.values()):
        raise RuntimeError(f"the variants sent different requests: {bodies}")


def run(quick: bool) -> Result:
    sizes = (5, 20) if quick else (5, 25)
    reps = 3 if quick else 9
    with fake_server(latency_ms=0) as server:
        check_same_requests(server)
        times = measure(server.base_url, sizes, reps)
    stats = summarise(times, sizes)
    return Result(
        "overhead",
        rows=rows(stats),
        details={
            "sizes": sizes,
            "reps": reps,
            "variants": stats,
            "method": "per agent = (T(N) - T(5)) / (N - 5) of medians; "
            "'running' = the calls / graph run only, no set-up",
        },
    )


def rows(stats: dict[str, Any]) -> list[Row]:
    raw, lg = stats["raw"], stats["langgraph"]
    out = [
        Row("per agent: raw openai client", raw["per_agent_ms"], "ms"),
        Row(
            "per agent: hand-built LangGraph",
            lg["per_agent_ms"],
            "ms",
            raw["per_agent_ms"],
            "raw client",
        ),
    ]
    for mode in ("none", "phase"):
        mine = stats[f"pliny-{mode}"]
        beyond = mine["per_agent_ms"] - raw["per_agent_ms"]
        running = mine["per_agent_running_ms"] - raw["per_agent_running_ms"]
        out += [
            Row(
                f"per agent: pliny, checkpoint {mode}",
                mine["per_agent_ms"],
                "ms",
                raw["per_agent_ms"],
                "raw client",
                f"<= raw + {TARGET_MS:g} ms",
                beyond <= TARGET_MS,
                f"(+{beyond:.2f} ms)",
            ),
            Row(
                "  same, vs hand-built LangGraph",
                mine["per_agent_ms"],
                "ms",
                lg["per_agent_ms"],
                "LangGraph",
                "<= LangGraph",
                mine["per_agent_ms"] <= lg["per_agent_ms"],
                f"({mine['per_agent_ms'] - lg['per_agent_ms']:+.2f} ms)",
            ),
            Row(
                f"  running only (no set-up), checkpoint {mode}",
                mine["per_agent_running_ms"],
                "ms",
                raw["per_agent_running_ms"],
                "raw calls",
                f"<= raw + {TARGET_MS:g} ms",
                running <= TARGET_MS,
                f"(+{running:.2f} ms)",
            ),
            Row(
                f"  fixed start-up, checkpoint {mode}",
                mine["fixed_ms"],
                "ms",
                lg["fixed_ms"],
                "LangGraph",
            ),
        ]
    return out
