"""Progress of a run, rebuilt from engine events.

``Progress`` is the state every view shares (the live table in ``pliny
execute``, ``pliny watch`` fed by the audit log, ``--json`` summaries):
it only folds events, so any event source gives the same picture.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pliny.events import Event
from pliny.usage import Usage

ICONS = {"waiting": "·", "queued": "⧗", "running": "▶", "done": "✔", "failed": "✖", "skipped": "↷"}
STYLES = {
    "waiting": "dim",
    "queued": "yellow",
    "running": "cyan",
    "done": "green",
    "failed": "red",
    "skipped": "magenta",
}


@dataclass
class AgentView:
    name: str
    phase: str
    state: str = "waiting"
    usage: Usage = field(default_factory=Usage)
    started: float | None = None
    ended: float | None = None
    output: str | None = None
    error: str | None = None
    streaming: int = 0  # tokens so far of the answer streaming in now (llm_progress)

    @property
    def calls(self) -> int:
        return self.usage.calls

    @property
    def tokens(self) -> int:
        return self.usage.tokens


@dataclass
class Progress:
    phases: dict[str, list[str]] = field(default_factory=dict)  # phase -> agent names
    phase_state: dict[str, str] = field(default_factory=dict)
    cycles: dict[str, int] = field(default_factory=dict)
    agents: dict[str, AgentView] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    retries: int = 0
    usage: Usage = field(default_factory=Usage)  # the whole session (pliny.usage's rule)
    run: Usage = field(default_factory=Usage)  # this run only: what replay() did not fold
    status: str = "in_progress"
    session: str | None = None
    started: float = field(default_factory=time.monotonic)
    circuit_open: set[str] = field(default_factory=set)
    last_error: str | None = None

    @classmethod
    def for_framework(cls, framework: Any) -> Progress:
        progress = cls()
        for phase in framework.phases:
            progress.phases[phase.name] = [a.name for a in phase.agents]
            progress.phase_state[phase.name] = "waiting"
            for agent in phase.agents:
                progress.agents[agent.name] = AgentView(agent.name, phase.name)
        return progress

    def replay(self, log: Any) -> Progress:
        """Fold a session's audit log (if it has one) into this view."""
        from pathlib import Path

        from pliny.audit.log import read_events

        if Path(log).exists():
            for event in read_events(log):
                self(event)
        self.run = Usage()  # history belongs to earlier runs
        return self

    def __call__(self, event: Event) -> None:
        handler = getattr(self, f"_on_{event.type}", None)
        self.session = self.session or event.session
        if handler is not None:
            handler(event)

    def _agent(self, event: Event) -> AgentView:
        name = event.agent or "?"
        if name not in self.agents:
            self.agents[name] = AgentView(name, event.phase or "?")
            self.phases.setdefault(event.phase or "?", []).append(name)
        return self.agents[name]

    def _on_phase_started(self, event: Any) -> None:
        self.phase_state[event.phase] = "running"
        self.cycles[event.phase] = event.cycle
        for name in self.phases.get(event.phase, []):
            view = self.agents[name]
            view.state, view.started, view.ended = "waiting", None, None

    def _on_phase_completed(self, event: Any) -> None:
        self.phase_state[event.phase] = "done"

    def _on_agent_started(self, event: Event) -> None:
        view = self._agent(event)
        view.state, view.started = "running", time.monotonic()

    def _on_llm_queued(self, event: Event) -> None:
        self._agent(event).state = "queued"

    def _on_llm_progress(self, event: Any) -> None:
        """A streamed answer's tokens so far (bus only: never in the audit log)."""
        self._agent(event).streaming = event.completion_tokens

    def _on_llm_call(self, event: Any) -> None:
        view = self._agent(event)
        view.streaming = 0  # the call's final counts are in the event
        view.state = "running" if view.state == "queued" else view.state
        for usage in (view.usage, self.usage, self.run):
            usage.add(event)

    def _on_agent_completed(self, event: Any) -> None:
        view = self._agent(event)
        view.state, view.ended, view.output = "done", time.monotonic(), event.output_path
        self.files.extend(f for f in event.files_written if f not in self.files)

    def _on_agent_failed(self, event: Any) -> None:
        view = self._agent(event)
        view.state = "skipped" if event.skipped else "failed"
        view.ended, view.error = time.monotonic(), f"{event.category}: {event.message}"
        self.last_error = f"{event.agent}: {event.message}"
        if not event.skipped:
            self.phase_state[view.phase] = "failed"

    def _settle(self, state: str) -> None:
        """The run ended: nothing is running any more."""
        for phase, current in self.phase_state.items():
            if current == "running":
                self.phase_state[phase] = state
        for view in self.agents.values():
            if view.state in ("running", "queued"):
                view.state = state

    def _on_retry(self, event: Event) -> None:
        self.retries += 1

    def _on_checkpoint_created(self, event: Any) -> None:
        self.checkpoints.append(event.name)

    def _on_circuit_opened(self, event: Any) -> None:
        self.circuit_open.add(event.endpoint)

    def _on_circuit_closed(self, event: Any) -> None:
        self.circuit_open.discard(event.endpoint)

    def _on_session_completed(self, event: Event) -> None:
        self.status = "completed"

    def _on_session_failed(self, event: Any) -> None:
        self.status, self.last_error = "failed", event.message
        self._settle("failed")

    def _on_session_paused(self, event: Event) -> None:
        self.status = "paused"
        self._settle("waiting")

    def _on_session_cancelled(self, event: Event) -> None:
        self.status = "cancelled"
        self._settle("waiting")

    def _on_session_resumed(self, event: Event) -> None:
        self.status = "in_progress"

    # -- figures ------------------------------------------------------------
    @property
    def tokens(self) -> int:
        return self.usage.tokens

    @property
    def calls(self) -> int:
        return self.usage.calls

    def eta_seconds(self) -> float | None:
        """Remaining time from the mean duration of finished agents (rough)."""
        took = [a.ended - a.started for a in self.agents.values() if a.ended and a.started]
        left = [a for a in self.agents.values() if a.state in ("waiting", "queued", "running")]
        if not took or not left:
            return None
        mean = sum(took) / len(took)
        return mean * len(left)

    def summary(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "status": self.status,
            "phases": [
                {
                    "name": p,
                    "state": self.phase_state.get(p, "waiting").replace("waiting", "pending"),
                    "cycles": self.cycles.get(p, 0),
                    "agents": [self._agent_summary(self.agents[a]) for a in agents],
                }
                for p, agents in self.phases.items()
            ],
            "totals": {**self.usage.totals(), "retries": self.retries},
            "this_run": self.run.totals(),
            "files_written": self.files,
            "checkpoints": self.checkpoints,
            "error": self.last_error if self.status != "completed" else None,
        }

    @staticmethod
    def _agent_summary(view: AgentView) -> dict[str, Any]:
        return {
            "name": view.name,
            "state": "pending" if view.state == "waiting" else view.state,
            **view.usage.totals(),
            "output": view.output,
            "error": view.error,
        }


def run_line(progress: Progress) -> str:
    """What this run sent next to the session's totals (the final line of execute/resume)."""
    run, total = progress.run, progress.usage
    extra = [
        f"+{n} {what}"
        for n, what in ((run.replayed_calls, "replayed"), (run.cache_hits, "cached"))
        if n
    ]
    return (
        f"this run: {_plural(run.calls, 'call')} sent"
        + (f" ({', '.join(extra)})" if extra else "")
        + f" · session: {_plural(total.calls, 'call')}, {total.tokens:,} tokens, "
        + total.cost_text()
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def render(progress: Progress, title: str = "") -> Any:
    """A rich renderable of the progress table."""
    from rich.table import Table
    from rich.text import Text

    elapsed = time.monotonic() - progress.started
    eta = progress.eta_seconds()
    caption = (
        f"{progress.tokens:,} tokens · {progress.usage.cost_text()} · {progress.calls} calls · "
        f"{elapsed:.0f}s elapsed" + (f" · ETA ~{eta:.0f}s" if eta else "")
    )
    if streaming := sum(v.streaming for v in progress.agents.values()):
        caption += f" · +{streaming:,} streaming"
    if progress.retries:
        caption += f" · {progress.retries} retries"
    if progress.circuit_open:
        caption += f" · circuit OPEN: {', '.join(sorted(progress.circuit_open))}"
    table = Table(title=title or None, caption=caption, expand=False)
    for column in ("phase", "agent", "state", "calls", "tokens", "time"):
        table.add_column(
            column, justify="right" if column in ("calls", "tokens", "time") else "left"
        )
    now = time.monotonic()
    for phase, agents in progress.phases.items():
        cycle = progress.cycles.get(phase, 0)
        label = phase + (f" (×{cycle})" if cycle > 1 else "")
        for index, name in enumerate(agents):
            view = progress.agents[name]
            spent = (view.ended or now) - view.started if view.started else 0
            table.add_row(
                label if index == 0 else "",
                name,
                Text(f"{ICONS[view.state]} {view.state}", style=STYLES[view.state]),
                str(view.calls),
                f"{view.tokens:,}" + (f" +{view.streaming:,}…" if view.streaming else ""),
                f"{spent:.1f}s" if view.started else "",
            )
    return table
