"""pliny.llm.retry: per-category strategies, backoff, Retry-After, attempt counting, fallbacks.

Sleeps are injected (recorded, not waited); the last test drives the real
openai client against a scripted socket server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import errno

import httpx2
import openai
import pydantic
import pytest

from pliny.config.settings import RetryStrategy
from pliny.errors import BudgetExceeded, Cancelled, Category, PlinyError
from pliny.llm.classify import Code
from pliny.llm.retry import (
    ModelChain,
    RetryInfo,
    call_with_retry,
    compute_delay_ms,
    fallback_chain,
    final_message,
    strategies_for_chain,
)

URL = "http://127.0.0.1:8765/v1/chat/completions"


def status_error(cls: type, status: int, headers: dict[str, str] | None = None, body=None):
    body = body or {"message": f"status {status}"}
    request = httpx2.Request("POST", URL)
    resp = httpx2.Response(status, json={"error": body}, headers=headers, request=request)
    return cls(f"Error code: {status}", response=resp, body=body)


def server_error() -> openai.InternalServerError:
    return status_error(openai.InternalServerError, 503)


def validation_error() -> pydantic.ValidationError:
    class Out(pydantic.BaseModel):
        answer: str

    try:
        Out.model_validate({})
    except pydantic.ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


def exact(backoff: str = "exponential", **kw) -> RetryStrategy:
    """A strategy without jitter so delays are exact."""
    return RetryStrategy(backoff=backoff, jitter=False, **kw)


class Recorder:
    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.infos: list[RetryInfo] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def on_retry(self, info: RetryInfo) -> None:
        assert len(self.infos) == len(self.sleeps), "on_retry must run before the sleep"
        self.infos.append(info)


def scripted(*outcomes: object):
    """fn(attempt) raising/returning the scripted outcomes in order; records attempts."""
    seen: list[int] = []

    async def fn(attempt: int) -> object:
        seen.append(attempt)
        outcome = outcomes[min(attempt, len(outcomes)) - 1]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return fn, seen


def run(fn, strategies, rec: Recorder, **kw):
    return asyncio.run(
        call_with_retry(fn, strategies=strategies, on_retry=rec.on_retry, sleep=rec.sleep, **kw)
    )


# --- delays ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (exact(initial_delay=100, multiplier=2), [100, 200, 400, 800, 1600]),
        (exact(initial_delay=100, multiplier=3, max_delay=1000), [100, 300, 900, 1000, 1000]),
        (exact("linear", initial_delay=100), [100, 200, 300, 400, 500]),
        (exact("linear", initial_delay=100, max_delay=250), [100, 200, 250, 250, 250]),
        (exact("constant", initial_delay=70), [70, 70, 70, 70, 70]),
        (exact("constant", initial_delay=0), [0, 0, 0, 0, 0]),
    ],
)
def test_backoff_sequences_without_jitter(strategy, expected):
    assert [compute_delay_ms(strategy, n) for n in range(1, 6)] == expected


def test_equal_jitter_stays_between_half_and_full_delay():
    strategy = RetryStrategy(initial_delay=100, multiplier=2, max_delay=1000, jitter=True)
    for n in range(1, 8):
        full = min(100 * 2 ** (n - 1), 1000)
        assert compute_delay_ms(strategy, n, rand=lambda: 0.0) == full / 2
        assert compute_delay_ms(strategy, n, rand=lambda: 1.0) == full
        samples = [compute_delay_ms(strategy, n) for _ in range(200)]
        assert all(full / 2 <= s <= full for s in samples)
        assert len(set(samples)) > 1  # really random


def test_huge_exponent_is_capped_not_an_overflow():
    strategy = exact(initial_delay=1, multiplier=1e6, max_delay=5000)
    assert compute_delay_ms(strategy, 100) == 5000


# --- call_with_retry ---------------------------------------------------------------------------


def test_success_after_two_failures():
    rec = Recorder()
    fn, seen = scripted(server_error(), server_error(), "ok")
    assert run(fn, {"network": exact(initial_delay=100, multiplier=2)}, rec) == "ok"
    assert seen == [1, 2, 3]
    assert rec.sleeps == [0.1, 0.2]
    assert [(i.attempt, i.delay_ms, i.category, i.code) for i in rec.infos] == [
        (1, 100, "network", Code.NET_SERVER),
        (2, 200, "network", Code.NET_SERVER),
    ]
    assert "HTTP 503" in rec.infos[0].message and rec.infos[0].error is not None


def test_network_gives_up_after_max_retries_plus_one_attempts():
    rec = Recorder()
    fn, seen = scripted(server_error())
    with pytest.raises(PlinyError) as info:
        run(fn, {"network": exact(max_retries=3, initial_delay=10)}, rec)
    err = info.value
    assert seen == [1, 2, 3, 4] and err.attempts == 4
    assert (err.category, err.code) == (Category.NETWORK, Code.NET_SERVER)
    assert isinstance(err.__cause__, openai.InternalServerError)
    assert rec.sleeps == [0.01, 0.02, 0.04]


@pytest.mark.parametrize(
    "exc",
    [
        status_error(openai.AuthenticationError, 401),
        status_error(openai.NotFoundError, 404),
        status_error(openai.BadRequestError, 400),
        OSError(errno.ENOSPC, "No space left on device"),
        ValueError("a bug"),
        BudgetExceeded("budget reached"),
        Cancelled("user pressed Ctrl-C"),
    ],
)
def test_fail_fast_errors_get_one_attempt(exc):
    rec = Recorder()
    fn, seen = scripted(exc)
    generous = {c: exact(max_retries=9) for c in ("network", "config", "system", "ai")}
    with pytest.raises(PlinyError) as info:
        run(fn, generous, rec)
    assert seen == [1] and info.value.attempts == 1
    assert rec.sleeps == [] and rec.infos == []


def test_transient_system_errors_are_retried():
    rec = Recorder()
    fn, seen = scripted(BlockingIOError(errno.EAGAIN, "busy"), "done")
    assert run(fn, {"system": exact(initial_delay=5)}, rec) == "done"
    assert seen == [1, 2] and rec.infos[0].code == Code.SYS_TRANSIENT


def test_zero_max_retries_means_one_attempt():
    rec = Recorder()
    fn, seen = scripted(server_error())
    with pytest.raises(PlinyError):
        run(fn, {"network": exact(max_retries=0)}, rec)
    assert seen == [1]


def test_each_category_spends_its_own_budget():
    rec = Recorder()
    fn, seen = scripted(validation_error(), server_error(), server_error(), validation_error())
    strategies = {
        "validation": exact("constant", max_retries=1, initial_delay=0),
        "network": exact(max_retries=5, initial_delay=100, multiplier=2),
    }
    with pytest.raises(PlinyError) as info:
        run(fn, strategies, rec)
    # the second validation failure exceeds validation's single retry
    assert seen == [1, 2, 3, 4] and info.value.category == Category.VALIDATION
    # network backoff counts network failures only: 100 then 200, not 200 then 400
    assert rec.sleeps == [0, 0.1, 0.2]
    assert [i.category for i in rec.infos] == ["validation", "network", "network"]


def test_total_attempt_cap():
    rec = Recorder()
    fn, seen = scripted(server_error())
    with pytest.raises(PlinyError) as info:
        run(fn, {"network": exact(max_retries=50, initial_delay=0)}, rec, max_total_attempts=3)
    assert seen == [1, 2, 3] and info.value.attempts == 3


def test_missing_category_uses_built_in_defaults():
    rec = Recorder()
    fn, seen = scripted(validation_error())
    with pytest.raises(PlinyError):
        run(fn, {}, rec)
    assert seen == [1, 2, 3]  # built-in validation strategy: max_retries 2


def test_retry_after_is_a_floor_even_above_max_delay():
    rec = Recorder()
    limited = status_error(openai.RateLimitError, 429, headers={"retry-after": "2"})
    fn, _ = scripted(limited, "ok")
    assert run(fn, {"network": exact(initial_delay=100, max_delay=500)}, rec) == "ok"
    assert rec.sleeps == [2.0] and rec.infos[0].retry_after == 2.0
    assert rec.infos[0].delay_ms == 2000


def test_computed_delay_wins_when_longer_than_retry_after():
    rec = Recorder()
    limited = status_error(openai.RateLimitError, 429, headers={"retry-after-ms": "50"})
    fn, _ = scripted(limited, "ok")
    run(fn, {"network": exact(initial_delay=300)}, rec)
    assert rec.sleeps == [0.3]


def test_retry_after_above_the_ceiling_gives_up_with_a_hint():
    rec = Recorder()
    fn, seen = scripted(status_error(openai.RateLimitError, 429, headers={"retry-after": "3600"}))
    with pytest.raises(PlinyError) as info:
        run(fn, {"network": exact()}, rec)
    assert seen == [1] and rec.sleeps == []
    assert "3600" in str(info.value) and "resume" in str(info.value)


def test_cancellation_passes_through_untouched():
    rec = Recorder()
    fn, seen = scripted(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        run(fn, {"network": exact()}, rec)
    assert seen == [1]


def test_outer_timeout_interrupts_a_backoff_sleep():
    """Real asyncio.sleep: an agent timeout must cut a 60 s backoff short, not wait it out."""
    infos: list[RetryInfo] = []

    async def main() -> None:
        fn, _ = scripted(server_error())
        async with asyncio.timeout(0.2):
            slow = exact(initial_delay=60_000, max_delay=60_000)
            await call_with_retry(fn, strategies={"network": slow}, on_retry=infos.append)

    with pytest.raises(TimeoutError):
        asyncio.run(main())
    assert [i.delay_ms for i in infos] == [60_000]


def test_retry_info_becomes_an_audit_event():
    info = RetryInfo("network", Code.NET_SERVER, 2, 400.0, "HTTP 503")
    event = info.as_event(agent="researcher")
    assert (event.type, event.category, event.code, event.attempt, event.delay_ms) == (
        "retry",
        "network",
        "PLINY-NET-SERVER",
        2,
        400.0,
    )
    assert event.agent == "researcher"


def test_final_message_names_agent_category_attempts_and_next_step():
    rec = Recorder()
    fn, _ = scripted(server_error())
    with pytest.raises(PlinyError) as info:
        run(fn, {"network": exact(max_retries=2, initial_delay=0)}, rec)
    text = final_message(info.value, agent="researcher")
    assert "agent 'researcher'" in text and "3 attempts" in text
    assert "network PLINY-NET-SERVER" in text and "resume" in text
    auth = final_message(Cancelled("x", hint="press again"))
    assert "1 attempt " in auth and "press again" in auth


# --- fallback models ---------------------------------------------------------------------------


def test_fallback_chain_dedupes_and_keeps_order():
    assert fallback_chain("a", ["b", "a", "", "c", "b"]) == ["a", "b", "c"]
    assert fallback_chain("a", []) == ["a"]


def test_model_chain_advances_on_ai_failures_only():
    too_long = status_error(
        openai.BadRequestError, 400, body={"message": "too long", "code": "context_length_exceeded"}
    )
    chain = ModelChain.of("small", ["large", "huge"])
    strategies = strategies_for_chain({"ai": exact("constant", max_retries=0)}, chain)
    assert strategies["ai"].max_retries == 2
    used: list[str] = []

    async def fn(attempt: int) -> str:
        used.append(chain.current)
        if attempt == 1:
            raise server_error()  # network: retry the same model
        if chain.current != "huge":
            raise too_long
        return f"answered by {chain.current}"

    rec = Recorder()

    def on_retry(info: RetryInfo) -> None:
        rec.on_retry(info)
        chain.advance(info.error)

    result = asyncio.run(
        call_with_retry(fn, strategies=strategies, on_retry=on_retry, sleep=rec.sleep)
    )
    assert result == "answered by huge"
    assert used == ["small", "small", "large", "huge"]
    assert chain.advance(None) is False and chain.current == "huge"


# --- end to end with the real openai client ----------------------------------------------------


async def _scripted_endpoint(replies: list[bytes], rec: Recorder) -> tuple[str, int]:
    requests = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        await reader.read(65536)
        writer.write(replies[min(requests, len(replies) - 1)])
        requests += 1
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test", max_retries=0, timeout=5
    )
    async with server:
        models = await call_with_retry(
            lambda attempt: client.models.list(),
            strategies={"network": exact(initial_delay=10)},
            on_retry=rec.on_retry,
            sleep=rec.sleep,
        )
        await client.close()
    return models.data[0].id, requests


def http(status: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_real_client_429_with_retry_after_then_success():
    rec = Recorder()
    replies = [
        http("429 Too Many Requests", b'{"error":{"message":"slow down"}}', "Retry-After: 1\r\n"),
        b"",  # connection dropped without a response
        http(
            "200 OK",
            b'{"object":"list","data":[{"id":"m1","object":"model","created":0,"owned_by":"me"}]}',
        ),
    ]
    model, requests = asyncio.run(_scripted_endpoint(replies, rec))
    assert (model, requests) == ("m1", 3)
    assert [i.code for i in rec.infos] == [Code.NET_RATE_LIMIT, Code.NET_DROPPED]
    assert rec.sleeps == [1.0, 0.02]  # Retry-After, then the 2nd network backoff step


# --- the time budget (max_elapsed) -------------------------------------------------------------


class Clock:
    """A clock the recorded sleeps advance, so a time budget is tested without waiting."""

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    def __call__(self) -> float:
        return sum(self.rec.sleeps)


def test_time_budget_stops_retries_before_max_retries():
    rec = Recorder()
    fn, seen = scripted(server_error())
    strategy = exact("constant", max_retries=100, initial_delay=1000, max_elapsed=3.5)
    with pytest.raises(PlinyError) as info:
        run(fn, {"network": strategy}, rec, clock=Clock(rec))
    # retries start at 1, 2 and 3 s; the next would start at 4 s, past the 3.5 s budget
    assert seen == [1, 2, 3, 4] and rec.sleeps == [1.0, 1.0, 1.0]
    assert info.value.attempts == 4
    assert info.value.elapsed_s == pytest.approx(3.0) and info.value.budget_s == 3.5


def test_a_retry_after_past_the_budget_gives_up_at_once():
    rec = Recorder()
    limited = status_error(openai.RateLimitError, 429, headers={"retry-after": "30"})
    fn, seen = scripted(limited, "ok")
    with pytest.raises(PlinyError):
        run(fn, {"network": exact(max_elapsed=8)}, rec, clock=Clock(rec))
    assert seen == [1] and rec.sleeps == []


def test_the_built_in_network_strategy_has_a_time_budget():
    from pliny.config.settings import load_settings

    network = load_settings().error_handling.retry_strategies["network"]
    assert network.max_elapsed is not None and 0 < network.max_elapsed <= 30
