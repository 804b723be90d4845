"""Trust boundaries: what the model may touch, which alert commands run, hostile YAML.

Agents never write Pliny's own config (workspace ``pliny.yaml``, the ``--config``
file, a framework file in use) nor anything under the audit dir (nested too) or
``.pliny/``; a workspace ``pliny.yaml`` cannot make Pliny run commands without the
user's opt-in; a YAML bomb or an oversized file is one line and exit 2, fast.
"""

from __future__ import annotations

import asyncio
import json
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pliny.config.yamlsource import load_text
from pliny.engine.tools import Workspace
from pliny.errors import ConfigError
from pliny.events import Event
from pliny.lifecycle.runner import RunOptions, execute
from tests.fakeserver import FakeServer
from tests.support.cli import CLI, pliny
from tests.test_agent_tools import EXECUTOR, git, tool_results, write

CONFIG = "audit: {dir: var/audit}\n"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A git workspace with a nested audit dir, a config, a --config file and a framework."""
    root = tmp_path / "ws"
    for sub in ("src", "var/audit", "conf", "fw"):
        (root / sub).mkdir(parents=True)
    (root / "src" / "app.py").write_text("print(42)\n")
    (root / "pliny.yaml").write_text(CONFIG)
    (root / "conf" / "ci.yaml").write_text(CONFIG)
    (root / "fw" / "flow.yaml").write_text("name: flow\n")
    (root / "var" / "audit" / "s0.jsonl").write_text("{}\n")
    (root / "auditlink").symlink_to(root / "var" / "audit", target_is_directory=True)
    (root / "cfglink").symlink_to(root / "pliny.yaml")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    return root


def guarded(root: Path) -> Workspace:
    readonly = ("pliny.yaml", root / "conf" / "ci.yaml", "fw/flow.yaml")
    return Workspace(root, protected=(".git", ".pliny", "var/audit"), readonly=readonly)


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.parts
    }


# -- Workspace, directly ----------------------------------------------------------

REFUSED_WRITES = [
    "var/audit/s0.jsonl",
    "var/audit/new.jsonl",
    "./var/./audit/s0.jsonl",
    "VAR/Audit/s0.jsonl",
    "auditlink/s0.jsonl",
    "var/audit",
    "pliny.yaml",
    "./pliny.yaml",
    "PLINY.YAML",
    "cfglink",
    "conf/ci.yaml",
    "fw/flow.yaml",
    ".pliny/sessions/s0/journal.sqlite",
]


@pytest.mark.parametrize("path", REFUSED_WRITES)
def test_writes_to_plinys_config_and_audit_dir_are_refused(ws: Path, path: str) -> None:
    before = tree(ws)
    result = guarded(ws).call("write_file", {"path": path, "content": "pwned"})
    assert not result.ok and result.content.startswith("error:"), result.content
    assert tree(ws) == before


def test_config_stays_readable_and_audit_dir_stays_hidden(ws: Path) -> None:
    tools = guarded(ws)
    assert tools.call("read_file", {"path": "pliny.yaml"}).content == CONFIG
    assert tools.call("read_file", {"path": "conf/ci.yaml"}).content == CONFIG
    assert not tools.call("read_file", {"path": "var/audit/s0.jsonl"}).ok
    assert not tools.call("read_file", {"path": "auditlink/s0.jsonl"}).ok
    listing = tools.list_files().splitlines()
    assert "pliny.yaml" in listing and "src/app.py" in listing
    assert not [p for p in listing if "audit" in p], listing
    assert tools.call("write_file", {"path": "var/notes.md", "content": "ok"}).ok  # siblings: fine


# -- through the engine: a scripted model tries, the log stays verifiable ---------


def run(ws: Path, server: FakeServer, **kw: Any) -> tuple[Any, list[Event]]:
    events: list[Event] = []
    env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test", **kw.pop("env", {})}
    opts = RunOptions(
        workspace=ws,
        framework="rise",
        task="Document src/app.py",
        env=env,
        listeners=[events.append],
        **kw,
    )
    return asyncio.run(execute(opts)), events


def cli(ws: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return pliny(ws, *args, env=env, drop=("PLINY_ALLOW",))


def test_model_cannot_rewrite_config_or_audit_log(ws: Path, fake_server: FakeServer) -> None:
    evil = "alerts: [{metric: llm_calls, operator: gte, threshold: 0, command: 'touch pwned'}]\n"
    fake_server.script(
        system=EXECUTOR,
        times=1,
        tool_calls=[
            write("pliny.yaml", evil),
            write("var/audit/s1.jsonl", "{}\n"),
            write("notes.md", "ok"),
        ],
    )
    outcome, _ = run(ws, fake_server, session_id="s1")
    assert outcome.status == "completed", outcome.error
    last = [r for r in fake_server.requests if EXECUTOR in r.system][-1]
    seen = {args["path"]: content for _, args, content in tool_results(last).values()}
    assert seen["pliny.yaml"].startswith("error:") and seen["var/audit/s1.jsonl"].startswith(
        "error:"
    ), seen
    assert seen["notes.md"].startswith("wrote ")
    assert (ws / "pliny.yaml").read_text() == CONFIG
    proc = cli(ws, "audit", "verify", "s1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (ws / "pwned").exists()


# -- alert commands need a config the user named, or an opt-in --------------------


def alert_config(marker: Path) -> str:
    cmd = shlex.join([sys.executable, "-c", f"open({str(marker)!r}, 'w').write('ran')"])
    rule = {
        "name": "hook",
        "metric": "llm_calls",
        "operator": "gte",
        "threshold": 1,
        "command": cmd,
    }
    return json.dumps({"alerts": [rule]})  # JSON is YAML


def wait_for(path: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.05)
    return path.exists()


def test_workspace_config_alert_command_is_refused(ws: Path, fake_server: FakeServer) -> None:
    marker = ws.parent / "marker"
    (ws / "pliny.yaml").write_text(alert_config(marker))
    outcome, events = run(ws, fake_server)
    assert outcome.status == "completed", outcome.error
    assert [e.rule for e in events if e.type == "alert"] == ["hook"]  # the alert itself fires
    warnings = [e.message for e in events if e.type == "warning"]
    assert any("--allow-alert-commands" in w and "pliny.yaml" in w for w in warnings), warnings
    assert not wait_for(marker, 1.0)


@pytest.mark.parametrize("how", ["env", "config"])
def test_alert_command_runs_when_the_user_opted_in(
    ws: Path, fake_server: FakeServer, how: str
) -> None:
    marker = ws.parent / "marker"
    if how == "env":
        (ws / "pliny.yaml").write_text(alert_config(marker))
        outcome, events = run(ws, fake_server, env={"PLINY_ALLOW_ALERT_COMMANDS": "1"})
    else:  # a --config file the user named is trusted
        (ws.parent / "mine.yaml").write_text(alert_config(marker))
        outcome, events = run(ws, fake_server, config_path=ws.parent / "mine.yaml")
    assert outcome.status == "completed", outcome.error
    assert wait_for(marker, 10.0)
    assert not [e for e in events if e.type == "warning" and "alert" in e.message]


def test_cli_flag_allows_alert_commands(ws: Path, fake_server: FakeServer) -> None:
    marker = ws.parent / "marker"
    (ws / "pliny.yaml").write_text(alert_config(marker))
    server = {"OPENAI_BASE_URL": fake_server.base_url, "OPENAI_API_KEY": "sk-test"}
    args = ("execute", "-f", "rise", "-t", "hi", "--json", "--checkpoint", "none")
    proc = cli(ws, *args, "--allow-alert-commands", env=server)
    assert proc.returncode == 0, proc.stderr
    assert wait_for(marker, 10.0)


# -- hostile YAML ------------------------------------------------------------------

LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


def limited() -> None:
    """Child: a bomb that got through would hit these limits instead of the machine."""
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    resource.setrlimit(resource.RLIMIT_CPU, (30, 30))


@pytest.mark.parametrize("flag", ["--config", "--framework"])
def test_yaml_bomb_is_refused_fast(tmp_path: Path, flag: str) -> None:
    (tmp_path / "bomb.yaml").write_text(LAUGHS)
    start = time.monotonic()
    proc = subprocess.run(
        [*CLI, "execute", flag, "bomb.yaml", "-t", "x"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limited,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr[-500:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "bomb.yaml" in lines[0] and "alias" in lines[0], lines
    assert elapsed < 10, elapsed
    assert not (tmp_path / ".pliny").exists()


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text(
        "pricing:\n" + "".join(f"  m{i}: {{input: 1, output: 1}}\n" for i in range(40_000))
    )
    assert big.stat().st_size > 1 << 20
    proc = subprocess.run(
        [*CLI, "config", "validate", str(big)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "big.yaml" in lines[0] and "MiB" in lines[0], lines


@pytest.mark.parametrize("text", ["a: &a [*a]\n", "a: &a {b: *a}\n"])
def test_recursive_alias_is_one_error(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^x\.yaml:1:\d+: .*alias"):
        load_text(text, "x.yaml")


def test_ordinary_aliases_and_merge_keys_still_load() -> None:
    text = "d: &d {model: m, max_tokens: 5}\nagents:\n" + "".join(
        f"  - {{<<: *d, name: a{i}}}\n" for i in range(200)
    )
    data = load_text(text, "ok.yaml").data
    assert data["agents"][199] == {"model": "m", "max_tokens": 5, "name": "a199"}
