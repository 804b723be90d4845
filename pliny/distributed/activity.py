"""The worker side: rebuild an agent's run from plain data and run it.

A task names everything (workspace, framework, config, overrides, settings
digest); the worker loads the same settings and framework, refuses a digest
mismatch, and calls the same ``LocalExecutor`` path with its *own* LLM
gateway (its own endpoint key) over the session's shared journal and budget
ledger. Every event and file write goes to the shared outbox as it happens;
the coordinator appends them to the audit log. Only names and small data go
back through Temporal: large results travel by digest.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from temporalio import activity

from pliny.distributed.ledger import SharedBudget
from pliny.distributed.shared import SharedStore, shared_path
from pliny.distributed.taxonomy import to_application_error
from pliny.distributed.workflow import ACTIVITY
from pliny.engine.executor import AgentTask, LocalExecutor, settings_digest
from pliny.errors import ConfigError
from pliny.events import Event, EventBus

# The attempt an event or write belongs to: each activity runs in its own asyncio task,
# so one shared gateway/bus per session serves all of them and still files every
# event under the right attempt.
CURRENT: ContextVar[Outbox] = ContextVar("pliny_attempt")


class AgentActivities:
    """Holds what a worker process brings: its endpoint env and workspace mount."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        workspace: Path | None = None,
        identity: str | None = None,
    ) -> None:
        self.env = dict(os.environ if env is None else env)
        self.workspace = workspace
        self.identity = identity or f"pliny-worker-{os.getpid()}"
        self._contexts: dict[str, tuple[Any, SharedStore]] = {}
        self._stack = contextlib.AsyncExitStack()
        self._building = asyncio.Lock()

    async def aclose(self) -> None:
        await self._stack.aclose()

    @activity.defn(name=ACTIVITY)
    async def run_agent(self, call: dict[str, Any]) -> dict[str, Any]:
        info = activity.info()
        origin = f"{info.workflow_id}/{info.workflow_run_id}#{info.attempt}"
        beat = asyncio.create_task(_heartbeat(info.heartbeat_timeout))
        try:
            return await self._run(call, origin)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure crosses as a typed ApplicationError
            from pliny.llm.classify import classify

            raise to_application_error(classify(exc)) from exc
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _run(self, call: dict[str, Any], origin: str) -> dict[str, Any]:
        run, store = await self._context(call)
        task = AgentTask(**{**call["task"], "inputs": store.unspill(call["task"]["inputs"])})
        if task.settings_digest and settings_digest(run.settings) != task.settings_digest:
            raise ConfigError(
                f"worker settings differ from the coordinator's for agent {task.agent} "
                f"(digest {settings_digest(run.settings)} vs {task.settings_digest})",
                code="PLINY-WORKER-SETTINGS",
                hint="give the worker the same pliny.yaml and Pliny version as the coordinator",
            )
        outbox = Outbox(store, call["workflow"], origin)
        CURRENT.set(outbox)  # this task's context only
        try:
            result = await LocalExecutor(run).run(task)
        finally:
            run.gateway.budget.release()
        return {"result": store.spill(result), "origin": origin}

    async def _context(self, call: dict[str, Any]) -> tuple[Any, SharedStore]:
        """One run context per session and settings, built once, shared by its agents."""
        names = ("workspace", "framework", "config_path", "overrides", "model")
        spec = {k: call.get(k) for k in names} | {"session": call["task"]["session"]}
        key = json.dumps(spec, sort_keys=True)
        async with self._building:
            if key not in self._contexts:
                self._contexts[key] = await self._build(call)
        return self._contexts[key]

    async def _build(self, call: dict[str, Any]) -> tuple[Any, SharedStore]:
        from pliny.config.settings import load_settings
        from pliny.framework import model as fwmod

        workspace = (self.workspace or Path(call["workspace"])).resolve()
        session_dir = workspace / ".pliny" / "sessions" / call["task"]["session"]
        store = SharedStore(shared_path(session_dir))
        self._stack.callback(store.close)
        config = Path(call["config_path"]) if call.get("config_path") else None
        settings = load_settings(workspace, config, call.get("overrides") or {})
        framework = fwmod.load(call["framework"])
        # `worker` on every event: the audit log says which machine made each call.
        bus = EventBus(session=call["task"]["session"], worker=self.identity)
        bus.subscribe(lambda event: CURRENT.get().event(event))
        budget = SharedBudget(store, settings.budgets, owner=lambda: CURRENT.get().origin)
        bus.subscribe(budget)
        run = await _agent_run(
            self.env, call, settings, framework, workspace, session_dir, bus, budget, self._stack
        )
        run.workspace.on_write.append(_writer(workspace))
        return run, store


class Outbox:
    """Numbers and stores one attempt's events and writes, in the order they happen."""

    def __init__(self, store: SharedStore, workflow: str, origin: str) -> None:
        self.store, self.workflow, self.origin = store, workflow, origin
        self._n = itertools.count(1)

    def event(self, event: Event) -> None:
        body = event.model_dump(mode="json", exclude_none=True)
        self.store.append(self.workflow, f"{self.origin}.{next(self._n)}", "event", body)

    def write(self, rel: str, blob: str | None, agent: str | None) -> None:
        body = {"path": rel, "blob": blob, "agent": agent}
        self.store.append(self.workflow, f"{self.origin}.{next(self._n)}", "write", body)


def _writer(workspace: Path) -> Any:
    from pliny.checkpoints.git import GitRepo

    repo = GitRepo.open(workspace, init=False)

    def on_write(rel: str, data: bytes, agent: str | None) -> None:
        blob = repo.store_blob(data) if repo is not None else None  # arrives as a git blob
        CURRENT.get().write(rel, blob, agent)

    return on_write


async def _agent_run(
    env: Mapping[str, str],
    call: dict[str, Any],
    settings: Any,
    framework: Any,
    workspace: Path,
    session_dir: Path,
    bus: EventBus,
    budget: SharedBudget,
    stack: contextlib.AsyncExitStack,
) -> Any:
    """The run context a LocalExecutor needs, with the session's shared journal."""
    from pliny.engine.agent import AgentRun
    from pliny.engine.tools import Workspace
    from pliny.llm.circuit import CircuitBreakers
    from pliny.llm.endpoint import resolve
    from pliny.llm.gateway import LLMGateway
    from pliny.llm.journal import Journal
    from pliny.llm.pricing import PricingTable

    endpoint = resolve(settings.llm, env, call.get("model"))
    if endpoint.kind == "local":
        raise ConfigError(
            "this worker has no LLM endpoint (the embedded model is not served by workers)",
            code="PLINY-WORKER-ENDPOINT",
            hint="set OPENAI_BASE_URL / OPENAI_API_KEY (or llm.base_url) for `pliny worker`",
        )
    journal = Journal(session_dir / "journal.sqlite")  # shared: a recorded answer is never re-paid
    stack.callback(journal.close)

    def circuit_changed(change: Any) -> None:
        if (event := change.as_event()) is not None:
            bus.emit(event)

    gateway = LLMGateway(
        settings,
        endpoint,
        bus,
        journal=journal,
        pricing=PricingTable.load(settings.pricing),
        budget=budget,  # a SharedBudget: same check() as BudgetGuard, on the shared ledger
        breakers=CircuitBreakers.from_settings(
            settings.error_handling.circuit_breaker, on_change=circuit_changed
        ),
    )
    stack.push_async_callback(gateway.close)
    tools = settings.llm.supports_tools
    return AgentRun(
        framework,
        settings,
        gateway,
        Workspace(workspace, protected=(".git", ".pliny", settings.audit.dir)),
        bus,
        call["task"]["session"],
        use_tools=tools == "yes" or tools == "auto",
        cache=_cache(workspace, framework, stack),
    )


def _cache(workspace: Path, framework: Any, stack: contextlib.AsyncExitStack) -> Any:
    if not any(p.cache or any(a.cache for a in p.agents) for p in framework.phases):
        return None
    from pliny.engine.cache import ResultCache, cache_path

    cache = ResultCache(cache_path(workspace))
    stack.callback(cache.close)
    return cache


async def _heartbeat(timeout: Any) -> None:
    """Tell Temporal this worker is alive; a SIGKILLed one goes silent and is retried elsewhere."""
    every = max(0.2, (timeout.total_seconds() if timeout else 30.0) / 3)
    while True:
        activity.heartbeat()
        await asyncio.sleep(every)
