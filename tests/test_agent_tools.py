"""Workspace file tools: unit tests of pliny.engine.tools.Workspace, then the same
refusals driven end to end by a scripted model through the real openai client.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pliny.engine.tools import Workspace, openai_tools
from pliny.errors import ToolError
from pliny.events import Event
from pliny.lifecycle.runner import RunOptions, execute
from tests.fakeserver import FakeServer, RecordedRequest

CODE_AGENT = "You are a code investigator"  # rise: research-code (read tools)
EXECUTOR = "You are a careful implementer"  # rise: executor (read + write_file)
APP = "def main() -> int:\n    return 42  # the answer\n"


def git(ws: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.name=T", "-c", "user.email=t@example.com", *args]
    return subprocess.run(cmd, cwd=ws, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A git workspace with a little code, next to an `outside` dir it must not touch."""
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text(APP)
    (root / "README.md").write_text("# Demo\nThe answer is computed in src/app.py\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("outside secret\n")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "linkfile").symlink_to(outside / "secret.txt")
    (root / "gitlink").symlink_to(root / ".git", target_is_directory=True)
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


# -- Workspace, directly ----------------------------------------------------------

# "/ABS" is an absolute path into tmp_path's `outside` dir, not /etc/passwd: CI runs as
# root, so a regression must not be able to clobber the machine (reads use /etc/passwd).
ESCAPES = ["../escape.txt", "src/../../escape.txt", "linkdir/new.txt", "linkfile", "/ABS"]
PROTECTED = [".git/config", "./.git/hooks/pre-commit", "gitlink/config", ".pliny/x", "audit-logs/x"]


def workspace(root: Path) -> Workspace:
    return Workspace(root, protected=(".git", ".pliny", "audit-logs"))


@pytest.mark.parametrize("path", ESCAPES + PROTECTED)
def test_write_outside_or_protected_is_refused(ws: Path, path: str) -> None:
    path = path.replace("/ABS", str(ws.parent / "outside" / "abs.txt"))
    before = snapshot(ws.parent)
    result = workspace(ws).call("write_file", {"path": path, "content": "pwned"})
    assert not result.ok
    assert result.content.startswith("error:")
    assert snapshot(ws.parent) == before


@pytest.mark.parametrize(
    "path",
    [
        "../outside/secret.txt",
        "linkfile",
        "linkdir/secret.txt",
        ".git/config",
        "gitlink/HEAD",
        "/etc/passwd",
    ],
)
def test_read_outside_or_protected_is_refused(ws: Path, path: str) -> None:
    result = workspace(ws).call("read_file", {"path": path})
    assert not result.ok and result.content.startswith("error:")
    assert "outside secret" not in result.content and "root:" not in result.content


def test_write_into_a_nested_git_dir_is_refused(ws: Path) -> None:
    # An embedded repository's hooks run code just like the top-level ones do.
    git(ws, "init", "-q", "vendor/lib")
    with pytest.raises(ToolError):
        workspace(ws).write_file("vendor/lib/.git/hooks/post-checkout", "#!/bin/sh\n")
    assert not (ws / "vendor/lib/.git/hooks/post-checkout").exists()


def test_write_read_roundtrip_creates_dirs_and_reports_the_write(ws: Path) -> None:
    seen: list[tuple[str, bytes, str | None]] = []
    tools = workspace(ws)
    tools.on_write.append(lambda rel, data, agent: seen.append((rel, data, agent)))
    result = tools.call("write_file", {"path": "./docs/new/notes.md", "content": "héllo"}, "a1")
    assert result.ok and result.written == "docs/new/notes.md"
    assert (ws / "docs/new/notes.md").read_text("utf-8") == "héllo"
    assert seen == [("docs/new/notes.md", "héllo".encode(), "a1")]
    assert tools.call("read_file", {"path": "docs/new/notes.md"}).content == "héllo"
    assert not list((ws / "docs/new").glob(".*pliny-tmp"))  # the temp file was renamed away


def test_write_to_a_directory_or_empty_path_is_refused(ws: Path) -> None:
    tools = workspace(ws)
    for path in ("src", ".", "", "   "):
        assert tools.call("write_file", {"path": path, "content": "x"}).content.startswith("error:")
    assert (ws / "src" / "app.py").read_text() == APP


def test_list_files_skips_git_and_state_dirs(ws: Path) -> None:
    (ws / ".pliny" / "sessions").mkdir(parents=True)
    (ws / ".pliny" / "sessions" / "state.json").write_text("{}")
    listing = workspace(ws).list_files().splitlines()
    assert "src/app.py" in listing and "README.md" in listing
    assert not [p for p in listing if p.startswith((".git/", ".pliny/"))]
    assert workspace(ws).list_files("src", "*.py") == "src/app.py"
    assert workspace(ws).list_files("src", "*.rs") == "(no files)"
    assert workspace(ws).call("list_files", {"path": ".git"}).content.startswith("error:")


def test_search_files_finds_lines_and_skips_git(ws: Path) -> None:
    (ws / ".git" / "needle.txt").write_text("the answer lives here too\n")
    out = workspace(ws).search_files("THE ANSWER")
    assert out.splitlines() == [
        "README.md:2: The answer is computed in src/app.py",
        "src/app.py:2: return 42  # the answer",
    ]
    assert workspace(ws).search_files("answer", pattern="*.md") == (
        "README.md:2: The answer is computed in src/app.py"
    )
    assert workspace(ws).search_files("zebra") == "(no matches for 'zebra')"
    assert workspace(ws).call("search_files", {"query": ""}).content.startswith("error:")


def test_bad_tool_calls_become_errors_the_model_reads(ws: Path) -> None:
    tools = workspace(ws)
    assert tools.call("rm_rf", {}).content.startswith("error: unknown tool")
    assert tools.call("read_file", {}).content.startswith("error: bad arguments")
    assert tools.call("read_file", {"path": "nope.txt"}).content.startswith("error:")
    extra = tools.call("write_file", {"path": "a.txt", "content": "x", "mode": "w"})
    assert extra.content.startswith("error:")
    assert not (ws / "a.txt").exists()


def test_openai_tool_schemas() -> None:
    specs = openai_tools(["read_file", "write_file"])
    assert [s["function"]["name"] for s in specs] == ["read_file", "write_file"]
    assert specs[1]["function"]["parameters"]["required"] == ["path", "content"]


# -- through the engine: the model sees the errors ----------------------------------


def run_rise(ws: Path, server: FakeServer) -> tuple[Any, list[Event]]:
    events: list[Event] = []
    env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test"}
    opts = RunOptions(
        workspace=ws,
        framework="rise",
        task="Document src/app.py",
        env=env,
        listeners=[events.append],
    )
    return asyncio.run(execute(opts)), events


def tool_results(request: RecordedRequest) -> dict[str, tuple[str, dict[str, Any], str]]:
    """tool_call_id -> (tool name, arguments, tool message content) in a request's history."""
    calls: dict[str, tuple[str, dict[str, Any]]] = {}
    out = {}
    for msg in request.messages:
        for call in msg.get("tool_calls") or []:
            fn = call["function"]
            calls[call["id"]] = (fn["name"], json.loads(fn["arguments"]))
        if msg["role"] == "tool":
            name, args = calls[msg["tool_call_id"]]
            out[msg["tool_call_id"]] = (name, args, msg["content"])
    return out


def test_model_reads_the_workspace_through_tools(ws: Path, fake_server: FakeServer) -> None:
    fake_server.script(
        system=CODE_AGENT,
        times=1,
        tool_calls=[
            {"name": "list_files", "arguments": {}},
            {"name": "read_file", "arguments": {"path": "src/app.py"}},
            {"name": "write_file", "arguments": {"path": "x.txt", "content": "no"}},  # not its tool
        ],
    )
    outcome, events = run_rise(ws, fake_server)
    assert outcome.status == "completed", outcome.error
    first, second = [r for r in fake_server.requests if CODE_AGENT in r.system]
    assert {t["function"]["name"] for t in first.body["tools"]} == {
        "list_files",
        "search_files",
        "read_file",
    }
    results = {name: content for name, _, content in tool_results(second).values()}
    assert "src/app.py" in results["list_files"].splitlines()
    assert not [p for p in results["list_files"].splitlines() if p.startswith(".git/")]
    assert results["read_file"] == APP
    assert results["write_file"].startswith("error:")
    assert not (ws / "x.txt").exists()
    by_agent = [e for e in events if e.type == "tool_call" and e.agent == "research-code"]
    assert [(e.tool, e.ok) for e in by_agent if e.by != "engine"] == [
        ("list_files", True),
        ("read_file", True),
        ("write_file", False),
    ]


def write(path: str, content: str = "pwned") -> dict[str, Any]:
    return {"name": "write_file", "arguments": {"path": path, "content": content}}


def test_model_writes_are_confined_to_the_workspace(ws: Path, fake_server: FakeServer) -> None:
    abs_path = str(ws.parent / "outside" / "abs.txt")
    bad = [
        "../escape.txt",
        abs_path,
        ".git/config",
        ".pliny/x",
        "audit-logs/x",
        "linkdir/pwn.txt",
        "linkfile",
        "gitlink/config",
    ]
    # At most three failures in a row per turn (the `tool` retry budget), then a good write.
    turns = [
        [*map(write, bad[i : i + 3]), write(f"notes/ok{i}.md", f"ok {i}")]
        for i in range(0, len(bad), 3)
    ]
    for n, calls in enumerate(turns):
        fake_server.script(
            system=EXECUTOR,
            times=1,
            tool_calls=calls,
            when=lambda body, n=n: _tool_messages(body) == 4 * n,
        )
    git_config = (ws / ".git" / "config").read_bytes()
    outside_before = snapshot(ws.parent / "outside")
    outcome, events = run_rise(ws, fake_server)
    assert outcome.status == "completed", outcome.error
    last = [r for r in fake_server.requests if EXECUTOR in r.system][-1]
    seen = {args["path"]: content for _, args, content in tool_results(last).values()}
    for path in bad:
        assert seen[path].startswith("error:"), (path, seen[path])
    good = [f"notes/ok{i}.md" for i in range(0, len(bad), 3)]
    assert all(seen[p].startswith("wrote ") for p in good)
    # nothing landed outside, in .git, in Pliny's state or in the audit dir
    assert not (ws.parent / "escape.txt").exists()
    assert snapshot(ws.parent / "outside") == outside_before
    assert (ws / ".git" / "config").read_bytes() == git_config
    assert not (ws / ".pliny" / "x").exists() and not (ws / "audit-logs" / "x").exists()
    # the good writes are in the workspace and in the next checkpoint
    ref = f"refs/pliny/{outcome.session.id}/checkpoints/after-execute"
    for i, path in zip(range(0, len(bad), 3), good, strict=True):
        assert (ws / path).read_text() == f"ok {i}"
        assert git(ws, "show", f"{ref}:{path}") == f"ok {i}"
    done = [e for e in events if e.type == "agent_completed" and e.agent == "executor"]
    assert set(good) <= set(done[0].files_written)


def _tool_messages(body: dict[str, Any]) -> int:
    return sum(1 for m in body.get("messages", []) if m.get("role") == "tool")


def test_repeated_tool_errors_fail_the_agent(ws: Path, fake_server: FakeServer) -> None:
    fake_server.script(system=EXECUTOR, tool_calls=[write("../escape.txt")])
    outcome, events = run_rise(ws, fake_server)
    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error.code == "PLINY-TOOL-REPEATED"
    # tool.max_retries is 3: the 4th consecutive refusal ends it
    assert len([r for r in fake_server.requests if EXECUTOR in r.system]) == 4
    assert not (ws.parent / "escape.txt").exists()
    assert os.path.exists(ws / "src" / "app.py")
