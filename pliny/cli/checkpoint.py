"""`pliny checkpoint create | list` and `pliny rollback`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from pliny.cli.common import WorkspaceOpt, group, print_json, workspace_path

if TYPE_CHECKING:
    from pliny.checkpoints.store import CheckpointStore
    from pliny.lifecycle.store import SessionState

app = group("Named git checkpoints of a session's work.")


def _store(workspace: Path, session_id: str | None) -> tuple[SessionState, CheckpointStore]:
    from pliny.checkpoints.store import CheckpointStore
    from pliny.lifecycle.store import SessionStore

    sessions = SessionStore(workspace)
    state = sessions.resolve(session_id)
    return state, CheckpointStore(workspace, state.id, sessions.dir(state.id))


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Checkpoint name (a valid git ref component)."),
    session: str = typer.Option(None, "--session", "-s", help="Session id (default: current)."),
    workspace: Path = WorkspaceOpt,
) -> None:
    """Commit what the session's agents wrote so far under NAME."""
    from pliny.checkpoints.listener import CheckpointListener
    from pliny.events import EventBus

    ws = workspace_path(workspace)
    state, store = _store(ws, session)
    bus = EventBus(session=state.id)
    from pliny.audit.log import log_path, open_log, read_events
    from pliny.lifecycle.sessionconfig import audit_settings

    audit = audit_settings(ws, state.id)
    history = read_events(log_path(ws, audit, state.id))  # trailers: session so far
    log = open_log(ws, audit, state.id)
    bus.subscribe(log)
    try:
        listener = CheckpointListener(store, state.id, "phase", bus)
        listener.prime(history)
        info = listener.commit(name, None, None)
    finally:
        log.close()
    typer.echo(f"{info.name} {info.commit[:12]} ({info.ref})")


@app.command("list")
def list_(
    session: str = typer.Option(None, "--session", "-s", help="Session id (default: current)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    workspace: Path = WorkspaceOpt,
) -> None:
    """The session's checkpoints, oldest first."""
    _, store = _store(workspace_path(workspace), session)
    items = store.list()
    if json_out:
        print_json([i.to_dict() for i in items])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "commit", "created", "tokens", "cost")
    for i in items:
        table.add_row(
            i.name, i.commit[:12], str(i.created), i.trailers.get("Pliny-Tokens", ""), _cost(i)
        )
    Console().print(table if items else "no checkpoints yet")


def _cost(item: Any) -> str:
    """The trailers' running cost, "unpriced" where models had no price (never $0 for them)."""
    from pliny.usage import format_cost

    t = item.trailers
    if "Pliny-Cost-USD" not in t:
        return ""
    try:
        unpriced = int(t.get("Pliny-Unpriced-Calls") or 0)
        calls = int(t.get("Pliny-Calls") or unpriced)  # older commits: no call count
        return format_cost(float(t["Pliny-Cost-USD"]), unpriced, calls)
    except ValueError:  # a hand-made commit: show what it says
        return t["Pliny-Cost-USD"]


def rollback(
    name: str = typer.Argument(..., help="Checkpoint name, e.g. after-research."),
    session: str = typer.Option(None, "--session", "-s", help="Session id (default: current)."),
    force: bool = typer.Option(
        False, "--force", help="Overwrite files you edited since Pliny wrote them."
    ),
    workspace: Path = WorkspaceOpt,
) -> None:
    """Restore the workspace files and the session state to a checkpoint."""
    import asyncio

    from pliny.lifecycle.rollback import rollback_session

    typer.echo(asyncio.run(rollback_session(workspace_path(workspace), session, name, force)))
