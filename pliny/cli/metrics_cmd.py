"""`pliny metrics ID` (Prometheus text from the audit log) and `pliny cache clear|list`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from pliny.cli.common import WorkspaceOpt, group, print_json, workspace_path

cache_app = group("The opt-in result cache (cache: {ttl: 1h}).")


def register(app: typer.Typer) -> None:
    app.command("metrics")(metrics)
    app.add_typer(cache_app, name="cache")


def metrics(
    session_id: str = typer.Argument(None, metavar="[ID]", help="Session id (default: current)."),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Write this file atomically (node_exporter's textfile collector), not stdout.",
    ),
    workspace: Path | None = WorkspaceOpt,
) -> None:
    """A session's metrics in Prometheus exposition format, rebuilt from its audit log."""
    from prometheus_client import disable_created_metrics

    from pliny.atomicfile import atomic_write
    from pliny.audit.log import existing_log, read_events
    from pliny.errors import UsageError
    from pliny.lifecycle.sessionconfig import audit_settings
    from pliny.lifecycle.store import SessionStore
    from pliny.observe.metrics import Metrics

    ws = workspace_path(workspace)
    sid = session_id or SessionStore(ws).current()
    if not sid:
        raise UsageError("no current session: pass a session ID (see `pliny session list`)")
    log = existing_log(ws, audit_settings(ws, sid), sid)
    # *_created samples would carry the time of this command, not of the run: noise.
    disable_created_metrics()
    text = Metrics.from_events(read_events(log)).exposition()
    if output is None:
        sys.stdout.write(text)
    else:
        atomic_write(output, text.encode(), 0o644)  # the user's export, not our state


@cache_app.command("clear")
def clear(
    expired: bool = typer.Option(False, "--expired", help="Only remove expired entries."),
    workspace: Path | None = WorkspaceOpt,
) -> None:
    """Remove cached results (all sessions of this workspace share the cache)."""
    from pliny.engine.cache import ResultCache, cache_path

    path = cache_path(workspace_path(workspace))
    if not path.exists():
        typer.echo("removed 0 cached result(s): no cache in this workspace")
        return
    with ResultCache(path) as cache:
        removed = cache.clear(expired_only=expired)
    typer.echo(f"removed {removed} {'expired ' if expired else ''}cached result(s)")


@cache_app.command("list")
def list_(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    workspace: Path | None = WorkspaceOpt,
) -> None:
    """Cached results: key, agent, model, created, expires, hits."""
    from dataclasses import asdict
    from datetime import UTC, datetime

    from pliny.engine.cache import ResultCache, cache_path

    path = cache_path(workspace_path(workspace))
    entries = []
    if path.exists():
        with ResultCache(path) as cache:
            entries = cache.list()

    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

    if json_out:
        print_json(
            [
                asdict(e)
                | {"created": iso(e.created), "expires": iso(e.expires), "expired": e.expired()}
                for e in entries
            ]
        )
        return
    if not entries:
        typer.echo("the result cache is empty")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("key", "agent", "model", "created", "expires", "hits")
    for e in entries:
        expires = iso(e.expires) + (" (expired)" if e.expired() else "")
        table.add_row(e.key[:12], e.agent, e.model, iso(e.created), expires, str(e.hits))
    Console(width=None if sys.stdout.isatty() else 140).print(table)
