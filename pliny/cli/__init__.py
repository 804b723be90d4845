"""The ``pliny`` command.

Start-up must stay fast: this package imports only typer and rich at module
level; each command imports the engine, langgraph or openai inside its body.
Sub-command groups live one per module and are registered here.
"""

from __future__ import annotations

import sys

import typer

from pliny import __version__
from pliny.cli import (
    audit,
    checkpoint,
    config_cmd,
    doctor,
    frameworks,
    metrics_cmd,
    serve,
    session,
    watch,
    worker,
)
from pliny.cli.common import HELP_OPTIONS, require_subcommand, run_guarded
from pliny.cli.run import register as register_run

app = typer.Typer(
    name="pliny",
    help="Multi-agent LLM orchestration: phase graphs, git checkpoints, audit, resume.",
    add_completion=False,
    context_settings=HELP_OPTIONS,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pliny {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    """Multi-agent LLM orchestration: phase graphs, git checkpoints, audit, resume."""
    require_subcommand(ctx)


register_run(app)
doctor.register(app)
watch.register(app)
metrics_cmd.register(app)
serve.register(app)
worker.register(app)
app.command("rollback")(checkpoint.rollback)
app.add_typer(session.app, name="session")
app.add_typer(checkpoint.app, name="checkpoint")
app.add_typer(audit.app, name="audit")
app.add_typer(frameworks.app, name="frameworks")
app.add_typer(config_cmd.app, name="config")


def main() -> None:
    from pliny import logs
    from pliny.errors import PlinyError

    try:
        logs.setup()
    except PlinyError as exc:  # a bad PLINY_LOG: one line, exit 2
        typer.echo(f"pliny: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(run_guarded(app))
