"""Phase graphs as text, JSON, DOT and Mermaid, optionally coloured by run state.

One renderer for ``pliny frameworks show`` (no state) and ``pliny session
show`` (each phase and agent coloured done/running/failed/pending).
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from pliny.errors import UsageError
from pliny.framework.model import END, Framework
from pliny.usage import Usage, format_cost

FORMATS = ("text", "json", "dot", "mermaid", "svg", "line")
COLORS = {
    "done": "#2e7d32",
    "running": "#0277bd",
    "failed": "#c62828",
    "queued": "#f9a825",
    "skipped": "#6a1b9a",
    "waiting": "#9e9e9e",
    "pending": "#9e9e9e",
}
FILL = {
    "done": "#e8f5e9",
    "running": "#e1f5fe",
    "failed": "#ffebee",
    "queued": "#fff8e1",
    "skipped": "#f3e5f5",
    "waiting": "#fafafa",
    "pending": "#fafafa",
}


def graph_data(fw: Framework, progress: Any = None) -> dict[str, Any]:
    """The graph (and state, when given) as plain data: the JSON format."""
    phases = []
    for phase in fw.phases:
        agents = []
        for agent in phase.agents:
            item: dict[str, Any] = {
                "name": agent.name,
                "tools": agent.tools,
                "model": agent.model,
                "structured": bool(agent.output_schema),
            }
            if progress is not None:
                view = progress.agents.get(agent.name)
                item.update(
                    state=_pending(view.state) if view else "pending",
                    **(view.usage if view else Usage()).totals(),
                )
            agents.append(item)
        entry: dict[str, Any] = {
            "name": phase.name,
            "title": phase.title,
            "parallel": phase.parallel is not False,
            "agents": agents,
        }
        if progress is not None:
            entry["state"] = _pending(progress.phase_state.get(phase.name, "waiting"))
            entry["cycles"] = progress.cycles.get(phase.name, 0)
        phases.append(entry)
    edges = [
        {
            "from": src,
            "to": dst,
            "when": _condition(r) if r else None,
            "max_cycles": r.max_cycles if r else None,
        }
        for src, dst, r in fw.edges()
    ]
    data: dict[str, Any] = {
        "framework": fw.name,
        "title": fw.title,
        "phase_label": fw.phase_label,
        "phases": phases,
        "edges": edges,
    }
    if progress is not None:
        data["status"] = progress.status
        data["current"] = next((p for p, s in progress.phase_state.items() if s == "running"), None)
        data["totals"] = progress.usage.totals()
    return data


def _condition(route: Any) -> str:
    when = route.when
    test = f"in {when.in_}" if when.in_ is not None else f"== {when.equals}"
    return f"{when.agent}.{when.field} {test}"


def _pending(state: str) -> str:
    return "pending" if state == "waiting" else state


def to_text(data: dict[str, Any]) -> str:
    lines = [f"{data['title'] or data['framework']} ({data['framework']})"]
    if "status" in data:
        t = data["totals"]
        lines.append(
            f"status: {data['status']} · {t['calls']} calls · {t['tokens']:,} tokens · {_cost(t)}"
        )
    label = data["phase_label"]
    for index, phase in enumerate(data["phases"], 1):
        state = f" [{phase['state']}]" if "state" in phase else ""
        cycles = f" ×{phase['cycles']}" if phase.get("cycles", 0) > 1 else ""
        mode = "parallel" if phase["parallel"] and len(phase["agents"]) > 1 else "serial"
        lines.append(f"{index}. {label} {phase['name']}{state}{cycles} ({mode})")
        for agent in phase["agents"]:
            extra = f" [{agent['state']}]" if "state" in agent else ""
            tools = f" tools: {', '.join(agent['tools'])}" if agent["tools"] else ""
            lines.append(f"     - {agent['name']}{extra}{tools}")
    for edge in data["edges"]:
        if edge["when"]:
            lines.append(
                f"route: {edge['from']} -> {edge['to']} when {edge['when']}"
                f" (max {edge['max_cycles']} cycles)"
            )
    return "\n".join(lines)


def to_line(data: dict[str, Any]) -> str:
    """One line for `watch -n1`."""
    marks = {
        "done": "✔",
        "running": "▶",
        "failed": "✖",
        "pending": "·",
        "skipped": "↷",
        "queued": "⧗",
    }
    parts = [f"{p['name']}{marks.get(p.get('state', 'pending'), '?')}" for p in data["phases"]]
    t = data.get("totals", {"tokens": 0, "cost_usd": 0.0})
    marks_line = " → ".join(parts)
    return f"{data.get('status', '-')} | {marks_line} | {t['tokens']:,} tok {_cost(t)}"


def _cost(totals: dict[str, Any]) -> str:
    """The totals' cost as text: never $0.0000 for calls whose model has no price."""
    return format_cost(
        totals.get("cost_usd", 0.0), totals.get("unpriced_calls", 0), totals.get("calls", 0)
    )


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(data: dict[str, Any]) -> str:
    title = data["title"] or data["framework"]
    if "totals" in data:
        t = data["totals"]
        title += f" · {data['status']} · {t['calls']} calls · {t['tokens']:,} tokens"
        title += f" · {_cost(t)}"
    out = [
        "digraph pliny {",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
        f"  label={_q(title)}; labelloc=t;",
    ]
    for phase in data["phases"]:
        state = phase.get("state", "pending")
        out.append(f"  subgraph {_q('cluster_' + phase['name'])} {{")
        out.append(
            f"    label={_q(phase['name'] + (' [' + state + ']' if 'state' in phase else ''))};"
        )
        out.append(f"    style=filled; fillcolor={_q(FILL[state])}; color={_q(COLORS[state])};")
        for agent in phase["agents"]:
            a_state = agent.get("state", "pending")
            label = agent["name"] + (f"\\n{agent['tokens']:,} tok" if agent.get("tokens") else "")
            out.append(
                f"    {_q(agent['name'])} [label={_q(label).replace(chr(92) * 2, chr(92))}, "
                f"fillcolor={_q(FILL[a_state])}, color={_q(COLORS[a_state])}];"
            )
        out.append("  }")
    out.append(f'  {_q(END)} [shape=doublecircle, fillcolor="#eeeeee"];')
    first = {p["name"]: p["agents"][-1]["name"] for p in data["phases"]}
    head = {p["name"]: p["agents"][0]["name"] for p in data["phases"]} | {END: END}
    for edge in data["edges"]:
        attrs = [f"ltail={_q('cluster_' + edge['from'])}"]
        if edge["to"] != END:
            attrs.append(f"lhead={_q('cluster_' + edge['to'])}")
        if edge["when"]:
            attrs += [
                f"label={_q(edge['when'] + ' (max ' + str(edge['max_cycles']) + ')')}",
                "style=dashed",
            ]
        out.append(f"  {_q(first[edge['from']])} -> {_q(head[edge['to']])} [{', '.join(attrs)}];")
    out.append("  compound=true;")
    out.append("}")
    return "\n".join(out)


def _mid(name: str) -> str:
    return "n_" + name.replace("-", "_").replace(".", "_")


def to_mermaid(data: dict[str, Any]) -> str:
    out = ["flowchart LR"]
    for phase in data["phases"]:
        state = phase.get("state")
        out.append(
            f'  subgraph {_mid(phase["name"])}["{phase["name"]}{" · " + state if state else ""}"]'
        )
        for agent in phase["agents"]:
            a_state = agent.get("state")
            out.append(f'    {_mid(phase["name"] + "__" + agent["name"])}["{agent["name"]}"]')
            if a_state:
                out.append(f"    class {_mid(phase['name'] + '__' + agent['name'])} {a_state}")
        out.append("  end")
    out.append(f"  {_mid(END)}((end))")
    for edge in data["edges"]:
        label = f"|{edge['when']} ≤{edge['max_cycles']}|" if edge["when"] else ""
        arrow = "-.->" if edge["when"] else "-->"
        out.append(f"  {_mid(edge['from'])} {arrow}{label} {_mid(edge['to'])}")
    for state, color in COLORS.items():
        out.append(f"  classDef {state} fill:{FILL[state]},stroke:{color}")
    return "\n".join(out)


def to_svg(data: dict[str, Any]) -> str:
    dot = shutil.which("dot")
    if dot is None:
        raise UsageError(
            "SVG needs Graphviz's `dot`: install it (apt-get install graphviz, "
            "brew install graphviz) or use --format dot"
        )
    done = subprocess.run(
        [dot, "-Tsvg"], input=to_dot(data), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()[0] if done.stderr.strip() else done.returncode
        raise UsageError(f"graphviz failed: {detail}")
    return done.stdout


def render(fw: Framework, fmt: str, progress: Any = None) -> str:
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r} (one of: {', '.join(FORMATS)})")
    data = graph_data(fw, progress)
    if fmt == "json":
        import json

        return json.dumps(data, indent=2)
    return {"text": to_text, "dot": to_dot, "mermaid": to_mermaid, "svg": to_svg, "line": to_line}[
        fmt
    ](data)
