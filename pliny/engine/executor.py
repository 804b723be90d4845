"""The executor seam: how one agent of a phase gets run.

The engine decides *which* agent runs *when* (the phase graph, routes,
cycles, failure policy); an executor decides *where*. Only plain data crosses
the seam: an :class:`AgentTask` in (names, cycle, the graph state the agent
reads, a digest of the settings it must run under) and the agent's result
dict out, so an executor may hand the task to another process or machine.

:class:`LocalExecutor` runs the agent in this process, as Pliny always has.
Every executor must pass ``tests/executor_conformance.py``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pliny.errors import Category, UsageError

if TYPE_CHECKING:
    from pliny.config.settings import Settings
    from pliny.engine.agent import AgentRun

ANSWER_FAILURES = {Category.VALIDATION, Category.AI}
# The graph state an agent reads: its prompt is rendered from these keys.
INPUT_KEYS = ("task", "feedback", "results")


@dataclass(frozen=True)
class AgentTask:
    """One agent to run, as plain JSON-able data."""

    session: str
    phase: str
    agent: str
    cycle: int
    inputs: dict[str, Any] = field(default_factory=dict)
    settings_digest: str = ""
    fresh: bool = False  # --rerun/--from-phase: bypass the result cache

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> AgentTask:
        return cls(**json.loads(text))


@runtime_checkable
class Executor(Protocol):
    """Runs agents. ``run`` returns the result the graph state stores for the agent.

    It raises what the agent raised (the engine classifies it and applies the
    phase's failure policy); ``BudgetExceeded`` and ``Cancelled`` end the run.
    """

    default_model: str

    async def run(self, task: AgentTask) -> dict[str, Any]: ...


def task_inputs(state: dict[str, Any]) -> dict[str, Any]:
    return {key: state[key] for key in INPUT_KEYS if key in state}


def settings_digest(settings: Settings) -> str:
    """Names the settings a task runs under, so a remote worker can refuse a mismatch."""
    blob = json.dumps(settings.model_dump(mode="json"), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class LocalExecutor:
    """Runs each agent here, on the run's gateway, workspace and event bus."""

    def __init__(self, run: AgentRun) -> None:
        self.context = run
        self.digest = settings_digest(run.settings)
        self.default_model = run.gateway.endpoint.model

    async def run(self, task: AgentTask) -> dict[str, Any]:
        from pliny.engine.agent import run_agent
        from pliny.llm.gateway import CallContext

        if task.settings_digest and task.settings_digest != self.digest:
            raise RuntimeError(f"task for {task.agent} was made under other settings")
        _, agent = self.context.framework.agent(task.agent)
        ctx = CallContext(task.phase, task.agent, task.cycle, fresh=task.fresh)
        try:
            return await run_agent(self.context, task.phase, agent, dict(task.inputs), ctx)
        except Exception as exc:
            self._forget_failed_answers(exc, task)
            raise

    def _forget_failed_answers(self, exc: Exception, task: AgentTask) -> None:
        """Replaying answers that failed would fail the same way: a resume asks again.

        They were paid; their llm_call events keep the cost.
        """
        from pliny.llm.classify import classify

        journal = self.context.gateway.journal
        if journal is not None and classify(exc).category in ANSWER_FAILURES:
            journal.forget([task.agent], task.cycle)


# name -> factory; a distributed executor registers itself here (``--executor NAME``).
EXECUTORS: dict[str, Callable[..., Executor]] = {"local": LocalExecutor}


def check_executor(name: str) -> None:
    if name not in EXECUTORS:
        known = ", ".join(sorted(EXECUTORS))
        raise UsageError(f"unknown executor {name!r} (known: {known})")


def make_executor(name: str, run: AgentRun, options: dict[str, Any] | None = None) -> Executor:
    """``options``: what a distributed executor needs (address, queue, how to relaunch)."""
    check_executor(name)
    return EXECUTORS[name](run, **options) if options else EXECUTORS[name](run)
