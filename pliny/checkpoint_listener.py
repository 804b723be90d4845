"""Turns engine events into git checkpoints.

phase/step mode: one commit after each phase, named ``after-<phase>``
(``after-<phase>-<n>`` for the n-th cycle of a phase that repeats).
agent mode: additionally one commit per finished agent holding only that
agent's files, named ``after-<phase>.<agent>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pliny.events import AgentCompleted, CheckpointCreated, Event, EventBus, LLMCall, PhaseCompleted
from pliny.session import SessionState


class CheckpointListener:
    def __init__(self, store: Any, state: SessionState, mode: str, bus: EventBus) -> None:
        self.store = store
        self.state = state
        self.mode = mode
        self.bus = bus
        self.tokens = 0
        self.cost = 0.0

    @classmethod
    def open(
        cls, workspace: Path, state: SessionState, mode: str, bus: EventBus
    ) -> CheckpointListener:
        from pliny.checkpoints import CheckpointStore

        store = CheckpointStore(workspace, state.id, workspace / ".pliny" / "sessions" / state.id)
        return cls(store, state, mode, bus)

    def prime(self, events: list[Event]) -> None:
        """Totals so far come from the log: trailers count the whole session, not this run."""
        for event in events:
            if isinstance(event, LLMCall):
                self(event)

    def record_write(self, path: str, data: bytes, agent: str | None) -> None:
        self.store.record_write(path, data, agent)

    def __call__(self, event: Event) -> None:
        if isinstance(event, LLMCall):
            self.tokens += event.prompt_tokens + event.completion_tokens
            self.cost += event.cost_usd or 0.0
        elif isinstance(event, AgentCompleted) and self.mode == "agent" and event.files_written:
            suffix = f"-{event.cycle}" if event.cycle > 1 else ""
            self.commit(
                f"after-{event.phase}.{event.agent}{suffix}", event.phase, [event.agent or ""]
            )
        elif isinstance(event, PhaseCompleted):
            suffix = f"-{event.cycle}" if event.cycle > 1 else ""
            self.commit(f"after-{event.phase}{suffix}", event.phase, None)

    def commit(self, name: str, phase: str | None, agents: list[str] | None) -> Any:
        subject = f"pliny: {self.state.id}: {name}"
        trailers = {
            "Pliny-Session": self.state.id,
            "Pliny-Checkpoint": name,
            "Pliny-Phase": phase or "",
            "Pliny-Agent": ",".join(agents) if agents else "",
            "Pliny-Tokens": str(self.tokens),
            "Pliny-Cost-USD": f"{self.cost:.6f}",
        }
        info = self.store.commit(name, subject, {k: v for k, v in trailers.items() if v}, agents)
        self.bus.emit(
            CheckpointCreated(
                phase=phase,
                agent=agents[0] if agents else None,
                name=name,
                ref=info.ref,
                commit=info.commit,
                files=list(info.files),
            )
        )
        return info
