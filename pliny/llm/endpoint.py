"""Which OpenAI-compatible endpoint a run talks to, and why.

Every LLM call goes through the ``openai`` SDK; the only thing that varies is
``base_url`` + key + model. This module is a pure function over the settings
and the environment, so ``pliny doctor`` and ``pliny execute`` agree by
construction and the rules are tested without a network.

Order (first match wins):
1. ``--model local`` or ``llm.provider: local``  -> the embedded model
2. ``llm.base_url`` in the config                -> that URL
3. ``OPENAI_BASE_URL`` or the key env var is set -> those
4. ``llm.provider: openai`` and none of the above -> ConfigError naming the env var
5. otherwise (``auto``)                           -> the embedded model
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pliny.config.settings import LLMSettings, check_base_url
from pliny.errors import ConfigError
from pliny.redact import remember

LOCAL_ALIAS = "smollm2-135m-instruct"
# vLLM, Ollama and llama.cpp ignore the key, but the SDK insists on one.
NO_KEY = "not-needed"
OPENAI_DEFAULT_HOST = "api.openai.com"


@dataclass(frozen=True)
class EndpointChoice:
    kind: Literal["remote", "local"]
    base_url: str | None  # None: the SDK default (https://api.openai.com/v1)
    api_key: str
    model: str
    reason: str  # one human sentence: why this endpoint
    single_stream: bool = False  # True: one request at a time, agents queue

    def __repr__(self) -> str:
        # The key must never reach a log line, a traceback or the audit log.
        return (
            f"EndpointChoice(kind={self.kind!r}, base_url={self.base_url!r}, "
            f"api_key={self.key_status!r}, model={self.model!r}, "
            f"single_stream={self.single_stream!r}, reason={self.reason!r})"
        )

    __str__ = __repr__

    @property
    def key_status(self) -> str:
        """'set', 'not set' or 'not needed' -- never the key itself."""
        if self.api_key == NO_KEY:
            return "not needed"
        return "set" if self.api_key else "not set"

    @property
    def host(self) -> str:
        return host_of(self.base_url)

    def served_at(self, base_url: str, api_key: str) -> EndpointChoice:
        """The local choice once the embedded server is up (its URL and key)."""
        return dataclasses.replace(self, base_url=base_url, api_key=api_key)

    def public(self) -> dict[str, object]:
        """What may be shown or logged: everything but the key."""
        return {
            "kind": self.kind,
            "base_url": self.base_url,
            "host": self.host,
            "model": self.model,
            "api_key": self.key_status,
            "single_stream": self.single_stream,
            "reason": self.reason,
        }


def resolve(
    llm: LLMSettings,
    env: Mapping[str, str] = os.environ,
    model_flag: str | None = None,
) -> EndpointChoice:
    """Pick the endpoint for a run; see the module docstring for the rules."""
    if model_flag == "local":
        return _local(llm, "--model local was given")
    if llm.provider == "local":
        return _local(llm, "llm.provider is 'local' in the config")
    model = model_flag or llm.model
    key = _key(env, llm.api_key_env)
    if llm.base_url:
        return _remote(llm.base_url, key, model, "llm.base_url is set in the config")
    env_url = _env(env, "OPENAI_BASE_URL")
    if env_url:
        try:
            env_url = check_base_url(env_url)
        except ValueError as exc:  # llm.base_url is checked when the config is read
            raise ConfigError(f"OPENAI_BASE_URL in the environment: {exc}") from None
        return _remote(env_url, key, model, "OPENAI_BASE_URL is set in the environment")
    if key:
        reason = f"{llm.api_key_env} is set in the environment (no base URL: the OpenAI API)"
        return _remote(None, key, model, reason)
    if llm.provider == "openai":
        raise ConfigError(
            f"llm.provider is 'openai' but {llm.api_key_env} is not set",
            hint=f"export {llm.api_key_env}=sk-..., or set llm.base_url / OPENAI_BASE_URL "
            "for a server that needs no key, or use --model local",
        )
    return _local(
        llm,
        f"no endpoint configured and neither OPENAI_BASE_URL nor {llm.api_key_env} is set",
    )


def local_model_name(llm: LLMSettings) -> str:
    """The name the embedded server answers to (and the audit log records)."""
    if llm.local.model_path:
        return Path(llm.local.model_path).stem.lower()
    return LOCAL_ALIAS


def host_of(url: str | None) -> str:
    """host[:port] only -- no scheme, userinfo, path or query (for the audit log)."""
    if not url:
        return OPENAI_DEFAULT_HOST
    parts = urlsplit(url if "//" in url else f"//{url}")
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # a malformed port is not worth failing an audit line over
        port = None
    return f"{host}:{port}" if port else host


def _local(llm: LLMSettings, reason: str) -> EndpointChoice:
    return EndpointChoice(
        kind="local",
        base_url=None,  # known once EmbeddedServer has started: see served_at()
        api_key=NO_KEY,
        model=local_model_name(llm),
        reason=reason,
        single_stream=True,
    )


def _remote(base_url: str | None, key: str | None, model: str, reason: str) -> EndpointChoice:
    return EndpointChoice("remote", base_url, key or NO_KEY, model, reason)


def _env(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _key(env: Mapping[str, str], name: str) -> str | None:
    """The configured key; from now on its exact value is scrubbed from every output."""
    key = _env(env, name)
    remember(key)
    return key
