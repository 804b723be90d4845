"""`pliny execute` (and the run loop `pliny session resume` shares)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from pliny.cli.common import WorkspaceOpt, print_json, workspace_path
from pliny.cli.worker import ExecutorOpt, QueueOpt, TemporalOpt, executor_options

OtlpOpt = typer.Option(
    None, "--otlp", metavar="URL", help="Send OpenTelemetry traces to this OTLP/HTTP endpoint."
)


def register(app: typer.Typer) -> None:
    app.command("execute")(execute)


def execute(
    framework: str = typer.Option(None, "--framework", "-f", help="rise, care, or a .yaml path."),
    task: str = typer.Option(
        None,
        "--task",
        "-t",
        help="The task; runs the current session if it never ran, else starts a new one.",
    ),
    session: str = typer.Option(
        None, "--session", "-s", help="Session id or unique prefix (default: current)."
    ),
    name: str = typer.Option(None, "--name", help="Start a new session with this name."),
    checkpoint: str = typer.Option(None, "--checkpoint", help="phase | agent | step | none"),
    parallel: bool = typer.Option(
        None, "--parallel/--no-parallel", help="Run a phase's agents at once."
    ),
    model: str = typer.Option(
        None, "--model", "-m", help="Model name, or `local` for the embedded one."
    ),
    config: Path = typer.Option(
        None, "--config", "-c", help="Config YAML (default: ./pliny.yaml)."
    ),
    rerun: list[str] = typer.Option(
        None, "--rerun", help="Re-run this agent and what depends on it."
    ),
    timeout: str = typer.Option(
        None, "--timeout", help="Stop the whole run after this long (e.g. 10m)."
    ),
    metrics_port: int = typer.Option(
        None, "--metrics-port", min=0, max=65535, help="Serve Prometheus metrics on 127.0.0.1:PORT."
    ),
    from_phase: str = typer.Option(
        None, "--from-phase", help="Re-run from this phase, reusing earlier results."
    ),
    until_phase: str = typer.Option(None, "--until-phase", help="Stop (paused) after this phase."),
    allow_alert_commands: bool = typer.Option(
        False,
        "--allow-alert-commands",
        help="Run alert commands from the workspace pliny.yaml (env PLINY_ALLOW_ALERT_COMMANDS=1).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
    otlp: str = OtlpOpt,
    executor: str = ExecutorOpt,
    temporal: str = TemporalOpt,
    task_queue: str = QueueOpt,
    workspace: Path = WorkspaceOpt,
) -> None:
    """Run a framework on a task (or continue the current session)."""
    overrides: dict[str, Any] = {}
    if checkpoint:
        overrides.setdefault("execution", {})["checkpoint"] = checkpoint
    session_timeout = _duration("--timeout", timeout)
    if model and model != "local":
        overrides.setdefault("llm", {})["model"] = model
    code = run_session(
        workspace_path(workspace),
        json_out,
        framework=framework,
        task=task,
        session_id=session,
        name=name,
        config_path=config,
        overrides=overrides,
        model=model,
        parallel=parallel,
        rerun=list(rerun or []),
        metrics_port=metrics_port,
        from_phase=from_phase,
        until_phase=until_phase,
        timeout=session_timeout,
        allow_alert_commands=allow_alert_commands,
        otlp=otlp,
        **executor_options(executor, temporal, task_queue),
    )
    raise typer.Exit(code)


def _duration(flag: str, value: str | None) -> float | None:
    from pliny.config.settings import parse_duration
    from pliny.errors import UsageError

    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None
    if seconds is not None and seconds <= 0:
        raise UsageError(f"{flag}: must be more than 0 (got {value!r})")
    return seconds


def run_session(workspace: Path, json_out: bool, **options: Any) -> int:
    """Prepare, run with the live view, print the summary; returns the exit code."""
    from pliny.lifecycle import runner

    opts = runner.RunOptions(workspace=workspace, **options)
    if opts.otlp:
        check_otlp(opts.otlp)
    server = None
    if opts.metrics_port is not None:  # bind first: a busy port is bad input, nothing written
        from pliny.observe.metrics import Metrics

        opts.metrics = Metrics()
        server = opts.metrics.serve(opts.metrics_port)
        opts.metrics_port = None
    try:
        return _run_prepared(opts, json_out)
    finally:
        if server is not None:
            server.stop()


def check_otlp(url: str) -> None:
    """Bad input before anything is written: not an http(s) URL, or no otel extra."""
    import importlib.util

    from pliny.errors import UsageError

    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--otlp: expected an http(s) URL, got {url!r}")
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        raise UsageError("--otlp needs the otel extra: pip install 'pliny-orchestrator[otel]'")


def _run_prepared(opts: Any, json_out: bool) -> int:
    import asyncio

    from pliny.audit.log import log_path
    from pliny.lifecycle import runner
    from pliny.lifecycle.store import SessionStore
    from pliny.observe.progress import Progress

    workspace = opts.workspace
    before = SessionStore(workspace).current()
    settings, store, state, framework = runner.prepare(opts)  # bad input fails here, untouched
    if not opts.session_id and before and state.id != before:
        _say_new_session(store, before, state.id)
    opts.session_id = state.id
    # A resumed session: show the whole session, not just this run.
    progress = Progress.for_framework(framework).replay(
        log_path(workspace, settings.audit, state.id)
    )
    progress.status = "in_progress"
    opts.listeners.append(progress)
    view = _LiveView(progress, f"{framework.title or framework.name} · {state.id}", json_out)
    opts.listeners.append(view)
    with view:
        outcome = asyncio.run(_main(opts, (settings, store, state, framework)))
    _report(outcome, progress, json_out)
    return outcome.exit_code


def _say_new_session(store: Any, before: str, new: str) -> None:
    """`execute -t` did not continue the current session: say why, on stderr."""
    try:
        status = store.load(before).status
    except Exception:  # noqa: BLE001 - a removed or corrupt one: just name the new session
        status = None
    ran = status not in (None, "created")
    why = f"session {before} has already run ({status}); " if ran else ""
    typer.echo(f"pliny: {why}started a new session {new}", err=True)


async def _main(opts: Any, prepared: tuple[Any, ...]) -> Any:
    """Run with SIGTERM mapped to cancellation, like Ctrl-C."""
    import asyncio
    import signal

    from pliny.lifecycle import runner

    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await runner.execute(opts, prepared)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


class _LiveView:
    """Rich live table on a terminal; one line per milestone otherwise."""

    def __init__(self, progress: Any, title: str, quiet: bool) -> None:
        from rich.console import Console

        self.progress = progress
        self.title = title
        self.console = Console(stderr=True)
        self.live: Any = None
        self.quiet = quiet

    def __enter__(self) -> _LiveView:
        if self.console.is_terminal and not self.quiet:
            from rich.live import Live

            from pliny.observe.progress import render

            self.live = Live(
                get_renderable=lambda: render(self.progress, self.title),
                console=self.console,
                refresh_per_second=4,
                transient=False,
            )
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def __call__(self, event: Any) -> None:
        if self.quiet or (self.live is not None and event.type != "warning"):
            return  # a warning is printed above the live table too: it must not pass unseen
        line = _milestone(event)
        if line:
            self.console.print(line, highlight=False)


def _milestone(event: Any) -> str | None:
    where = f"{event.phase}/{event.agent}" if event.agent else (event.phase or "")
    return {
        "phase_started": f"▶ {event.phase} (cycle {getattr(event, 'cycle', 1)})",
        "agent_completed": f"  ✔ {where}",
        "agent_failed": f"  ✖ {where}: {getattr(event, 'message', '')}",
        "llm_queued": f"  ⧗ {where} waiting for the local model",
        "retry": f"  ↻ {where} retry {getattr(event, 'attempt', '')} "
        f"({getattr(event, 'category', '')}): {getattr(event, 'message', '')[:120]}",
        "checkpoint_created": f"  ⎇ checkpoint {getattr(event, 'name', '')}",
        "circuit_opened": f"  ⚠ circuit open for {getattr(event, 'endpoint', '')}",
        "warning": f"  ⚠ {getattr(event, 'message', '')}",
    }.get(event.type)


def _report(outcome: Any, progress: Any, json_out: bool) -> None:
    summary = progress.summary()
    summary["status"] = outcome.status
    summary["exit_code"] = outcome.exit_code
    if outcome.error is not None:
        summary["error"] = {
            "category": str(outcome.error.category),
            "code": outcome.error.code,
            "message": str(outcome.error),
        }
    if json_out:
        print_json(summary)
        return
    from rich.console import Console

    from pliny.observe.progress import render, run_line

    console = Console(stderr=True)
    if not console.is_terminal:
        console.print(render(progress, f"session {outcome.session.id}"))
    console.print(
        f"[bold]{outcome.status}[/] · session {outcome.session.id} · {run_line(progress)}",
        highlight=False,
    )
    if summary["files_written"]:
        console.print("outputs: " + ", ".join(summary["files_written"]))
    if outcome.error is not None:
        console.print(f"[red]error:[/] {outcome.error}", highlight=False, soft_wrap=True)
        if outcome.error.recoverable:
            console.print(f"resume with: pliny session resume {outcome.session.id}")
    sys.stderr.flush()
