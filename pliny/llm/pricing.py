"""Cost of an LLM call from its token counts.

Prices come from `genai-prices` (Pydantic's maintained price database:
thousands of models across providers, with price history by date), which
ships its data inside the package: nothing is fetched at run time (its
opt-in ``UpdatePrices`` background refresh is never started here). The
user's ``pricing:`` entries in ``pliny.yaml`` win over it, per model. A model
found nowhere is *unpriced*: its cost is ``None`` (recorded as null and
flagged in summaries), never a silent 0.

Every priced call records which table priced it (``price_source``: the
genai-prices version or ``pliny.yaml``) and ``PricingTable.hash``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from pliny.config.settings import ModelPrice

PER_TOKENS = 1_000_000
USER_SOURCE = "pliny.yaml"
# What may follow a known name for a dated snapshot: gpt-4o-2024-08-06, gpt-4-0613.
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|\d{4})$")


@dataclass(frozen=True)
class Price:
    usd: float
    source: str  # "pliny.yaml" | "genai-prices 0.2.3"
    provider: str | None = None  # genai-prices' provider id ("openai"); None for overrides


@cache
def table_source() -> str:
    """The bundled table's name and version, recorded on every call it prices."""
    import genai_prices

    return f"genai-prices {genai_prices.__version__}"


def _known_api(api_url: str | None) -> str | None:
    """``api_url`` when genai-prices knows its provider; else None (match by model name)."""
    if not api_url:
        return None
    from genai_prices.data_snapshot import get_snapshot

    try:
        get_snapshot().find_provider(None, None, api_url)
    except LookupError:
        return None  # a proxy or self-hosted server: the model name decides the provider
    return api_url


class PricingTable:
    def __init__(self, overrides: dict[str, ModelPrice], api_url: str | None = None) -> None:
        self.overrides = {name.lower(): price for name, price in overrides.items()}
        self.api_url = _known_api(api_url)
        self._warned: set[str] = set()
        canonical = {
            "overrides": {k: v.model_dump() for k, v in sorted(self.overrides.items())},
            "table": table_source(),
        }
        digest = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()
        self._hash = digest[:12]

    @classmethod
    def load(
        cls, overrides: dict[str, ModelPrice] | None = None, api_url: str | None = None
    ) -> PricingTable:
        """genai-prices' table with the user's ``overrides`` replacing whole entries.

        ``api_url`` is the endpoint's base URL: it tells genai-prices the
        provider (api.openai.com, api.groq.com, ...).
        """
        return cls(overrides or {}, api_url)

    @property
    def hash(self) -> str:
        """Short sha256 of the overrides and the table version, recorded on every priced call."""
        return self._hash

    def lookup(self, model: str) -> ModelPrice | None:
        """The user's override: exact name, else the longest one ``model`` is a snapshot of."""
        name = model.lower()
        if name in self.overrides:
            return self.overrides[name]
        candidates = [
            k for k in self.overrides if name.startswith(k) and _SNAPSHOT.fullmatch(name[len(k) :])
        ]
        return self.overrides[max(candidates, key=len)] if candidates else None

    def quote(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
        when: datetime | None = None,
        *,
        cache_write_tokens: int = 0,
    ) -> Price | None:
        """USD for one call and who priced it, or None when the model is unpriced.

        ``cached_tokens`` (cache reads) and ``cache_write_tokens`` are parts of
        ``prompt_tokens`` (see pliny.llm.buckets). ``when`` is the call's time:
        prices change by date (now if None).
        """
        cached = max(0, min(cached_tokens, prompt_tokens))
        written = max(0, min(cache_write_tokens, prompt_tokens - cached))
        if (entry := self.lookup(model)) is not None:
            usd = _by_hand(entry, prompt_tokens, completion_tokens, cached, written)
            return Price(usd, USER_SOURCE)
        return self._from_table(model, prompt_tokens, completion_tokens, cached, written, when)

    def price(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
        when: datetime | None = None,
    ) -> float | None:
        """USD for one call, or None when the model is unpriced."""
        quote = self.quote(model, prompt_tokens, completion_tokens, cached_tokens, when)
        return None if quote is None else quote.usd

    def _from_table(
        self,
        model: str,
        prompt: int,
        completion: int,
        cached: int,
        written: int,
        when: datetime | None,
    ) -> Price | None:
        import genai_prices

        # genai-prices' input_tokens is the whole input, cache buckets included (our rule too)
        usage = genai_prices.Usage(
            input_tokens=prompt,
            output_tokens=completion,
            cache_read_tokens=cached,
            cache_write_tokens=written,
        )
        kwargs: dict[str, Any] = {"genai_request_timestamp": when}
        if self.api_url:
            kwargs["provider_api_url"] = self.api_url
        try:
            calc = genai_prices.calc_price(usage, model, **kwargs)
        except LookupError:
            return None
        # round: drop float noise like 0.0030000000000000005
        return Price(round(float(calc.total_price), 10), table_source(), calc.provider.id)

    def warn_once(self, model: str) -> bool:
        """True the first time per table for ``model`` (one warning per model per session)."""
        key = model.lower()
        if key in self._warned:
            return False
        self._warned.add(key)
        return True


def _by_hand(
    entry: ModelPrice, prompt: int, completion: int, cached: int, written: int = 0
) -> float:
    """A user override: cache reads cost ``cached_input``, cache writes ``cache_write_input``
    when given, else ``input``; reasoning tokens are output tokens."""
    cached_rate = entry.input if entry.cached_input is None else entry.cached_input
    write_rate = entry.input if entry.cache_write_input is None else entry.cache_write_input
    usd = (
        (prompt - cached - written) * entry.input
        + cached * cached_rate
        + written * write_rate
        + completion * entry.output
    )
    return round(usd / PER_TOKENS, 10)
