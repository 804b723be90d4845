"""Every token bucket a provider bills, as subsets of prompt and completion tokens.

The one place that reads a ``usage`` block (a ChatCompletion's, or the final
chunk's of a stream). The rule, so no view counts a token twice (the bug of
LiteLLM #6215 and Aider #5516):

- ``prompt_tokens`` is *all* input; ``cache_read_tokens`` and
  ``cache_write_tokens`` are parts of it;
- ``completion_tokens`` is *all* output; ``reasoning_tokens`` is part of it;
- totals are ``prompt_tokens + completion_tokens``, nothing else added.

Where the buckets come from:

- cache read: OpenAI's ``prompt_tokens_details.cached_tokens``, or
  Anthropic-style ``cache_read_input_tokens`` (what OpenAI-compatible proxies
  such as LiteLLM pass through);
- cache write: ``cache_creation_input_tokens`` (Anthropic-style), or
  ``prompt_tokens_details.cache_write_tokens`` (OpenRouter);
- reasoning: ``completion_tokens_details.reasoning_tokens``.

Anthropic's own API counts ``input_tokens`` *without* the cache buckets. A
proxy that passes that number as ``prompt_tokens`` shows itself by cache
buckets larger than the prompt: then the buckets are added to the prompt,
so the total is the billed total either way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Buckets:
    prompt_tokens: int = 0  # all input, cache buckets included
    completion_tokens: int = 0  # all output, reasoning included
    cache_read_tokens: int = 0  # part of prompt_tokens
    cache_write_tokens: int = 0  # part of prompt_tokens
    reasoning_tokens: int = 0  # part of completion_tokens

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def journaled(self) -> dict[str, int]:
        """The usage a journal entry keeps (``cached_tokens``: the cache-read bucket, the
        name journals had before the other buckets)."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }


def _get(obj: Any, name: str) -> Any:
    """A field of an SDK model, its pydantic extras, or a plain dict."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    value = getattr(obj, name, None)
    if value is None:
        extra = getattr(obj, "model_extra", None) or {}
        value = extra.get(name)
    return value


def _int(value: Any) -> int:
    return (
        max(0, int(value)) if isinstance(value, int | float) and not isinstance(value, bool) else 0
    )


def from_usage(usage: Any) -> Buckets:
    """The buckets of an OpenAI-style usage block (SDK object or dict); see the module rule."""
    prompt = _int(_get(usage, "prompt_tokens"))
    completion = _int(_get(usage, "completion_tokens"))
    prompt_details = _get(usage, "prompt_tokens_details")
    completion_details = _get(usage, "completion_tokens_details")
    read = _int(_get(prompt_details, "cached_tokens")) or _int(
        _get(usage, "cache_read_input_tokens")
    )
    write = _int(_get(usage, "cache_creation_input_tokens")) or _int(
        _get(prompt_details, "cache_write_tokens")
    )
    if read + write > prompt:  # Anthropic-style exclusive input count: make it the whole input
        prompt += read + write
    reasoning = min(_int(_get(completion_details, "reasoning_tokens")), completion)
    return Buckets(prompt, completion, read, write, reasoning)
