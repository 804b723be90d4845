"""The worker side: rebuild an agent's run from plain data and run it.

A worker needs no shared filesystem: the task carries the session's settings
and framework as data (the worker refuses a settings-digest mismatch), the
worker's own environment gives the LLM endpoint and key, and everything the
session owns (resume journal, budget ledger, audit outbox, workspace files)
is the coordinator's, reached through Temporal updates (see ``remote.py``).
The workspace is mirrored into ``<worker dir>/.pliny/worker/<session>/tree``
before each agent (changed files only); files the agent writes go back to
the coordinator, which stores them as git blobs. Only names and small data
go back through Temporal: large results travel by digest, in parts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio import activity

from pliny.distributed.remote import Outbox, Remote, RemoteBudget, RemoteJournal, sync_tree
from pliny.distributed.taxonomy import to_application_error
from pliny.distributed.workflow import ACTIVITY
from pliny.engine.executor import AgentTask, LocalExecutor, settings_digest
from pliny.errors import ConfigError


@dataclass
class SessionCopy:
    """What a worker keeps per session: its settings, framework and workspace mirror."""

    settings: Any
    framework: Any
    tree: Path
    endpoint: Any
    pricing: Any
    syncing: asyncio.Lock = field(default_factory=asyncio.Lock)


class AgentActivities:
    """Holds what a worker process brings: its endpoint env and a scratch directory."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        workspace: Path | None = None,
        identity: str | None = None,
        max_concurrent: int = 64,
    ) -> None:
        self.env = dict(os.environ if env is None else env)
        self.home = (workspace or Path.cwd()).resolve()
        self.identity = identity or f"pliny-worker-{os.getpid()}"
        self.pool = concurrent.futures.ThreadPoolExecutor(max_concurrent, "pliny-agent")
        self._sessions: dict[str, SessionCopy] = {}

    async def aclose(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    @activity.defn(name=ACTIVITY)
    async def run_agent(self, call: dict[str, Any]) -> dict[str, Any]:
        info = activity.info()
        assert info.workflow_id is not None  # an agent activity always runs in its workflow
        origin = f"{info.workflow_id}/{info.workflow_run_id}#{info.attempt}"
        handle = activity.client().get_workflow_handle(
            info.workflow_id, run_id=info.workflow_run_id
        )
        remote = Remote(handle, asyncio.get_running_loop(), origin)
        beat = asyncio.create_task(_heartbeat(info.heartbeat_timeout))
        try:
            result = await self._run(call, remote)
            await remote.request("done", {})  # the last events; unused reservations go
            return {"result": result, "origin": origin}
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure crosses as a typed ApplicationError
            from pliny.llm.classify import classify

            with contextlib.suppress(Exception):  # what it did before failing is audited
                await remote.request("done", {})
            raise to_application_error(classify(exc)) from exc
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _run(self, call: dict[str, Any], remote: Remote) -> Any:
        copy = self._session(call)
        async with copy.syncing:
            await sync_tree(remote, copy.tree)
        task = AgentTask(**{**call["task"], "inputs": await remote.unspill(call["task"]["inputs"])})
        mine = settings_digest(copy.settings)
        if task.settings_digest and mine != task.settings_digest:
            raise ConfigError(
                f"worker rebuilt other settings than the coordinator's for agent {task.agent} "
                f"(digest {mine} vs {task.settings_digest})",
                code="PLINY-WORKER-SETTINGS",
                hint="run the same Pliny version on the worker as on the coordinator",
            )
        result = await self._in_thread(copy, call, task, remote)
        return await remote.spill(result)

    def _session(self, call: dict[str, Any]) -> SessionCopy:
        """Settings and framework from the task's data, built once per session and digest."""
        from pliny.config.settings import Settings
        from pliny.framework.model import Framework
        from pliny.llm.pricing import PricingTable

        spec = json.dumps([call["settings"], call["framework"]], sort_keys=True)
        key = f"{call['task']['session']}/{hashlib.sha256(spec.encode()).hexdigest()[:16]}"
        if key not in self._sessions:
            settings = Settings.model_validate(call["settings"])
            tree = self.home / ".pliny" / "worker" / call["task"]["session"] / "tree"
            endpoint = self._endpoint(settings, call.get("model"))
            self._sessions[key] = SessionCopy(
                settings,
                Framework.model_validate(call["framework"]),
                tree,
                endpoint,
                PricingTable.load(settings.pricing, api_url=endpoint.base_url),
            )
        return self._sessions[key]

    async def _in_thread(
        self, copy: SessionCopy, call: dict[str, Any], task: AgentTask, remote: Remote
    ) -> Any:
        """The agent on a pool thread with its own loop; a cancel reaches it there."""
        box: dict[str, Any] = {}

        def main() -> Any:
            loop = asyncio.new_event_loop()
            box["loop"] = loop
            try:
                box["task"] = loop.create_task(self._agent(copy, call, task, remote))
                return loop.run_until_complete(box["task"])
            finally:
                loop.close()

        done = self.pool.submit(main)
        try:
            return await asyncio.shield(asyncio.wrap_future(done))
        except asyncio.CancelledError:
            remote.cancel()
            if (loop := box.get("loop")) is not None and "task" in box:
                with contextlib.suppress(RuntimeError):  # already closed: it had finished
                    loop.call_soon_threadsafe(box["task"].cancel)
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.wrap_future(done), 10)
            raise

    async def _agent(
        self, copy: SessionCopy, call: dict[str, Any], task: AgentTask, remote: Remote
    ) -> dict[str, Any]:
        from pliny.engine.agent import AgentRun
        from pliny.engine.tools import Workspace
        from pliny.events import EventBus
        from pliny.llm.circuit import CircuitBreakers
        from pliny.llm.gateway import LLMGateway

        settings = copy.settings
        # `worker` on every event: the audit log says which machine made each call.
        bus = EventBus(session=task.session, worker=self.identity)
        outbox = Outbox(remote, bus.context)
        bus.subscribe(outbox)

        def circuit_changed(change: Any) -> None:
            if (event := change.as_event()) is not None:
                bus.emit(event)

        gateway = LLMGateway(
            settings,
            copy.endpoint,
            bus,
            journal=RemoteJournal(remote, outbox),  # type: ignore[arg-type]  # same get/put
            pricing=copy.pricing,
            budget=RemoteBudget(remote),  # same check() as BudgetGuard (BudgetCheck)
            breakers=CircuitBreakers.from_settings(
                settings.error_handling.circuit_breaker, on_change=circuit_changed
            ),
        )
        workspace = Workspace(copy.tree, protected=(".git", ".pliny", settings.audit.dir))
        workspace.on_write.append(remote.add_write)  # to the coordinator, as a git blob
        tools = settings.llm.supports_tools
        run = AgentRun(
            copy.framework,
            settings,
            gateway,
            workspace,
            bus,
            task.session,
            use_tools=tools == "yes" or tools == "auto",
            cache=None,  # the result cache is the coordinator's
        )
        try:
            return await LocalExecutor(run).run(task)
        finally:
            await gateway.close()

    def _endpoint(self, settings: Any, model: str | None) -> Any:
        """This machine's endpoint: its own OPENAI_BASE_URL wins over the session's base_url."""
        from pliny.llm.endpoint import resolve

        llm = settings.llm
        if self.env.get("OPENAI_BASE_URL"):
            llm = llm.model_copy(update={"base_url": None})
        endpoint = resolve(llm, self.env, model)
        if endpoint.kind == "local":
            raise ConfigError(
                "this worker has no LLM endpoint (the embedded model is not served by workers)",
                code="PLINY-WORKER-ENDPOINT",
                hint="set OPENAI_BASE_URL / OPENAI_API_KEY (or llm.base_url) for `pliny worker`",
            )
        return endpoint


async def _heartbeat(timeout: Any) -> None:
    """Tell Temporal this worker is alive; a SIGKILLed one goes silent and is retried elsewhere."""
    every = max(0.2, (timeout.total_seconds() if timeout else 30.0) / 3)
    while True:
        activity.heartbeat()
        await asyncio.sleep(every)
