"""`pliny session start | list | status | show | resume | cancel | rm | clean`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from pliny.cli.common import WorkspaceOpt, group, print_json, workspace_path
from pliny.cli.worker import ExecutorOpt, QueueOpt, TemporalOpt, executor_options

app = group("Create, inspect, resume and clean up sessions.")


@app.command("start")
def start(
    name: str = typer.Argument(..., help="A name for the session."),
    task: str = typer.Option(None, "--task", "-t", help="The task `pliny execute` will run."),
    session_id: str = typer.Option(None, "--id", help="Choose the id (default: from the name)."),
    workspace: Path = WorkspaceOpt,
) -> None:
    """Create a session and make it the current one; prints its id."""
    from pliny.config.settings import load_settings
    from pliny.lifecycle.store import SessionStore
    from pliny.lifecycle.views import apply_retention

    ws = workspace_path(workspace)
    apply_retention(ws, load_settings(ws))
    state = SessionStore(ws).create(name, session_id, task=task)
    typer.echo(state.id)


@app.command("list")
def list_(
    limit: int = typer.Option(None, "--limit", "-n", min=1, help="Only the N newest."),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Also task, tokens, cost and last checkpoint."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    workspace: Path = WorkspaceOpt,
) -> None:
    """Sessions in this workspace, newest first."""
    from pliny.lifecycle.store import SessionStore, dump

    ws = workspace_path(workspace)
    store = SessionStore(ws)
    sessions = store.list()[::-1][:limit]
    current = store.current()
    if json_out:
        print_json([dump(s) | {"current": s.id == current} for s in sessions])
        return
    from rich.console import Console

    if not sessions:
        Console().print("no sessions in this workspace")
        return
    console = Console()
    console.print(_table(console, _rows(ws, sessions, current, verbose)))


# Kept longest first: a narrow terminal drops columns from the end of this list, never the id.
KEEP = [
    "id",
    "status",
    "age",
    "phase",
    "cost",
    "tokens",
    "name",
    "framework",
    "checkpoint",
    "task",
    "",
]


def _rows(ws: Path, sessions: list, current: str | None, verbose: bool) -> list[dict[str, str]]:
    from pliny.lifecycle.views import age, cost_text, execution_summary

    rows = []
    for s in sessions:
        row = {
            "": "*" if s.id == current else "",
            "id": s.id,
            "name": s.name,
            "framework": s.framework or "-",
            "status": s.status,
            "phase": s.phase or "-",
            "age": age(s.created),
        }
        if verbose:
            figures = execution_summary(ws, s)
            row |= {
                "task": s.task or "-",
                "tokens": f"{figures['tokens']:,}",
                "cost": cost_text(figures),
                "checkpoint": figures["checkpoint"] or "-",
            }
        rows.append(row)
    return rows


def _table(console: Any, rows: list[dict[str, str]]) -> Any:
    """The widest table that fits: the id is never cut, less useful columns go first."""
    columns = [c for c in KEEP if c in rows[0]]
    while len(columns) > 1 and sum(_min_width(c, rows) for c in columns) + 3 * len(columns) + 1 > (
        console.width
    ):
        columns.pop()
    return _build([c for c in rows[0] if c in columns], rows, console.width)


def _min_width(column: str, rows: list[dict[str, str]]) -> int:
    """The widest cell (or title); name and task are cut at 24 (the id never is)."""
    widest = max(len(column), *(len(r[column]) for r in rows))
    return min(widest, 24) if column in ("name", "task") else widest


def _build(columns: list[str], rows: list[dict[str, str]], width: int) -> Any:
    from rich.table import Table

    table = Table()
    for name in columns:
        if name == "id":  # what users copy: one piece, folded (never cropped) if it must
            table.add_column(
                name, overflow="fold", min_width=min(max(len(r["id"]) for r in rows), width - 4)
            )
        elif name in ("name", "task"):
            table.add_column(name, max_width=24, no_wrap=True, overflow="ellipsis")
        else:
            table.add_column(
                name, no_wrap=True, justify="right" if name in ("tokens", "cost") else "left"
            )
    for row in rows:
        table.add_row(*(row[c] for c in columns))
    return table


@app.command("status")
def status(
    session_id: str = typer.Argument(None, help="Session id or prefix (default: current)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    workspace: Path = WorkspaceOpt,
) -> None:
    """A compact execution summary: status, progress, usage, elapsed, error, resumable."""
    from pliny.lifecycle.store import SessionStore
    from pliny.lifecycle.views import execution_summary, status_text

    ws = workspace_path(workspace)
    summary = execution_summary(ws, SessionStore(ws).resolve(session_id))
    if json_out:
        print_json(summary)
        return
    typer.echo(status_text(summary))


@app.command("show")
def show(
    session_id: str = typer.Argument(None, help="Session id (default: current)."),
    fmt: str = typer.Option("text", "--format", help="text | json | dot | mermaid | svg | line"),
    json_out: bool = typer.Option(False, "--json", help="Same as --format json."),
    workspace: Path = WorkspaceOpt,
) -> None:
    """A snapshot of the session's state; never advances anything."""
    from pliny.lifecycle.views import snapshot

    typer.echo(snapshot(workspace_path(workspace), session_id, "json" if json_out else fmt))


@app.command("resume")
def resume(
    session_id: str = typer.Argument(None, help="Session id (default: current)."),
    config: Path = typer.Option(
        None, "--config", "-c", help="Use this config instead of the one the session started with."
    ),
    max_cost_usd: float = typer.Option(
        None, "--max-cost-usd", min=0, help="New session budget in USD (budgets.max_cost_usd)."
    ),
    max_tokens: int = typer.Option(
        None, "--max-tokens", min=1, help="New session budget in tokens (budgets.max_tokens)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
    allow_alert_commands: bool = typer.Option(
        False, "--allow-alert-commands", help="Run alert commands from the workspace pliny.yaml."
    ),
    otlp: str = typer.Option(
        None, "--otlp", metavar="URL", help="Send OpenTelemetry traces to this OTLP/HTTP endpoint."
    ),
    executor: str = ExecutorOpt,
    temporal: str = TemporalOpt,
    task_queue: str = QueueOpt,
    workspace: Path = WorkspaceOpt,
) -> None:
    """Continue a crashed, failed, paused or cancelled session where it ran, with the settings
    it started with; --config and the budget flags replace them (and are kept for later)."""
    from pliny.cli.run import run_session
    from pliny.errors import UsageError
    from pliny.lifecycle.store import SessionStore

    ws = workspace_path(workspace)
    state = SessionStore(ws).resolve(session_id)
    if state.status == "completed":
        raise UsageError(f"session {state.id!r} is already completed")
    if not state.framework:
        raise UsageError(
            f"session {state.id!r} never ran: use `pliny execute --session {state.id}`"
        )
    budgets = {"max_cost_usd": max_cost_usd, "max_tokens": max_tokens}
    overrides = {"budgets": {k: v for k, v in budgets.items() if v is not None}}
    raise typer.Exit(
        run_session(
            ws,
            json_out,
            session_id=state.id,
            config_path=config,
            overrides=overrides if overrides["budgets"] else {},
            allow_alert_commands=allow_alert_commands,
            otlp=otlp,
            **executor_options(executor, temporal, task_queue),
        )
    )


@app.command("cancel")
def cancel(
    session_id: str = typer.Argument(None, help="Session id (default: current)."),
    workspace: Path = WorkspaceOpt,
) -> None:
    """Stop a running session from another terminal (it ends `cancelled`, resumable)."""
    from pliny.lifecycle.views import cancel_running

    typer.echo(cancel_running(workspace_path(workspace), session_id))


@app.command("rm")
def rm(
    session_id: str = typer.Argument(..., help="Session id."),
    refs: bool = typer.Option(False, "--refs", help="Also delete its git checkpoint refs."),
    workspace: Path = WorkspaceOpt,
) -> None:
    """Remove a session's state and journal (its audit log is kept)."""
    from pliny.lifecycle.views import remove

    typer.echo(remove(workspace_path(workspace), session_id, refs))


@app.command("clean")
def clean(
    all_: bool = typer.Option(
        False, "--all", help="Also failed, crashed, cancelled and paused ones."
    ),
    older_than: str = typer.Option(
        None, "--older-than", help="Only sessions older than this (30d)."
    ),
    refs: bool = typer.Option(False, "--refs", help="Also delete their git checkpoint refs."),
    workspace: Path = WorkspaceOpt,
) -> None:
    """Remove completed sessions (audit logs are kept)."""
    from pliny.config.settings import parse_duration
    from pliny.errors import UsageError
    from pliny.lifecycle.views import clean as do_clean

    try:
        age = parse_duration(older_than)
    except ValueError as exc:
        raise UsageError(f"--older-than: {exc}") from None
    removed = do_clean(workspace_path(workspace), all_, age, refs)
    typer.echo(
        f"removed {len(removed)} session(s)" + (": " + ", ".join(removed) if removed else "")
    )
