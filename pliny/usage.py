"""What LLM calls used: the one fold every view shares.

The rule (live view, final line, checkpoint trailers, budgets, ``audit
summary``, metrics, ``session show`` and alerts all follow it):

- an ``llm_call`` sent to an endpoint and answered is *paid*: it counts one
  call, its tokens and its cost, once, in the run that paid it;
- a *replayed* call (answered from the resume journal) and a *cache hit*
  (answered from the result cache) are counted apart, in ``replayed_calls``
  and ``cache_hits``, and add no call, token or cost: the call that first
  got the answer is already in the log;
- a paid call whose cost is null (model not in the pricing table) adds its
  tokens but no cost and is counted in ``unpriced_calls``, so a total is
  shown as "unpriced" (or "$x + unpriced"), never as a silent $0.0000;
- token buckets are subsets (see pliny.llm.buckets): cache-read
  (``cached_tokens``) and cache-write tokens are parts of ``prompt_tokens``,
  reasoning tokens part of ``completion_tokens``; ``tokens`` (what budgets
  count) is prompt + completion, each token once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, computed_field

CallKind = Literal["paid", "replayed", "cache_hit"]


def call_kind(event: Any) -> CallKind | None:
    """How an event counts: None for anything but an llm_call."""
    if getattr(event, "type", None) != "llm_call":
        return None
    if getattr(event, "cache_hit", False):
        return "cache_hit"
    return "replayed" if getattr(event, "replayed", False) else "paid"


def _number(event: Any, name: str) -> float:
    """Known fields and extras alike; an odd log line never raises or subtracts."""
    value = getattr(event, name, 0)
    return max(0.0, float(value)) if isinstance(value, int | float) else 0.0


class Usage(BaseModel):
    """Calls, tokens and cost of a set of llm_call events, under the rule above."""

    calls: int = 0  # paid: sent to an endpoint and answered
    replayed_calls: int = 0  # answered from the resume journal, not sent
    cache_hits: int = 0  # answered from the result cache, not sent
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # cache reads: part of prompt_tokens
    cache_write_tokens: int = 0  # part of prompt_tokens
    reasoning_tokens: int = 0  # part of completion_tokens
    estimated_calls: int = 0  # endpoint reported no usage: tokens estimated with tiktoken
    cost_usd: float = 0.0  # priced calls only
    unpriced_calls: int = 0  # paid calls whose model has no price
    latency_ms: float = 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, event: Any) -> CallKind | None:
        """Fold one event; returns how it counted (None: not an llm_call)."""
        kind = call_kind(event)
        if kind == "replayed":
            self.replayed_calls += 1
        elif kind == "cache_hit":
            self.cache_hits += 1
        elif kind == "paid":
            self._pay(event)
        return kind

    def _pay(self, event: Any) -> None:
        self.calls += 1
        self.prompt_tokens += int(_number(event, "prompt_tokens"))
        self.completion_tokens += int(_number(event, "completion_tokens"))
        self.cached_tokens += int(_number(event, "cached_tokens"))
        self.cache_write_tokens += int(_number(event, "cache_write_tokens"))
        self.reasoning_tokens += int(_number(event, "reasoning_tokens"))
        self.estimated_calls += bool(getattr(event, "tokens_estimated", False))
        self.latency_ms += _number(event, "latency_ms")
        if getattr(event, "cost_usd", None) is None:
            self.unpriced_calls += 1
        else:
            self.cost_usd = round(self.cost_usd + _number(event, "cost_usd"), 10)

    def totals(self) -> dict[str, Any]:
        """The JSON figures of views (session show, execute --json)."""
        return {
            "calls": self.calls,
            "replayed_calls": self.replayed_calls,
            "cache_hits": self.cache_hits,
            "tokens": self.tokens,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cache_read_tokens": self.cached_tokens,  # the buckets: subsets, not added
            "cache_write_tokens": self.cache_write_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_usd": round(self.cost_usd, 6),  # priced calls only
            "unpriced_calls": self.unpriced_calls,
            "cost": self.cost_text(),  # "$0.0123", "unpriced" or "$0.0123 + unpriced"
        }

    def cost_text(self, digits: int = 4) -> str:
        return format_cost(self.cost_usd, self.unpriced_calls, self.calls, digits)


def fold(events: Iterable[Any], usage: Usage | None = None) -> Usage:
    """Usage of ``events`` (added to ``usage`` when given)."""
    usage = usage if usage is not None else Usage()
    for event in events:
        usage.add(event)
    return usage


def format_cost(cost_usd: float, unpriced_calls: int, calls: int, digits: int = 4) -> str:
    """``$0.0123``; ``unpriced`` when no paid call had a price; ``$0.0123 + unpriced``."""
    if unpriced_calls and unpriced_calls >= calls:
        return "unpriced"
    smallest = 10.0**-digits
    # a paid cost too small to show is "<$0.0001", never a $0 that reads as free
    text = f"<${smallest:.{digits}f}" if 0 < cost_usd < smallest / 2 else f"${cost_usd:.{digits}f}"
    return f"{text} + unpriced" if unpriced_calls else text
