"""One rate limiter per LLM endpoint, shared by every agent of the run.

Composed into the gateway like the circuit breaker (pliny.llm.circuit): each
attempt ``await``s ``acquire`` before it is sent and reports back with
``success`` or ``failure``. Three things hold a request back:

* **a 429 pause**: a 429 (its Retry-After, else 1 s) pauses the whole
  endpoint, not just the agent that got it: every agent waits out the same
  pause instead of each spending a request to learn it;
* **one probe after a pause**: when the pause ends, one request goes first;
  the others wait for its answer (a success releases them all, a 429 pauses
  again). During a long storm the endpoint sees one request per Retry-After,
  not one per agent;
* **optional budgets** ``llm.requests_per_minute`` / ``llm.tokens_per_minute``:
  token buckets (capacity = one minute's worth, refilled continuously).
  Tokens are reserved from an estimate before the call and settled with the
  real usage after it.

Waiting here is not a failed attempt: it spends no retry. asyncio only
(the gateway's agents share one event loop); one limiter per host[:port].
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from pliny.errors import PlinyError
from pliny.llm.circuit import endpoint_key
from pliny.llm.classify import Code

DEFAULT_PAUSE_S = 1.0  # a 429 without Retry-After
MAX_PAUSE_S = 300.0  # past this the retry policy gives up anyway (retry_after ceiling)


@dataclass
class TokenBucket:
    """``per_minute`` units per minute, at most one minute's worth banked."""

    per_minute: float
    level: float
    stamp: float

    def refill(self, now: float) -> None:
        rate = self.per_minute / 60.0
        self.level = min(self.per_minute, self.level + (now - self.stamp) * rate)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` is available (a request larger than the bucket waits
        for a full bucket, then goes: it could never fit otherwise)."""
        need = min(amount, self.per_minute) - self.level
        return 0.0 if need <= 0 else need / (self.per_minute / 60.0)


class EndpointLimiter:
    def __init__(
        self,
        endpoint: str,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self._clock = clock
        now = clock()
        self.requests = (
            TokenBucket(requests_per_minute, requests_per_minute, now)
            if requests_per_minute
            else None
        )
        self.tokens = (
            TokenBucket(tokens_per_minute, tokens_per_minute, now) if tokens_per_minute else None
        )
        self.paused_until = 0.0
        self._probing = False  # a probe is in flight after a pause
        self._probe_owner: object | None = None
        self._needs_probe = False  # the next request after a pause is the probe
        self.pause_on_429 = True  # False: budgets only (each agent waits out its own 429)
        self._changed = asyncio.Event()
        self.pauses = 0  # 429 pauses (for tests and the bench)
        self.waited_s = 0.0  # time agents spent held here, summed

    # -- before the call -----------------------------------------------------------

    async def acquire(self, estimate_tokens: int = 0) -> object:
        """Wait until a request may go; returns a ticket for ``success``/``failure``."""
        ticket = object()
        started = self._clock()
        while (wait := self._try(ticket, estimate_tokens)) is not None:
            self._changed.clear()
            # 0: wait for the probe's answer; re-checked each second so nothing can wedge
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=wait if wait > 0 else 1.0)
        self.waited_s += self._clock() - started
        return ticket

    def _try(self, ticket: object, estimate: int) -> float | None:
        """None: go now (buckets charged); else seconds to wait (0: until told)."""
        now = self._clock()
        if now < self.paused_until:
            return self.paused_until - now
        if self._probing:
            return 0.0  # the probe's answer decides
        wait = 0.0
        for bucket, amount in ((self.requests, 1), (self.tokens, estimate)):
            if bucket is not None:
                bucket.refill(now)
                wait = max(wait, bucket.wait_for(amount))
        if wait > 0:
            return wait
        if self.requests is not None:
            self.requests.level -= 1
        if self.tokens is not None:
            self.tokens.level -= min(estimate, self.tokens.per_minute)
        if self.pauses and self._probe_owner is None and self._needs_probe:
            self._probing, self._probe_owner, self._needs_probe = True, ticket, False
        return None

    # -- after the call ------------------------------------------------------------

    def success(self, ticket: object, estimate_tokens: int = 0, used_tokens: int = 0) -> None:
        """The call was answered: settle the token estimate, release waiters of a probe."""
        if self.tokens is not None and estimate_tokens:
            self.tokens.level += min(estimate_tokens, self.tokens.per_minute) - used_tokens
        self._end_probe(ticket)

    def failure(self, ticket: object, err: PlinyError) -> None:
        """A 429 pauses the endpoint for everyone; anything else just ends a probe."""
        if err.code == Code.NET_RATE_LIMIT and self.pause_on_429:
            pause = err.retry_after if err.retry_after is not None else DEFAULT_PAUSE_S
            until = self._clock() + min(max(pause, 0.0), MAX_PAUSE_S)
            if until > self.paused_until:
                self.paused_until = until
                self.pauses += 1
            self._needs_probe = True
        self._end_probe(ticket)

    def _end_probe(self, ticket: object) -> None:
        if self._probe_owner is ticket:
            self._probing, self._probe_owner = False, None
        self._changed.set()


class RateLimiters:
    """One ``EndpointLimiter`` per endpoint host[:port], created on first use."""

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self._clock = clock
        self._limiters: dict[str, EndpointLimiter] = {}

    def get(self, url_or_host: str) -> EndpointLimiter:
        key = endpoint_key(url_or_host)
        if key not in self._limiters:
            self._limiters[key] = EndpointLimiter(
                key, self.requests_per_minute, self.tokens_per_minute, clock=self._clock
            )
        return self._limiters[key]
