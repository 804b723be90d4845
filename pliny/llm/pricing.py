"""Cost of an LLM call from its token counts.

Prices come from the built-in ``configs/pricing.yaml``, overridden per model by
``pricing:`` in the user's config. A model found nowhere is *unpriced*: its
cost is ``None`` (recorded as null and flagged in summaries), never a silent 0.
Every priced call records ``PricingTable.hash`` so a later reader knows which
table priced it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from pydantic import Field

from pliny.config import resources
from pliny.config.settings import ModelPrice, Strict, validate
from pliny.config.yamlsource import load_file

PER_TOKENS = 1_000_000
# What may follow a known name for a dated snapshot: gpt-4o-2024-08-06, gpt-4-0613.
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|\d{4})$")


class PricingFile(Strict):
    models: dict[str, ModelPrice] = Field(default_factory=dict)


class PricingTable:
    def __init__(self, models: dict[str, ModelPrice]) -> None:
        self.models = {name.lower(): price for name, price in models.items()}
        self._warned: set[str] = set()
        canonical = {k: v.model_dump() for k, v in sorted(self.models.items())}
        digest = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()
        self._hash = digest[:12]

    @classmethod
    def load(
        cls, overrides: dict[str, ModelPrice] | None = None, path: Path | None = None
    ) -> PricingTable:
        """The built-in table (or ``path``) with ``overrides`` replacing whole entries."""
        source = load_file(path or resources.config_path("pricing.yaml"))
        table = validate(PricingFile, source)
        models = {k.lower(): v for k, v in table.models.items()}
        models.update({k.lower(): v for k, v in (overrides or {}).items()})
        return cls(models)

    @property
    def hash(self) -> str:
        """Short sha256 of the merged table, recorded on every priced llm_call."""
        return self._hash

    def lookup(self, model: str) -> ModelPrice | None:
        """Exact name, else the longest known name of which ``model`` is a dated snapshot."""
        name = model.lower()
        if name in self.models:
            return self.models[name]
        candidates = [
            k for k in self.models if name.startswith(k) and _SNAPSHOT.fullmatch(name[len(k) :])
        ]
        return self.models[max(candidates, key=len)] if candidates else None

    def price(
        self, model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0
    ) -> float | None:
        """USD for one call, or None when the model is unpriced.

        ``cached_tokens`` are part of ``prompt_tokens`` (as OpenAI reports them)
        and cost ``cached_input`` when the table gives one, else ``input``.
        """
        entry = self.lookup(model)
        if entry is None:
            return None
        cached = max(0, min(cached_tokens, prompt_tokens))
        cached_rate = entry.input if entry.cached_input is None else entry.cached_input
        usd = (
            (prompt_tokens - cached) * entry.input
            + cached * cached_rate
            + completion_tokens * entry.output
        ) / PER_TOKENS
        return round(usd, 10)  # drop float noise like 0.0030000000000000005

    def warn_once(self, model: str) -> bool:
        """True the first time per table for ``model`` (one warning per model per session)."""
        key = model.lower()
        if key in self._warned:
            return False
        self._warned.add(key)
        return True
