"""Budgets across workers: reserve before a call, settle after.

Each worker's gateway checks limits against this ledger instead of its own
memory. ``check`` runs in one ``BEGIN IMMEDIATE`` transaction: it sums what
was spent (the coordinator's baseline from the audit log, plus every settled
call) and what other calls in flight have reserved (their worst case:
prompt estimate + ``max_tokens``), refuses the call if its own worst case
would cross a limit, else reserves it. The ``llm_call`` event then replaces
the reservation with what was actually used. Parallel agents on any number
of workers therefore never together go past a limit by more than the
estimate error of one call, which is bounded by that call's ``max_tokens``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from pliny.llm.budget import BudgetGuard, Usage

if TYPE_CHECKING:
    from pliny.config.settings import Budgets
    from pliny.distributed.shared import SharedStore
    from pliny.events import Event


def _scopes(phase: str | None, agent: str | None) -> list[str]:
    named = [f"phase:{phase}"] if phase else []
    return ["session", *named, *([f"agent:{agent}"] if agent else [])]


def _usage_of(guard: BudgetGuard, scope: str) -> Usage:
    kind, _, name = scope.partition(":")
    if kind == "session":
        return guard.session
    table = guard.phases if kind == "phase" else guard.agents
    return table.setdefault(name, Usage())


def _add(usage: Usage, tokens: int, cost: float) -> None:
    # The ledger keeps totals only: budgets compare total tokens and cost.
    usage.prompt_tokens += tokens
    usage.cost_usd += cost


class SharedBudget:
    """Drop-in for ``BudgetGuard`` on a worker (``check`` + event listener)."""

    def __init__(
        self, store: SharedStore, budgets: Budgets, owner: str | Callable[[], str]
    ) -> None:
        self.store = store
        self.budgets = budgets
        self._owner = owner  # the attempt reserving: a callable on a shared worker context

    @property
    def owner(self) -> str:
        return self._owner() if callable(self._owner) else self._owner

    @staticmethod
    def reset(store: SharedStore, guard: BudgetGuard) -> None:
        """Coordinator, at run start: the baseline is what the audit log says was spent."""
        rows = [("session", guard.session)]
        rows += [(f"phase:{k}", u) for k, u in guard.phases.items()]
        rows += [(f"agent:{k}", u) for k, u in guard.agents.items()]
        with store.lock:
            store.db.execute("BEGIN IMMEDIATE")
            store.db.execute("DELETE FROM budget_base")
            store.db.execute("DELETE FROM budget_use")
            store.db.executemany(
                "INSERT INTO budget_base VALUES (?, ?, ?)",
                [(scope, u.tokens, u.cost_usd) for scope, u in rows],
            )
            store.db.execute("COMMIT")

    def _current(self) -> BudgetGuard:
        guard = BudgetGuard(self.budgets)
        db = self.store.db
        for scope, tokens, cost in db.execute("SELECT scope, tokens, cost FROM budget_base"):
            _add(_usage_of(guard, scope), tokens, cost)
        for scopes, tokens, cost in db.execute("SELECT scopes, tokens, cost FROM budget_use"):
            for scope in json.loads(scopes):
                _add(_usage_of(guard, scope), tokens, cost)
        return guard

    def check(
        self,
        phase: str | None,
        agent: str | None,
        estimate_tokens: int,
        estimate_cost: float | None,
    ) -> None:
        """Refuse (``BudgetExceeded``) or reserve this call's worst case, atomically."""
        with self.store.lock:
            db = self.store.db
            db.execute("BEGIN IMMEDIATE")
            try:
                self._current().check(phase, agent, estimate_tokens, estimate_cost)
                db.execute(
                    "INSERT OR REPLACE INTO budget_use VALUES (?, ?, ?, ?, ?, 1)",
                    (
                        self._open_key(agent),
                        self.owner,
                        json.dumps(_scopes(phase, agent)),
                        estimate_tokens,
                        estimate_cost or 0.0,
                    ),
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def __call__(self, event: Event) -> None:
        """Settle: a paid ``llm_call`` replaces the agent's open reservation."""
        if event.type != "llm_call" or getattr(event, "replayed", False):
            return
        if getattr(event, "cache_hit", False):
            return
        tokens = getattr(event, "prompt_tokens", 0) + getattr(event, "completion_tokens", 0)
        cost = getattr(event, "cost_usd", None) or 0.0
        with self.store.lock:
            db = self.store.db
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM budget_use WHERE key=?", (self._open_key(event.agent),))
            db.execute(
                "INSERT INTO budget_use VALUES (?, ?, ?, ?, ?, 0)",
                (
                    f"{self.owner}/{uuid.uuid4().hex}",
                    self.owner,
                    json.dumps(_scopes(event.phase, event.agent)),
                    tokens,
                    cost,
                ),
            )
            db.execute("COMMIT")

    def release(self) -> None:
        """The attempt ended: drop what it reserved and never used."""
        with self.store.lock:
            self.store.db.execute(
                "DELETE FROM budget_use WHERE owner=? AND reserved=1", (self.owner,)
            )

    def _open_key(self, agent: str | None) -> str:
        return f"{self.owner}/{agent}/open"


def release_workflow(store: SharedStore, workflow: str) -> None:
    """Coordinator, when an agent's workflow ended: a killed attempt's reservations go too."""
    with store.lock:
        store.db.execute(
            "DELETE FROM budget_use WHERE reserved=1 AND substr(owner, 1, ?) = ?",
            (len(workflow), workflow),
        )
