"""Spending limits per session, phase and agent, checked before each LLM call.

``BudgetGuard`` listens to ``llm_call`` events to keep what was spent, and
``check`` refuses a call whose worst case (prompt estimate + max_tokens)
would cross a limit, by raising ``BudgetExceeded``; the engine then pauses
the session (exit code 3), resumable once the limit is raised.

Accounting follows ``pliny.usage`` (the fold every view shares):
tokens = prompt + completion (cached tokens are part of the prompt); a
replayed or cache-hit call adds nothing, since the call that first recorded
the answer is already in the log that ``from_events`` replays on resume; an
unpriced call (cost null) counts its tokens but adds 0 to the cost, so
``max_cost_usd`` cannot see it; it is counted in ``Usage.unpriced_calls``.
Use ``max_tokens`` to bound unpriced models.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from pliny.config.settings import Budgets, Limit
from pliny.errors import BudgetExceeded
from pliny.events import BudgetExceededEvent, Event
from pliny.usage import Usage


@dataclass(frozen=True)
class Breach:
    scope: str  # session | phase:<name> | agent:<name>
    limit: str  # max_cost_usd | max_tokens
    limit_value: float
    used: float
    estimate: float

    def to_event(self, phase: str | None = None, agent: str | None = None) -> BudgetExceededEvent:
        return BudgetExceededEvent(
            phase=phase,
            agent=agent,
            scope=self.scope,
            limit=self.limit,
            limit_value=self.limit_value,
            used=self.used,
            estimate=self.estimate,
        )

    def message(self) -> str:
        fmt = _usd if self.limit == "max_cost_usd" else _tokens
        return (
            f"{self.scope} budget {self.limit}={fmt(self.limit_value)} would be exceeded: "
            f"used {fmt(self.used)} + next call up to {fmt(self.estimate)}"
        )

    def hint(self) -> str:
        """How to raise it: a resume keeps the settings the session started with."""
        if self.scope == "session":
            flag = "--max-cost-usd" if self.limit == "max_cost_usd" else "--max-tokens"
            return f"raise {self.config_key()}: `pliny session resume {flag} N`, or --config FILE"
        return (
            f"raise {self.config_key()} in a config file, then `pliny session resume --config FILE`"
        )

    def config_key(self) -> str:
        kind, _, name = self.scope.partition(":")
        return {"session": "budgets", "phase": f"budgets.phases.{name}"}.get(
            kind, f"budgets.agents.{name}"
        ) + f".{self.limit}"


def _usd(value: float) -> str:
    return f"${value:.4f}"


def _tokens(value: float) -> str:
    return f"{int(value)} tokens"


class BudgetCheck(Protocol):
    """What the gateway asks before a call: ``BudgetGuard`` here, a shared ledger on a worker."""

    def check(
        self,
        phase: str | None,
        agent: str | None,
        estimate_tokens: int,
        estimate_cost: float | None,
    ) -> None: ...


class BudgetGuard:
    """Usage per session / phase / agent, and the pre-call limit check."""

    def __init__(self, budgets: Budgets | None = None) -> None:
        self.budgets = budgets or Budgets()
        self.session = Usage()
        self.phases: dict[str, Usage] = {}
        self.agents: dict[str, Usage] = {}

    @classmethod
    def from_events(cls, events: Iterable[Event], budgets: Budgets | None = None) -> BudgetGuard:
        """Rebuild usage from an existing log (resume), under possibly raised limits."""
        guard = cls(budgets)
        for event in events:
            guard(event)
        return guard

    def __call__(self, event: Event) -> None:
        """EventBus listener: account every paid llm_call."""
        if event.type != "llm_call":
            return
        for usage in self._scopes_for(event.phase, event.agent, create=True):
            usage.add(event)

    def _scopes_for(self, phase: str | None, agent: str | None, create: bool) -> list[Usage]:
        out = [self.session]
        for key, table in ((phase, self.phases), (agent, self.agents)):
            if key is not None:
                out.append(table.setdefault(key, Usage()) if create else table.get(key, Usage()))
        return out

    def limits(self, phase: str | None, agent: str | None) -> list[tuple[str, Limit, Usage]]:
        """(scope, limit, usage so far) for each limit that applies to this call."""
        out: list[tuple[str, Limit, Usage]] = [("session", self.budgets, self.session)]
        if phase is not None and phase in self.budgets.phases:
            out.append(
                (f"phase:{phase}", self.budgets.phases[phase], self.phases.get(phase, Usage()))
            )
        if agent is not None and agent in self.budgets.agents:
            out.append(
                (f"agent:{agent}", self.budgets.agents[agent], self.agents.get(agent, Usage()))
            )
        return out

    def breach(
        self,
        phase: str | None,
        agent: str | None,
        estimate_tokens: int,
        estimate_cost: float | None,
    ) -> Breach | None:
        """The first limit (session, then phase, then agent) the next call could cross."""
        cost = estimate_cost or 0.0
        for scope, limit, used in self.limits(phase, agent):
            if limit.max_tokens is not None and used.tokens + estimate_tokens > limit.max_tokens:
                return Breach(scope, "max_tokens", limit.max_tokens, used.tokens, estimate_tokens)
            if limit.max_cost_usd is not None and used.cost_usd + cost > limit.max_cost_usd:
                return Breach(scope, "max_cost_usd", limit.max_cost_usd, used.cost_usd, cost)
        return None

    def check(
        self,
        phase: str | None,
        agent: str | None,
        estimate_tokens: int,
        estimate_cost: float | None,
    ) -> None:
        """Raise ``BudgetExceeded`` (with ``.breach``) if the next call could cross a limit.

        ``estimate_cost`` None (unpriced model) is checked as 0.
        """
        found = self.breach(phase, agent, estimate_tokens, estimate_cost)
        if found is None:
            return
        exc = BudgetExceeded(found.message(), hint=found.hint())
        exc.breach = found  # type: ignore[attr-defined]
        raise exc
