"""Every billed token bucket, as subsets: recorded, folded, priced, shown, exported once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import genai_prices
import pytest

from pliny.audit.reader import read_events
from pliny.audit.summary import summarize
from pliny.audit.writer import AuditLog
from pliny.config.settings import Settings
from pliny.events import EventBus, LLMCall, parse
from pliny.llm.buckets import Buckets, from_usage
from pliny.llm.budget import BudgetGuard
from pliny.llm.endpoint import EndpointChoice
from pliny.llm.gateway import CallContext, LLMGateway
from pliny.llm.pricing import PricingTable
from pliny.usage import fold
from tests.fakeserver import FakeServer

BILLED = {
    "prompt_tokens": 1000,
    "completion_tokens": 300,
    "cached_tokens": 500,
    "cache_creation_input_tokens": 200,
    "reasoning_tokens": 120,
}


def test_openai_shape_reads_cache_and_reasoning_as_subsets() -> None:
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 500},
        "completion_tokens_details": {"reasoning_tokens": 120},
    }
    assert from_usage(usage) == Buckets(1000, 300, 500, 0, 120)


def test_anthropic_style_proxy_keys_are_read() -> None:
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 10,
        "cache_read_input_tokens": 500,
        "cache_creation_input_tokens": 200,
    }
    assert from_usage(usage) == Buckets(1000, 10, 500, 200, 0)


def test_an_exclusive_input_count_becomes_the_whole_input() -> None:
    # Anthropic's input_tokens leaves the cache buckets out: 10 fresh + 500 read + 200 written
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cache_read_input_tokens": 500,
        "cache_creation_input_tokens": 200,
    }
    assert from_usage(usage) == Buckets(710, 5, 500, 200, 0)


def test_reasoning_never_exceeds_completion_and_junk_reads_as_zero() -> None:
    usage = {
        "prompt_tokens": "x",
        "completion_tokens": 5,
        "completion_tokens_details": {"reasoning_tokens": 50},
    }
    assert from_usage(usage) == Buckets(0, 5, 0, 0, 5)


def _gateway(server: FakeServer, bus: EventBus, **llm: Any) -> LLMGateway:
    settings = Settings.model_validate({"llm": {"stream": False, **llm}})
    endpoint = EndpointChoice("remote", server.base_url, "sk-test", "claude-3-5-sonnet", "test")
    return LLMGateway(settings, endpoint, bus, pricing=PricingTable.load())


@pytest.mark.parametrize("stream", [False, True])
def test_a_call_records_every_bucket_and_prices_each_once(
    fake_server: FakeServer, tmp_path: Path, stream: bool
) -> None:
    fake_server.script(reply="ok", usage=BILLED)
    bus = EventBus(session="s1")
    log = AuditLog(tmp_path / "audit.jsonl")
    bus.subscribe(log)
    guard = BudgetGuard()
    bus.subscribe(guard)
    gateway = _gateway(fake_server, bus, stream=stream)

    async def go() -> None:
        await gateway.chat(CallContext("p", "a"), [{"role": "user", "content": "hi"}])
        await gateway.close()

    asyncio.run(go())
    log.close()
    (call,) = [e for e in read_events(tmp_path / "audit.jsonl") if e.type == "llm_call"]
    assert (call.prompt_tokens, call.completion_tokens) == (1000, 300)
    assert (call.cached_tokens, call.cache_write_tokens, call.reasoning_tokens) == (500, 200, 120)
    assert call.streamed is stream
    # genai-prices with the same buckets: cache read and write at their own rates
    expected = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=1000, output_tokens=300, cache_read_tokens=500, cache_write_tokens=200
        ),
        "claude-3-5-sonnet",
    ).total_price
    assert call.cost_usd == pytest.approx(float(expected))
    flat = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=1000, output_tokens=300), "claude-3-5-sonnet"
    ).total_price
    assert call.cost_usd != pytest.approx(float(flat))
    # budgets and summaries count each token once: prompt + completion
    assert guard.session.tokens == 1300
    totals = summarize(read_events(tmp_path / "audit.jsonl")).totals
    assert (totals.tokens, totals.cached_tokens, totals.cache_write_tokens) == (1300, 500, 200)
    assert totals.reasoning_tokens == 120


def test_fold_totals_show_buckets_beside_the_total_not_in_it() -> None:
    calls = [
        LLMCall(
            prompt_tokens=100,
            completion_tokens=50,
            cached_tokens=40,
            cache_write_tokens=10,
            reasoning_tokens=20,
            cost_usd=0.1,
        )
    ] * 2
    totals = fold(calls).totals()
    assert totals["tokens"] == 300
    assert (totals["cache_read_tokens"], totals["cache_write_tokens"]) == (80, 20)
    assert totals["reasoning_tokens"] == 40


def test_old_log_lines_without_buckets_still_load() -> None:
    event = parse({"type": "llm_call", "prompt_tokens": 5, "completion_tokens": 2})
    assert (event.cache_write_tokens, event.reasoning_tokens, event.streamed) == (0, 0, False)
    assert fold([event]).tokens == 7


def test_user_override_prices_cache_writes_at_their_rate() -> None:
    from pliny.config.settings import ModelPrice

    table = PricingTable.load(
        {"m": ModelPrice(input=1, output=2, cached_input=0.5, cache_write_input=4)}
    )
    quote = table.quote("m", 1_000_000, 1_000_000, 250_000, cache_write_tokens=250_000)
    assert quote is not None
    usd = quote.usd
    assert usd == pytest.approx(0.5 * 1 + 0.25 * 0.5 + 0.25 * 4 + 2)


def test_otel_span_carries_reasoning_and_cache_write_tokens() -> None:
    from pliny.observe.otel import spans_of

    event = LLMCall(
        phase="p",
        agent="a",
        model="m",
        prompt_tokens=10,
        completion_tokens=5,
        cached_tokens=4,
        cache_write_tokens=3,
        reasoning_tokens=2,
        seq=1,
    )
    (span,) = [s for s in spans_of([event]) if s.name.startswith("chat")]
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 4
    assert attrs["gen_ai.usage.cache_creation.input_tokens"] == 3
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == 2
