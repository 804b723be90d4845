"""Secrets never reach the audit log, the session state, outputs or a git commit.

A canary API key is given to a real CLI run (through the environment, as a
user would); afterwards every byte Pliny wrote is searched for it, including
every git object, decompressed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

CANARY = "sk-canary-7f3e9b1c5d2a4e6f8091a2b3c4d5e6f7"
CLI = [sys.executable, "-c", "from pliny.cli import main; main()"]


def _run(args: list[str], ws: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args, "-w", str(ws)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _all_bytes(ws: Path) -> list[tuple[Path, bytes]]:
    """Every file in the workspace, with git objects decompressed."""
    found = []
    for path in ws.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        loose = path.parent.parent.name == "objects" and len(path.parent.name) == 2
        if loose:  # packed objects are checked through `git cat-file` instead
            data = zlib.decompress(data)
        found.append((path, data))
    return found


@pytest.mark.slow  # ~6 s: real CLI runs
def test_canary_key_appears_nowhere(fake_server, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "app.py").write_text("print('hello')\n")
    env = {**os.environ, "OPENAI_BASE_URL": fake_server.base_url, "OPENAI_API_KEY": CANARY}
    # One agent tries to smuggle the key into a file via the tools: the key
    # itself is never given to the model, so the model can't know it.
    done = _run(
        ["execute", "-f", "rise", "-t", "Document app.py", "--checkpoint", "agent"], ws, env
    )
    assert done.returncode == 0, done.stderr
    # The key did reach the endpoint (the run was real) ...
    assert any(r.api_key == CANARY for r in fake_server.requests)
    # ... and a failing run (401) records its error without the key either.
    fake_server.fail(401, times=50)
    failed = _run(["execute", "-f", "rise", "-t", "Second run"], ws, env)
    assert failed.returncode == 1
    for text in (done.stdout, done.stderr, failed.stdout, failed.stderr):
        assert CANARY not in text
    # Pack any loose objects too, then read them back through git itself.
    subprocess.run(["git", "-C", str(ws), "gc", "-q"], check=True)
    objects = subprocess.run(
        ["git", "-C", str(ws), "cat-file", "--batch-all-objects", "--batch"],
        capture_output=True,
        check=True,
    ).stdout
    assert len(objects) > 1000  # the checkpoints really are in there
    assert CANARY.encode() not in objects
    hits = [str(p) for p, data in _all_bytes(ws) if CANARY.encode() in data]
    assert hits == []
    assert (ws / "audit-logs").is_dir() and any((ws / ".pliny").rglob("state.json"))


# A key with no well-known shape, in an env var whose name says nothing: only
# exact-value scrubbing of the configured key can catch it.
ECHOED = "zq-canary-echo-3b8d1f6a9e2c4d70"


def test_key_echoed_in_a_401_body_appears_nowhere(fake_server, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "pliny.yaml").write_text("llm:\n  api_key_env: PLINY_LLM_CRED\n")
    env = {**os.environ, "OPENAI_BASE_URL": fake_server.base_url, "PLINY_LLM_CRED": ECHOED}
    env["PLINY_LOG"] = "debug"  # the most verbose stderr there is
    fake_server.fail(401, echo_key=True)
    failed = _run(["execute", "-f", "rise", "-t", "Document it"], ws, env)
    assert failed.returncode == 1, failed.stderr
    # The server really got the key and really echoed it back.
    assert fake_server.requests and fake_server.last.api_key == ECHOED
    assert "PLINY-CONFIG-AUTH" in failed.stderr or "401" in failed.stderr
    history = subprocess.run(
        ["git", "-C", str(ws), "log", "-p", "--all"], capture_output=True, text=True, check=True
    ).stdout
    texts = {"stdout": failed.stdout, "stderr": failed.stderr, "git log -p --all": history}
    assert [name for name, text in texts.items() if ECHOED in text] == []
    assert any((ws / ".pliny").rglob("run.log")) and any((ws / "audit-logs").iterdir())
    hits = [str(p) for p, data in _all_bytes(ws) if ECHOED.encode() in data]
    assert hits == []
