"""The current run state after rollbacks, folded from the audit log.

The audit log is never rolled back: it keeps every call that was paid. A
``rollback`` event moves the *run* back to a checkpoint, so the agents that
finished after it are pending again and their figures are no longer part of
the current state. ``RollbackFold`` rides along a :class:`pliny.observe.progress.Progress`
fold: it remembers the agents' views at each point a rollback can return to
and restores them when a ``rollback`` event names that point:

- ``after-<phase>[-<n>]`` (phase/step checkpoints): the views when that
  checkpoint was created;
- ``after-<phase>.<agent>[-<n>]`` (agent checkpoints): the views when that
  phase's cycle began, since the run forks back to the phase's start;
- any other (manual) name, or a rollback that found no run state to go back
  to (``forked: false``): files only, the run state is unchanged.

What the restore takes out of the views is kept in ``rolled_back``, so
"spent in total" (``spent``) stays whole.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from pliny.events import Event


@dataclass
class _Point:
    phases: dict[str, list[str]]
    agents: dict[str, Any]
    phase_state: dict[str, str]
    cycles: dict[str, int]
    files: list[str]


@dataclass
class RollbackFold:
    progress: Any  # a pliny.observe.progress.Progress, fed the same events first
    points: dict[str, _Point] = field(default_factory=dict)
    rolled_back_to: str | None = None  # the rollback whose state is shown, until a resume
    rolled_back: dict[str, float] = field(
        default_factory=lambda: {"calls": 0, "tokens": 0, "cost_usd": 0.0}
    )

    def __call__(self, event: Event) -> None:
        kind = event.type
        if kind == "checkpoint_created":
            self.points[getattr(event, "name", "")] = self._point()
        elif kind == "phase_started":
            self.points[f"phase:{event.phase}:{getattr(event, 'cycle', 1)}"] = self._point()
        elif kind == "rollback" and getattr(event, "forked", None) is not False:
            self._rollback(getattr(event, "name", ""))
        elif kind in ("session_resumed", "session_started"):
            self.rolled_back_to = None

    def _point(self) -> _Point:
        p = self.progress
        return _Point(
            copy.deepcopy(p.phases),
            copy.deepcopy(p.agents),
            dict(p.phase_state),
            dict(p.cycles),
            list(p.files),
        )

    def _rollback(self, name: str) -> None:
        point = self.points.get(_point_key(name))
        if point is None:  # a manual checkpoint (or one this log never saw made): files only
            return
        before = self._figures()
        p = self.progress
        p.phases, p.agents = copy.deepcopy(point.phases), copy.deepcopy(point.agents)
        p.phase_state, p.cycles = dict(point.phase_state), dict(point.cycles)
        for phase, state in p.phase_state.items():  # a phase's start: it has not run yet
            p.phase_state[phase] = "waiting" if state == "running" else state
        p.files = list(point.files)
        for key, now in self._figures().items():
            self.rolled_back[key] += before[key] - now
        self.rolled_back_to = name

    def _figures(self) -> dict[str, float]:
        """What the agents shown account for (their usage folds, pliny.usage's rule)."""
        views = [a.usage for a in self.progress.agents.values()]
        return {
            "calls": sum(u.calls for u in views),
            "tokens": sum(u.tokens for u in views),
            "cost_usd": sum(u.cost_usd for u in views),
        }

    def current(self) -> dict[str, Any]:
        """The current state's figures (what the agents shown account for)."""
        figures = self._figures()
        return {
            "calls": int(figures["calls"]),
            "tokens": int(figures["tokens"]),
            "cost_usd": round(figures["cost_usd"], 6),
            "rolled_back_to": self.rolled_back_to,
        }

    def spent(self) -> dict[str, Any]:
        """Spent in total, over every run: the session's whole usage, rollbacks included."""
        usage = self.progress.usage
        return {"calls": usage.calls, "tokens": usage.tokens, "cost_usd": round(usage.cost_usd, 6)}


def _point_key(name: str) -> str:
    """The remembered point a checkpoint name forks back to (see the module docstring)."""
    if not name.startswith("after-"):
        return f"manual:{name}"
    from pliny.lifecycle.rollback import parse_checkpoint_name

    phase, agent, cycle = parse_checkpoint_name(name)
    return f"phase:{phase}:{cycle}" if agent else name
