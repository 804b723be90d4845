"""`pliny frameworks list | show`."""

from __future__ import annotations

from typing import Any

import typer

from pliny.cli.common import group, print_json

app = group("Built-in and user-defined phase graphs.")


@app.command("list")
def list_(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The built-in frameworks."""
    from pliny.framework.model import builtin_names, load

    items: list[dict[str, Any]] = []
    for name in builtin_names():
        fw = load(name)
        items.append(
            {
                "name": name,
                "title": fw.title,
                "phases": [p.name for p in fw.phases],
                "agents": sum(len(p.agents) for p in fw.phases),
                "description": (fw.description or "").strip(),
            }
        )
    if json_out:
        print_json(items)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "title", "phases", "agents")
    for item in items:
        table.add_row(
            item["name"], item["title"] or "", " → ".join(item["phases"]), str(item["agents"])
        )
    Console().print(table)


@app.command("show")
def show(
    name: str = typer.Argument(..., help="rise, care, or a path to a framework YAML."),
    fmt: str = typer.Option("text", "--format", help="text | json | dot | mermaid | svg"),
) -> None:
    """Show a framework's phase graph."""
    from pliny.framework.model import load
    from pliny.framework.render import render

    typer.echo(render(load(name), fmt))
