"""Graceful degradation through the real engine: phase failure policies and the
per-endpoint circuit breaker, against the fake OpenAI server.

One agent of a three-agent phase always gets HTTP 401 (matched on its role);
the phase's ``on_agent_failure`` / ``min_successful_agents`` decide what the
run does, and the next phase's prompt shows what it was given.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pliny.events import Event
from pliny.framework.model import load
from pliny.observe.progress import Progress, render
from tests import fakeserver_payloads as P
from tests.fakeserver import FakeServer, RecordedRequest
from tests.test_faults import run, settings, solo_framework

COMBINER = "You are the combiner"


def three_agents(tmp_path: Path, phase_extra: str) -> str:
    agents = "".join(
        f"      - name: {n}\n        role: You are agent {n}\n        prompt: '{n} {{{{task}}}}'\n"
        for n in ("alpha", "beta", "gamma")
    )
    path = tmp_path / "degrade.yaml"
    path.write_text(
        "name: degrade\nphases:\n  - name: gather\n"
        + phase_extra
        + "    agents:\n"
        + agents
        + "  - name: combine\n    agents:\n      - name: combiner\n"
        f"        role: {COMBINER}\n        prompt: 'Combine: {{{{gather}}}}'\n"
    )
    return str(path)


def of(server: FakeServer, role: str) -> list[RecordedRequest]:
    return [r for r in server.requests if role in r.system]


def reply_of(server: FakeServer, agent: str) -> str:
    (request,) = of(server, f"You are agent {agent}")
    return P.default_reply(request.body)


def beta_always_401(server: FakeServer) -> None:
    server.fail(401, system="You are agent beta")


@pytest.mark.parametrize("policy", ["skip", "continue"])
def test_failed_agent_is_left_out_or_reported(
    tmp_path: Path, fake_server: FakeServer, policy: str
) -> None:
    beta_always_401(fake_server)
    result = run(
        tmp_path,
        fake_server,
        three_agents(tmp_path, f"    on_agent_failure: {policy}\n"),
        settings(),
    )
    assert result.outcome.status == "completed", result.outcome.error
    assert result.outcome.exit_code == 0
    assert len(of(fake_server, "You are agent beta")) == 1  # config error: no retry
    (failed,) = result.typed("agent_failed")
    assert (failed.agent, failed.category, failed.code, failed.skipped) == (
        "beta",
        "config",
        "PLINY-CONFIG-AUTH",
        True,
    )
    gather = next(e for e in result.typed("phase_completed") if e.phase == "gather")
    assert (gather.succeeded, gather.failed) == (2, 1)
    (combiner,) = of(fake_server, COMBINER)
    prompt = combiner.last_user
    assert reply_of(fake_server, "alpha") in prompt and reply_of(fake_server, "gamma") in prompt
    if policy == "skip":
        assert "beta" not in prompt
    else:
        assert "(agent beta failed: HTTP 401" in prompt


def test_fail_policy_fails_the_session_and_resumes(tmp_path: Path, fake_server: FakeServer) -> None:
    beta_always_401(fake_server)
    framework = three_agents(tmp_path, "    on_agent_failure: fail\n")
    first = run(tmp_path, fake_server, framework, settings())
    out = first.outcome
    assert (out.status, out.exit_code) == ("failed", 1)
    assert not of(fake_server, COMBINER)  # the run stopped at the phase
    assert "beta" in str(out.error) and "config" in str(out.error)
    (failed,) = first.typed("agent_failed")
    assert (failed.agent, failed.skipped) == ("beta", False)
    recorded = {e.agent for e in first.typed("llm_call") if not e.replayed}
    fake_server.reset()
    second = run(tmp_path, fake_server, session=out.session.id)
    assert second.outcome.status == "completed", second.outcome.error
    # Only beta, the next phase, and a sibling the failure cancelled before its answer was
    # recorded go out; an answer recorded as paid is replayed, never paid again.
    sent = sorted(r.system for r in fake_server.requests)
    assert {COMBINER, "You are agent beta"} <= set(sent) and len(sent) == len(set(sent))
    assert not {f"You are agent {a}" for a in recorded} & set(sent), (recorded, sent)


def test_min_successful_agents_fails_the_phase(tmp_path: Path, fake_server: FakeServer) -> None:
    beta_always_401(fake_server)
    extra = "    on_agent_failure: skip\n    min_successful_agents: 3\n"
    result = run(tmp_path, fake_server, three_agents(tmp_path, extra), settings())
    out = result.outcome
    assert (out.status, out.exit_code) == ("failed", 1)
    assert out.error is not None and out.error.code == "PLINY-PHASE-FAILED"
    message = str(out.error)
    assert "gather" in message and "2/3" in message and "min_successful_agents is 3" in message
    assert "resume" in message
    assert not of(fake_server, COMBINER)


def test_phase_failure_names_the_failed_agent(tmp_path: Path, fake_server: FakeServer) -> None:
    beta_always_401(fake_server)
    extra = "    on_agent_failure: skip\n    min_successful_agents: 3\n"
    result = run(tmp_path, fake_server, three_agents(tmp_path, extra), settings())
    assert "beta" in str(result.outcome.error) and "PLINY-CONFIG-AUTH" in str(result.outcome.error)


def test_resume_after_phase_failure_retries_the_failed_agent(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    beta_always_401(fake_server)
    extra = "    on_agent_failure: skip\n    min_successful_agents: 3\n"
    first = run(tmp_path, fake_server, three_agents(tmp_path, extra), settings())
    assert first.outcome.status == "failed"
    fake_server.reset()  # the cause is fixed, as the hint asks
    second = run(tmp_path, fake_server, session=first.outcome.session.id)
    assert second.outcome.status == "completed", second.outcome.error


def test_skip_still_needs_one_success(tmp_path: Path, fake_server: FakeServer) -> None:
    fake_server.fail(401, system="You are agent")
    result = run(
        tmp_path, fake_server, three_agents(tmp_path, "    on_agent_failure: skip\n"), settings()
    )
    assert result.outcome.status == "failed"
    assert "0/3 agents succeeded" in str(result.outcome.error)
    assert len(result.typed("agent_failed")) == 3


# -- circuit breaker ----------------------------------------------------------------


def test_circuit_opens_stops_requests_and_closes_after_success(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    fake_server.fail(503, times=3)
    overrides = settings()
    overrides["error_handling"]["retry_strategies"]["network"]["max_retries"] = 5
    overrides["error_handling"]["circuit_breaker"] = {"failure_threshold": 2, "reset_timeout": 0.5}
    framework = solo_framework(tmp_path, tools="[]")
    progress = Progress.for_framework(load(framework))
    shown: list[str] = []  # the live view's caption whenever an attempt is rejected

    def live_view(event: Event) -> None:
        progress(event)
        if event.type == "retry" and event.code == "PLINY-NET-CIRCUIT-OPEN":
            shown.append(str(render(progress).caption))

    result = run(tmp_path, fake_server, framework, overrides, listeners=[live_view])
    assert result.outcome.status == "completed", result.outcome.error

    # attempts: 503, 503 (opens), rejected, trial 503 (reopens), rejected, trial ok (closes)
    (call,) = result.typed("llm_call")
    assert call.attempt == 6
    assert [r.outcome for r in fake_server.requests] == ["status:503"] * 3 + ["reply"]
    codes = [e.code for e in result.typed("retry")]
    assert codes.count("PLINY-NET-CIRCUIT-OPEN") == 2 and len(codes) == 5
    circuit = [e for e in result.events if e.type.startswith("circuit_")]
    assert [e.type for e in circuit] == ["circuit_opened", "circuit_opened", "circuit_closed"]
    assert circuit[0].endpoint == fake_server.url.removeprefix("http://")
    assert (circuit[0].failures, circuit[0].reopen_in_s) == (2, 0.5)
    # nothing reached the server while the circuit was open
    times = [r.time for r in fake_server.requests]
    assert times[2] - times[1] >= 0.45 and times[3] - times[2] >= 0.45
    endpoint = circuit[0].endpoint
    assert len(shown) == 2 and all(f"circuit OPEN: {endpoint}" in c for c in shown)
    assert not progress.circuit_open  # closed again at the end


def test_fallback_chain_is_followed_in_order(tmp_path: Path, fake_server: FakeServer) -> None:
    for model in ("fake-model", "fb-one"):
        fake_server.fail("context_length", model=model)
    chain = settings(fallback=["fb-one", "fb-two"])
    result = run(tmp_path, fake_server, solo_framework(tmp_path, tools="[]"), chain)
    assert result.outcome.status == "completed", result.outcome.error
    sent = list(dict.fromkeys(r.model for r in fake_server.requests))
    assert sent == ["fake-model", "fb-one", "fb-two"]
    assert [e.message.split(":")[0] for e in result.typed("error")] == ["fake-model", "fb-one"]
    (call,) = result.typed("llm_call")
    assert call.model == "fb-two"
