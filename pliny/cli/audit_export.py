"""`pliny audit export`: a session's audit log as OpenTelemetry traces, after the fact."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from pliny.cli.common import WorkspaceOpt, workspace_path

FORMATS = ("otlp", "json")


def export(
    session_id: str = typer.Argument(..., metavar="ID", help="Session id."),
    format_: str = typer.Option(
        "otlp", "--format", help="otlp: send (or write protobuf with -o); json: OTLP/JSON."
    ),
    endpoint: str = typer.Option(
        None,
        "--endpoint",
        metavar="URL",
        help="OTLP/HTTP endpoint (default: OTEL_EXPORTER_OTLP_ENDPOINT).",
    ),
    output: Path = typer.Option(None, "--output", "-o", help="Write to this file instead."),
    workspace: Path | None = WorkspaceOpt,
) -> None:
    """Export a session's spans (GenAI semantic conventions), the same tree as a live --otlp."""
    from pliny.errors import UsageError

    if format_ not in FORMATS:
        raise UsageError(f"--format: expected one of {', '.join(FORMATS)}, got {format_!r}")
    url = _endpoint(endpoint) if format_ == "otlp" and output is None else None
    from pliny.audit.log import existing_log
    from pliny.audit.reader import read_log
    from pliny.config.settings import load_settings

    try:
        from pliny.observe import otel
    except ImportError:
        raise UsageError(
            "audit export needs the otel extra: pip install 'pliny-orchestrator[otel]'"
        ) from None
    ws = workspace_path(workspace)
    path = existing_log(ws, load_settings(ws).audit, session_id)
    spans = otel.spans_of(read_log(path).events)
    if url is not None:
        _send(otel, spans, url)
        typer.echo(f"sent {len(spans)} spans to {url}", err=True)
        return
    data = otel.otlp_json(spans).encode() if format_ == "json" else _protobuf(otel, spans)
    if output is None:
        sys.stdout.buffer.write(data + b"\n")
        return
    from pliny.atomicfile import atomic_write

    atomic_write(output, data)  # whole or not at all
    typer.echo(f"wrote {len(spans)} spans to {output}", err=True)


def _endpoint(given: str | None) -> str:
    from pliny.errors import UsageError
    from pliny.observe.otel import endpoint_from_env, traces_url

    if given:
        if not given.startswith(("http://", "https://")):
            raise UsageError(f"--endpoint: expected an http(s) URL, got {given!r}")
        return traces_url(given)
    if url := endpoint_from_env(os.environ):
        return url
    raise UsageError(
        "--format otlp needs --endpoint URL or OTEL_EXPORTER_OTLP_ENDPOINT (or -o FILE)"
    )


def _protobuf(otel: object, spans: list) -> bytes:
    return otel.otlp_request(spans).SerializeToString()  # type: ignore[attr-defined]


def _send(otel: object, spans: list, url: str) -> None:
    from pliny.errors import SystemFailure

    if not otel.send(spans, url):  # type: ignore[attr-defined]
        raise SystemFailure(f"OTLP export to {url} failed", code="PLINY-SYS-EXPORT")
