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
from pliny.usage import Usage, fold


class CheckpointListener:
    def __init__(self, store: Any, session: str, mode: str, bus: EventBus) -> None:
        self.store = store
        self.session = session
        self.mode = mode
        self.bus = bus
        self.usage = Usage()  # the session so far, under pliny.usage's rule

    @classmethod
    def open(
        cls, workspace: Path, session: str, mode: str, bus: EventBus, audit_dir: str = "audit-logs"
    ) -> CheckpointListener:
        from pliny.checkpoints.store import PROTECTED_DIRS, CheckpointStore

        state_dir = workspace / ".pliny" / "sessions" / session
        protected = (*PROTECTED_DIRS, audit_dir)  # never committed, never rolled back
        store = CheckpointStore(workspace, session, state_dir, protected=protected)
        return cls(store, session, mode, bus)

    def prime(self, events: list[Event]) -> None:
        """Totals so far come from the log: trailers count the whole session, not this run."""
        fold(events, self.usage)

    def record_write(self, path: str, data: bytes, agent: str | None) -> None:
        self.store.record_write(path, data, agent)

    def __call__(self, event: Event) -> None:
        if isinstance(event, LLMCall):
            self.usage.add(event)
        elif isinstance(event, AgentCompleted) and self.mode == "agent" and event.files_written:
            suffix = f"-{event.cycle}" if event.cycle > 1 else ""
            self.commit(
                f"after-{event.phase}.{event.agent}{suffix}", event.phase, [event.agent or ""]
            )
        elif isinstance(event, PhaseCompleted):
            suffix = f"-{event.cycle}" if event.cycle > 1 else ""
            self.commit(f"after-{event.phase}{suffix}", event.phase, None)

    def commit(self, name: str, phase: str | None, agents: list[str] | None) -> Any:
        subject = f"pliny: {self.session}: {name}"
        trailers = {
            "Pliny-Session": self.session,
            "Pliny-Checkpoint": name,
            "Pliny-Phase": phase or "",
            "Pliny-Agent": ",".join(agents) if agents else "",
            # Running totals of the session's paid calls (replays add nothing).
            "Pliny-Tokens": str(self.usage.tokens),
            "Pliny-Cost-USD": f"{self.usage.cost_usd:.6f}",  # priced calls only
            "Pliny-Calls": str(self.usage.calls),
            "Pliny-Unpriced-Calls": str(self.usage.unpriced_calls or ""),
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
