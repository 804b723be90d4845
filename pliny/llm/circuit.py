"""A circuit breaker per LLM endpoint: stop hammering an endpoint that is down.

States: CLOSED (calls pass) -> OPEN after ``failure_threshold`` consecutive
*endpoint* failures (calls rejected at once with PLINY-NET-CIRCUIT-OPEN,
``retry_after`` = time left) -> HALF_OPEN after ``reset_timeout_s`` (one
trial call passes, the rest are still rejected) -> CLOSED if the trial
succeeds, OPEN again (full timeout) on an endpoint failure. A trial whose
caller never reports back (task killed) expires after ``reset_timeout_s``.

What counts, decided here once:

* failure: a NETWORK error other than a rate limit (connect, timeout,
  dropped connection, 5xx, malformed body): the endpoint is unhealthy;
* success: a result, or an error proving the endpoint answered sanely
  (429 rate limit, 4xx config errors, AI and validation errors). A 429 is
  the server's own back-pressure and carries Retry-After, which the retry
  policy already honours; opening the circuit on it would only add delay;
* neutral: anything else (cancellation, our own system errors): the
  streak is kept, a half-open trial slot is released for the next caller.

The breaker is a plain state machine without awaits, so it is safe under
asyncio; a lock makes it safe across threads too. ``on_change`` receives a
``CircuitChange``; ``CircuitChange.as_event()`` gives the audit event.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pliny.errors import Category, NetworkError, PlinyError
from pliny.events import CircuitChanged
from pliny.llm.classify import Code, classify

if TYPE_CHECKING:
    from pliny.config.settings import CircuitBreaker as CircuitSettings

T = TypeVar("T")


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class CircuitChange:
    endpoint: str
    state: State
    failures: int
    reopen_in_s: float

    def as_event(self, **context: object) -> CircuitChanged | None:
        """The audit event; HALF_OPEN has none (the next call's outcome tells)."""
        if self.state is State.HALF_OPEN:
            return None
        kind = "circuit_opened" if self.state is State.OPEN else "circuit_closed"
        return CircuitChanged(
            type=kind,
            endpoint=self.endpoint,
            failures=self.failures,
            reopen_in_s=self.reopen_in_s,
            **context,
        )


def counts_as_failure(err: PlinyError) -> bool | None:
    """True: endpoint failure; False: endpoint answered (success); None: neutral."""
    if err.category == Category.NETWORK:
        return err.code not in (Code.NET_RATE_LIMIT, Code.NET_CIRCUIT_OPEN)
    if err.category in (Category.CONFIG, Category.AI, Category.VALIDATION):
        return False
    return None


class CircuitBreaker:
    def __init__(
        self,
        endpoint: str,
        failure_threshold: int = 5,
        reset_timeout_s: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitChange], None] | None = None,
    ) -> None:
        if failure_threshold < 1 or reset_timeout_s < 0:
            raise ValueError("failure_threshold must be >= 1 and reset_timeout_s >= 0")
        self.endpoint = endpoint
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.RLock()  # re-entrant: on_change may read the state
        self._state = State.CLOSED
        self._failures = 0  # consecutive endpoint failures
        self._opened_at = 0.0
        self._trial_started: float | None = None  # clock time of the half-open trial
        self._streak_started = 0.0  # clock time of the streak's first failure
        self.last_failure: PlinyError | None = None  # the streak's latest endpoint failure

    @property
    def state(self) -> State:
        with self._lock:
            return self._current()

    @property
    def failures(self) -> int:
        return self._failures

    def _current(self) -> State:
        """The state now; OPEN turns HALF_OPEN lazily once the timeout has passed."""
        if self._state is State.OPEN and self._remaining() <= 0:
            self._set(State.HALF_OPEN)
        return self._state

    def _remaining(self) -> float:
        return max(0.0, self._opened_at + self.reset_timeout_s - self._clock())

    def _set(self, state: State) -> None:
        self._state = state
        if state is State.OPEN:
            self._opened_at = self._clock()
        if self._on_change is not None:
            reopen = self.reset_timeout_s if state is State.OPEN else 0.0
            self._on_change(CircuitChange(self.endpoint, state, self._failures, reopen))

    def before_call(self) -> None:
        """Raise PLINY-NET-CIRCUIT-OPEN unless a call may go to the endpoint now."""
        with self._lock:
            state = self._current()
            if state is State.CLOSED:
                return
            if state is State.HALF_OPEN and self._trial_wait() <= 0:
                self._trial_started = self._clock()
                return
            wait = self._remaining() if state is State.OPEN else self._trial_wait()
        raise NetworkError(
            f"circuit open for {self.endpoint} after {self._failures} consecutive failures; "
            f"next trial in {wait:.1f} s",
            code=Code.NET_CIRCUIT_OPEN,
            retry_after=wait,
        )

    def _trial_wait(self) -> float:
        """Time until the half-open trial slot is free. A trial whose caller vanished without
        reporting (killed task) expires after ``reset_timeout_s`` so the circuit never wedges."""
        if self._trial_started is None:
            return 0.0
        return max(0.0, self._trial_started + self.reset_timeout_s - self._clock())

    def record_success(self) -> None:
        with self._lock:
            self._trial_started = None
            self._failures = 0
            self.last_failure = None
            if self._current() is not State.CLOSED:
                self._set(State.CLOSED)

    def record_failure(self, err: PlinyError) -> None:
        """Feed an outcome; how it counts is decided by ``counts_as_failure``."""
        verdict = counts_as_failure(err)
        if verdict is False:
            self.record_success()
            return
        with self._lock:
            self._trial_started = None
            if verdict is None:
                return
            if self._failures == 0:
                self._streak_started = self._clock()
            self._failures += 1
            self.last_failure = err
            state = self._current()
            if state is State.HALF_OPEN or (
                state is State.CLOSED and self._failures >= self.failure_threshold
            ):
                self._set(State.OPEN)

    def streak_s(self) -> float:
        """Seconds since the current streak of failures began (0 without one)."""
        with self._lock:
            return self._clock() - self._streak_started if self._failures else 0.0

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()`` through the breaker; exceptions propagate unchanged."""
        self.before_call()
        try:
            result = await fn()
        except BaseException as exc:
            self.record_failure(classify(exc))
            raise
        self.record_success()
        return result


def gave_up(err: NetworkError, url: str, breaker: CircuitBreaker | None) -> NetworkError:
    """The one line a user reads when the endpoint is down: what, how often, how long.

    ``endpoint http://127.0.0.1:9/v1 unreachable: cannot connect ...: connection
    refused; tried 5 times over 7.9 s (network retry budget 20 s)``. Counted
    per endpoint when there is a breaker, so parallel agents tell one story;
    a rejection by the open circuit reports the failure that opened it.
    """
    cause: PlinyError = err
    if err.code == Code.NET_CIRCUIT_OPEN and breaker is not None and breaker.last_failure:
        cause = breaker.last_failure
    tries = breaker.failures if breaker is not None and breaker.failures else err.attempts
    seconds = max(err.elapsed_s or 0.0, breaker.streak_s() if breaker is not None else 0.0)
    budget = f"network retry budget {err.budget_s:g} s" if err.budget_s else "no time budget"
    if breaker is not None and breaker.state is not State.CLOSED:
        budget += "; circuit open"
    verb = "unreachable" if cause.code in (Code.NET_CONNECT, Code.NET_TIMEOUT) else "failing"
    times = "1 time" if tries == 1 else f"{tries} times"
    out = NetworkError(
        f"endpoint {_shown(url)} {verb}: {cause.message}; tried {times} over {seconds:.1f} s "
        f"({budget})",
        code=cause.code,
        hint=err.hint,
    )
    out.attempts, out.elapsed_s, out.budget_s = err.attempts, err.elapsed_s, err.budget_s
    return out


def _shown(url: str) -> str:
    """The URL without credentials or query: it goes to the terminal and the audit log."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    with contextlib.suppress(ValueError):
        netloc += f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def endpoint_key(url_or_host: str) -> str:
    """host[:port] of a base URL (credentials and path dropped); a bare host is kept."""
    parts = urlsplit(url_or_host if "://" in url_or_host else f"//{url_or_host}")
    host = parts.hostname or url_or_host
    return f"{host}:{parts.port}" if parts.port else host


class CircuitBreakers:
    """One breaker per endpoint host[:port], created on first use."""

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout_s: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitChange], None] | None = None,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._on_change = on_change
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        settings: CircuitSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitChange], None] | None = None,
    ) -> CircuitBreakers:
        return cls(
            settings.failure_threshold,
            settings.reset_timeout or 0.0,
            clock=clock,
            on_change=on_change,
        )

    def get(self, url_or_host: str) -> CircuitBreaker:
        key = endpoint_key(url_or_host)
        with self._lock:
            if key not in self._breakers:
                self._breakers[key] = CircuitBreaker(
                    key,
                    self.failure_threshold,
                    self.reset_timeout_s,
                    clock=self._clock,
                    on_change=self._on_change,
                )
            return self._breakers[key]

    def states(self) -> dict[str, State]:
        """Every known endpoint's state (for the live view)."""
        with self._lock:
            breakers = list(self._breakers.values())
        return {b.endpoint: b.state for b in breakers}
