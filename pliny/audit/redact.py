"""Scrub secrets from data before it is written anywhere durable.

Belt and braces: the engine never puts keys into events or state, but a
model can echo a key it saw, or a tool error can quote a header. Anything
shaped like an OpenAI key or a bearer token, and the exact value of any
environment variable named like a secret, is replaced.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"
_SHAPES = (
    r"sk-[A-Za-z0-9_\-]{8,}",  # OpenAI-style keys (sk-..., sk-proj-...)
    r"Bearer\s+[A-Za-z0-9._~+/=\-]{8,}",  # Authorization header values
)
_SECRET_ENV = re.compile(r"(_KEY|_TOKEN|_SECRET|PASSWORD)$", re.IGNORECASE)
_SECRET_KEYS = {"authorization", "api_key", "apikey", "x-api-key", "password", "secret"}
MIN_SECRET_LEN = 8


def secret_env_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of env vars whose name says they hold a secret (long enough to be one)."""
    env = os.environ if environ is None else environ
    values = {v for k, v in env.items() if _SECRET_ENV.search(k) and len(v) >= MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)  # longest first: no partial leftovers


class Redactor:
    """Replaces secret-shaped substrings in every string of a JSON-like value.

    The environment is read once, at construction: a key exported later is
    still caught by its shape if it has one.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        values = secret_env_values(environ)
        self._pattern = re.compile("|".join([*(re.escape(v) for v in values), *_SHAPES]))
        # Substrings that may betray a secret in JSON text: plain substring tests
        # are ~10x cheaper than the regex, and almost every event has none of them.
        self._values = {form for v in values for form in (v, json.dumps(v)[1:-1])}
        self._markers = ("sk-", "bearer", *(f'"{k}"' for k in _SECRET_KEYS))

    def needed(self, json_text: str) -> bool:
        """Cheap pre-check on serialized JSON, so clean events skip the walk."""
        lower = json_text.lower()
        for marker in self._markers:  # a plain loop: measurably cheaper than any(genexpr)
            if marker in lower:
                return True
        return any(v in json_text for v in self._values)

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._pattern.sub(REDACTED, value)
        if isinstance(value, dict):
            return {k: self._scrub_item(k, v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub(v) for v in value]
        return value

    def _scrub_item(self, key: Any, value: Any) -> Any:
        if isinstance(key, str) and key.lower() in _SECRET_KEYS and isinstance(value, str):
            return REDACTED
        return self.scrub(value)
