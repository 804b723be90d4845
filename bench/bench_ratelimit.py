"""Wasted requests under a 429 storm: 16 parallel agents, one endpoint.

The fake server answers every request with a 429 (``Retry-After: 0.2``) for
``STORM_S`` seconds from the moment the agents start, like an overloaded
provider. Each of ``AGENTS`` agents makes one call through the same Pliny
gateway (one per run, as ``pliny execute`` builds it). *Wasted* requests are
the ones the server answered 429.

- before (``llm.shared_rate_limit: false``): every agent learns of the storm
  on its own and retries on its own schedule;
- after (default): the first 429 pauses the whole endpoint and, once the
  pause ends, one probe goes first: the others wait for its answer.

The ratio is before / after (higher is better). Retries are not capped
(``network.max_retries: 100``, no time budget) so every agent finishes in
both modes and only the waste differs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.benchkit import Result, Row, fake_server

AGENTS = 16
STORM_S = 1.5
RETRY_AFTER_S = 0.2
TARGET = 2.0  # before / after


def settings(shared: bool) -> Any:
    from pliny.config.settings import Settings

    network = {"max_retries": 100, "max_elapsed": None}
    return Settings.model_validate(
        {
            "llm": {"shared_rate_limit": shared, "stream": False},
            "error_handling": {"retry_strategies": {"network": network}},
        }
    )


async def storm(server: Any, shared: bool, agents: int = AGENTS, storm_s: float = STORM_S) -> int:
    """429s the server sent while ``agents`` parallel agents each made one call."""
    from pliny.events import EventBus
    from pliny.llm.endpoint import EndpointChoice
    from pliny.llm.gateway import CallContext, LLMGateway

    endpoint = EndpointChoice("remote", server.base_url, "sk-bench", "fake-model", "bench")
    gateway = LLMGateway(settings(shared), endpoint, EventBus())
    server.reset()
    server.storm(storm_s, retry_after=RETRY_AFTER_S)
    try:
        await asyncio.gather(
            *(
                gateway.chat(CallContext("p", f"a{i}"), [{"role": "user", "content": f"task {i}"}])
                for i in range(agents)
            )
        )
    finally:
        await gateway.close()
    return server.count(lambda r: r.outcome == "status:429")


def run(quick: bool = False) -> Result:
    reps = 1 if quick else 3
    before: list[int] = []
    after: list[int] = []
    with fake_server() as server:
        for _ in range(reps):
            before.append(asyncio.run(storm(server, shared=False)))
            after.append(asyncio.run(storm(server, shared=True)))
    b, a = sorted(before)[len(before) // 2], sorted(after)[len(after) // 2]
    ratio = b / max(a, 1)
    result = Result(
        "ratelimit",
        details={
            "agents": AGENTS,
            "storm_s": STORM_S,
            "retry_after_s": RETRY_AFTER_S,
            "before": before,
            "after": after,
        },
    )
    result.rows.append(
        Row(
            f"429s answered, {AGENTS} agents, {STORM_S:g} s storm",
            a,
            "requests",
            b,
            "each agent alone",
            f"before/after >= {TARGET:g}",
            ratio >= TARGET,
            f"{ratio:.1f}x fewer",
        )
    )
    return result


if __name__ == "__main__":
    out = run()
    for row in out.rows:
        print(f"{row.benchmark}: after {row.figure:g}, before {row.baseline:g} ({row.note})")
