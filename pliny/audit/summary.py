"""Session summary computed from audit events (what ``pliny audit summary`` shows).

Calls, tokens and cost follow ``pliny.usage`` (the fold every view shares):
replayed and cache-hit calls are counted apart and add no tokens or cost;
unpriced calls (cost null) add no cost and are counted in ``unpriced_calls``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from pliny.events import Event
from pliny.usage import Usage

HISTORY_TYPES = frozenset(
    {
        "session_started",
        "session_resumed",
        "crash_detected",
        "rollback",
        "session_paused",
        "session_completed",
        "session_failed",
        "session_cancelled",
        "budget_exceeded",
        "log_repaired",
        "alert",
    }
)
_STATUS = {
    "session_started": "in_progress",
    "session_resumed": "in_progress",
    "crash_detected": "crashed",
    "session_completed": "completed",
    "session_failed": "failed",
    "session_cancelled": "cancelled",
    "session_paused": "paused",
}


class Stats(Usage):
    """Usage (calls, tokens, cost: see pliny.usage) plus what else went on."""

    tool_calls: int = 0
    retries: dict[str, int] = Field(default_factory=dict)  # by error category
    errors: int = 0
    failures: int = 0  # agent_failed events


class PhaseSummary(Stats):
    name: str
    cycles: int = 0
    duration_ms: float = 0.0


class AgentSummary(Stats):
    name: str
    phase: str | None = None
    status: str = "started"  # started | completed | reused | failed | skipped
    duration_ms: float = 0.0


class HistoryItem(BaseModel):
    seq: int | None
    ts: str
    type: str
    detail: str = ""


class Summary(BaseModel):
    session: str | None = None
    name: str = ""
    framework: str = ""
    status: str = "unknown"
    started: str | None = None
    ended: str | None = None
    wall_ms: float | None = None
    events: int = 0
    checkpoints: int = 0
    totals: Stats = Field(default_factory=Stats)
    phases: list[PhaseSummary] = Field(default_factory=list)
    agents: list[AgentSummary] = Field(default_factory=list)
    unpriced_models: list[str] = Field(default_factory=list)
    pricing_hashes: list[str] = Field(default_factory=list)
    price_sources: list[str] = Field(default_factory=list)  # genai-prices 0.2.3, pliny.yaml
    history: list[HistoryItem] = Field(default_factory=list)


def _ms_between(start: str, end: str) -> float:
    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() * 1000
    except ValueError:
        return 0.0


def _account(stats: Stats, event: Event) -> None:
    def field(name: str, default: object = None) -> Any:
        return getattr(event, name, default)  # known fields and extras alike

    if event.type == "llm_call":
        stats.add(event)
    elif event.type == "retry":
        category = field("category", "") or "unknown"
        stats.retries[category] = stats.retries.get(category, 0) + 1
    elif event.type == "error":
        stats.errors += 1
    elif event.type == "agent_failed":
        stats.failures += 1
    elif event.type == "tool_call":
        stats.tool_calls += 1


class _Builder:
    def __init__(self) -> None:
        self.summary = Summary()
        self.phases: dict[str, PhaseSummary] = {}
        self.agents: dict[str, AgentSummary] = {}
        self.phase_start: dict[str, str] = {}
        self.agent_start: dict[str, str] = {}

    def add(self, event: Event) -> None:
        s = self.summary
        s.events += 1
        s.session = s.session or event.session
        s.started = s.started or event.ts
        s.ended = event.ts
        targets: list[Stats] = [s.totals]
        if event.phase is not None:
            targets.append(self._phase(event.phase))
        if event.agent is not None:
            targets.append(self._agent(event.agent, event.phase))
        for stats in targets:
            _account(stats, event)
        self._lifecycle(event)

    def _phase(self, name: str) -> PhaseSummary:
        return self.phases.setdefault(name, PhaseSummary(name=name))

    def _agent(self, name: str, phase: str | None) -> AgentSummary:
        agent = self.agents.setdefault(name, AgentSummary(name=name))
        agent.phase = phase or agent.phase
        return agent

    def _lifecycle(self, event: Event) -> None:
        s, data = self.summary, event.model_dump()
        kind = event.type
        if kind in _STATUS:
            s.status = _STATUS[kind]
        if kind == "session_started":
            s.name, s.framework = data.get("name", ""), data.get("framework", "")
        elif kind == "checkpoint_created":
            s.checkpoints += 1
        elif kind == "llm_call":
            self._pricing(data)
        elif kind in ("phase_started", "phase_completed") and event.phase:
            self._phase_event(event, data)
        elif kind.startswith("agent_") and event.agent:
            self._agent_event(event, data)
        if kind in HISTORY_TYPES:
            s.history.append(
                HistoryItem(seq=event.seq, ts=event.ts, type=kind, detail=_detail(data))
            )

    def _pricing(self, data: dict) -> None:
        s = self.summary
        model = data.get("model", "")
        paid = not (data.get("replayed") or data.get("cache_hit"))
        if data.get("cost_usd") is None and paid and model not in s.unpriced_models:
            s.unpriced_models.append(model)
        if data.get("pricing_hash") and data["pricing_hash"] not in s.pricing_hashes:
            s.pricing_hashes.append(data["pricing_hash"])
        if (source := data.get("price_source")) and source not in s.price_sources:
            s.price_sources.append(source)

    def _phase_event(self, event: Event, data: dict) -> None:
        phase = self._phase(event.phase or "")
        if event.type == "phase_started":
            phase.cycles += 1
            self.phase_start[phase.name] = event.ts
            return
        start = self.phase_start.pop(phase.name, None)
        took = data.get("duration_ms") or (_ms_between(start, event.ts) if start else 0.0)
        phase.duration_ms += took

    def _agent_event(self, event: Event, data: dict) -> None:
        agent = self._agent(event.agent or "", event.phase)
        if event.type == "agent_started":
            self.agent_start[agent.name] = event.ts
            agent.status = "started"
            return
        if event.type not in ("agent_completed", "agent_failed"):
            return
        start = self.agent_start.pop(agent.name, None)
        took = data.get("duration_ms") or (_ms_between(start, event.ts) if start else 0.0)
        agent.duration_ms += took
        if event.type == "agent_completed":
            agent.status = "reused" if data.get("reused") else "completed"
        else:
            agent.status = "skipped" if data.get("skipped") else "failed"

    def finish(self) -> Summary:
        s = self.summary
        s.phases = list(self.phases.values())
        s.agents = list(self.agents.values())
        if s.started and s.ended:
            s.wall_ms = round(_ms_between(s.started, s.ended), 3)
        return s


def _detail(data: dict) -> str:
    keys = (
        "name",
        "from_status",
        "previous_pid",
        "reason",
        "message",
        "scope",
        "limit",
        "side_file",
        "commit",
        "rule",
        "duration_ms",
    )
    return ", ".join(f"{k}={data[k]}" for k in keys if data.get(k) not in (None, "", [], 0))


def summarize(events: Iterable[Event]) -> Summary:
    builder = _Builder()
    for event in events:
        builder.add(event)
    return builder.finish()
