"""One rate limiter per endpoint, shared by all parallel agents (real server, real client)."""

from __future__ import annotations

import asyncio
import math

from bench.bench_ratelimit import RETRY_AFTER_S, storm
from pliny.config.settings import Settings
from pliny.errors import NetworkError
from pliny.llm.classify import Code
from pliny.llm.ratelimit import EndpointLimiter
from tests.fakeserver import FakeServer

AGENTS, STORM_S = 16, 1.0


def test_a_429_storm_costs_one_burst_plus_one_probe_per_retry_after(
    fake_server: FakeServer,
) -> None:
    after = asyncio.run(storm(fake_server, shared=True, agents=AGENTS, storm_s=STORM_S))
    # the first burst is in flight before any 429 is back; after it, one probe per pause
    bound = AGENTS + math.ceil(STORM_S / RETRY_AFTER_S) + 2
    assert AGENTS <= after <= bound
    assert fake_server.count(lambda r: r.outcome == "reply") == AGENTS  # everyone finished
    before = asyncio.run(storm(fake_server, shared=False, agents=AGENTS, storm_s=STORM_S))
    assert before > after


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_is_a_token_bucket() -> None:
    clock = _Clock()
    limiter = EndpointLimiter("h", requests_per_minute=120, clock=clock)  # 2 a second

    async def go() -> None:
        for _ in range(120):  # a minute's worth is banked
            limiter.success(await limiter.acquire())
        task = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0.05)
        assert not task.done()  # the bucket is empty: the next one waits
        clock.now = 0.5  # one request refilled
        limiter._changed.set()
        await asyncio.wait_for(task, 1)

    asyncio.run(go())


def test_tokens_per_minute_settles_the_estimate_with_real_usage() -> None:
    limiter = EndpointLimiter("h", tokens_per_minute=1000, clock=_Clock())

    async def go() -> None:
        ticket = await limiter.acquire(900)
        assert limiter.tokens is not None and limiter.tokens.level == 100
        limiter.success(ticket, 900, used_tokens=300)  # 600 of the reserve come back
        assert limiter.tokens.level == 700

    asyncio.run(go())


def test_a_429_pauses_every_caller_until_its_retry_after() -> None:
    clock = _Clock()
    limiter = EndpointLimiter("h", clock=clock)

    async def go() -> None:
        ticket = await limiter.acquire()
        limiter.failure(
            ticket, NetworkError("rate limited", code=Code.NET_RATE_LIMIT, retry_after=2.0)
        )
        waiting = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0.05)
        assert not waiting.done() and limiter.paused_until == 2.0
        clock.now = 2.0
        probe = await asyncio.wait_for(waiting, 2)  # the pause is over: the probe goes
        second = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0.05)
        assert not second.done()  # ...alone, until its answer
        limiter.success(probe)
        await asyncio.wait_for(second, 1)

    asyncio.run(go())


def test_rate_settings_validate() -> None:
    llm = Settings.model_validate({"llm": {"requests_per_minute": 60, "tokens_per_minute": 1e5}})
    assert (llm.llm.requests_per_minute, llm.llm.tokens_per_minute) == (60, 1e5)
