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
    r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_\-*]{8,}",  # OpenAI-style, also masked: sk-proj-ab**cd
    r"\bBearer\s+[A-Za-z0-9._~+/=\-]{6,}",  # Authorization header values
    # api_key=..., "api-key": "...": the name is kept, the value goes
    r"(?P<keep>(?<![A-Za-z0-9])api[_-]?key[\"']?\s*[=:]\s*[\"']?)[A-Za-z0-9_\-+/=]{6,}",
)
_SECRET_ENV = re.compile(r"(_KEY|_TOKEN|_SECRET|PASSWORD)$", re.IGNORECASE)
_SECRET_KEYS = {"authorization", "api_key", "apikey", "x-api-key", "password", "secret"}
MIN_SECRET_LEN = 8
# Exact values known to be secrets at run time (the configured API key, whatever
# its env var is called, also one handed over in ``env=`` rather than os.environ).
_remembered: set[str] = set()
_generation = 0  # bumped by remember(): redactors rebuild their pattern lazily


def remember(value: str | None) -> None:
    """Scrub this exact value from everything written from now on (by every redactor)."""
    global _generation
    if value and len(value) >= MIN_SECRET_LEN and value not in _remembered:
        _remembered.add(value)
        _generation += 1


def secret_env_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of env vars whose name says they hold a secret (long enough to be one)."""
    env = os.environ if environ is None else environ
    values = {v for k, v in env.items() if _SECRET_ENV.search(k) and len(v) >= MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)  # longest first: no partial leftovers


def _replace(match: re.Match[str]) -> str:
    return (match.group("keep") or "") + REDACTED


class Redactor:
    """Replaces secret-shaped substrings in every string of a JSON-like value.

    The environment is read once, at construction: a key exported later is
    still caught by its shape if it has one, or exactly once ``remember``-ed.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._env_values = secret_env_values(environ)
        self._generation = -1
        self._build()

    def _build(self) -> None:
        if self._generation == _generation:
            return
        values = sorted({*self._env_values, *_remembered}, key=len, reverse=True)
        self._pattern = re.compile("|".join([*(re.escape(v) for v in values), *_SHAPES]), re.I)
        # Substrings that may betray a secret in JSON text: plain substring tests
        # are ~10x cheaper than the regex, and almost every event has none of them.
        self._values = {form for v in values for form in (v, json.dumps(v)[1:-1])}
        names = (f'"{k}"' for k in _SECRET_KEYS)
        self._markers = ("sk-", "bearer", "api_key", "api-key", "apikey", *names)
        self._generation = _generation

    def text(self, text: str) -> str:
        """``text`` with every secret replaced by ``[REDACTED]``."""
        self._build()
        return self._pattern.sub(_replace, text)

    def needed(self, json_text: str) -> bool:
        """Cheap pre-check on serialized JSON, so clean events skip the walk."""
        self._build()
        lower = json_text.lower()
        for marker in self._markers:  # a plain loop: measurably cheaper than any(genexpr)
            if marker in lower:
                return True
        return any(v in json_text for v in self._values)

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self._scrub_item(k, v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub(v) for v in value]
        return value

    def _scrub_item(self, key: Any, value: Any) -> Any:
        if isinstance(key, str) and key.lower() in _SECRET_KEYS and isinstance(value, str):
            return REDACTED
        return self.scrub(value)


_default: Redactor | None = None


def redact(text: str) -> str:
    """Scrub one string with the process-wide redactor (environment read on first use)."""
    global _default
    if _default is None:
        _default = Redactor()
    return _default.text(text)
