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


HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}  # inherited by every sub-command


def group(help: str) -> typer.Typer:
    """A command group; without its sub-command it prints its help and exits 2.

    Done here rather than with ``no_args_is_help``, whose exit code depends on
    the click version (0 before 8.2, 2 after).
    """
    app = typer.Typer(help=help, context_settings=HELP_OPTIONS)
    app.callback(invoke_without_command=True)(require_subcommand)
    return app


def require_subcommand(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None and not ctx.resilient_parsing:
        text = ctx.get_help()  # rich-formatted help prints itself and returns ""
        if text:
            typer.echo(text)
        raise typer.Exit(EXIT_BAD_INPUT)


def run_guarded(app: typer.Typer) -> int:
    """Run the CLI; a PlinyError or a usage error becomes one line on stderr and its exit code."""
    try:
        # standalone_mode=False makes click *return* a typer.Exit code.
        code = app(prog_name="pliny", standalone_mode=False)
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
        if isinstance(exc, _click_errors()):
            return _show_click_error(exc)
        raise
    return code if isinstance(code, int) else 0


def _click_errors() -> tuple[type[Exception], ...]:
    """ClickException from the click typer uses: its vendored copy (newer typer) or click."""
    classes: list[type[Exception]] = []
    try:
        from typer._click.exceptions import ClickException  # type: ignore[import-not-found, unused-ignore]

        classes.append(ClickException)
    except ImportError:
        pass
    try:
        from click.exceptions import ClickException as Plain

        classes.append(Plain)
    except ImportError:  # newer typer does not depend on click
        pass
    return tuple(classes)


def _show_click_error(exc: Any) -> int:
    """One line: click's message and where to read the usage; exit 2 for usage errors."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # click >= 8.2: the help is the message
        if text := exc.format_message():
            typer.echo(text, err=True)
        return EXIT_BAD_INPUT
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and getattr(exc, "exit_code", 1) == 2:
        message += f" (see `{ctx.command_path} --help`)"
    typer.echo(f"pliny: error: {message}", err=True)
    return EXIT_BAD_INPUT if exc.exit_code == 2 else exc.exit_code
