"""The engine end to end: real fake-OpenAI server, real openai client, real git.

Each test runs ``pliny.lifecycle.runner.execute`` (or the public ``pliny.api``) in a
tmp_path workspace and checks what a user would see: statuses, files, git
refs, the audit log, and what the server received.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

import pliny.api
from pliny.audit.reader import read_events
from pliny.events import Event
from pliny.lifecycle.runner import Outcome, RunOptions, execute
from tests import fakeserver_payloads as P
from tests.fakeserver import FakeServer, RecordedRequest

# System-prompt substrings that pick one agent of the built-in frameworks.
RESEARCHERS = {
    "research-code": "You are a code investigator",
    "research-docs": "You are a documentation researcher",
    "research-task": "You are a requirements analyst",
}
FINDINGS, PLANNER, EXECUTOR = (
    "You are a lead analyst",
    "You are a solution designer",
    ("You are a careful implementer"),
)
ANALYST, EVALUATOR = "You are an analyst", "You are a strict reviewer"
RISE_AGENTS = {
    "research": ["research-code", "research-docs", "research-task"],
    "identify": ["findings"],
    "synthesize": ["planner"],
    "execute": ["executor"],
}
CARE_AGENTS = {
    "context": ["context-reader"],
    "analyze": ["analyst"],
    "respond": ["responder"],
    "evaluate": ["evaluator"],
}
LATENCY_MS = 300
WORKERS = 4


def env(server: FakeServer) -> dict[str, str]:
    return {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test"}


def run(
    ws: Path,
    server: FakeServer,
    framework: str = "rise",
    task: str = "Summarise the repo",
    **kw: Any,
) -> tuple[Outcome, list[Event]]:
    events: list[Event] = []
    opts = RunOptions(
        workspace=ws,
        framework=framework,
        task=task,
        listeners=[events.append],
        env=env(server),
        **kw,
    )
    return asyncio.run(execute(opts)), events


def refs(ws: Path) -> set[str]:
    out = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname)", "refs/pliny/"],
        cwd=ws,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def of(server: FakeServer, system: str) -> list[RecordedRequest]:
    return [r for r in server.requests if system in r.system]


def typed(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e.type == kind]


def audit(ws: Path, session: str) -> list[Event]:
    return read_events(ws / "audit-logs" / f"{session}.jsonl")


def verdict(kind: str, feedback: str = "1. fine") -> dict[str, Any]:
    return {"verdict": kind, "score": 8 if kind == "accept" else 3, "feedback": feedback}


# -- both built-in frameworks end to end ------------------------------------------


@pytest.mark.parametrize(
    ("name", "agents", "deliverable"),
    [("rise", RISE_AGENTS, "DELIVERABLE.md"), ("care", CARE_AGENTS, "RESPONSE.md")],
)
def test_builtin_framework_end_to_end(
    tmp_path: Path,
    fake_server: FakeServer,
    name: str,
    agents: dict[str, list[str]],
    deliverable: str,
) -> None:
    fake_server.script(system=EVALUATOR, json=verdict("accept"))
    outcome, _ = run(tmp_path, fake_server, name)
    assert outcome.status == "completed", outcome.error
    assert outcome.exit_code == 0
    sid = outcome.session.id
    for phase, names in agents.items():
        for agent in names:
            out = tmp_path / "pliny-runs" / sid / phase / f"{agent}.md"
            assert out.is_file() and out.read_text().strip(), out
    assert (tmp_path / deliverable).read_text().strip()
    expected = {f"refs/pliny/{sid}/checkpoints/after-{p}" for p in agents}
    assert expected <= refs(tmp_path)
    logged = audit(tmp_path, sid)
    # A brand-new session starts cleanly: nothing crashed before it.
    assert [e.type for e in logged][:2] == ["session_started", "phase_started"]
    assert logged[-1].type == "session_completed"
    sent = [e for e in logged if e.type == "llm_call" and not e.replayed]
    assert len(sent) == len(fake_server.requests) >= sum(map(len, agents.values()))
    assert {e.request_id for e in sent} == {f"chatcmpl-fake{r.id}" for r in fake_server.requests}


def test_later_prompts_contain_earlier_outputs(tmp_path: Path, fake_server: FakeServer) -> None:
    outcome, _ = run(tmp_path, fake_server, "rise", task="Add a CHANGELOG entry")
    assert outcome.status == "completed", outcome.error
    (findings,) = of(fake_server, FINDINGS)
    for agent, system in RESEARCHERS.items():
        (request,) = of(fake_server, system)
        reply = P.default_reply(request.body)
        assert reply in findings.last_user, agent
        assert (
            reply
            == (
                tmp_path / "pliny-runs" / outcome.session.id / "research" / f"{agent}.md"
            ).read_text()
        )
    (planner,) = of(fake_server, PLANNER)
    assert P.default_reply(findings.body) in planner.last_user
    (executor, *_) = of(fake_server, EXECUTOR)
    assert P.default_reply(planner.body) in executor.last_user
    assert "Add a CHANGELOG entry" in executor.last_user


# -- parallel phases ----------------------------------------------------------------


def fanout(tmp_path: Path, phase_extra: str = "") -> str:
    """A one-phase framework with WORKERS independent agents."""
    agents = "".join(
        f"      - name: w{i}\n        role: worker number {i}\n"
        f"        prompt: 'part {i} of {{{{task}}}}'\n"
        for i in range(1, WORKERS + 1)
    )
    path = tmp_path / "fanout.yaml"
    path.write_text(f"name: fanout\nphases:\n  - name: fan\n{phase_extra}    agents:\n{agents}")
    return str(path)


def phase_wall_ms(events: list[Event]) -> float:
    (done,) = typed(events, "phase_completed")
    assert done.succeeded == WORKERS
    return done.duration_ms


def test_parallel_phase_runs_agents_at_once(tmp_path: Path, fake_server: FakeServer) -> None:
    # Warm-up at zero latency: the first call in a process pays one-off lazy imports
    # (openai resources, jsonschema) that would otherwise be counted as phase time.
    (tmp_path / "warm").mkdir()
    assert run(tmp_path / "warm", fake_server, fanout(tmp_path), task="w")[0].status == "completed"
    fake_server.reset()
    fake_server.latency_ms = LATENCY_MS
    outcome, events = run(tmp_path, fake_server, fanout(tmp_path), task="count")
    assert outcome.status == "completed", outcome.error
    serial_sum = WORKERS * LATENCY_MS
    wall = phase_wall_ms(events)
    assert wall < 0.6 * serial_sum, f"phase took {wall} ms, serial sum {serial_sum} ms"
    assert fake_server.max_in_flight == WORKERS


@pytest.mark.parametrize(
    ("phase_extra", "kw", "limit"),
    [
        ("", {"parallel": False}, 1),  # --no-parallel
        ("    parallel: false\n", {}, 1),
        ("    max_concurrency: 2\n", {}, 2),
        ("", {"overrides": {"execution": {"max_concurrency": 1}}}, 1),
    ],
    ids=["no-parallel-flag", "parallel-false-yaml", "phase-max-concurrency-2", "global-limit-1"],
)
def test_concurrency_limits(
    tmp_path: Path, fake_server: FakeServer, phase_extra: str, kw: dict[str, Any], limit: int
) -> None:
    fake_server.latency_ms = LATENCY_MS
    outcome, events = run(tmp_path, fake_server, fanout(tmp_path, phase_extra), task="count", **kw)
    assert outcome.status == "completed", outcome.error
    assert fake_server.max_in_flight == limit
    waves = -(-WORKERS // limit)  # ceil: batches of `limit` calls one after another
    assert phase_wall_ms(events) >= 0.9 * waves * LATENCY_MS


# -- C-A-R-E loop -----------------------------------------------------------------


def test_care_loop_stops_at_max_cycles(tmp_path: Path, fake_server: FakeServer) -> None:
    feedback = "1. Add a worked example FEEDBACK-7f3a"
    fake_server.script(system=EVALUATOR, json=verdict("revise", feedback))
    outcome, events = run(tmp_path, fake_server, "care", task="Explain the retry policy")
    assert outcome.status == "completed", outcome.error
    analyst, evaluator = of(fake_server, ANALYST), of(fake_server, EVALUATOR)
    assert (len(analyst), len(evaluator)) == (3, 3)  # 1 + max_cycles (2)
    assert [e.cycle for e in typed(events, "phase_started") if e.phase == "analyze"] == [1, 2, 3]
    assert feedback not in analyst[0].last_user
    assert feedback in analyst[1].last_user and feedback in analyst[2].last_user
    # the analyst also sees the response it is revising
    first_response = P.default_reply(of(fake_server, "You are a precise writer")[0].body)
    assert first_response in analyst[1].last_user
    sid = outcome.session.id
    runs = tmp_path / "pliny-runs" / sid / "analyze"
    assert sorted(p.name for p in runs.iterdir()) == [
        "analyst.cycle2.md",
        "analyst.cycle3.md",
        "analyst.md",
    ]
    assert {f"refs/pliny/{sid}/checkpoints/after-analyze-{n}" for n in (2, 3)} <= refs(tmp_path)
    assert typed(events, "phase_completed")[-1].next == "end"


def test_care_accept_ends_after_one_cycle(tmp_path: Path, fake_server: FakeServer) -> None:
    fake_server.script(system=EVALUATOR, json=verdict("accept"))
    outcome, events = run(tmp_path, fake_server, "care", task="Explain the retry policy")
    assert outcome.status == "completed", outcome.error
    assert (len(of(fake_server, ANALYST)), len(of(fake_server, EVALUATOR))) == (1, 1)
    assert [e.phase for e in typed(events, "phase_started")] == list(CARE_AGENTS)
    data = tmp_path / "pliny-runs" / outcome.session.id / "evaluate" / "evaluator.json"
    assert '"verdict": "accept"' in data.read_text()


# -- output schema ----------------------------------------------------------------


def test_invalid_json_is_reasked_then_accepted(tmp_path: Path, fake_server: FakeServer) -> None:
    fake_server.script(system=EVALUATOR, reply="Looks good to me!", times=1)
    fake_server.script(system=EVALUATOR, json=verdict("accept"))
    outcome, events = run(tmp_path, fake_server, "care")
    assert outcome.status == "completed", outcome.error
    (retry,) = typed(events, "retry")
    assert (retry.agent, retry.category, retry.code) == (
        "evaluator",
        "validation",
        "PLINY-VALIDATION-SCHEMA",
    )
    first, second = of(fake_server, EVALUATOR)
    assert "does not match the required JSON Schema" in second.last_user
    assert "not valid JSON" in second.last_user


def test_always_invalid_json_fails_the_agent(tmp_path: Path, fake_server: FakeServer) -> None:
    fake_server.script(system=EVALUATOR, json={"verdict": "maybe", "score": 99})
    outcome, events = run(tmp_path, fake_server, "care")
    assert outcome.status == "failed"
    assert outcome.exit_code == 1
    assert outcome.error is not None and outcome.error.code == "PLINY-VALIDATION-SCHEMA"
    (failed,) = typed(events, "agent_failed")
    assert (failed.agent, failed.code, failed.category) == (
        "evaluator",
        "PLINY-VALIDATION-SCHEMA",
        "validation",
    )
    assert len(of(fake_server, EVALUATOR)) == 3  # first answer + validation.max_retries (2)
    assert [e.attempt for e in typed(events, "retry")] == [1, 2]
    assert outcome.session.status == "failed"


# -- Python API -------------------------------------------------------------------


def test_api_run_calls_the_callbacks(tmp_path: Path, fake_server: FakeServer) -> None:
    seen: dict[str, list[Event]] = {"phase": [], "agent": [], "llm": []}
    outcome = pliny.api.run(
        "rise",
        "Summarise the repo",
        workspace=tmp_path,
        env=env(fake_server),
        on_phase_start=seen["phase"].append,
        on_agent_end=seen["agent"].append,
        on_llm_call=seen["llm"].append,
    )
    assert outcome.status == "completed", outcome.error
    assert [e.phase for e in seen["phase"]] == list(RISE_AGENTS)
    assert sorted(e.agent for e in seen["agent"]) == sorted(sum(RISE_AGENTS.values(), []))
    assert all(e.type == "agent_completed" for e in seen["agent"])
    assert len(seen["llm"]) == len(fake_server.requests)


def test_api_stream_yields_every_event_in_order(tmp_path: Path, fake_server: FakeServer) -> None:
    fake_server.script(system=EVALUATOR, json=verdict("accept"))

    async def collect() -> list[Event]:
        return [
            e
            async for e in pliny.api.stream(
                "care", "Answer it", workspace=tmp_path, env=env(fake_server)
            )
        ]

    streamed = asyncio.run(collect())
    assert streamed[-1].type == "session_completed"
    session = streamed[-1].session
    assert session is not None
    logged = audit(tmp_path, session)
    # The stream is the same sequence the audit log holds, from session_started on.
    assert [(e.seq, e.type) for e in streamed] == [(e.seq, e.type) for e in logged]
    assert streamed[0].type == "session_started"
