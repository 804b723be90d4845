"""`pliny doctor`: one screen (or one JSON document) of readiness checks."""

from __future__ import annotations

from pathlib import Path

import typer

from pliny.cli.common import WorkspaceOpt, print_json, workspace_path

_STYLE = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[bold red]FAIL[/]"}


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)


def doctor(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
    workspace: Path | None = WorkspaceOpt,
    config: Path | None = typer.Option(None, "--config", help="Config file to check."),
) -> None:
    """Which endpoint a run would use and why, the embedded model, llama.cpp, tokens,
    git and the workspace; every problem comes with its fix. Exit 1 if a check fails."""
    from pliny.doctor import diagnose

    report = diagnose(workspace_path(workspace), config_path=config)
    if json_out:
        print_json(report.to_dict())
    else:
        _render(report)
    if not report.ok:
        raise typer.Exit(1)


def _render(report) -> None:  # type: ignore[no-untyped-def]  # pliny.doctor.Report
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # Text, not markup: "pip install 'pliny-orchestrator[local]'" must print its [local].
    table = Table(title=Text(f"pliny doctor: {report.workspace}"), show_lines=True)
    table.add_column("check", style="bold", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail", overflow="fold")
    table.add_column("fix", overflow="fold")
    for check in report.checks:
        table.add_row(
            Text(check.name), _STYLE[check.status], Text(check.detail), Text(check.fix or "")
        )
    console = Console()
    console.print(table)
    failed = sum(c.status == "fail" for c in report.checks)
    console.print("[green]ready[/]" if not failed else f"[red]{failed} problem(s): see fix[/]")
