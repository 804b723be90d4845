"""`pliny execute` and friends as a user runs them: a real subprocess, a real
workspace, the fake OpenAI server behind OPENAI_BASE_URL.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pliny.lifecycle.runner import RunOptions, execute
from tests.fakeserver import FakeServer
from tests.support.cli import LOCATED, pliny

HEAVY = (
    "langgraph",
    "openai",
    "git",
    "pliny.engine.graph",
    "pliny.lifecycle.runner",
    "pliny.llm.gateway",
    "opentelemetry",
    "genai_prices",
)


def files(ws: Path) -> set[str]:
    return {p.relative_to(ws).as_posix() for p in ws.rglob("*")}


def one_located_error(proc: subprocess.CompletedProcess) -> re.Match[str]:
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    match = LOCATED.match(lines[0])
    assert match, lines[0]
    return match


# -- --json -------------------------------------------------------------------------


def test_execute_json_prints_one_document(tmp_path: Path, fake_server: FakeServer) -> None:
    proc = pliny(
        tmp_path,
        "execute",
        "-f",
        "rise",
        "-t",
        "Write a haiku about tests",
        "--json",
        server=fake_server,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # raises on a second document or any stray text
    assert summary["status"] == "completed" and summary["exit_code"] == 0
    assert summary["totals"]["calls"] == len(fake_server.requests) == 6
    assert summary["totals"]["tokens"] > 0 and summary["totals"]["retries"] == 0
    assert "DELIVERABLE.md" in summary["files_written"]
    phases = ("research", "identify", "synthesize", "execute")
    assert summary["checkpoints"] == [f"after-{p}" for p in phases]
    session = summary["session"]
    assert (tmp_path / ".pliny" / "current").read_text().strip() == session
    assert (tmp_path / "audit-logs" / f"{session}.jsonl").is_file()
    for phase in summary["phases"]:
        for agent in phase["agents"]:
            assert agent["state"] == "done"
            assert (tmp_path / agent["output"]).is_file()


def test_failed_run_json_has_the_error_and_exit_1(tmp_path: Path, fake_server: FakeServer) -> None:
    fake_server.script(system="You are a strict reviewer", reply="no JSON here")
    proc = pliny(tmp_path, "execute", "-f", "care", "-t", "Answer", "--json", server=fake_server)
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "failed"
    assert summary["error"]["code"] == "PLINY-VALIDATION-SCHEMA"


# -- bad input: one located line, exit 2, nothing written ----------------------------------


def test_typo_in_pliny_yaml(tmp_path: Path) -> None:
    (tmp_path / "pliny.yaml").write_text("llm:\n  model: m\nexecution:\n  paralel: false\n")
    before = files(tmp_path)
    match = one_located_error(pliny(tmp_path, "execute", "-f", "rise", "-t", "hi"))
    assert (match["file"], match["line"], match["col"]) == (str(tmp_path / "pliny.yaml"), "4", "3")
    assert match["what"] == "execution.paralel: unknown key (typo?)"
    assert files(tmp_path) == before  # no .pliny/, no audit log, no git repo
    again = one_located_error(pliny(tmp_path, "config", "validate"))
    assert again.group(0) == match.group(0)


def test_bad_config_leaves_existing_sessions_alone(tmp_path: Path, fake_server: FakeServer) -> None:
    env = {"OPENAI_BASE_URL": fake_server.base_url, "OPENAI_API_KEY": "sk-test"}
    first = asyncio.run(
        execute(RunOptions(workspace=tmp_path, framework="rise", task="first", env=env))
    )
    assert first.status == "completed", first.error
    state = {p: p.read_bytes() for p in (tmp_path / ".pliny").rglob("*") if p.is_file()}
    (tmp_path / "pliny.yaml").write_text("execution:\n  max_concurrency: many\n")
    match = one_located_error(
        pliny(tmp_path, "execute", "-f", "rise", "-t", "second", server=fake_server)
    )
    assert (match["line"], match["col"]) == ("2", "20")
    assert {p: p.read_bytes() for p in (tmp_path / ".pliny").rglob("*") if p.is_file()} == state
    assert len(fake_server.requests) == 6  # the second run never reached the model


def test_framework_yaml_error(tmp_path: Path) -> None:
    (tmp_path / "fw.yaml").write_text(
        textwrap.dedent("""\
        name: mine
        phases:
          - name: only
            agents:
              - name: writer
                role: You write.
                prompt: "{{task}}"
                temprature: 0.3
    """)
    )
    for args in (["execute", "-f", "fw.yaml", "-t", "hi"], ["config", "validate", "fw.yaml"]):
        match = one_located_error(pliny(tmp_path, *args))
        assert (match["file"], match["line"], match["col"]) == ("fw.yaml", "8", "9")
        assert match["what"] == "phases.0.agents.0.temprature: unknown key (typo?)"
    assert files(tmp_path) == {"fw.yaml"}


def test_framework_graph_error_is_located(tmp_path: Path) -> None:
    (tmp_path / "fw.yaml").write_text(
        textwrap.dedent("""\
        name: mine
        phases:
          - name: only
            agents:
              - name: writer
                role: You write.
                prompt: "{{task}} and {{nobody}}"
    """)
    )
    match = one_located_error(pliny(tmp_path, "execute", "-f", "fw.yaml", "-t", "hi"))
    assert (match["file"], match["line"]) == ("fw.yaml", "7")
    assert "unknown placeholder {{nobody}}" in match["what"]
    assert files(tmp_path) == {"fw.yaml"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-f", "nosuch", "-t", "hi"], "unknown framework 'nosuch' (built-in: care, rise"),
        (["-f", "missing.yaml", "-t", "hi"], "missing.yaml: framework file not found"),
        (
            ["-f", "rise", "-t", "hi", "--checkpoint", "sometimes"],
            "command line:1:1: execution.checkpoint: Input should be",
        ),
        (["-f", "rise", "-t", "hi", "--timeout", "soon"], "--timeout: expected a duration"),
        (["-f", "rise"], "no current session"),
    ],
)
def test_bad_arguments_exit_2_and_write_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    proc = pliny(tmp_path, "execute", *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.splitlines()[0]]
    assert proc.stderr.startswith(f"pliny: error: {message}"), proc.stderr
    assert files(tmp_path) == set()


# -- start-up stays light ------------------------------------------------------------


@pytest.mark.parametrize("args", [["--help"], ["execute", "--help"], ["--version"]])
def test_help_does_not_import_the_engine(tmp_path: Path, args: list[str]) -> None:
    probe = (
        "import sys\n"
        f"sys.argv = ['pliny', *{args!r}]\n"
        "from pliny.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        f"heavy = sorted({{m.split('.')[0] if not m.startswith('pliny') else m "
        f"for m in sys.modules}} & set({HEAVY!r}))\n"
        "print('HEAVY=' + ','.join(heavy), 'CODE=' + str(code), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert "HEAVY= CODE=0" in proc.stderr, proc.stderr
    assert proc.stdout.strip()
