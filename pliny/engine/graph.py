"""Compile a framework onto a LangGraph ``StateGraph`` and run it.

Each phase becomes three kinds of nodes:

    <phase>            enter: counts the cycle, announces the phase
    <phase>/<agent>    one per agent; parallel branches (or a chain when serial)
    <phase>.done       join: applies the failure policy, picks the next phase

LangGraph runs the parallel branches in one superstep and its checkpointer
(SQLite, thread = session id) records each finished branch, so a resume
re-runs only what had not finished.

The engine never runs an agent itself: it hands an ``AgentTask`` to its
executor (``pliny.engine.executor``) and stores the result it gets back.
"""

from __future__ import annotations

import asyncio
import operator
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any, TypedDict

from pliny.config.settings import Settings
from pliny.engine.executor import AgentTask, Executor, task_inputs
from pliny.errors import AuditFailure, BudgetExceeded, Cancelled, PlinyError, SystemFailure
from pliny.events import (
    AgentCompleted,
    AgentFailed,
    AgentStarted,
    EventBus,
    PhaseCompleted,
    PhaseStarted,
)
from pliny.framework.model import END, Agent, Framework, Phase
from pliny.llm.classify import classify
from pliny.logs import logger


def _merge(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    return {**(left or {}), **(right or {})}


class RunState(TypedDict, total=False):
    task: str
    results: Annotated[dict[str, dict[str, Any]], _merge]  # agent -> result
    cycles: Annotated[dict[str, int], _merge]  # phase -> times entered
    route_uses: Annotated[dict[str, int], _merge]  # "<phase>#<route>" -> times taken
    feedback: str  # the verdict that sent the run back, for {{feedback}}
    goto: str  # the join's decision, read by the conditional edge
    trail: Annotated[list[str], operator.add]  # phases completed, in order


def agent_node(phase: str, agent: str) -> str:
    return f"{phase}/{agent}"


def join_node(phase: str) -> str:
    return f"{phase}.done"


@dataclass
class Engine:
    """The phase graph of one framework.

    Without an executor it only compiles (rollback reads and forks graph
    state that way); running a node then raises.
    """

    framework: Framework
    executor: Executor | None = None
    bus: EventBus = field(default_factory=EventBus)
    settings: Settings = field(default_factory=Settings)
    session: str = ""
    digest: str = ""  # settings digest stamped on every task
    parallel: bool = True
    fresh: set[str] = field(default_factory=set)  # re-run agents: skip the result cache
    _phase_started: dict[str, float] = field(default_factory=dict)
    _semaphores: dict[str, asyncio.Semaphore] = field(default_factory=dict)

    # -- graph construction -------------------------------------------------
    def build(self) -> Any:
        from langgraph.graph import END as LG_END
        from langgraph.graph import START, StateGraph

        builder = StateGraph(RunState)
        # functools.partial: LangGraph scans a plain function's bytecode for
        # subgraphs at compile time (~2 ms a node); a partial is left alone.
        for phase in self.framework.phases:
            builder.add_node(phase.name, partial(self._enter(phase)))
            names = [agent_node(phase.name, a.name) for a in phase.agents]
            for agent, name in zip(phase.agents, names, strict=True):
                builder.add_node(name, partial(self._agent(phase, agent)))
            builder.add_node(join_node(phase.name), partial(self._join(phase)))
            if self.is_parallel(phase):
                for name in names:
                    builder.add_edge(phase.name, name)
                builder.add_edge(names, join_node(phase.name))
            else:
                for src, dst in zip(
                    [phase.name, *names], [*names, join_node(phase.name)], strict=True
                ):
                    builder.add_edge(src, dst)
            targets: dict[Hashable, str] = {p.name: p.name for p in self.framework.phases}
            targets[END] = LG_END
            builder.add_conditional_edges(join_node(phase.name), _goto, targets)
        builder.add_edge(START, self.framework.phases[0].name)
        return builder

    def is_parallel(self, phase: Phase) -> bool:
        return self.parallel and phase.parallel is not False and len(phase.agents) > 1

    # -- nodes ----------------------------------------------------------------
    def _enter(self, phase: Phase) -> Any:
        async def enter(state: RunState) -> dict[str, Any]:
            cycle = state.get("cycles", {}).get(phase.name, 0) + 1
            self._phase_started[phase.name] = time.monotonic()
            self.bus.emit(
                PhaseStarted(phase=phase.name, cycle=cycle, agents=[a.name for a in phase.agents])
            )
            return {"cycles": {phase.name: cycle}}

        return enter

    def _agent(self, phase: Phase, agent: Agent) -> Any:
        async def node(state: RunState) -> dict[str, Any]:
            if self.executor is None:
                raise RuntimeError("this engine only compiles graphs: it has no executor")
            cycle = state.get("cycles", {}).get(phase.name, 1)
            task = AgentTask(
                session=self.session,
                phase=phase.name,
                agent=agent.name,
                cycle=cycle,
                inputs=task_inputs(dict(state)),
                settings_digest=self.digest,
                fresh=agent.name in self.fresh,
            )
            bus = self.bus
            bus.emit(
                AgentStarted(
                    phase=phase.name,
                    agent=agent.name,
                    model=agent.model or self.executor.default_model,
                )
            )
            started = time.perf_counter()
            limit, which = self._agent_timeout(phase, agent)
            try:
                async with self._semaphore(phase):
                    async with asyncio.timeout(limit):
                        result = await self.executor.run(task)
            except TimeoutError:
                return self._failed(
                    phase, agent, _timeout_error(agent.name, phase.name, which, limit)
                )
            except Exception as exc:  # noqa: BLE001 - classified, then policy decides
                err = classify(exc)
                if isinstance(err, BudgetExceeded | Cancelled | AuditFailure):
                    raise err from exc
                return self._failed(phase, agent, err)
            bus.emit(
                AgentCompleted(
                    phase=phase.name,
                    agent=agent.name,
                    duration_ms=round((time.perf_counter() - started) * 1000, 1),
                    output_path=result["output_path"],
                    files_written=result["files"],
                    reused=bool(result.get("cached")),
                    cycle=cycle,
                )
            )
            return {"results": {agent.name: result}}

        return node

    def _failed(self, phase: Phase, agent: Agent, err: PlinyError) -> dict[str, Any]:
        attempts = getattr(err, "attempts", 1)
        skipped = phase.on_agent_failure != "fail"
        logger.opt(exception=err.__cause__ or err).debug(
            "agent {} failed: {} {} after {} attempt(s)",
            agent.name,
            err.code,
            err.message,
            attempts,
        )
        self.bus.emit(
            AgentFailed(
                phase=phase.name,
                agent=agent.name,
                category=err.category,
                code=err.code,
                message=err.message,
                attempts=attempts,
                skipped=skipped,
            )
        )
        if not skipped:
            raise AgentFailure(agent.name, err, attempts)
        # plain str: LangGraph's checkpoint serializer must not see our enums
        error = {"category": str(err.category), "code": str(err.code), "message": err.message}
        return {"results": {agent.name: {"status": "failed", "error": error}}}

    def _join(self, phase: Phase) -> Any:
        async def join(state: RunState) -> dict[str, Any]:
            results = state.get("results", {})
            done = [a for a in phase.agents if results.get(a.name, {}).get("status") == "done"]
            failed = len(phase.agents) - len(done)
            minimum = phase.min_successful_agents
            if minimum is None:
                minimum = len(phase.agents) if phase.on_agent_failure == "fail" else 1
            if len(done) < minimum:
                why = "; ".join(
                    f"{a.name}: {err.get('category')} {err.get('code')}: {err.get('message')}"
                    for a in phase.agents
                    if (err := results.get(a.name, {}).get("error"))
                )
                raise SystemFailure(
                    f"phase {phase.name}: {len(done)}/{len(phase.agents)} agents succeeded, "
                    f"min_successful_agents is {minimum} ({why})",
                    code="PLINY-PHASE-FAILED",
                    recoverable=True,
                    hint="fix the cause, then `pliny session resume` (retries the failed agents)",
                )
            update = self._route(phase, state)
            started = self._phase_started.pop(phase.name, None)
            duration = (time.monotonic() - started) * 1000 if started else 0.0
            self.bus.emit(
                PhaseCompleted(
                    phase=phase.name,
                    cycle=state.get("cycles", {}).get(phase.name, 1),
                    duration_ms=round(duration, 1),
                    next=update["goto"],
                    succeeded=len(done),
                    failed=failed,
                )
            )
            return {**update, "trail": [phase.name]}

        return join

    def _route(self, phase: Phase, state: RunState) -> dict[str, Any]:
        uses = state.get("route_uses", {})
        results = state.get("results", {})
        for index, route in enumerate(phase.routes):
            key = f"{phase.name}#{index}"
            if route.max_cycles is not None and uses.get(key, 0) >= route.max_cycles:
                continue
            result = results.get(route.when.agent, {})
            value = (result.get("data") or {}).get(route.when.field)
            if route.when.matches(value):
                data = result.get("data") or {}
                feedback = data.get("feedback") or result.get("text", "")
                return {
                    "goto": route.goto,
                    "route_uses": {key: uses.get(key, 0) + 1},
                    "feedback": str(feedback),
                }
        return {"goto": self.framework.default_next(phase)}

    # -- limits -------------------------------------------------------------
    def _semaphore(self, phase: Phase) -> asyncio.Semaphore:
        limit = phase.max_concurrency or len(phase.agents)
        return self._semaphores.setdefault(phase.name, asyncio.Semaphore(limit))

    def _agent_timeout(self, phase: Phase, agent: Agent) -> tuple[float | None, str]:
        """The tighter of the agent's limit and what is left of the phase's."""
        timeouts = self.settings.execution.timeouts
        limits: list[tuple[float, str]] = []
        if agent_limit := agent.timeout or timeouts.agent:
            limits.append((agent_limit, "agent"))
        if phase_limit := phase.timeout or timeouts.phase:
            started = self._phase_started.setdefault(phase.name, time.monotonic())
            limits.append((max(0.0, phase_limit - (time.monotonic() - started)), "phase"))
        return min(limits) if limits else (None, "agent")


def _timeout_error(agent: str, phase: str, which: str, limit: float | None) -> PlinyError:
    if which == "phase":
        return SystemFailure(
            f"agent {agent} stopped: phase {phase} ran out of time",
            code="PLINY-TIMEOUT-PHASE",
            recoverable=True,
            hint="raise the phase's timeout or execution.timeouts.phase; resume",
        )
    return SystemFailure(
        f"agent {agent} timed out after {limit:g}s",
        code="PLINY-TIMEOUT-AGENT",
        recoverable=True,
        hint="raise execution.timeouts.agent or the agent's timeout, then resume",
    )


def _goto(state: RunState) -> str:
    return state.get("goto", END)


class AgentFailure(PlinyError):
    """An agent gave up under ``on_agent_failure: fail``; carries the cause."""

    def __init__(self, agent: str, cause: PlinyError, attempts: int) -> None:
        tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
        super().__init__(
            f"agent {agent} failed ({cause.category}, {cause.code}) {tries}: {cause.message}",
            code=cause.code,
            recoverable=cause.recoverable,
            hint=cause.hint or ("`pliny session resume` retries it" if cause.recoverable else None),
        )
        self.category = cause.category
        self.agent = agent
        self.cause = cause
        self.attempts = attempts
