"""The fault matrix: every endpoint failure through the real engine path.

Each case runs ``pliny.lifecycle.runner.execute`` on a one-phase, one-agent framework in
a tmp_path workspace against the fake OpenAI server, with the network strategy
``max_retries: 2, initial_delay: 10 ms, jitter: false``. The agent first asks
for a tool (a recorded turn), then its second turn meets the fault, so a
resume can prove it does not re-send what is already recorded.

Attempts are counted AT THE SERVER (requests that met the fault).

=========================== ========== ======================= ========= ========================
fault                       category   code                    at server outcome
=========================== ========== ======================= ========= ========================
429 + Retry-After 0.3 s, x1 network    PLINY-NET-RATE-LIMIT    2         success, 2nd >= 0.3 s
429 persistent              network    PLINY-NET-RATE-LIMIT    3         failed (1), resumable
500                         network    PLINY-NET-SERVER        3         failed (1), resumable
502                         network    PLINY-NET-SERVER        3         failed (1), resumable
503                         network    PLINY-NET-SERVER        3         failed (1), resumable
hang past llm.timeout 0.3 s network    PLINY-NET-TIMEOUT       3         failed (1), resumable
dropped connection          network    PLINY-NET-DROPPED       3         failed (1), resumable
not JSON (application/json) network    PLINY-NET-BAD-RESPONSE  3         failed (1), resumable
not JSON (text/html)        network    PLINY-NET-BAD-RESPONSE  3         failed (1), resumable
body cut mid-transfer       network    PLINY-NET-DROPPED       3         failed (1), resumable
body incomplete (no cut)    network    PLINY-NET-BAD-RESPONSE  3         failed (1), resumable
each network fault, times=2 network    (as above)              3         success on the 3rd
400 context_length_exceeded ai         PLINY-AI-CONTEXT-LENGTH 2 + 1 fb  success on fallback
400 context_length, no fb   ai         PLINY-AI-CONTEXT-LENGTH 2         failed (1), hint
empty answer                ai         PLINY-AI-EMPTY          2 + 1 fb  success on fallback
401                         config     PLINY-CONFIG-AUTH       1         fails fast (1), resumable
=========================== ========== ======================= ========= ========================

"failed (1)": session status failed, exit code 1, the error names the agent,
category, code, attempts and the next step; "resumable": after the fault is
removed, ``execute`` on the same session completes and the server receives
only the unfinished turn (the recorded one is replayed). "fb": the request
sent to ``llm.fallback_models[0]``.

Truncated *stream*: not applicable, Pliny never sets ``stream: true``; the
fake server's ``truncated_stream`` fault on a plain response (Content-Length
promised, socket cut halfway) is the "body cut mid-transfer" row. The AI rows
send the failing request twice to the primary model before the fallback
(``ai.max_retries: 1`` spent on an identical request); see the xfail test.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pliny.audit.reader import read_events
from pliny.events import Event
from pliny.lifecycle.runner import Outcome, RunOptions, execute
from pliny.lifecycle.store import SessionStore
from tests.fakeserver import FakeServer, RecordedRequest

ROLE = "You are the solo worker"
TOOL_TURN = {"name": "list_files", "arguments": {}}
NET_RETRIES = 2


def solo_framework(
    tmp_path: Path, *, agent_extra: str = "", phase_extra: str = "", tools: str = "[list_files]"
) -> str:
    """A one-phase, one-agent framework file; extra YAML is indented into place."""
    path = tmp_path / "solo.yaml"
    path.write_text(
        "name: solo\nphases:\n  - name: work\n" + phase_extra + "    agents:\n"
        f"      - name: worker\n        role: {ROLE}\n        prompt: 'Do {{{{task}}}}'\n"
        f"        tools: {tools}\n" + agent_extra
    )
    return str(path)


def env(server: FakeServer) -> dict[str, str]:
    return {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test"}


def settings(
    *, timeout: float = 10.0, fallback: list[str] | None = None, **strategies: dict[str, Any]
) -> dict[str, Any]:
    network = {"max_retries": NET_RETRIES, "initial_delay": 10, "jitter": False}
    return {
        "llm": {"model": "fake-model", "timeout": timeout, "fallback_models": fallback or []},
        "error_handling": {"retry_strategies": {"network": network, **strategies}},
    }


@dataclass
class Run:
    outcome: Outcome
    events: list[Event] = field(default_factory=list)  # the whole session's audit log

    def typed(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.type == kind]

    def since_resume(self, kind: str) -> list[Event]:
        starts = [i for i, e in enumerate(self.events) if e.type == "session_resumed"]
        return [e for e in self.events[starts[-1] :] if e.type == kind]


def run(
    ws: Path,
    server: FakeServer,
    framework: str | None = None,
    overrides: dict[str, Any] | None = None,
    session: str | None = None,
    listeners: list[Callable[[Event], None]] | None = None,
) -> Run:
    opts = RunOptions(
        workspace=ws,
        framework=framework,
        task=None if session else "fix it",
        session_id=session,
        overrides=overrides or {},
        env=env(server),
        listeners=listeners or [],
    )
    outcome = asyncio.run(execute(opts))
    return Run(outcome, read_events(ws / "audit-logs" / f"{outcome.session.id}.jsonl"))


def faulted(server: FakeServer) -> list[RecordedRequest]:
    return [r for r in server.requests if r.outcome != "reply"]


def has_tool_result(request: RecordedRequest) -> bool:
    return any(m.get("role") == "tool" for m in request.messages)


@dataclass(frozen=True)
class Fault:
    id: str
    what: int | str
    category: str
    code: str
    attempts: int
    kw: dict[str, Any] = field(default_factory=dict)
    timeout: float = 10.0


NETWORK_FAULTS = [
    Fault("429", 429, "network", "PLINY-NET-RATE-LIMIT", 3, {"retry_after": 0.05}),
    Fault("500", 500, "network", "PLINY-NET-SERVER", 3),
    Fault("502", 502, "network", "PLINY-NET-SERVER", 3),
    Fault("503", 503, "network", "PLINY-NET-SERVER", 3),
    Fault("hang", "hang", "network", "PLINY-NET-TIMEOUT", 3, timeout=0.3),
    Fault("drop", "drop", "network", "PLINY-NET-DROPPED", 3),
    Fault("not-json", "not_json", "network", "PLINY-NET-BAD-RESPONSE", 3),
    Fault(
        "html", "not_json", "network", "PLINY-NET-BAD-RESPONSE", 3, {"content_type": "text/html"}
    ),
    Fault("cut-body", "truncated_stream", "network", "PLINY-NET-DROPPED", 3),
    Fault("incomplete-body", "incomplete_stream", "network", "PLINY-NET-BAD-RESPONSE", 3),
]
AUTH = Fault("401", 401, "config", "PLINY-CONFIG-AUTH", 1)


# -- persistent faults: clear final error, resumable ------------------------------


@pytest.mark.parametrize("fault", [*NETWORK_FAULTS, AUTH], ids=lambda f: f.id)
def test_persistent_fault_fails_clearly_and_resumes(
    tmp_path: Path, fake_server: FakeServer, fault: Fault
) -> None:
    fake_server.script(tool_calls=[TOOL_TURN], times=1)
    fake_server.fail(fault.what, **fault.kw)
    first = run(tmp_path, fake_server, solo_framework(tmp_path), settings(timeout=fault.timeout))
    out = first.outcome

    assert len(faulted(fake_server)) == fault.attempts  # counted at the server
    assert all(has_tool_result(r) for r in faulted(fake_server))
    assert [(e.category, e.code, e.attempt) for e in first.typed("retry")] == [
        (fault.category, fault.code, n) for n in range(1, fault.attempts)
    ]
    # exponential from 10 ms, no jitter; a Retry-After header is a floor
    floor = 1000 * fault.kw.get("retry_after", 0)
    assert [e.delay_ms for e in first.typed("retry")] == [
        max(10 * 2 ** (n - 1), floor) for n in range(1, fault.attempts)
    ]
    (failed,) = first.typed("agent_failed")
    assert (failed.agent, failed.category, failed.code, failed.attempts) == (
        "worker",
        fault.category,
        fault.code,
        fault.attempts,
    )
    assert (out.status, out.exit_code) == ("failed", 1)
    assert SessionStore(tmp_path).load(out.session.id).status == "failed"
    (ended,) = first.typed("session_failed")
    assert (ended.category, ended.code) == (fault.category, fault.code)
    message = str(out.error)
    tries = f"after {fault.attempts} attempt{'s' if fault.attempts > 1 else ''}"
    assert "worker" in message and fault.category in message and tries in message, message
    next_step = "API key" if fault.category == "config" else "pliny session resume"
    assert next_step in message, message

    fake_server.reset()  # the fault is gone
    second = run(tmp_path, fake_server, session=out.session.id)
    assert second.outcome.status == "completed", second.outcome.error
    (resent,) = fake_server.requests  # only the unfinished turn goes out again
    assert has_tool_result(resent)
    replayed = [e.replayed for e in second.since_resume("llm_call")]
    assert replayed == [True, False]


@pytest.mark.parametrize("fault", NETWORK_FAULTS, ids=lambda f: f.id)
def test_transient_fault_succeeds_on_the_third_attempt(
    tmp_path: Path, fake_server: FakeServer, fault: Fault
) -> None:
    fake_server.fail(fault.what, times=2, **fault.kw)
    result = run(
        tmp_path, fake_server, solo_framework(tmp_path, tools="[]"), settings(timeout=fault.timeout)
    )
    assert result.outcome.status == "completed", result.outcome.error
    assert [r.outcome for r in fake_server.requests][2] == "reply"
    assert len(fake_server.requests) == 3
    assert [(e.code, e.attempt) for e in result.typed("retry")] == [
        (fault.code, 1),
        (fault.code, 2),
    ]
    (call,) = result.typed("llm_call")
    assert call.attempt == 3 and call.request_id == f"chatcmpl-fake{fake_server.last.id}"


def test_retry_after_is_waited_for(tmp_path: Path, fake_server: FakeServer) -> None:
    fake_server.fail(429, retry_after=0.3, times=1)
    result = run(tmp_path, fake_server, solo_framework(tmp_path, tools="[]"), settings())
    assert result.outcome.status == "completed", result.outcome.error
    limited, answered = fake_server.requests
    assert limited.outcome == "status:429"
    assert answered.time - limited.time >= 0.3  # initial_delay is 10 ms: the header decided
    (retry,) = result.typed("retry")
    assert (retry.code, retry.delay_ms) == ("PLINY-NET-RATE-LIMIT", 300)


# -- AI category: the fallback model ----------------------------------------------


@pytest.mark.parametrize(
    ("fault", "code"), [("context_length", "PLINY-AI-CONTEXT-LENGTH"), ("empty", "PLINY-AI-EMPTY")]
)
def test_ai_failure_switches_to_the_fallback_model(
    tmp_path: Path, fake_server: FakeServer, fault: str, code: str
) -> None:
    fake_server.fail(fault, model="fake-model")
    result = run(
        tmp_path,
        fake_server,
        solo_framework(tmp_path, tools="[]"),
        settings(fallback=["fallback-model"]),
    )
    assert result.outcome.status == "completed", result.outcome.error
    assert [r.model for r in fake_server.requests].count("fallback-model") == 1
    assert fake_server.last.model == "fallback-model"
    assert {r.outcome for r in fake_server.requests if r.model == "fake-model"} <= {
        "status:400",
        "empty",
    }
    assert {(e.category, e.code) for e in result.typed("retry")} <= {("ai", code)}
    (switch,) = result.typed("error")
    assert (switch.category, switch.code, switch.recoverable) == ("ai", code, True)
    assert switch.message.startswith("fake-model: ")
    calls = result.typed("llm_call")
    (call,) = [c for c in calls if not c.rejected]
    assert call.model == "fallback-model"
    # An empty answer was still paid for: it is recorded, marked rejected.
    rejected = [(c.model, c.rejected) for c in calls if c.rejected]
    assert rejected == ([("fake-model", code)] if fault == "empty" else [])
    sid = result.outcome.session.id
    saved = (tmp_path / "pliny-runs" / sid / "work" / "worker.md").read_text()
    assert saved.startswith("[fake:fallback-model]")


def test_context_length_is_not_resent_to_the_same_model(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    fake_server.fail("context_length", model="fake-model")
    result = run(
        tmp_path,
        fake_server,
        solo_framework(tmp_path, tools="[]"),
        settings(fallback=["fallback-model"]),
    )
    assert result.outcome.status == "completed"
    assert [r.model for r in fake_server.requests] == ["fake-model", "fallback-model"]


def test_context_length_without_fallback_says_what_to_do(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    fake_server.fail("context_length")
    result = run(tmp_path, fake_server, solo_framework(tmp_path, tools="[]"), settings())
    out = result.outcome
    assert (out.status, out.exit_code) == ("failed", 1)
    assert out.error is not None and (out.error.category, out.error.code) == (
        "ai",
        "PLINY-AI-CONTEXT-LENGTH",
    )
    assert len(fake_server.requests) == 2  # ai.max_retries 1 (default)
    assert "llm.fallback_models" in str(out.error) and "worker" in str(out.error)


# -- validation re-ask and tool-error feedback ------------------------------------

SCHEMA = (
    "        output_schema:\n          type: object\n          required: [answer]\n"
    "          properties:\n            answer: {type: string}\n"
)


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ({"reply": "Sure! Here it is."}, "not valid JSON"),
        ({"json": {"answer": 5}}, "answer: 5 is not of type 'string'"),
    ],
    ids=["prose", "wrong-type"],
)
def test_invalid_structured_answer_is_reasked(
    tmp_path: Path, fake_server: FakeServer, bad: dict[str, Any], problem: str
) -> None:
    fake_server.script(times=1, **bad)
    fake_server.script(json={"answer": "fixed"})
    result = run(
        tmp_path, fake_server, solo_framework(tmp_path, tools="[]", agent_extra=SCHEMA), settings()
    )
    assert result.outcome.status == "completed", result.outcome.error
    first, second = fake_server.requests
    assert problem in second.last_user and problem not in first.last_user
    assert second.messages[-2]["role"] == "assistant"  # the bad answer is shown back
    (retry,) = result.typed("retry")
    assert (retry.category, retry.code, retry.attempt) == (
        "validation",
        "PLINY-VALIDATION-SCHEMA",
        1,
    )
    data = tmp_path / "pliny-runs" / result.outcome.session.id / "work" / "worker.json"
    assert json.loads(data.read_text()) == {"answer": "fixed"}


def test_tool_error_is_fed_back_to_the_model(tmp_path: Path, fake_server: FakeServer) -> None:
    fake_server.script(
        tool_calls=[{"name": "read_file", "arguments": {"path": "missing.txt"}}], times=1
    )
    result = run(tmp_path, fake_server, solo_framework(tmp_path, tools="[read_file]"), settings())
    assert result.outcome.status == "completed", result.outcome.error
    _, answered = fake_server.requests
    (tool_msg,) = [m for m in answered.messages if m.get("role") == "tool"]
    assert tool_msg["content"].startswith("error:") and "missing.txt" in tool_msg["content"]
    (call,) = [e for e in result.typed("tool_call") if e.by == "model"]
    assert (call.tool, call.ok) == ("read_file", False) and call.error


def test_repeated_tool_errors_fail_the_agent_as_tool(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    fake_server.script(tool_calls=[{"name": "read_file", "arguments": {"path": "missing.txt"}}])
    tool = {"max_retries": 1, "backoff": "constant", "initial_delay": 0}
    result = run(
        tmp_path, fake_server, solo_framework(tmp_path, tools="[read_file]"), settings(tool=tool)
    )
    out = result.outcome
    assert (out.status, out.exit_code) == ("failed", 1)
    assert len(fake_server.requests) == 2  # the first error is fed back, the second is one too many
    (failed,) = result.typed("agent_failed")
    assert (failed.agent, failed.category) == ("worker", "tool")
    assert "worker" in str(out.error) and "missing.txt" in str(out.error)


# -- visibility: `pliny audit summary` counts retries per category ----------------


def test_audit_summary_counts_retries_per_category(tmp_path: Path, fake_server: FakeServer) -> None:
    fake_server.fail(503, times=2)
    fake_server.script(reply="not json", times=1)
    fake_server.script(json={"answer": "ok"})
    result = run(
        tmp_path, fake_server, solo_framework(tmp_path, tools="[]", agent_extra=SCHEMA), settings()
    )
    assert result.outcome.status == "completed", result.outcome.error
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from pliny.cli import main; main()",
            "audit",
            "summary",
            result.outcome.session.id,
            "--json",
            "-w",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=child_env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["totals"]["retries"] == {"network": 2, "validation": 1}
    (agent,) = summary["agents"]
    assert agent["retries"] == {"network": 2, "validation": 1}
