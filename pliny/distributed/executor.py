"""The coordinator side: each agent of the phase graph as a Temporal workflow.

The coordinator keeps everything that decides *what* runs (LangGraph phase
graph, routes, cycles, failure policy, session state, the audit log); this
executor only decides *where*: it starts one ``PlinyAgent`` workflow per
``AgentTask`` on the agent's task queue and waits for it.

Exactly once:

* The workflow id is derived from the task (session, phase, agent, cycle and
  a digest of the inputs). ``USE_EXISTING`` re-attaches a resumed coordinator
  to a run still in flight; ``ALLOW_DUPLICATE_FAILED_ONLY`` reads the result
  of one that already completed (never runs it twice) and lets a failed one
  be tried again. A ``--rerun`` (fresh) task gets a new id each run.
* Events and writes come from the shared outbox (see ``shared.py``) and are
  appended once each, in the order the worker produced them: an origin
  already in the audit log (a coordinator that died after appending) is
  skipped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import uuid
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pliny.distributed.executor_options import address_of, connect, queue_of
from pliny.distributed.ledger import SharedBudget, release_workflow
from pliny.distributed.shared import SharedStore, shared_path
from pliny.distributed.taxonomy import from_temporal
from pliny.distributed.workflow import WORKFLOW
from pliny.engine.executor import AgentTask
from pliny.events import parse
from pliny.llm.budget import BudgetGuard

if TYPE_CHECKING:
    from pliny.engine.agent import AgentRun

HEARTBEAT_S = 10.0
MAX_ATTEMPTS = 3


class TemporalExecutor:
    def __init__(
        self,
        run: AgentRun,
        *,
        launch: dict[str, Any],
        address: str | None = None,
        task_queue: str | None = None,
        heartbeat_s: float | None = None,
        max_attempts: int | None = None,
    ) -> None:
        self.context = run
        self.default_model = run.gateway.endpoint.model
        self.address = address_of(address)
        self.task_queue = queue_of(task_queue)
        self.heartbeat_s = float(
            heartbeat_s or os.environ.get("PLINY_TEMPORAL_HEARTBEAT_S") or HEARTBEAT_S
        )
        self.max_attempts = int(max_attempts or MAX_ATTEMPTS)
        self.launch = launch
        self.nonce = uuid.uuid4().hex[:8]  # fresh (--rerun) tasks: a new workflow per run
        session_dir = Path(launch["session_dir"])
        self.store = SharedStore(shared_path(session_dir))
        self.seen = _logged_origins(Path(launch["audit_path"]))
        if isinstance(run.gateway.budget, BudgetGuard):  # the coordinator's own guard
            SharedBudget.reset(self.store, run.gateway.budget)
        # The agents' workflows run here, on the session's own queue: this process
        # answers the workers' journal, budget and outbox requests.
        self.coordinator_queue = f"pliny-coordinator-{run.session}"
        self._client: Any = None
        self._worker: Any = None
        self._serving: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()
        self._stopping: set[asyncio.Future[None]] = set()  # cancels this process must see through

    async def client(self) -> Any:
        async with self._connecting:
            if self._client is None:
                self._client = await connect(self.address)
                await self._serve(self._client)
        return self._client

    async def _serve(self, client: Any) -> None:
        from temporalio.worker import UnsandboxedWorkflowRunner, Worker

        from pliny.distributed.coordinator import CoordinatorService
        from pliny.distributed.workflow import AgentWorkflow

        service = CoordinatorService(self.context, self.store)
        self._worker = Worker(
            client,
            task_queue=self.coordinator_queue,
            workflows=[AgentWorkflow],
            activities=[service.op],
            identity=f"pliny-coordinator-{os.getpid()}",
            # Deterministic, imports nothing: no sandbox to build per workflow task.
            workflow_runner=UnsandboxedWorkflowRunner(),
            # A killed coordinator's cached workflows move to its successor within 1 s.
            sticky_queue_schedule_to_start_timeout=timedelta(seconds=1),
        )
        self._serving = asyncio.create_task(self._worker.run())

    async def aclose(self) -> None:
        if self._stopping:  # the workflows being cancelled run here: let them end first
            await asyncio.wait(self._stopping, timeout=5)
        if self._worker is not None:
            with contextlib.suppress(Exception):
                await self._worker.shutdown()
        if self._serving is not None:
            with contextlib.suppress(BaseException):
                await self._serving
        self.store.close()

    def queue_for(self, task: AgentTask) -> str:
        phase, agent = self.context.framework.agent(task.agent)
        return agent.task_queue or phase.task_queue or self.task_queue

    def workflow_id(self, task: AgentTask) -> str:
        digest = hashlib.sha256(task.to_json().encode()).hexdigest()[:16]
        fresh = f"-{self.nonce}" if task.fresh else ""
        return f"pliny/{task.session}/{task.phase}/{task.agent}/c{task.cycle}/{digest}{fresh}"

    def call(self, task: AgentTask, workflow: str) -> dict[str, Any]:
        """Everything a worker needs, as data: no path of this machine is in it."""
        plain = task.__dict__ | {"inputs": self.store.spill(task.inputs)}
        run = self.context
        limit = run.settings.execution.timeouts.agent
        return {
            "settings": run.settings.model_dump(mode="json"),
            "framework": run.framework.model_dump(mode="json", by_alias=True, exclude_unset=True),
            "model": self.launch.get("model"),
            "queue": self.queue_for(task),
            "task": plain,
            "activity": {
                "start_to_close_s": float(limit or 6 * 3600),
                "heartbeat_s": self.heartbeat_s,
                "retry_initial_s": 0.5,
                "max_attempts": self.max_attempts,
            },
        }

    async def run(self, task: AgentTask) -> dict[str, Any]:
        from temporalio.client import WorkflowFailureError
        from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
        from temporalio.exceptions import CancelledError, WorkflowAlreadyStartedError

        client = await self.client()
        workflow = self.workflow_id(task)
        for again in (True, False):
            try:
                handle = await client.start_workflow(
                    WORKFLOW,
                    self.call(task, workflow),
                    id=workflow,
                    task_queue=self.coordinator_queue,
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                )
            except WorkflowAlreadyStartedError:  # it completed before: read its result only
                handle = client.get_workflow_handle(workflow)
            try:
                out = await handle.result()
            except WorkflowFailureError as exc:
                self.absorb(workflow)
                if again and isinstance(exc.cause, CancelledError):
                    continue  # an earlier run stopped it (fail policy, Ctrl-C): this one needs it
                raise from_temporal(exc, task.agent) from None
            except asyncio.CancelledError:  # the engine's timeout or Ctrl-C: stop the remote agent
                # What it did so far goes in now; calls still in flight are appended when the
                # session resumes (the same workflow id finds them in the outbox).
                self.absorb(workflow)
                self._stopping.add(asyncio.ensure_future(_cancel(handle)))
                raise
            self.absorb(workflow)
            return self.store.unspill(out["result"])
        raise AssertionError("unreachable")

    def absorb(self, workflow: str) -> None:
        """Append the workflow's events and writes not yet in the audit log, in order."""
        run = self.context
        rows = [r for r in self.store.rows(workflow) if r[0] not in self.seen]
        writes = [body for _, kind, body in rows if kind == "write" and body.get("blob")]
        blobs = self._blobs({w["blob"] for w in writes})
        for origin, kind, body in rows:
            self.seen.add(origin)
            if kind == "event":
                run.bus.emit(parse({**body, "origin": origin}))
            elif kind == "write":
                data = blobs.get(body.get("blob") or "")
                if data is None and "data" in body:  # no git repo: the content came inline
                    data = base64.b64decode(self.store.unspill(body["data"]))
                if data is not None:  # into this workspace; the checkpoint store sees it
                    run.workspace.write_file(body["path"], data.decode("utf-8"), body.get("agent"))
        release_workflow(self.store, workflow)

    def _blobs(self, shas: set[str]) -> dict[str, bytes]:
        from pliny.checkpoints.git import GitRepo

        repo = GitRepo.open(Path(self.launch["workspace"]), init=False)
        return repo.read_blobs(shas) if repo is not None and shas else {}


async def _cancel(handle: Any) -> None:
    try:
        await handle.cancel()
        await asyncio.wait_for(handle.result(), 5)
    except BaseException:  # noqa: BLE001 - finished, cancelled or unreachable: nothing to stop
        return


def _logged_origins(audit_path: Path) -> set[str]:
    from pliny.audit.reader import read_events

    if not audit_path.exists():
        return set()
    return {o for e in read_events(audit_path) if (o := getattr(e, "origin", None))}
