"""pliny.llm.circuit: closed -> open -> half-open -> closed, driven by an injected clock."""

from __future__ import annotations

import asyncio

import httpx2
import openai
import pytest

from pliny.config.settings import CircuitBreaker as CircuitSettings
from pliny.config.settings import RetryStrategy
from pliny.errors import Cancelled, NetworkError, PlinyError
from pliny.llm.circuit import (
    CircuitBreaker,
    CircuitBreakers,
    CircuitChange,
    State,
    counts_as_failure,
    endpoint_key,
)
from pliny.llm.classify import Code, classify
from pliny.llm.retry import RetryInfo, call_with_retry

URL = "http://127.0.0.1:8765/v1/chat/completions"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def status_error(cls: type, status: int, body: dict | None = None) -> PlinyError:
    body = body or {"message": f"status {status}"}
    request = httpx2.Request("POST", URL)
    resp = httpx2.Response(status, json={"error": body}, request=request)
    return classify(cls(f"Error code: {status}", response=resp, body=body))


SERVER_DOWN = status_error(openai.InternalServerError, 503)
BAD_REQUEST = status_error(openai.BadRequestError, 400)
RATE_LIMITED = status_error(openai.RateLimitError, 429)
REFUSED = classify(openai.APIConnectionError(request=httpx2.Request("POST", URL)))


def breaker(threshold: int = 3, timeout: float = 30.0):
    clock, changes = Clock(), []
    cb = CircuitBreaker("127.0.0.1:8765", threshold, timeout, clock=clock, on_change=changes.append)
    return cb, clock, changes


def fail(cb: CircuitBreaker, err: PlinyError, times: int = 1) -> None:
    for _ in range(times):
        cb.before_call()
        cb.record_failure(err)


def rejected(cb: CircuitBreaker) -> NetworkError:
    with pytest.raises(NetworkError) as info:
        cb.before_call()
    assert info.value.code == Code.NET_CIRCUIT_OPEN and info.value.recoverable
    return info.value


def test_opens_after_threshold_consecutive_failures():
    cb, clock, changes = breaker(threshold=3, timeout=30)
    fail(cb, SERVER_DOWN, 2)
    assert cb.state is State.CLOSED
    fail(cb, REFUSED)
    assert cb.state is State.OPEN
    assert changes == [CircuitChange("127.0.0.1:8765", State.OPEN, 3, 30.0)]
    assert rejected(cb).retry_after == 30.0
    clock.now += 12
    err = rejected(cb)
    assert err.retry_after == 18.0 and "127.0.0.1:8765" in err.message


def test_client_errors_and_rate_limits_do_not_open_it():
    cb, _, _ = breaker(threshold=2)
    for err in (BAD_REQUEST, RATE_LIMITED, SERVER_DOWN, BAD_REQUEST, SERVER_DOWN, RATE_LIMITED):
        fail(cb, err)
    assert cb.state is State.CLOSED  # each answered request broke the failure streak


def test_a_success_resets_the_streak():
    cb, _, _ = breaker(threshold=3)
    fail(cb, SERVER_DOWN, 2)
    cb.record_success()
    fail(cb, SERVER_DOWN, 2)
    assert cb.state is State.CLOSED and cb.failures == 2


def test_half_open_lets_one_trial_through_and_success_closes():
    cb, clock, changes = breaker(threshold=1, timeout=10)
    fail(cb, SERVER_DOWN)
    clock.now += 10
    assert cb.state is State.HALF_OPEN
    cb.before_call()  # the trial
    assert rejected(cb).retry_after == 10  # a second caller waits for the trial's outcome
    cb.record_success()
    assert cb.state is State.CLOSED
    cb.before_call()
    assert [c.state for c in changes] == [State.OPEN, State.HALF_OPEN, State.CLOSED]
    events = [c.as_event(session="s1") for c in changes]
    assert [e.type if e else None for e in events] == ["circuit_opened", None, "circuit_closed"]
    assert events[0].endpoint == "127.0.0.1:8765" and events[0].reopen_in_s == 10
    assert events[0].session == "s1"


def test_failed_trial_reopens_for_a_full_timeout():
    cb, clock, changes = breaker(threshold=2, timeout=10)
    fail(cb, SERVER_DOWN, 2)
    clock.now += 15
    fail(cb, SERVER_DOWN)
    assert cb.state is State.OPEN
    assert rejected(cb).retry_after == 10
    assert [c.state for c in changes] == [State.OPEN, State.HALF_OPEN, State.OPEN]


def test_cancelled_trial_frees_the_slot():
    cb, clock, _ = breaker(threshold=1, timeout=5)
    fail(cb, SERVER_DOWN)
    clock.now += 5
    cb.before_call()
    cb.record_failure(Cancelled("ctrl-c"))
    assert cb.state is State.HALF_OPEN
    cb.before_call()  # the next caller gets the trial


def test_a_trial_that_never_reports_back_expires():
    """A caller killed mid-trial (BaseException not fed back) must not wedge the circuit."""
    cb, clock, _ = breaker(threshold=1, timeout=5)
    fail(cb, SERVER_DOWN)
    clock.now += 5
    cb.before_call()  # trial taken, its caller disappears
    clock.now += 3
    assert rejected(cb).retry_after == 2
    clock.now += 2
    cb.before_call()  # a new trial
    cb.record_success()
    assert cb.state is State.CLOSED


def test_counts_as_failure_table():
    assert counts_as_failure(SERVER_DOWN) is True
    assert counts_as_failure(REFUSED) is True
    assert counts_as_failure(RATE_LIMITED) is False
    assert counts_as_failure(BAD_REQUEST) is False
    assert counts_as_failure(Cancelled("x")) is None


def test_call_wraps_a_real_coroutine():
    cb, _, _ = breaker(threshold=2)

    async def down() -> None:
        raise openai.InternalServerError(
            "down", response=httpx2.Response(502, request=httpx2.Request("GET", URL)), body=None
        )

    async def up() -> str:
        return "ok"

    async def main() -> None:
        for _ in range(2):
            with pytest.raises(openai.InternalServerError):  # propagates unchanged
                await cb.call(down)
        with pytest.raises(NetworkError):
            await cb.call(up)

    asyncio.run(main())
    assert cb.state is State.OPEN


def test_registry_keys_by_host_and_port():
    clock = Clock()
    settings = CircuitSettings(failure_threshold=2, reset_timeout="1m")
    breakers = CircuitBreakers.from_settings(settings, clock=clock)
    a = breakers.get("http://user:secret@api.local:8080/v1")
    assert a is breakers.get("http://api.local:8080/v2/chat") is breakers.get("api.local:8080")
    assert a.endpoint == "api.local:8080" and "secret" not in a.endpoint
    assert breakers.get("http://api.local:9090/v1") is not a
    assert (a.failure_threshold, a.reset_timeout_s) == (2, 60.0)
    fail(a, SERVER_DOWN, 2)
    assert breakers.states() == {"api.local:8080": State.OPEN, "api.local:9090": State.CLOSED}
    assert endpoint_key("https://api.openai.com/v1") == "api.openai.com"


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError):
        CircuitBreaker("x", failure_threshold=0)


def test_retry_waits_out_an_open_circuit_then_recovers():
    """Composition: the open circuit's retry_after makes the retry sleep until half-open."""
    clock, changes = Clock(), []
    cb = CircuitBreaker("api.local", 2, 30.0, clock=clock, on_change=changes.append)
    sleeps: list[float] = []
    infos: list[RetryInfo] = []
    outcomes = iter([SERVER_DOWN, SERVER_DOWN, "ok"])

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.now += seconds

    async def endpoint() -> str:
        outcome = next(outcomes)
        if isinstance(outcome, PlinyError):
            raise outcome
        return outcome

    result = asyncio.run(
        call_with_retry(
            lambda attempt: cb.call(endpoint),
            strategies={"network": RetryStrategy(max_retries=5, initial_delay=100, jitter=False)},
            on_retry=infos.append,
            sleep=sleep,
        )
    )
    assert result == "ok"
    assert [i.code for i in infos] == [Code.NET_SERVER, Code.NET_SERVER, Code.NET_CIRCUIT_OPEN]
    # opened after attempt 2; the 0.2 s backoff already ran, so 29.8 s of open time remain
    assert sleeps == [0.1, 0.2, pytest.approx(29.8)]
    assert [c.state for c in changes] == [State.OPEN, State.HALF_OPEN, State.CLOSED]
