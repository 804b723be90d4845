"""The one workflow: run one agent as one activity, with Temporal's retries.

Kept tiny and deterministic (it runs in Temporal's sandbox): it imports
nothing of Pliny. The coordinator starts it with a workflow id derived from
the task, so a resumed coordinator re-attaches to a run still in flight or
reads the result of one that finished, instead of paying for the agent again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

WORKFLOW = "PlinyAgent"
ACTIVITY = "pliny.run_agent"


@workflow.defn(name=WORKFLOW)
class AgentWorkflow:
    @workflow.run
    async def run(self, call: dict[str, Any]) -> dict[str, Any]:
        opts = call["activity"]
        return await workflow.execute_activity(
            ACTIVITY,
            call,
            start_to_close_timeout=timedelta(seconds=opts["start_to_close_s"]),
            heartbeat_timeout=timedelta(seconds=opts["heartbeat_s"]),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=opts["retry_initial_s"]),
                maximum_attempts=opts["max_attempts"],
            ),
        )
