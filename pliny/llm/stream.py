"""Read a streamed chat completion (``stream: true``) into the gateway's answer dict.

The answer is assembled from the deltas (content, refusal, tool calls by
``index``: id and name from the first delta, arguments concatenated) into
exactly the dict ``gateway.normalize`` makes of a whole completion, so the
journal, the ``llm_call`` event and a resume's replay cannot tell the two
apart: the journal records the assembled final answer only.

Usage comes from the final chunk (``stream_options.include_usage``: a chunk
with no choices and the usage block); a server that ignores the option
gives none, and the gateway estimates as for any answer without usage.

A 200 whose body holds no event at all is PLINY-NET-BAD-RESPONSE (as a
non-JSON body is); a stream that ends without a ``finish_reason`` (connection closed cleanly
mid-answer, no ``[DONE]``) is PLINY-NET-DROPPED, exactly like a cut body:
retried by the network policy. A connection reset mid-stream surfaces from
httpx and classifies the same way.

``on_progress(tokens)`` is called at most every ``PROGRESS_S`` with the
completion tokens so far (a ~4 chars per token estimate: the real count
arrives with the final chunk).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from typing import Any

from pliny.errors import NetworkError
from pliny.llm import buckets
from pliny.llm.classify import Code, bad_response

PROGRESS_S = 0.5


@dataclass
class _ToolCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class Assembler:
    """Folds chunks; ``answer()`` is the normalized dict."""

    id: str | None = None
    model: str = ""
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    calls: dict[int, _ToolCall] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Any = None
    chars: int = 0

    def add(self, chunk: Any) -> None:
        self.id = self.id or getattr(chunk, "id", None)
        self.model = self.model or (getattr(chunk, "model", "") or "")
        if getattr(chunk, "usage", None) is not None:
            self.usage = chunk.usage
        for choice in getattr(chunk, "choices", None) or []:
            if getattr(choice, "index", 0):
                continue  # n=1: only the first choice is ours
            self._delta(choice.delta)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason

    def _delta(self, delta: Any) -> None:
        if delta is None:
            return
        if delta.content:
            self.content.append(delta.content)
            self.chars += len(delta.content)
        if getattr(delta, "refusal", None):
            self.refusal.append(delta.refusal)
        for part in getattr(delta, "tool_calls", None) or []:
            call = self.calls.setdefault(part.index or 0, _ToolCall())
            call.id = call.id or (part.id or "")
            fn = part.function
            if fn is not None:
                call.name = call.name or (fn.name or "")
                if fn.arguments:
                    call.arguments.append(fn.arguments)
                    self.chars += len(fn.arguments)

    @property
    def tokens_so_far(self) -> int:
        return self.chars // 4 + (1 if self.chars else 0)

    def answer(self) -> dict[str, Any]:
        b = None if self.usage is None else buckets.from_usage(self.usage)
        return {
            "id": self.id,
            "model": self.model,
            "content": "".join(self.content),
            "refusal": "".join(self.refusal) or None,
            "tool_calls": [
                {"id": c.id, "name": c.name, "arguments": "".join(c.arguments) or "{}"}
                for _, c in sorted(self.calls.items())
                if c.name
            ],
            "finish_reason": self.finish_reason,
            "usage": None if b is None else b.journaled(),
        }


async def read(
    chunks: AsyncIterable[Any],
    host: str,
    on_progress: Callable[[int], None] | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """The assembled answer of a stream; raises PLINY-NET-DROPPED if it was cut short."""
    acc = Assembler()
    last = clock()
    received = 0
    async for chunk in chunks:
        received += 1
        acc.add(chunk)
        if on_progress is not None and clock() - last >= PROGRESS_S:
            last = clock()
            on_progress(acc.tokens_so_far)
    if not received:  # a 200 whose body is no event stream at all (an HTML error page)
        raise bad_response(host, "the body is not an event stream")
    if acc.finish_reason is None:
        raise NetworkError(
            f"connection to {host} dropped before the response was complete: "
            "the stream ended without a finish_reason",
            code=Code.NET_DROPPED,
        )
    return acc.answer()
