"""`pliny worker`, and the `--executor/--temporal/--task-queue` flags of execute and resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from pliny.cli.common import WorkspaceOpt

ExecutorOpt = typer.Option(
    None, "--executor", help="Where agents run: local (default) or temporal."
)
TemporalOpt = typer.Option(
    None,
    "--temporal",
    envvar="PLINY_TEMPORAL_ADDRESS",
    help="Temporal frontend HOST:PORT (default 127.0.0.1:7233).",
)
QueueOpt = typer.Option(
    None, "--task-queue", help="Default task queue for agents (YAML task_queue: overrides)."
)


def executor_options(
    executor: str | None, temporal: str | None, queue: str | None
) -> dict[str, Any]:
    """RunOptions fields for the executor flags; --temporal alone implies --executor temporal."""
    from pliny.errors import UsageError

    if executor is None and (temporal or queue):
        executor = "temporal"
    if executor not in (None, "temporal") and (temporal or queue):
        raise UsageError(f"--temporal/--task-queue need --executor temporal, not {executor!r}")
    options = {k: v for k, v in (("address", temporal), ("task_queue", queue)) if v}
    return {"executor": executor, "executor_options": options}


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)


def worker(
    temporal: str = typer.Option(
        "127.0.0.1:7233",
        "--temporal",
        envvar="PLINY_TEMPORAL_ADDRESS",
        help="Temporal frontend HOST:PORT.",
    ),
    task_queue: list[str] = typer.Option(
        None, "--task-queue", "-q", help="Queue(s) to serve (default: pliny). Repeatable."
    ),
    max_concurrent: int = typer.Option(
        64, "--max-concurrent", min=1, help="Agents this worker runs at once."
    ),
    no_probe: bool = typer.Option(
        False, "--no-probe", help="Do not check the LLM endpoint is reachable at start."
    ),
    workspace: Path = WorkspaceOpt,
) -> None:
    """Run agents of any session scheduled on Temporal (`pliny execute --executor temporal`).

    Needs no shared filesystem: the journal, budget ledger, audit log and files
    stay with the coordinator and are reached through Temporal; -w is only
    where this worker keeps its copy of each session's files. The LLM endpoint
    and its key come from this machine's environment (OPENAI_BASE_URL,
    OPENAI_API_KEY).
    """
    import asyncio
    import os
    import socket

    from pliny.distributed.executor_options import check_reachable, queue_of
    from pliny.distributed.worker import probe_endpoint, serve

    ws = (workspace or Path.cwd()).resolve()
    queues = list(task_queue or [queue_of(None)])
    check_reachable(temporal)
    if not no_probe:
        url = asyncio.run(probe_endpoint(ws, os.environ))
        typer.echo(f"pliny worker: LLM endpoint {url} reachable", err=True)
    identity = f"pliny-worker-{os.getpid()}@{socket.gethostname()}"
    where = f"{', '.join(queues)} on {temporal}" + (f" (workspace {ws})" if workspace else "")

    def ready() -> None:
        typer.echo(f"pliny worker {identity}: serving {where}", err=True)

    try:
        server = serve(
            temporal,
            queues,
            workspace=ws if workspace else None,
            max_concurrent=max_concurrent,
            identity=identity,
            on_ready=ready,
        )
        asyncio.run(server)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
