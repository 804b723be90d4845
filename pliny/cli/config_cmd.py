"""`pliny config validate | schema | show`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pliny.cli.common import WorkspaceOpt, group, print_json, workspace_path

app = group("Check and describe configuration files.")


@app.command("validate")
def validate(
    path: Path = typer.Argument(None, help="Config or framework YAML (default: ./pliny.yaml)."),
    workspace: Path = WorkspaceOpt,
) -> None:
    """Validate a config (or framework) file; problems are printed as file:line:col."""
    from pliny.config.settings import load_settings
    from pliny.config.yamlsource import load_file
    from pliny.errors import UsageError
    from pliny.framework.model import load

    ws = workspace_path(workspace)
    target = path or ws / "pliny.yaml"
    if not target.exists():
        raise UsageError(f"{target}: file not found")
    data = load_file(target).data
    if isinstance(data, dict) and "phases" in data:
        fw = load(str(target))
        typer.echo(f"{target}: ok (framework {fw.name}, {len(fw.phases)} phases)")
    else:
        load_settings(ws, target)
        typer.echo(f"{target}: ok (config)")


@app.command("schema")
def schema(
    kind: str = typer.Option("config", "--kind", help="config | framework"),
) -> None:
    """JSON Schema of the YAML files, for editors."""
    from pydantic import BaseModel

    from pliny.config.settings import Settings
    from pliny.errors import UsageError
    from pliny.framework.model import Framework

    models: dict[str, type[BaseModel]] = {"config": Settings, "framework": Framework}
    if kind not in models:
        raise UsageError(f"unknown schema kind {kind!r} (config or framework)")
    typer.echo(json.dumps(models[kind].model_json_schema(by_alias=True), indent=2))


@app.command("show")
def show(
    config: Path = typer.Option(
        None, "--config", "-c", help="Config YAML (default: ./pliny.yaml)."
    ),
    workspace: Path = WorkspaceOpt,
) -> None:
    """The effective settings after layering defaults, pliny.yaml and --config."""
    from pliny.config.settings import load_settings

    print_json(load_settings(workspace_path(workspace), config).model_dump(mode="json"))
