"""`pliny session start | list | show | resume | cancel | rm | clean`."""

from __future__ import annotations

from pathlib import Path

import typer

from pliny.cli.common import WorkspaceOpt, print_json, workspace_path
from pliny.cli.worker import ExecutorOpt, QueueOpt, TemporalOpt, executor_options

app = typer.Typer(no_args_is_help=True, help="Create, inspect, resume and clean up sessions.")


@app.command("start")
def start(
    name: str = typer.Argument(..., help="A name for the session."),
    session_id: str = typer.Option(None, "--id", help="Choose the id (default: from the name)."),
    workspace: Path = WorkspaceOpt,
) -> None:
    """Create a session and make it the current one; prints its id."""
    from pliny.config.settings import load_settings
    from pliny.lifecycle.store import SessionStore
    from pliny.lifecycle.views import apply_retention

    ws = workspace_path(workspace)
    apply_retention(ws, load_settings(ws))
    state = SessionStore(ws).create(name, session_id)
    typer.echo(state.id)


@app.command("list")
def list_(
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    workspace: Path = WorkspaceOpt,
) -> None:
    """Sessions in this workspace, oldest first."""
    from pliny.lifecycle.store import SessionStore, dump
    from pliny.lifecycle.views import age

    store = SessionStore(workspace_path(workspace))
    sessions = store.list()
    current = store.current()
    if json_out:
        print_json([dump(s) | {"current": s.id == current} for s in sessions])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("", "id", "name", "framework", "status", "phase", "age")
    for s in sessions:
        table.add_row(
            "*" if s.id == current else "",
            s.id,
            s.name,
            s.framework or "-",
            s.status,
            s.phase or "-",
            age(s.created),
        )
    Console().print(table if sessions else "no sessions in this workspace")


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
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
    executor: str = ExecutorOpt,
    temporal: str = TemporalOpt,
    task_queue: str = QueueOpt,
    workspace: Path = WorkspaceOpt,
) -> None:
    """Continue a crashed, failed, paused or cancelled session (where it ran, by default)."""
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
    chosen = executor_options(executor, temporal, task_queue)
    raise typer.Exit(run_session(ws, json_out, session_id=state.id, **chosen))


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
