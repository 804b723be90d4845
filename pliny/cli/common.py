"""Helpers shared by the CLI modules: error reporting, workspace, JSON output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from pliny.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, PlinyError

WorkspaceOpt = typer.Option(
    None, "--workspace", "-w", help="Workspace directory (default: current directory)."
)


def workspace_path(value: Path | None) -> Path:
    return (value or Path.cwd()).resolve()


def print_json(data: Any) -> None:
    """The one JSON document a --json command prints on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    typer.echo(f"pliny: error: {message}", err=True)
    return typer.Exit(code)


def run_guarded(app: typer.Typer) -> int:
    """Run the CLI; a PlinyError becomes one line on stderr and its exit code."""
    try:
        # standalone_mode=False makes click *return* a typer.Exit code.
        code = app(standalone_mode=False)
    except PlinyError as exc:
        for line in str(exc).splitlines() or [exc.code]:
            typer.echo(f"pliny: error: {line}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("pliny: interrupted", err=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        typer.echo("pliny: interrupted", err=True)
        return EXIT_INTERRUPTED
    except Exception as exc:  # click usage errors and friends
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return EXIT_BAD_INPUT if exc.exit_code == 2 else exc.exit_code
        raise
    return code if isinstance(code, int) else 0
