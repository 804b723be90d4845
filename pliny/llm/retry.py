"""Retry a call by the strategy of its failure's category (tenacity underneath).

Policy, decided once for the whole project:

* **Which errors retry.** Only a *recoverable* ``PlinyError`` whose category
  has a strategy. CONFIG (auth, bad request, model not found), BUDGET and
  CANCELLED never retry whatever the YAML says: they fail fast. A
  ``CancelledError``/``KeyboardInterrupt`` is re-raised untouched so asyncio
  cancellation and ``asyncio.timeout`` keep working.
* **Counting.** Failures are counted *per category* within one call. The
  call stops when the current failure's category has failed more than its
  ``max_retries`` (network ``max_retries: 3`` -> at most 4 attempts if every
  failure is a network one). Mixed failures (a 503, then invalid output)
  each spend their own budget; ``max_total_attempts`` optionally caps the sum.
* **Delay** for the n-th retry of a category, in ms: exponential
  ``initial * multiplier**(n-1)``, linear ``initial * n``, constant
  ``initial``; then capped at ``max_delay``; then *equal jitter*
  (uniform in ``[d/2, d]``): parallel agents de-synchronise, yet a backoff
  never collapses to zero the way full jitter can.
* **Retry-After** (``PlinyError.retry_after``, seconds) is a floor:
  ``delay = max(delay, retry_after)``, winning even over ``max_delay``. If
  the server asks for more than ``retry_after_ceiling_s`` (300 s) the call
  gives up at once instead: waiting an hour inside a run helps nobody, and
  the session is resumable later (the final error's hint says so).
* **Time budget.** ``max_elapsed`` (seconds; network: 20 s by default)
  bounds the retrying: no retry is scheduled to start later than that
  after the first attempt. A backoff or Retry-After that would land past
  it gives up at once, so a dead endpoint fails within the budget however
  many retries ``max_retries`` allows (an open circuit's wait counts too).
  The final error carries ``elapsed_s`` and ``budget_s``.
* **Visibility.** ``on_retry(RetryInfo)`` runs *before* each sleep (the
  engine emits a ``Retry`` event from it); the final error carries
  ``attempts`` (total attempts made).

Fallback models: when the failure is in the AI category (context too long,
empty answer, refusal, answer cut off), the engine should switch to the next
model of ``fallback_chain(llm.model, llm.fallback_models)`` for the next
attempt (``ModelChain.advance`` does that from ``on_retry``). Each switch is
one AI retry, so ``ai.max_retries`` should be at least ``len(fallbacks)``;
``strategies_for_chain`` raises it when it is lower.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from pliny.config.settings import ErrorHandling, RetryStrategy
from pliny.errors import AuditFailure, Category, PlinyError
from pliny.events import Retry
from pliny.llm.classify import classify as default_classify

T = TypeVar("T")

NEVER_RETRIED = frozenset({Category.CONFIG, Category.BUDGET, Category.CANCELLED})
RETRY_AFTER_CEILING_S = 300.0
# Used for a category the user's YAML left out of error_handling.retry_strategies.
DEFAULT_STRATEGIES: dict[str, RetryStrategy] = ErrorHandling().by_category()


@dataclass(frozen=True)
class RetryInfo:
    """One retry about to happen: ``attempt`` failed, ``attempt + 1`` runs after ``delay_ms``."""

    category: str
    code: str
    attempt: int
    delay_ms: float
    message: str
    retry_after: float | None = None
    error: PlinyError | None = field(default=None, compare=False, repr=False)

    def as_event(self, **context: Any) -> Retry:
        return Retry(
            category=self.category,
            code=self.code,
            attempt=self.attempt,
            delay_ms=self.delay_ms,
            message=self.message,
            **context,
        )


def compute_delay_ms(
    strategy: RetryStrategy, retry_number: int, rand: Callable[[], float] = random.random
) -> float:
    """Backoff before the ``retry_number``-th retry (1-based) of one category, jitter included."""
    n = max(1, retry_number)
    if strategy.backoff == "exponential":
        try:
            delay = strategy.initial_delay * math.pow(strategy.multiplier, n - 1)
        except OverflowError:
            delay = math.inf
    elif strategy.backoff == "linear":
        delay = strategy.initial_delay * n
    else:
        delay = strategy.initial_delay
    delay = min(delay, strategy.max_delay)
    if strategy.jitter:
        delay = delay / 2 + rand() * delay / 2
    return delay


class _Policy:
    """Per-call bookkeeping the tenacity hooks share (one instance per ``call_with_retry``)."""

    def __init__(
        self,
        strategies: Mapping[str, RetryStrategy],
        classify: Callable[[BaseException], PlinyError],
        max_total_attempts: int | None,
        retry_after_ceiling_s: float,
        rand: Callable[[], float],
        clock: Callable[[], float],
    ) -> None:
        self.strategies = strategies
        self.classify = classify
        self.max_total = max_total_attempts
        self.ceiling = retry_after_ceiling_s
        self.rand = rand
        self.clock = clock
        self.started = clock()
        self.attempts = 0
        self.failures: Counter[str] = Counter()

    def strategy(self, err: PlinyError) -> RetryStrategy | None:
        if err.category in NEVER_RETRIED:
            return None
        return self.strategies.get(err.category) or DEFAULT_STRATEGIES.get(err.category)

    async def run(self, fn: Callable[[int], Awaitable[T]]) -> T:
        self.attempts += 1
        try:
            return await fn(self.attempts)
        except Exception as exc:  # BaseException (cancellation) passes through untouched
            err = self.classify(exc)
            self.failures[err.category] += 1
            if err is not exc:
                raise err from exc
            raise

    def retryable(self, exc: BaseException) -> bool:
        """tenacity ``retry``: is this *kind* of failure worth another attempt?"""
        if not isinstance(exc, PlinyError) or not exc.recoverable or isinstance(exc, AuditFailure):
            return False
        if self.strategy(exc) is None:
            return False
        return exc.retry_after is None or exc.retry_after <= self.ceiling

    def stop(self, state: RetryCallState) -> bool:
        """tenacity ``stop``: has the current category spent its retries (or the total cap)?"""
        err = _error(state)
        strategy = self.strategy(err)
        if strategy is None or self.failures[err.category] > strategy.max_retries:
            return True
        # tenacity runs wait before stop, so upcoming_sleep is this retry's delay
        budget = strategy.max_elapsed
        if budget is not None and self.elapsed() + state.upcoming_sleep > budget:
            return True
        return self.max_total is not None and self.attempts >= self.max_total

    def elapsed(self) -> float:
        return self.clock() - self.started

    def wait(self, state: RetryCallState) -> float:
        """tenacity ``wait``: seconds before the next attempt."""
        err = _error(state)
        strategy = self.strategy(err) or RetryStrategy(initial_delay=0)
        delay_ms = compute_delay_ms(strategy, self.failures[err.category], self.rand)
        if err.retry_after is not None:
            delay_ms = max(delay_ms, err.retry_after * 1000)
        return delay_ms / 1000


def _error(state: RetryCallState) -> PlinyError:
    assert state.outcome is not None  # tenacity calls stop/wait only after a failed attempt
    exc = state.outcome.exception()
    assert isinstance(exc, PlinyError)  # guaranteed by the retry predicate
    return exc


async def call_with_retry(
    fn: Callable[[int], Awaitable[T]],
    *,
    strategies: Mapping[str, RetryStrategy],
    on_retry: Callable[[RetryInfo], None] | None = None,
    classify: Callable[[BaseException], PlinyError] = default_classify,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    max_total_attempts: int | None = None,
    retry_after_ceiling_s: float = RETRY_AFTER_CEILING_S,
    rand: Callable[[], float] = random.random,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``await fn(attempt)`` (attempt is 1-based) until it succeeds or the policy gives up.

    Raises the classified ``PlinyError`` of the last failure with ``attempts``
    set (and ``elapsed_s``, ``budget_s``). ``sleep``, ``rand`` and ``clock``
    are injectable so tests record delays without waiting.
    """
    policy = _Policy(strategies, classify, max_total_attempts, retry_after_ceiling_s, rand, clock)

    def before_sleep(state: RetryCallState) -> None:
        err = _error(state)
        if on_retry is not None:
            on_retry(
                RetryInfo(
                    category=str(err.category),
                    code=str(err.code),
                    attempt=state.attempt_number,
                    delay_ms=round(state.upcoming_sleep * 1000, 3),
                    message=err.message,
                    retry_after=err.retry_after,
                    error=err,
                )
            )

    retrying = AsyncRetrying(
        sleep=sleep,
        retry=retry_if_exception(policy.retryable),
        stop=policy.stop,
        wait=policy.wait,
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return await retrying(policy.run, fn)
    except PlinyError as err:
        err.attempts = policy.attempts
        err.elapsed_s = policy.elapsed()
        strategy = policy.strategy(err)
        err.budget_s = strategy.max_elapsed if strategy else None
        if err.retry_after is not None and err.retry_after > retry_after_ceiling_s:
            err.hint = err.hint or (
                f"the server asked to wait {err.retry_after:.0f} s; "
                "`pliny session resume` later continues the session"
            )
        raise


def final_message(err: PlinyError, agent: str | None = None) -> str:
    """One line for the user: who failed, category/code, attempts, what to do next."""
    attempts = getattr(err, "attempts", 1)
    who = f"agent {agent!r}" if agent else "the call"
    tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    text = f"{who} failed after {tries} ({err.category} {err.code}): {err.message}"
    next_step = err.hint or (
        "`pliny session resume` retries it" if err.recoverable else "fix the cause, then resume"
    )
    return f"{text}; {next_step}"


def fallback_chain(primary: str, fallbacks: list[str]) -> list[str]:
    """``[primary, *fallbacks]`` without blanks or repeats, order kept."""
    return list(dict.fromkeys(m for m in (primary, *fallbacks) if m and m.strip()))


@dataclass
class ModelChain:
    """The model to use for the next attempt; advances on AI-category failures."""

    models: list[str]
    index: int = 0

    @classmethod
    def of(cls, primary: str, fallbacks: list[str]) -> ModelChain:
        return cls(fallback_chain(primary, fallbacks))

    @property
    def current(self) -> str:
        return self.models[self.index]

    def advance(self, err: PlinyError | None) -> bool:
        """Switch to the next model if ``err`` is an AI failure and one is left."""
        if err is None or err.category != Category.AI or self.index + 1 >= len(self.models):
            return False
        self.index += 1
        return True


def strategies_for_chain(
    strategies: Mapping[str, RetryStrategy], chain: ModelChain
) -> dict[str, RetryStrategy]:
    """Strategies whose AI budget lets every fallback model get one attempt."""
    out = {**DEFAULT_STRATEGIES, **strategies}
    needed = len(chain.models) - 1
    if out["ai"].max_retries < needed:
        out["ai"] = out["ai"].model_copy(update={"max_retries": needed})
    return out
