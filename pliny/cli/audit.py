"""`pliny audit` commands: view, summary, verify (export: pliny/cli/audit_export.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from pliny.cli.common import WorkspaceOpt, group, print_json, workspace_path

if TYPE_CHECKING:
    from rich.console import Console

app = group("Read, summarize and verify a session's audit log.")
IdArg = typer.Argument(
    None, metavar="ID", help="Session id (a unique prefix will do).", show_default=False
)
JsonOpt = typer.Option(False, "--json", help="Print one JSON document on stdout.")
ConfigOpt = typer.Option(
    None, "--config", "-c", help="Config naming the audit dir (default: the session's own)."
)


def _log(workspace: Path | None, session_id: str | None, config: Path | None) -> Path:
    """The session's log, in the audit dir its runs wrote to (or the one --config names)."""
    from pliny.audit.log import existing_log
    from pliny.config.settings import load_settings
    from pliny.errors import UsageError
    from pliny.lifecycle.sessionconfig import audit_settings
    from pliny.lifecycle.store import SessionStore

    ws = workspace_path(workspace)
    if not session_id:
        known = ", ".join(SessionStore(ws).ids()[:10]) or "none"
        raise UsageError(f"missing session id: pass ID (sessions here: {known})")
    settings = audit_settings(ws, session_id) if config is None else load_settings(ws, config).audit
    return existing_log(ws, settings, session_id)


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def _event_types(values: list[str] | None) -> list[str]:
    from pliny.errors import UsageError
    from pliny.events import EVENT_TYPES

    types = _split(values)
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise UsageError(f"unknown event type {unknown[0]!r} (known: {', '.join(EVENT_TYPES)})")
    return types


@app.command()
def view(
    session_id: str = IdArg,
    type_: list[str] = typer.Option(None, "--type", "-t", help="Only these event types."),
    phase: list[str] = typer.Option(None, "--phase", "-p", help="Only events of these phases."),
    agent: list[str] = typer.Option(None, "--agent", "-a", help="Only events of these agents."),
    json_: bool = JsonOpt,
    follow_: bool = typer.Option(
        False, "--follow", "-f", help="Keep printing new events until the session ends."
    ),
    config: Path | None = ConfigOpt,
    workspace: Path | None = WorkspaceOpt,
) -> None:
    """Show a session's audit events (filters combine; each accepts a,b or repeats)."""
    from pliny.audit.reader import matches

    path = _log(workspace, session_id, config)
    filters = (_event_types(type_), _split(phase), _split(agent))
    if follow_:
        _follow(path, filters, json_)
        return
    from pliny.audit.reader import read_log

    contents = read_log(path)
    events = [e for e in contents.events if matches(e, *filters)]
    if contents.bad_lines:
        typer.echo(
            f"pliny: warning: skipped invalid line(s) {contents.bad_lines[:5]}; "
            f"run `pliny audit verify {session_id}`",
            err=True,
        )
    if json_:
        print_json([e.model_dump(mode="json") for e in events])
        return
    from pliny.cli.audit_render import events_table

    _console().print(events_table(events, title=f"audit log {session_id} ({len(events)} events)"))


def _follow(path: Path, filters: tuple[list[str], list[str], list[str]], json_: bool) -> None:
    """Stream events as JSON Lines (--json) or one row per event, until the session ends."""
    import json

    from pliny.audit.reader import follow, matches
    from pliny.cli.audit_render import event_row_text

    console = _console()
    for event in follow(path):
        if not matches(event, *filters):
            continue
        if json_:
            typer.echo(json.dumps(event.model_dump(mode="json")))
        else:
            console.print(event_row_text(event), soft_wrap=True)


@app.command()
def summary(
    session_id: str = IdArg,
    json_: bool = JsonOpt,
    config: Path | None = ConfigOpt,
    workspace: Path | None = WorkspaceOpt,
) -> None:
    """Per phase and per agent: duration, calls, tokens, cost, retries, errors; history."""
    from pliny.audit.reader import read_events
    from pliny.audit.summary import summarize

    result = summarize(read_events(_log(workspace, session_id, config)))
    if json_:
        print_json(result.model_dump(mode="json"))
        return
    from pliny.cli.audit_render import summary_renderables

    console = _console()
    for renderable in summary_renderables(result):
        console.print(renderable)


@app.command()
def verify(
    session_id: str = IdArg,
    json_: bool = JsonOpt,
    config: Path | None = ConfigOpt,
    workspace: Path | None = WorkspaceOpt,
) -> None:
    """Check the hash chain and sequence numbers; exit 1 at the first bad line."""
    from dataclasses import asdict

    from pliny.audit.writer import verify as verify_log

    path = _log(workspace, session_id, config)
    result = verify_log(path)
    if json_:
        print_json({"path": str(path), **asdict(result)})
    if not result.ok:
        from pliny.errors import PlinyError  # exit 1 (EXIT_FAILED), one line on stderr

        raise PlinyError(f"{path}:{result.first_bad_line}: {result.reason}", code="PLINY-AUDIT")
    if not json_:
        typer.echo(f"ok: {result.events} events, sequence and hash chain intact ({path})")
        if result.torn_bytes:
            typer.echo(
                f"note: {result.torn_bytes} bytes of a torn last line (a crash mid-write); "
                "the next run of this session moves them to a side file",
                err=True,
            )


def _console() -> Console:
    """A terminal's own width; 140 columns into a pipe or file (not rich's 80)."""
    import sys

    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 140)


def _register_export() -> None:
    from pliny.cli.audit_export import export

    app.command("export")(export)


_register_export()
