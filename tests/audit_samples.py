"""Sample events shared by the audit tests and the benchmark."""

from __future__ import annotations

from typing import Any

from pliny.events import KNOWN, Event, LLMCall

# Non-default values for fields that exist on some event types, so a round
# trip proves those fields survive (defaults would survive by accident).
_FIELD_VALUES: dict[str, Any] = {
    "name": "after-research",
    "framework": "rise",
    "task": "write a report",
    "pid": 4242,
    "from_status": "crashed",
    "duration_ms": 12.5,
    "category": "network",
    "code": "E-NET",
    "message": "connection reset",
    "reason": "budget",
    "previous_pid": 99,
    "detail": "stale lock",
    "cycle": 2,
    "agents": ["a", "b"],
    "next": "identify",
    "succeeded": 2,
    "failed": 1,
    "model": "gpt-4o-2024-08-06",
    "output_path": "out/a.md",
    "files_written": ["x.txt"],
    "reused": True,
    "attempts": 3,
    "skipped": True,
    "waiting": 2,
    "endpoint": "127.0.0.1:8000",
    "prompt_tokens": 1200,
    "completion_tokens": 345,
    "cached_tokens": 200,
    "tokens_estimated": True,
    "latency_ms": 812.25,
    "cost_usd": None,
    "pricing_hash": "abc123",
    "attempt": 2,
    "request_id": "req-1",
    "request_hash": "rh",
    "replayed": True,
    "cache_hit": True,
    "finish_reason": "stop",
    "tool_calls": 1,
    "tool": "write_file",
    "arguments": {"path": "a.txt", "n": 1},
    "ok": False,
    "error": "denied",
    "by": "engine",
    "delay_ms": 500.0,
    "recoverable": True,
    "ref": "refs/pliny/x",
    "commit": "deadbeef",
    "files": ["a.txt"],
    "scope": "phase:research",
    "limit": "max_tokens",
    "limit_value": 100,
    "used": 90,
    "estimate": 20,
    "rule": "slow",
    "metric": "latency_ms",
    "value": 9.5,
    "threshold": 5,
    "failures": 5,
    "reopen_in_s": 30,
    "side_file": "x.torn-1",
    "bytes": 17,
}


def every_event_type() -> list[Event]:
    """One instance of every known event model, with non-default field values."""
    out: list[Event] = []
    for cls in KNOWN:
        fields = {k: v for k, v in _FIELD_VALUES.items() if k in cls.model_fields}
        for type_name in cls.model_fields["type"].annotation.__args__:  # type: ignore[union-attr]
            out.append(cls(type=type_name, session="s1", phase="research", agent="alice", **fields))
    return out


def llm_call(i: int = 0, **over: Any) -> LLMCall:
    """A realistic llm_call event (what the engine emits once per model call)."""
    fields: dict[str, Any] = {
        "session": "bench-session",
        "phase": "research",
        "agent": f"agent-{i % 4}",
        "model": "gpt-4o-mini-2024-07-18",
        "endpoint": "api.openai.com",
        "prompt_tokens": 1500 + i % 97,
        "completion_tokens": 320,
        "cached_tokens": 1024,
        "latency_ms": 843.21,
        "cost_usd": 0.0004236,
        "pricing_hash": "320edc12e1a8",
        "attempt": 1,
        "request_id": f"chatcmpl-{i:012d}",
        "request_hash": "9f2c4b1e7a0d3c5b8e6f1a2d4c7b9e0f",
        "finish_reason": "stop",
    }
    fields.update(over)
    return LLMCall(**fields)


def sample_session(session: str = "demo") -> list[Event]:
    """A small two-phase session with a crash, a resume and a rollback.

    Totals by hand: 3 paid calls (+1 replayed), prompt 2300, completion 600,
    cached 100, 1 estimated, cost $0.03 + 1 unpriced, 1 network retry,
    1 error, 1 agent failure, 1 tool call, 1 checkpoint.
    """
    from pliny import events as ev

    r, i = {"session": session, "phase": "research"}, {"session": session, "phase": "identify"}
    return [
        ev.SessionStarted(session=session, name="Demo", framework="rise", task="t"),
        ev.PhaseStarted(**r, agents=["alice", "bob"]),
        ev.AgentStarted(**r, agent="alice", model="gpt-4o"),
        ev.AgentStarted(**r, agent="bob", model="mystery-model"),
        ev.LLMCall(
            **r,
            agent="alice",
            model="gpt-4o",
            prompt_tokens=1000,
            completion_tokens=200,
            cached_tokens=100,
            cost_usd=0.01,
            latency_ms=120,
        ),
        ev.Retry(**r, agent="bob", category="network", attempt=1, delay_ms=500),
        ev.LLMCall(
            **r,
            agent="bob",
            model="mystery-model",
            prompt_tokens=500,
            completion_tokens=100,
            tokens_estimated=True,
            cost_usd=None,
        ),
        ev.ToolCall(**r, agent="alice", tool="write_file", arguments={"path": "a.md"}),
        ev.Error(**r, agent="bob", category="network", message="reset", recoverable=True),
        ev.AgentCompleted(**r, agent="alice", duration_ms=1500),
        ev.AgentFailed(**r, agent="bob", category="ai", message="gave up", skipped=True),
        ev.PhaseCompleted(**r, duration_ms=2000, succeeded=1, failed=1),
        ev.CheckpointCreated(session=session, name="after-research", commit="abc123"),
        ev.CrashDetected(session=session, previous_pid=4242),
        ev.SessionResumed(session=session, from_status="crashed"),
        ev.PhaseStarted(**i, agents=["carol"]),
        ev.AgentStarted(**i, agent="carol", model="gpt-4o"),
        ev.LLMCall(
            **i,
            agent="carol",
            model="gpt-4o",
            prompt_tokens=300,
            completion_tokens=50,
            cost_usd=0.0,
            replayed=True,
        ),
        ev.LLMCall(
            **i,
            agent="carol",
            model="gpt-4o",
            prompt_tokens=800,
            completion_tokens=300,
            cost_usd=0.02,
        ),
        ev.AgentCompleted(**i, agent="carol", duration_ms=900),
        ev.PhaseCompleted(**i, duration_ms=1000, succeeded=1),
        ev.Rollback(session=session, name="after-research", commit="abc123"),
        ev.SessionCompleted(session=session, duration_ms=5000),
    ]
