"""The one workflow: one agent, run as one activity on a worker, served by the coordinator.

The workflow itself runs on the *coordinator's* task queue (the coordinator
process hosts it), the agent's activity on the agent's queue (any machine).
The activity talks back to its own workflow with Temporal **Updates**
(durable request/response, deduplicated by update id): each update runs a
local activity in the coordinator process, which owns the session's
journal, outbox and budget ledger (see :mod:`pliny.distributed.coordinator`).
A worker therefore needs nothing but the Temporal address and its LLM key.

Kept tiny and deterministic: it imports nothing of Pliny. The coordinator
starts it with a workflow id derived from the task, so a resumed coordinator
re-attaches to a run still in flight or reads the result of one that
finished, instead of paying for the agent again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

WORKFLOW = "PlinyAgent"
ACTIVITY = "pliny.run_agent"
UPDATE = "pliny.op"
OP_ACTIVITY = "pliny.coordinator_op"


@workflow.defn(name=WORKFLOW)
class AgentWorkflow:
    @workflow.run
    async def run(self, call: dict[str, Any]) -> dict[str, Any]:
        opts = call["activity"]
        return await workflow.execute_activity(
            ACTIVITY,
            call,
            task_queue=call["queue"],
            start_to_close_timeout=timedelta(seconds=opts["start_to_close_s"]),
            heartbeat_timeout=timedelta(seconds=opts["heartbeat_s"]),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=opts["retry_initial_s"]),
                maximum_attempts=opts["max_attempts"],
            ),
        )

    # An update still running when the agent ended (cancelled) answers nobody: abandon it.
    @workflow.update(name=UPDATE, unfinished_policy=workflow.HandlerUnfinishedPolicy.ABANDON)
    async def op(self, request: dict[str, Any]) -> Any:
        """A worker's request (journal, budget, outbox, blobs), served by the coordinator."""
        return await workflow.execute_local_activity(
            OP_ACTIVITY,
            request,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
