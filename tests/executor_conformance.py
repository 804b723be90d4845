"""The executor conformance suite: what every executor must do.

A test module runs it for one executor by importing these tests and
defining an ``executor_name`` fixture (see ``test_executor_local.py``).
Each test runs a real session through ``pliny.lifecycle.runner.execute``
against the fake OpenAI server, so the phase graph, routes, cycles, failure
policy, budgets and resume are checked as a user sees them.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from pliny.audit.log import log_path
from pliny.audit.reader import read_events
from pliny.audit.writer import verify
from pliny.config.settings import Settings
from pliny.engine.executor import AgentTask, settings_digest
from pliny.events import Event
from pliny.lifecycle.runner import Outcome, RunOptions, execute
from tests.fakeserver import FakeServer

__all__ = [
    "test_task_is_plain_data",
    "test_rise_completes_with_every_agent_done",
    "test_phase_agents_run_in_parallel",
    "test_route_cycle_is_bounded",
    "test_failure_policy_continue_keeps_the_phase",
    "test_failure_policy_fail_fails_the_session_and_resume_finishes",
    "test_budget_stops_the_run",
    "test_unknown_executor_is_bad_input",
]

EVALUATOR = "You are a strict reviewer"


def run(
    ws: Path,
    server: FakeServer,
    executor: str,
    framework: str = "rise",
    *,
    task: str = "Summarise the repo",
    **kw: Any,
) -> tuple[Outcome, list[Event]]:
    events: list[Event] = []
    opts = RunOptions(
        workspace=ws,
        framework=framework,
        task=task,
        listeners=[events.append],
        env={"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test"},
        executor=executor,
        **kw,
    )
    return asyncio.run(execute(opts)), events


def write_framework(ws: Path, text: str) -> str:
    path = ws.parent / f"{ws.name}-fw.yaml"
    path.write_text(text)
    return str(path)


def fanout(ws: Path, n: int, policy: str = "fail") -> str:
    agents = "".join(
        f"      - name: w{i}\n        role: worker {i}\n"
        f"        prompt: 'part {i} of {{{{task}}}}'\n"
        for i in range(1, n + 1)
    )
    return write_framework(
        ws,
        f"name: fan\nphases:\n  - name: fan\n    on_agent_failure: {policy}\n"
        f"    agents:\n{agents}"
        "  - name: sum\n    agents:\n      - name: summer\n        role: summer\n"
        "        prompt: 'sum {{fan}}'\n",
    )


def audit_ok(ws: Path, session: str) -> list[Event]:
    path = log_path(ws, Settings().audit, session)
    assert verify(path).ok
    return read_events(path)


# -- the seam itself ------------------------------------------------------------------


def test_task_is_plain_data() -> None:
    task = AgentTask(
        session="s",
        phase="research",
        agent="research-code",
        cycle=2,
        inputs={"task": "t", "results": {"a": {"status": "done", "text": "x"}}},
        settings_digest=settings_digest(Settings()),
    )
    assert AgentTask.from_json(task.to_json()) == task
    assert settings_digest(Settings()) == task.settings_digest
    other = Settings.model_validate({"execution": {"parallel": False}})
    assert settings_digest(other) != task.settings_digest


# -- behaviour through a real run ----------------------------------------------------


def test_rise_completes_with_every_agent_done(
    tmp_path: Path, fake_server: FakeServer, executor_name: str
) -> None:
    outcome, events = run(tmp_path, fake_server, executor_name)
    assert outcome.status == "completed", outcome.error
    done = {e.agent for e in events if e.type == "agent_completed"}
    assert done == {"research-code", "research-docs", "research-task"} | {
        "findings",
        "planner",
        "executor",
    }
    json.dumps(outcome.results)  # results crossed the seam as plain data
    logged = audit_ok(tmp_path, outcome.session.id)
    assert sum(e.type == "llm_call" for e in logged) == len(fake_server.requests)


def test_phase_agents_run_in_parallel(
    tmp_path: Path, fake_server: FakeServer, executor_name: str
) -> None:
    fake_server.latency_ms = 200
    outcome, _ = run(tmp_path, fake_server, executor_name, fanout(tmp_path, 4))
    assert outcome.status == "completed", outcome.error
    assert fake_server.max_in_flight == 4


def test_route_cycle_is_bounded(
    tmp_path: Path, fake_server: FakeServer, executor_name: str
) -> None:
    # The evaluator always says revise: the route back to analyze runs max_cycles times.
    fake_server.script(
        system=EVALUATOR, json={"verdict": "revise", "score": 2, "feedback": "again"}
    )
    outcome, events = run(tmp_path, fake_server, executor_name, "care")
    assert outcome.status == "completed", outcome.error
    entered = [e.phase for e in events if e.type == "phase_started"]
    assert entered.count("analyze") == entered.count("evaluate") >= 2
    assert entered[-1] == "evaluate"


def test_failure_policy_continue_keeps_the_phase(
    tmp_path: Path, fake_server: FakeServer, executor_name: str
) -> None:
    fake_server.fail(400, system="worker 2")
    outcome, events = run(tmp_path, fake_server, executor_name, fanout(tmp_path, 3, "continue"))
    assert outcome.status == "completed", outcome.error
    failed = [e for e in events if e.type == "agent_failed"]
    assert [(e.agent, e.skipped) for e in failed] == [("w2", True)]
    (summer,) = [r for r in fake_server.requests if "summer" in r.system]
    assert "agent w2 failed" in summer.last_user


def test_failure_policy_fail_fails_the_session_and_resume_finishes(
    tmp_path: Path, fake_server: FakeServer, executor_name: str
) -> None:
    fw = fanout(tmp_path, 3)
    rule = fake_server.fail(400, system="worker 3")
    outcome, _ = run(tmp_path, fake_server, executor_name, fw)
    assert outcome.status == "failed" and outcome.exit_code == 1
    # The invariant: an answer *recorded* as paid (its llm_call in the audit log) is never
    # paid again. A sibling cancelled by the failure before its answer was recorded may be.
    logged = audit_ok(tmp_path, outcome.session.id)
    recorded = {e.agent for e in logged if e.type == "llm_call" and not e.replayed}
    paid = {f"worker {agent[1:]}" for agent in recorded if agent and agent.startswith("w")}
    assert paid, "the agents that answered before the failure recorded nothing"
    rule.times = rule.hits  # the fault is gone
    before = len(fake_server.requests)
    opts = RunOptions(
        workspace=tmp_path,
        session_id=outcome.session.id,
        env={"OPENAI_BASE_URL": fake_server.base_url, "OPENAI_API_KEY": "sk-test"},
        executor=executor_name,
    )
    resumed = asyncio.run(execute(opts))
    assert resumed.status == "completed", resumed.error
    resent = {r.system for r in fake_server.requests[before:]} & paid
    assert not resent, f"recorded answers were paid again: {resent}"
    audit_ok(tmp_path, outcome.session.id)


def test_budget_stops_the_run(tmp_path: Path, fake_server: FakeServer, executor_name: str) -> None:
    outcome, events = run(
        tmp_path,
        fake_server,
        executor_name,
        overrides={"budgets": {"max_tokens": 50}},
    )
    assert outcome.status == "paused", outcome.error
    assert any(e.type == "budget_exceeded" for e in events)


def test_unknown_executor_is_bad_input(tmp_path: Path, fake_server: FakeServer) -> None:
    outcome_error = None
    try:
        run(tmp_path, fake_server, "no-such-executor")
    except Exception as exc:  # noqa: BLE001 - the error type is what is checked
        outcome_error = exc
    assert outcome_error is not None and "no-such-executor" in str(outcome_error)
    assert getattr(outcome_error, "exit_code", None) == 2
    assert not (tmp_path / ".pliny").exists()
    assert fake_server.requests == []


@pytest.fixture
def executor_name() -> str:  # pragma: no cover - each suite module overrides it
    raise NotImplementedError("define an executor_name fixture in the test module")
