"""OpenTelemetry traces, live (`--otlp`, OTEL_EXPORTER_OTLP_ENDPOINT) and from the audit log.

Real parts: the `pliny` CLI in a subprocess, the fake OpenAI server, the real
OTLP/HTTP exporter, and a real OTLP receiver on 127.0.0.1 (tests/otlp_receiver.py)
decoding the protobuf it is sent. The session is the fault matrix's solo agent:
a recorded tool turn, then a 401 (the session fails); the resume replays the
recorded turn and finishes.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pliny.audit.reader import read_events
from pliny.events import (
    AgentStarted,
    CrashDetected,
    Event,
    LLMCall,
    PhaseStarted,
    SessionCompleted,
    SessionResumed,
    SessionStarted,
    ToolCall,
)
from pliny.observe.otel import spans_of
from tests.fakeserver import FakeServer
from tests.otlp_receiver import OtlpReceiver, Received, decode_json
from tests.support import cli

SOLO = (
    "name: solo\nphases:\n  - name: work\n    agents:\n      - name: worker\n"
    "        role: You are the solo worker\n        prompt: 'Do {{task}}'\n"
    "        tools: [list_files]\n"
)
TOOL_TURN = {"name": "list_files", "arguments": {}}


def pliny(ws: Path, *args: str, server: FakeServer, **env: str) -> subprocess.CompletedProcess:
    return cli.pliny(ws, *args, server=server, env=env, drop=("OTEL_",), timeout=90)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(spans: list[Received]) -> list[tuple[str, str, str]]:
    """(name, parent name, status) per span, in start order: the shape of the trace."""
    by_id = {s.span_id: s for s in spans}
    ordered = sorted(spans, key=lambda s: (s.start_ns, s.name))
    return [
        (s.name, by_id[s.parent_id].name if s.parent_id else "", ("", "ok", "error")[s.status])
        for s in ordered
    ]


def comparable(spans: list[Received]) -> set[tuple]:
    return {
        (
            s.name,
            s.trace_id,
            s.span_id,
            s.parent_id,
            s.start_ns,
            s.end_ns,
            s.status,
            json.dumps(s.attributes, sort_keys=True),
        )
        for s in spans
    }


def failed_then_resumed(ws: Path, server: FakeServer, rx: OtlpReceiver) -> tuple[str, list, list]:
    """Run 1 with --otlp (fails on a 401), run 2 via the environment variable (completes)."""
    (ws / "solo.yaml").write_text(SOLO)
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    server.cached_tokens = 3  # the provider's prompt cache served 3 of the prompt tokens
    server.script(tool_calls=[TOOL_TURN], times=1)
    server.fail(401)
    first = pliny(
        ws, "execute", "-f", "solo.yaml", "-t", "fix it", "--otlp", rx.url, "--json", server=server
    )
    assert first.returncode == 1, first.stderr
    session = json.loads(first.stdout)["session"]
    run1 = rx.spans
    rx.clear()
    server.reset()
    server.cached_tokens = 3
    second = pliny(
        ws, "session", "resume", "--json", server=server, OTEL_EXPORTER_OTLP_ENDPOINT=rx.url
    )
    assert second.returncode == 0, second.stderr
    return session, run1, rx.spans


@pytest.mark.slow  # ~5 s: real CLI runs
def test_live_span_tree_of_a_failed_then_resumed_session(
    tmp_path: Path, fake_server: FakeServer, receiver: OtlpReceiver
) -> None:
    session, run1, run2 = failed_then_resumed(tmp_path, fake_server, receiver)
    assert tree(run1) == [
        ("invoke_workflow solo", "", "error"),
        ("invoke_agent worker", "invoke_workflow solo", "error"),
        ("chat gpt-4o-mini", "invoke_agent worker", ""),
        ("execute_tool list_files", "invoke_agent worker", ""),
    ]
    assert tree(run2) == [
        ("invoke_workflow solo", "", ""),
        ("invoke_agent worker", "invoke_workflow solo", ""),
        ("chat gpt-4o-mini", "invoke_agent worker", ""),  # replayed
        ("execute_tool list_files", "invoke_agent worker", ""),
        ("chat gpt-4o-mini", "invoke_agent worker", ""),
        ("execute_tool write_file", "invoke_agent worker", ""),
    ]
    # one trace per session, one workflow span per run
    assert len({s.trace_id for s in run1 + run2}) == 1
    workflow1, workflow2 = (
        next(s for s in r if s.name.startswith("invoke_workflow")) for r in (run1, run2)
    )
    assert workflow1.attributes["error.type"] == "PLINY-CONFIG-AUTH"
    assert (workflow1.attributes["pliny.status"], workflow2.attributes["pliny.status"]) == (
        "failed",
        "completed",
    )
    assert workflow2.attributes["pliny.resumed"] is True
    assert workflow2.attributes["pliny.resumed_from"] == "failed"
    assert {s.attributes["pliny.session"] for s in run1 + run2} == {session}
    assert {s.service for s in run1 + run2} == {"pliny"}
    agent1 = next(s for s in run1 if s.name == "invoke_agent worker")
    assert agent1.attributes["error.type"] == "PLINY-CONFIG-AUTH" and "401" in agent1.status_message

    # chat spans carry what the audit log recorded, and replayed ones cost 0
    calls = [
        e
        for e in read_events(tmp_path / "audit-logs" / f"{session}.jsonl")
        if isinstance(e, LLMCall)
    ]
    chats = sorted((s for s in run1 + run2 if s.name.startswith("chat")), key=lambda s: s.start_ns)
    assert [c.attributes["pliny.replayed"] for c in chats] == [False, True, False]
    assert [c.replayed for c in calls] == [False, True, False]
    for span, call in zip(chats, calls, strict=True):
        a = span.attributes
        assert a["gen_ai.operation.name"] == "chat" and a["pliny.phase"] == "work"
        assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == "gpt-4o-mini"
        assert a["gen_ai.usage.input_tokens"] == call.prompt_tokens > 0
        assert a["gen_ai.usage.output_tokens"] == call.completion_tokens > 0
        assert a["gen_ai.usage.cache_read.input_tokens"] == call.cached_tokens == 3
        assert a["pliny.cost_usd"] == (0.0 if call.replayed else call.cost_usd)
        assert (span.end_ns - span.start_ns) == pytest.approx(call.latency_ms * 1e6, abs=1000)
    paid = [c for c in calls if not c.replayed]
    assert all(c.cost_usd and c.price_source.startswith("genai-prices ") for c in paid)
    assert all(c.price_provider == "openai" for c in paid)

    # after the fact: the audit log gives the same spans, ids and times included
    receiver.clear()
    sent = pliny(
        tmp_path, "audit", "export", session, "--endpoint", receiver.url, server=fake_server
    )
    assert sent.returncode == 0, sent.stderr
    assert comparable(receiver.spans) == comparable(run1 + run2)
    out = tmp_path / "trace.json"
    written = pliny(
        tmp_path, "audit", "export", session, "--format", "json", "-o", str(out), server=fake_server
    )
    assert written.returncode == 0, written.stderr
    assert comparable(decode_json(out.read_text())) == comparable(run1 + run2)


@pytest.mark.slow  # ~7 s: real CLI runs
def test_unreachable_endpoint_warns_and_the_session_completes(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    proc = pliny(
        tmp_path,
        "execute",
        "-f",
        "rise",
        "-t",
        "Write a haiku",
        "--checkpoint",
        "none",
        "--otlp",
        url,
        "--json",
        server=fake_server,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "completed"
    warnings = [line for line in proc.stderr.splitlines() if "OTLP" in line]
    assert warnings == [
        f"pliny: warning: OTLP export to {url}/v1/traces failed: spans dropped "
        "(the session goes on)"
    ]
    # the after-the-fact export, by contrast, is the command's whole job: it fails
    session = json.loads(proc.stdout)["session"]
    sent = pliny(
        tmp_path,
        "audit",
        "export",
        session,
        "--endpoint",
        url,
        server=fake_server,
        OTEL_EXPORTER_OTLP_TIMEOUT="1",
    )  # seconds, the standard variable
    assert sent.returncode == 1
    assert sent.stderr.strip() == f"pliny: error: OTLP export to {url}/v1/traces failed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["execute", "-t", "x", "--otlp", "localhost:4318"],
            "--otlp: expected an http(s) URL, got 'localhost:4318'",
        ),
        (
            ["audit", "export", "S", "--format", "zipkin"],
            "--format: expected one of otlp, json, got 'zipkin'",
        ),
        (
            ["audit", "export", "S"],
            "--format otlp needs --endpoint URL or OTEL_EXPORTER_OTLP_ENDPOINT (or -o FILE)",
        ),
        (
            ["audit", "export", "S", "--endpoint", "ftp://x"],
            "--endpoint: expected an http(s) URL, got 'ftp://x'",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, fake_server: FakeServer, args: list[str], message: str
) -> None:
    proc = pliny(tmp_path, *args, server=fake_server)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"pliny: error: {message}"]
    assert list(tmp_path.iterdir()) == []


def test_otlp_file_is_the_protobuf_the_exporter_posts(tmp_path: Path) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from pliny.observe.otel import otlp_request
    from tests.otlp_receiver import decode

    spans = spans_of(crashed_run())
    message = ExportTraceServiceRequest()
    message.ParseFromString(otlp_request(spans).SerializeToString())
    assert [s.name for s in decode(message)] == [s.name for s in spans]


# -- the builder on events made by hand ------------------------------------------------


def crashed_run() -> list[Event]:
    """A run whose process died mid-agent (no ending events), with a cache-hit call."""
    common = {"session": "s1"}
    events: list[Event] = [
        SessionStarted(framework="rise", ts="2025-09-01T10:00:00.000000Z", seq=1, **common),
        PhaseStarted(phase="research", ts="2025-09-01T10:00:00.100000Z", seq=2, **common),
        AgentStarted(
            phase="research",
            agent="a",
            model="gpt-4o",
            ts="2025-09-01T10:00:00.200000Z",
            seq=3,
            **common,
        ),
        LLMCall(
            phase="research",
            agent="a",
            model="gpt-4o",
            cache_hit=True,
            cost_usd=0.0,
            attempt=0,
            ts="2025-09-01T10:00:00.300000Z",
            seq=4,
            **common,
        ),
        ToolCall(
            phase="research",
            agent="a",
            tool="read_file",
            ok=False,
            error="no such file",
            duration_ms=5,
            ts="2025-09-01T10:00:00.400000Z",
            seq=5,
            **common,
        ),
        LLMCall(
            phase="research",
            agent="a",
            model="mystery",
            cost_usd=None,
            latency_ms=250,
            prompt_tokens=10,
            completion_tokens=2,
            ts="2025-09-01T10:00:01.000000Z",
            seq=6,
            **common,
        ),
    ]
    return events


def test_a_crashed_run_ends_interrupted_at_its_last_event() -> None:
    spans = {s.name: s for s in spans_of(crashed_run())}
    run, agent = spans["invoke_workflow rise"], spans["invoke_agent a"]
    last = 1_756_720_801_000_000_000  # 2025-09-01T10:00:01Z in ns
    assert run.end_time == agent.end_time == last
    assert run.start_time == last - 1_000_000_000
    assert run.attributes["pliny.status"] == "interrupted"
    assert agent.status.status_code.name == run.status.status_code.name == "ERROR"
    assert [e.name for e in run.events] == ["phase_started"]
    hit = spans["chat gpt-4o"]
    assert (hit.attributes["pliny.cache_hit"], hit.attributes["pliny.cost_usd"]) == (True, 0.0)
    assert hit.parent.span_id == agent.context.span_id
    unpriced = spans["chat mystery"]
    assert "pliny.cost_usd" not in unpriced.attributes
    assert unpriced.attributes["pliny.unpriced"] is True
    assert unpriced.end_time - unpriced.start_time == 250_000_000
    tool = spans["execute_tool read_file"]
    assert tool.status.status_code.name == "ERROR" and tool.status.description == "no such file"
    assert tool.attributes["error.type"] == "tool_error"


def test_api_run_with_otlp_has_sent_every_span_when_it_returns(
    tmp_path: Path, fake_server: FakeServer, receiver: OtlpReceiver
) -> None:
    import pliny as api

    env = {"OPENAI_BASE_URL": fake_server.base_url, "OPENAI_API_KEY": "sk-test"}
    outcome = api.run(
        "rise",
        "Write a haiku",
        workspace=tmp_path,
        env=env,
        otlp=receiver.url,
        overrides={"execution": {"checkpoint": "none"}},
    )
    assert outcome.status == "completed"
    names = [s.name for s in receiver.spans]
    assert names.count("invoke_workflow rise") == 1
    assert names.count("invoke_agent planner") == 1 and len(names) > 10
    calls = [
        e
        for e in read_events(tmp_path / "audit-logs" / f"{outcome.session.id}.jsonl")
        if isinstance(e, LLMCall)
    ]
    assert len([n for n in names if n.startswith("chat ")]) == len(calls) == 6


def test_a_resume_after_a_crash_closes_the_dead_run_at_its_last_event() -> None:
    later = [
        CrashDetected(session="s1", ts="2025-09-01T11:00:00.000000Z", seq=7),
        SessionResumed(
            session="s1", from_status="crashed", ts="2025-09-01T11:00:00.100000Z", seq=8
        ),
        SessionCompleted(session="s1", ts="2025-09-01T11:00:02.000000Z", seq=9),
    ]
    runs = sorted(
        (s for s in spans_of(crashed_run() + later) if s.name == "invoke_workflow rise"),
        key=lambda s: s.start_time,
    )
    dead, resumed = runs
    assert dead.end_time == 1_756_720_801_000_000_000  # its last event, not the resume
    assert dead.attributes["pliny.status"] == "crashed" and dead.status.status_code.name == "ERROR"
    assert resumed.attributes["pliny.status"] == "completed"
    assert (resumed.attributes["pliny.run"], resumed.attributes["pliny.resumed_from"]) == (
        2,
        "crashed",
    )
    assert resumed.context.trace_id == dead.context.trace_id
