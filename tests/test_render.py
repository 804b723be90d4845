"""`pliny frameworks show` and `pliny session show` in every format, through the real CLI.

Three real sessions in one workspace (fake OpenAI server, in-process runs): a completed
R-I-S-E run, an R-I-S-E run whose `findings` agent gets a 401, and a C-A-R-E run whose
evaluator asks for one revision (cycles). DOT goes through Graphviz when it is installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pliny.framework.model import load
from pliny.framework.render import COLORS, FILL
from pliny.lifecycle.runner import RunOptions, execute
from tests.fakeserver import FakeServer

pytestmark = pytest.mark.timeout(90)
PLINY = shutil.which("pliny") or str(Path(sys.executable).with_name("pliny"))
DOT = shutil.which("dot")
FORMATS = ("text", "json", "dot", "mermaid", "line")
RISE = [(p.name, [a.name for a in p.agents]) for p in load("rise").phases]
CARE = [(p.name, [a.name for a in p.agents]) for p in load("care").phases]


def cli(
    ws: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PLINY_"))}
    return subprocess.run(
        [PLINY, *args],
        cwd=ws,
        env=(env or base) | {"NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(ws: Path, *args: str) -> str:
    proc = cli(ws, *args)
    assert proc.returncode == 0, (args, proc.stderr[-1500:])
    return proc.stdout


def _run(ws: Path, server: FakeServer, framework: str, name: str) -> str:
    """One in-process run in a new session; returns the session id."""
    env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test"}
    opts = RunOptions(
        workspace=ws,
        framework=framework,
        task=f"Task for {name}",
        name=name,
        overrides={"execution": {"checkpoint": "none"}},
        env=env,
    )
    return asyncio.run(execute(opts)).session.id


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    ws = tmp_path_factory.mktemp("render")
    info: dict[str, Any] = {}
    with FakeServer() as server:
        info["done"] = _run(ws, server, "rise", "done")
        info["done_requests"] = len(server.requests)
        server.reset()
        server.fail(401, system="lead analyst")
        info["failed"] = _run(ws, server, "rise", "failed")
        info["failed_replies"] = sum(r.outcome == "reply" for r in server.requests)
        server.reset()
        verdicts = iter(["revise", "accept"])
        server.script(
            system="strict reviewer",
            reply=lambda _body: json.dumps(
                {"verdict": next(verdicts), "score": 5, "feedback": "1. say more"}
            ),
        )
        info["cycled"] = _run(ws, server, "care", "cycled")
    yield ws, info


def states(data: dict[str, Any]) -> dict[str, str]:
    """phase and agent name -> state, from the JSON format."""
    found = {p["name"]: p["state"] for p in data["phases"]}
    found |= {a["name"]: a["state"] for p in data["phases"] for a in p["agents"]}
    return found


def everything(ws: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(ws).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in ws.rglob("*")
        if p.is_file()
    }


# -- DOT and Mermaid checks --------------------------------------------------------------------
def dot_is_sane(text: str, graph: list[tuple[str, list[str]]]) -> None:
    """Structure any DOT reader relies on, checked without Graphviz."""
    assert text.startswith("digraph") and text.rstrip().endswith("}")
    body = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)  # braces inside strings do not count
    depth = 0
    for char in body:
        depth += {"{": 1, "}": -1}.get(char, 0)
        assert depth >= 0, "a '}' closes nothing"
    assert depth == 0, "unbalanced braces"
    for phase, agents in graph:
        assert f'subgraph "cluster_{phase}"' in text
        for agent in agents:
            assert re.search(rf'^\s*"{re.escape(agent)}" \[', text, re.M), agent


def graphviz_objects(text: str) -> dict[str, dict[str, Any]]:
    """Graphviz's own parse of the DOT text: node and cluster name -> attributes."""
    assert DOT is not None
    done = subprocess.run([DOT, "-Tjson"], input=text, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr.lower(), done.stderr
    return {o["name"]: o for o in json.loads(done.stdout)["objects"]}


def check_dot(text: str, graph: list[tuple[str, list[str]]], data: dict[str, Any] | None) -> None:
    """Sane structure; with Graphviz, every agent parsed and coloured by its state."""
    dot_is_sane(text, graph)
    if DOT is None:
        return
    objects = graphviz_objects(text)
    want = states(data) if data else {}
    for phase, agents in graph:
        assert objects[f"cluster_{phase}"]["color"] == COLORS[want.get(phase, "pending")]
        for agent in agents:
            assert objects[agent]["fillcolor"] == FILL[want.get(agent, "pending")], agent
            assert objects[agent]["color"] == COLORS[want.get(agent, "pending")], agent


def check_mermaid(text: str, graph: list[tuple[str, list[str]]]) -> None:
    assert text.startswith("flowchart")
    for _phase, agents in graph:
        for agent in agents:
            assert f'["{agent}"]' in text, agent


# -- frameworks show -----------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "graph"), [("rise", RISE), ("care", CARE)])
def test_frameworks_show_every_format(tmp_path: Path, name: str, graph: list) -> None:
    data = json.loads(ok(tmp_path, "frameworks", "show", name, "--format", "json"))
    assert data["framework"] == name
    assert [(p["name"], [a["name"] for a in p["agents"]]) for p in data["phases"]] == graph
    assert "status" not in data and all("state" not in p for p in data["phases"])
    chain = [p for p, _ in graph]
    plain = [(e["from"], e["to"]) for e in data["edges"] if e["when"] is None]
    assert plain == list(zip(chain, [*chain[1:], "end"], strict=True))
    check_dot(ok(tmp_path, "frameworks", "show", name, "--format", "dot"), graph, None)
    check_mermaid(ok(tmp_path, "frameworks", "show", name, "--format", "mermaid"), graph)
    text = ok(tmp_path, "frameworks", "show", name)
    assert all(agent in text for _, agents in graph for agent in agents)
    assert os.listdir(tmp_path) == []  # showing a framework writes nothing


def test_frameworks_show_care_has_its_revision_route(tmp_path: Path) -> None:
    data = json.loads(ok(tmp_path, "frameworks", "show", "care", "--format", "json"))
    routes = [e for e in data["edges"] if e["when"]]
    assert [(e["from"], e["to"], e["max_cycles"]) for e in routes] == [("evaluate", "analyze", 2)]
    assert "evaluator.verdict" in routes[0]["when"]
    mermaid = ok(tmp_path, "frameworks", "show", "care", "--format", "mermaid")
    assert re.search(r"n_evaluate -\.->\|[^|]*revise[^|]*\| n_analyze", mermaid)


# -- session show ----------------------------------------------------------------------------
def test_completed_session_json(runs: tuple[Path, dict[str, Any]]) -> None:
    ws, info = runs
    data = json.loads(ok(ws, "session", "show", info["done"], "--format", "json"))
    assert data["status"] == "completed" and data["session"]["status"] == "completed"
    assert set(states(data).values()) == {"done"}
    assert {p["name"]: p["cycles"] for p in data["phases"]} == {p: 1 for p, _ in RISE}
    assert data["current"] is None
    totals = data["totals"]
    assert totals["calls"] == info["done_requests"]
    agents = [a for p in data["phases"] for a in p["agents"]]
    assert totals["tokens"] == sum(a["tokens"] for a in agents) > 0
    assert totals["cost_usd"] == pytest.approx(sum(a["cost_usd"] for a in agents), abs=1e-5)
    assert all(a["tokens"] > 0 for a in agents)


def test_failed_session_json(runs: tuple[Path, dict[str, Any]]) -> None:
    ws, info = runs
    data = json.loads(ok(ws, "session", "show", info["failed"], "--format", "json"))
    assert data["status"] == "failed"
    assert data["session"]["error"]["code"] == "PLINY-CONFIG-AUTH"
    assert data["totals"]["calls"] == info["failed_replies"] == 3
    found = states(data)
    assert {a: found[a] for a in RISE[0][1]} == dict.fromkeys(RISE[0][1], "done")
    assert found["findings"] == "failed"
    assert found["planner"] == found["executor"] == "pending"
    assert found["synthesize"] == found["execute"] == "pending"
    # Nothing runs in a failed session: its failed phase must not show as running.
    assert found["identify"] == "failed", found
    assert data["current"] is None


def test_cycles_of_a_revised_care_run(runs: tuple[Path, dict[str, Any]]) -> None:
    ws, info = runs
    data = json.loads(ok(ws, "session", "show", info["cycled"], "--format", "json"))
    assert data["status"] == "completed"
    assert {p["name"]: p["cycles"] for p in data["phases"]} == {
        "context": 1,
        "analyze": 2,
        "respond": 2,
        "evaluate": 2,
    }
    text = ok(ws, "session", "show", info["cycled"])
    assert re.search(r"analyze \[done\] ×2", text) and "context [done] (" in text


@pytest.mark.parametrize("kind", ["done", "failed"])
def test_session_show_dot_mermaid_line_text(runs: tuple[Path, dict[str, Any]], kind: str) -> None:
    ws, info = runs
    session = info[kind]
    data = json.loads(ok(ws, "session", "show", session, "--format", "json"))
    check_dot(ok(ws, "session", "show", session, "--format", "dot"), RISE, data)
    mermaid = ok(ws, "session", "show", session, "--format", "mermaid")
    check_mermaid(mermaid, RISE)
    for phase, agents in RISE:
        for agent in agents:
            node = f"n_{phase}__{agent}".replace("-", "_")
            assert f"class {node} {states(data)[agent]}" in mermaid
    line = ok(ws, "session", "show", session, "--format", "line")
    assert line.endswith("\n") and line.count("\n") == 1
    assert line.startswith(data["status"])
    where = [line.find(phase) for phase, _ in RISE]
    assert -1 not in where and where == sorted(where), line
    text = ok(ws, "session", "show", session, "--format", "text")
    assert session in text and data["status"] in text
    for agent, state in states(data).items():
        assert f"{agent} [{state}]" in text, agent


@pytest.mark.skipif(DOT is None, reason="Graphviz's `dot` is not installed")
def test_svg_with_graphviz(runs: tuple[Path, dict[str, Any]]) -> None:
    ws, info = runs
    svg = ok(ws, "session", "show", info["failed"], "--format", "svg")
    assert "<svg" in svg and "findings" in svg and svg.rstrip().endswith("</svg>")
    assert "<svg" in ok(ws, "frameworks", "show", "care", "--format", "svg")


def test_svg_without_graphviz_says_how_to_install_it(runs: tuple[Path, dict[str, Any]]) -> None:
    ws, info = runs
    empty = ws.parent / "empty-bin"
    empty.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")} | {
        "PATH": str(empty)
    }
    for args in (["session", "show", info["done"]], ["frameworks", "show", "rise"]):
        proc = cli(ws, *args, "--format", "svg", env=env)
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "graphviz" in lines[0].lower() and "install" in lines[0], lines


@pytest.mark.slow  # ~4 s: real CLI runs
def test_show_never_changes_anything(runs: tuple[Path, dict[str, Any]]) -> None:
    ws, info = runs
    before = everything(ws)
    for session in (info["done"], info["failed"]):
        for fmt in (*FORMATS, *(("svg",) if DOT else ())):
            ok(ws, "session", "show", session, "--format", fmt)
    assert everything(ws) == before
