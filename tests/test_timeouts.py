"""Timeouts per LLM call, per agent, per phase and per session, through the real
engine and CLI; and config errors in error_handling/timeouts reported with
file:line:col.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from pliny.events import Event
from pliny.lifecycle.store import SessionStore
from tests.fakeserver import FakeServer
from tests.support.cli import LOCATED, pliny
from tests.test_faults import run, settings, solo_framework


def seconds_between(a: Event, b: Event) -> float:
    return (datetime.fromisoformat(b.ts) - datetime.fromisoformat(a.ts)).total_seconds()


def with_execution(overrides: dict[str, Any], **execution: Any) -> dict[str, Any]:
    overrides["execution"] = execution
    return overrides


# -- per LLM call -------------------------------------------------------------------


@pytest.mark.parametrize("where", ["llm.timeout", "execution.timeouts.llm_call"])
def test_slow_call_times_out_and_is_retried(
    tmp_path: Path, fake_server: FakeServer, where: str
) -> None:
    fake_server.script(latency_ms=3000, times=1)
    if where == "llm.timeout":
        overrides = settings(timeout=0.3)
    else:  # wins over llm.timeout
        overrides = with_execution(settings(timeout=30), timeouts={"llm_call": "300ms"})
    result = run(tmp_path, fake_server, solo_framework(tmp_path, tools="[]"), overrides)
    assert result.outcome.status == "completed", result.outcome.error
    assert len(fake_server.requests) == 2
    (retry,) = result.typed("retry")
    assert (retry.category, retry.code) == ("network", "PLINY-NET-TIMEOUT")
    (call,) = result.typed("llm_call")
    assert call.attempt == 2


# -- per agent ----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["agent", "execution.timeouts.agent"])
def test_agent_timeout_fails_the_agent_and_resumes(
    tmp_path: Path, fake_server: FakeServer, where: str
) -> None:
    fake_server.latency_ms = 2000
    if where == "agent":
        framework = solo_framework(tmp_path, tools="[]", agent_extra="        timeout: 0.5s\n")
        overrides = settings()
    else:
        framework = solo_framework(tmp_path, tools="[]")
        overrides = with_execution(settings(), timeouts={"agent": "0.5s"})
    first = run(tmp_path, fake_server, framework, overrides)
    (began,) = first.typed("agent_started")
    assert seconds_between(began, first.typed("agent_failed")[0]) < 1.9  # before any answer
    out = first.outcome
    assert (out.status, out.exit_code) == ("failed", 1)
    (failed,) = first.typed("agent_failed")
    assert (failed.agent, failed.code) == ("worker", "PLINY-TIMEOUT-AGENT")
    (ended,) = first.typed("session_failed")
    assert ended.code == "PLINY-TIMEOUT-AGENT"
    assert "worker" in str(out.error) and "timeout" in str(out.error)
    fake_server.reset()  # no more latency
    second = run(tmp_path, fake_server, session=out.session.id)
    assert second.outcome.status == "completed", second.outcome.error
    assert len(fake_server.requests) == 1


# -- per phase ----------------------------------------------------------------------


def serial_pair(tmp_path: Path, phase_extra: str) -> str:
    path = tmp_path / "pair.yaml"
    agents = "".join(
        f"      - name: {n}\n        role: You are agent {n}\n        prompt: '{n} {{{{task}}}}'\n"
        for n in ("first", "second")
    )
    path.write_text(
        "name: pair\nphases:\n  - name: work\n    parallel: false\n"
        + phase_extra
        + "    agents:\n"
        + agents
    )
    return str(path)


@pytest.mark.parametrize("where", ["phase", "execution.timeouts.phase"])
def test_phase_timeout_is_one_budget_for_all_its_agents(
    tmp_path: Path, fake_server: FakeServer, where: str
) -> None:
    # Each agent alone fits in 1.8 s; both in a row do not.
    fake_server.latency_ms = 1000
    overrides = settings()
    if where == "phase":
        framework = serial_pair(tmp_path, "    timeout: 1.8s\n")
    else:
        framework = serial_pair(tmp_path, "")
        overrides = with_execution(overrides, timeouts={"phase": "1.8s"})
    result = run(tmp_path, fake_server, framework, overrides)
    out = result.outcome
    assert (out.status, out.exit_code) == ("failed", 1)
    assert [e.agent for e in result.typed("agent_completed")] == ["first"]
    (failed,) = result.typed("agent_failed")
    assert failed.agent == "second" and failed.code.startswith("PLINY-TIMEOUT-")


def test_phase_timeout_says_it_was_the_phase(tmp_path: Path, fake_server: FakeServer) -> None:
    fake_server.latency_ms = 2000
    framework = solo_framework(tmp_path, tools="[]", phase_extra="    timeout: 0.5s\n")
    result = run(tmp_path, fake_server, framework, settings())
    assert result.outcome.status == "failed"
    assert "phase" in str(result.outcome.error)


# -- per session --------------------------------------------------------------------


def test_session_timeout_fails_and_resumes(tmp_path: Path, fake_server: FakeServer) -> None:
    fake_server.latency_ms = 2000
    overrides = with_execution(settings(), timeouts={"session": "1s"})
    first = run(tmp_path, fake_server, solo_framework(tmp_path, tools="[]"), overrides)
    out = first.outcome
    assert (out.status, out.exit_code) == ("failed", 1)
    assert out.error is not None and out.error.code == "PLINY-TIMEOUT-SESSION"
    assert "resume" in str(out.error)
    (ended,) = first.typed("session_failed")
    assert ended.code == "PLINY-TIMEOUT-SESSION"
    assert SessionStore(tmp_path).load(out.session.id).status == "failed"
    fake_server.reset()
    second = run(tmp_path, fake_server, session=out.session.id)
    assert second.outcome.status == "completed", second.outcome.error
    assert len(fake_server.requests) == 1


@pytest.mark.slow  # ~6 s: real CLI runs
def test_cli_timeout_flag(tmp_path: Path, fake_server: FakeServer) -> None:
    fake_server.latency_ms = 2000
    framework = solo_framework(tmp_path, tools="[]")
    proc = pliny(
        tmp_path,
        "execute",
        "-f",
        framework,
        "-t",
        "slow",
        "-m",
        "fake-model",
        "--timeout",
        "1s",
        "--json",
        server=fake_server,
    )
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "failed"
    assert summary["error"]["code"] == "PLINY-TIMEOUT-SESSION"
    fake_server.reset()
    resumed = pliny(tmp_path, "session", "resume", summary["session"], server=fake_server)
    assert resumed.returncode == 0, resumed.stderr
    assert SessionStore(tmp_path).load(summary["session"]).status == "completed"


# -- config errors in the strategies and limits: one located line, exit 2 -----------

CONFIG_ERRORS = [
    (
        "error_handling:\n  retry_strategies:\n    network:\n      backoff: exponentail\n",
        4,
        16,
        "error_handling.retry_strategies.network.backoff: Input should be 'exponential'",
    ),
    (
        "error_handling:\n  retry_strategies:\n    netwrk:\n      max_retries: 2\n",
        3,
        5,
        "error_handling.retry_strategies.netwrk: Input should be 'network'",
    ),
    (
        "error_handling:\n  retry_strategies:\n    tool:\n      max_retries: -1\n",
        4,
        20,
        "error_handling.retry_strategies.tool.max_retries: Input should be greater",
    ),
    (
        "error_handling:\n  circuit_breaker:\n    reset_timeout: forever\n",
        3,
        20,
        "error_handling.circuit_breaker.reset_timeout: expected a duration",
    ),
    (
        "execution:\n  timeouts:\n    session: soon\n",
        3,
        14,
        "execution.timeouts.session: expected a duration",
    ),
]


@pytest.mark.parametrize(
    ("yaml", "line", "col", "what"),
    CONFIG_ERRORS,
    ids=["backoff", "category", "max-retries", "reset", "session"],
)
def test_config_error_is_located(tmp_path: Path, yaml: str, line: int, col: int, what: str) -> None:
    (tmp_path / "pliny.yaml").write_text(yaml)
    proc = pliny(tmp_path, "execute", "-f", solo_framework(tmp_path), "-t", "hi")
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    (only,) = proc.stderr.splitlines()
    match = LOCATED.match(only)
    assert match, only
    assert (match["file"], int(match["line"]), int(match["col"])) == (
        str(tmp_path / "pliny.yaml"),
        line,
        col,
    )
    assert match["what"].startswith(what), only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pliny.yaml", "solo.yaml"]


@pytest.mark.parametrize(
    ("agent_extra", "phase_extra", "line", "what"),
    [
        ("", "    on_agent_failure: skp\n", 4, "phases.0.on_agent_failure"),
        ("", "    min_successful_agents: 2\n", 3, "phases.0: min_successful_agents (2) exceeds"),
        ("        timeout: soon\n", "", 9, "phases.0.agents.0.timeout: expected a duration"),
    ],
    ids=["policy", "min-agents", "agent-timeout"],
)
def test_framework_degradation_error_is_located(
    tmp_path: Path, agent_extra: str, phase_extra: str, line: int, what: str
) -> None:
    framework = solo_framework(tmp_path, agent_extra=agent_extra, phase_extra=phase_extra)
    proc = pliny(tmp_path, "execute", "-f", framework, "-t", "hi")
    assert proc.returncode == 2, proc.stderr
    (only,) = proc.stderr.splitlines()
    match = LOCATED.match(only)
    assert match, only
    assert (match["file"], int(match["line"])) == (framework, line)
    assert match["what"].startswith(what), only
