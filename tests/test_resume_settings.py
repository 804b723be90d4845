"""A resume runs with the settings its session started with; a validation failure is re-asked.

Real CLI subprocesses against the fake server. ``--config`` is saved with the session
(a snapshot of its settings, never a secret), so a resume keeps the budget and the audit
dir it started with; a new limit only applies when the resume command line says so.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.fakeserver import FakeServer
from tests.support.cli import pliny
from tests.support.frameworks import CHAIN

pytestmark = pytest.mark.timeout(120)
SCHEMA = """
name: judged
phases:
  - name: judge
    agents:
      - name: verdict
        role: You are a strict judge.
        prompt: "Judge {{task}}"
        output_schema:
          type: object
          required: [verdict]
          properties:
            verdict: {type: string, enum: [accept, revise]}
"""

SECRET = "Bearer abcdefgh12345678"


def _cli(ws: Path, server: FakeServer, *args: str) -> subprocess.CompletedProcess[str]:
    return pliny(ws, *args, server=server, env={"NO_COLOR": "1"}, drop=("PLINY_",), timeout=120)


def _warned(proc: subprocess.CompletedProcess[str], text: str) -> bool:
    """One clean `pliny: warning:` line says it (not a logging error quoting it)."""
    lines = proc.stderr.splitlines()
    return any(line.startswith("pliny: warning: ") and text in line for line in lines)


def _chain_workspace(tmp_path: Path, server: FakeServer, config: str) -> Path:
    """A workspace whose settings live in conf/custom.yaml (no pliny.yaml)."""
    ws = tmp_path / "ws"
    (ws / "conf").mkdir(parents=True)
    (ws / "chain.yaml").write_text(CHAIN)
    (ws / "conf" / "custom.yaml").write_text(config)
    # The second answer is long: the first two calls fit in 900 tokens, the third cannot.
    server.script(user="Step two", reply="lorem " * 330)
    return ws


def _start_paused(ws: Path, server: FakeServer) -> None:
    args = ["execute", "-f", "chain.yaml", "-t", "a plan", "--session", "b1"]
    stopped = _cli(ws, server, *args, "--config", "conf/custom.yaml")
    assert stopped.returncode == 3, stopped.stderr
    assert server.count() == 2


BUDGET = "budgets:\n  max_tokens: 900\naudit:\n  dir: my-audit\n"


@pytest.mark.slow  # ~7 s: real CLI runs
def test_resume_keeps_config_budget_until_raised_on_the_command_line(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    ws = _chain_workspace(tmp_path, fake_server, BUDGET)
    _start_paused(ws, fake_server)

    # Un-raised: stays paused (exit 3), sends nothing, writes into the same audit dir.
    again = _cli(ws, fake_server, "session", "resume", "b1")
    assert again.returncode == 3, again.stderr
    assert fake_server.count() == 2
    assert not (ws / "audit-logs").exists()

    raised = _cli(ws, fake_server, "session", "resume", "b1", "--max-tokens", "5000")
    assert raised.returncode == 0, raised.stderr
    assert _warned(raised, "budgets.max_tokens=5000 from the command line")  # announced
    assert fake_server.count() == 3
    assert sorted(p.name for p in (ws / "my-audit").glob("*.jsonl")) == ["b1.jsonl"]
    assert not (ws / "audit-logs").exists()  # one chain, not two
    # audit commands find the session's audit dir from its state, no flag needed
    verify = _cli(ws, fake_server, "audit", "verify", "b1")
    assert verify.returncode == 0, verify.stderr
    assert "my-audit" in verify.stdout


@pytest.mark.slow  # ~7 s: real CLI runs
def test_an_edited_config_file_is_not_reread_silently(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    ws = _chain_workspace(tmp_path, fake_server, BUDGET)
    _start_paused(ws, fake_server)
    (ws / "conf" / "custom.yaml").write_text("budgets:\n  max_tokens: 5000\n")

    again = _cli(ws, fake_server, "session", "resume", "b1")
    assert again.returncode == 3, again.stderr
    assert _warned(again, "custom.yaml changed since session 'b1' started")
    assert fake_server.count() == 2

    # Passing the file again is explicit: its settings win (and the audit dir it names).
    (ws / "conf" / "custom.yaml").write_text(BUDGET.replace("900", "5000"))
    resumed = _cli(ws, fake_server, "session", "resume", "b1", "--config", "conf/custom.yaml")
    assert resumed.returncode == 0, resumed.stderr
    assert _warned(resumed, "instead of the settings session 'b1' started with")
    assert fake_server.count() == 3
    assert not (ws / "audit-logs").exists()


@pytest.mark.slow  # ~5 s: real CLI runs
def test_execute_with_config_never_writes_secrets_into_session_state(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    alert = f"alerts:\n  - {{metric: errors, operator: gt, threshold: 99, command: 'curl -H \"Authorization: {SECRET}\" x'}}\n"  # noqa: E501
    ws = _chain_workspace(tmp_path, fake_server, BUDGET + alert)
    _start_paused(ws, fake_server)
    state = (ws / ".pliny" / "sessions" / "b1" / "state.json").read_text()
    assert "abcdefgh12345678" not in state
    assert "max_tokens" in state  # the budget itself is kept
    # The file is unchanged, so the resume takes the secret from it and keeps the budget.
    again = _cli(ws, fake_server, "session", "resume", "b1")
    assert again.returncode == 3, again.stderr
    # Changed and secret-bearing: the snapshot cannot be completed, say so (exit 2).
    (ws / "conf" / "custom.yaml").write_text(BUDGET)
    refused = _cli(ws, fake_server, "session", "resume", "b1")
    assert refused.returncode == 2, refused.stderr
    assert "--config" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert fake_server.count() == 2


@pytest.mark.slow  # ~7 s: real CLI runs
def test_audit_commands_find_a_custom_dir_and_need_an_id(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    ws = _chain_workspace(tmp_path, fake_server, BUDGET)
    _start_paused(ws, fake_server)
    state = ws / ".pliny" / "sessions" / "b1" / "state.json"
    saved = state.read_bytes()
    for command in ("view", "summary", "verify"):
        state.write_bytes(saved)
        here = _cli(ws, fake_server, "audit", command, "b1", "--json")
        assert here.returncode == 0, here.stderr
        elsewhere = _cli(tmp_path, fake_server, "audit", command, "b1", "-w", str(ws), "--json")
        assert elsewhere.returncode == 0, elsewhere.stderr
        assert here.stdout == elsewhere.stdout
        # --config names the audit dir when there is no session state to ask
        state.unlink()
        lost = _cli(ws, fake_server, "audit", command, "b1")
        assert lost.returncode == 2 and "no audit log" in lost.stderr
        found = _cli(ws, fake_server, "audit", command, "b1", "--config", "conf/custom.yaml")
        assert found.returncode == 0, found.stderr
        missing = _cli(ws, fake_server, "audit", command)
        assert missing.returncode == 2
        lines = missing.stderr.strip().splitlines()
        assert len(lines) == 1 and "session id" in lines[0], missing.stderr


@pytest.mark.slow  # ~4 s: real CLI runs
def test_resume_reasks_an_agent_whose_answers_failed_validation(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "judged.yaml").write_text(SCHEMA)
    # 1 answer + 2 validation retries (the default), all invalid; then valid ones.
    fake_server.script(json={"verdict": "maybe"}, times=3)
    fake_server.script(json={"verdict": "accept"})
    failed = _cli(ws, fake_server, "execute", "-f", "judged.yaml", "-t", "x", "--session", "v1")
    assert failed.returncode == 1, failed.stderr
    assert "PLINY-VALIDATION" in failed.stderr and "resume" in failed.stderr
    assert fake_server.count() == 3

    resumed = _cli(ws, fake_server, "session", "resume", "v1", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert fake_server.count() == 4  # a fresh request, not a replay of the invalid answers
    out = ws / "pliny-runs" / "v1" / "judge" / "verdict.json"
    assert json.loads(out.read_text()) == {"verdict": "accept"}
    summary = json.loads(_cli(ws, fake_server, "audit", "summary", "v1", "--json").stdout)
    assert summary["totals"]["calls"] == 4  # the failed calls were paid and stay counted
    assert summary["totals"]["tokens"] > 0


@pytest.mark.slow  # ~3 s: real CLI runs
def test_commands_outside_a_run_write_and_read_the_sessions_audit_dir(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    ws = _chain_workspace(tmp_path, fake_server, BUDGET)
    _start_paused(ws, fake_server)
    made = _cli(ws, fake_server, "checkpoint", "create", "mine", "--session", "b1")
    assert made.returncode == 0, made.stderr
    assert not (ws / "audit-logs").exists()  # one chain, in the session's dir
    log = (ws / "my-audit" / "b1.jsonl").read_text()
    assert '"checkpoint_created"' in log and '"mine"' in log
    metrics = _cli(ws, fake_server, "metrics", "b1")
    assert metrics.returncode == 0, metrics.stderr
    assert "pliny_llm_calls_total" in metrics.stdout
    shown = json.loads(_cli(ws, fake_server, "session", "show", "b1", "--json").stdout)
    assert shown["totals"]["calls"] == 2, shown
