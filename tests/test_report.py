"""Summary aggregation (numbers computed by hand from tests/audit_samples.sample_session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pliny.audit.reader import read_events
from pliny.audit.summary import summarize
from pliny.audit.writer import AuditLog
from pliny.events import Event, LLMCall, PhaseCompleted, PhaseStarted
from tests.audit_samples import sample_session


def test_totals_phases_agents_and_history(tmp_path: Path) -> None:
    path = tmp_path / "demo.jsonl"
    with AuditLog(path, fsync="none") as log:
        for event in sample_session():
            log(event)
    s = summarize(read_events(path))
    t = s.totals
    assert (t.calls, t.replayed_calls, t.prompt_tokens, t.completion_tokens) == (3, 1, 2300, 600)
    assert (t.cached_tokens, t.estimated_calls, t.unpriced_calls) == (100, 1, 1)
    assert t.cost_usd == pytest.approx(0.03)
    assert (t.retries, t.errors, t.failures, t.tool_calls) == ({"network": 1}, 1, 1, 1)
    assert (s.session, s.name, s.framework, s.status) == ("demo", "Demo", "rise", "completed")
    assert (s.events, s.checkpoints, s.unpriced_models) == (23, 1, ["mystery-model"])

    phases = {p.name: p for p in s.phases}
    assert list(phases) == ["research", "identify"]
    research, identify = phases["research"], phases["identify"]
    assert (research.calls, research.cycles, research.duration_ms) == (2, 1, 2000)
    assert (research.cost_usd, research.unpriced_calls, research.failures) == (0.01, 1, 1)
    assert (identify.calls, identify.replayed_calls, identify.cost_usd) == (1, 1, 0.02)
    assert identify.prompt_tokens == 800

    agents = {a.name: a for a in s.agents}
    assert {n: a.status for n, a in agents.items()} == {
        "alice": "completed",
        "bob": "skipped",
        "carol": "completed",
    }
    assert (agents["alice"].duration_ms, agents["alice"].tool_calls) == (1500, 1)
    assert agents["bob"].retries == {"network": 1} and agents["bob"].errors == 1
    assert agents["carol"].phase == "identify" and agents["carol"].duration_ms == 900

    assert [h.type for h in s.history] == [
        "session_started",
        "crash_detected",
        "session_resumed",
        "rollback",
        "session_completed",
    ]
    assert "previous_pid=4242" in s.history[1].detail
    assert "name=after-research" in s.history[3].detail
    assert s.model_dump(mode="json")["totals"]["cost_usd"] == pytest.approx(0.03)


def test_phase_duration_from_timestamps_and_repeated_cycles() -> None:
    events: list[Event] = [
        PhaseStarted(phase="analyze", ts="2025-01-01T00:00:00.000000Z"),
        PhaseCompleted(phase="analyze", ts="2025-01-01T00:00:02.500000Z"),
        PhaseStarted(phase="analyze", cycle=2, ts="2025-01-01T00:00:03.000000Z"),
        PhaseCompleted(phase="analyze", cycle=2, ts="2025-01-01T00:00:04.000000Z"),
    ]
    s = summarize(events)
    assert (s.phases[0].cycles, s.phases[0].duration_ms) == (2, 3500)
    assert s.wall_ms == 4000 and s.status == "unknown"


def test_all_unpriced_session_is_not_reported_as_free() -> None:
    s = summarize([LLMCall(model="x", prompt_tokens=5, cost_usd=None) for _ in range(3)])
    assert (s.totals.calls, s.totals.unpriced_calls, s.totals.cost_usd) == (3, 3, 0.0)
    from pliny.cli.audit_render import _cost

    assert _cost(s.totals) == "unpriced"
