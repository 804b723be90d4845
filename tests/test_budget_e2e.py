"""A budget breach pauses the session cleanly; raising the budget resumes it.

Real CLI subprocesses against the fake server: the stop is exit code 3,
status ``paused`` and a ``budget_exceeded`` event; after the limit is raised
in ``pliny.yaml`` a resume with ``--config pliny.yaml`` finishes without re-sending
any answered call (a plain resume keeps the settings the session started with).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import pliny
from tests.support.frameworks import CHAIN


def _cli(args: list[str], ws: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return pliny(ws, *args, "-w", str(ws), env=env, timeout=120)


def _events(ws: Path) -> list[dict]:
    (log,) = (ws / "audit-logs").glob("*.jsonl")
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.mark.slow  # ~9 s: real CLI runs
def test_budget_pauses_then_resumes_after_raising_it(fake_server, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "chain.yaml").write_text(CHAIN)
    # Each call is estimated at its prompt + max_tokens (200) before it is sent.
    # The second answer is long (~500 tokens), so the first two calls fit in 900
    # tokens and the third (whose prompt carries that answer) cannot.
    fake_server.script(user="Step two", reply="lorem " * 330)
    (ws / "pliny.yaml").write_text("budgets:\n  max_tokens: 900\n")
    env = {**os.environ, "OPENAI_BASE_URL": fake_server.base_url, "OPENAI_API_KEY": "sk-x"}

    stopped = _cli(
        ["execute", "-f", str(ws / "chain.yaml"), "-t", "a plan", "--session", "b1"], ws, env
    )
    assert stopped.returncode == 3, stopped.stderr
    assert "max_tokens" in stopped.stderr
    sent_before = fake_server.count()
    assert sent_before == 2
    events = _events(ws)
    breach = [e for e in events if e["type"] == "budget_exceeded"]
    assert len(breach) == 1 and breach[0]["limit"] == "max_tokens"
    assert breach[0]["used"] + breach[0]["estimate"] > 900 >= breach[0]["used"]
    assert events[-1]["type"] == "session_paused"
    listed = json.loads(_cli(["session", "list", "--json"], ws, env).stdout)
    assert [s["status"] for s in listed] == ["paused"]

    # Resuming under the same limit pauses again, without sending anything.
    again = _cli(["session", "resume", "b1"], ws, env)
    assert again.returncode == 3 and fake_server.count() == sent_before

    # An edited pliny.yaml is not re-read silently: the session keeps its settings...
    (ws / "pliny.yaml").write_text("budgets:\n  max_tokens: 5000\n")
    unchanged = _cli(["session", "resume", "b1"], ws, env)
    assert unchanged.returncode == 3
    assert "pliny: warning: " + str(ws / "pliny.yaml") + " changed" in unchanged.stderr
    assert fake_server.count() == sent_before
    # ...until the resume says to use it.
    resumed = _cli(["session", "resume", "b1", "--config", str(ws / "pliny.yaml")], ws, env)
    assert resumed.returncode == 0, resumed.stderr
    assert fake_server.count() == 3  # each agent asked exactly once, across all runs
    assert (ws / "pliny-runs" / "b1" / "three" / "third.md").exists()
    verify = _cli(["audit", "verify", "b1"], ws, env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
