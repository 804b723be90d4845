"""Scripted rules and the request log of the fake OpenAI server (tests/fakeserver.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

try:  # importable as tests.fakeserver_rules and from inside tests/
    from tests import fakeserver_payloads as P
except ImportError:  # pragma: no cover
    import fakeserver_payloads as P  # type: ignore[no-redef]

FAULTS = (
    "hang",
    "drop",
    "not_json",
    "truncated_stream",
    "incomplete_stream",
    "empty",
    "context_length",
)


@dataclass
class Rule:
    """One scripted behaviour. Matchers are ANDed; no matcher matches every request."""

    system: str | None = None  # substring of the system prompt
    user: str | None = None  # substring of the last user message
    model: str | None = None  # exact model name
    when: Callable[[dict[str, Any]], bool] | None = None  # predicate on the request JSON
    reply: str | Callable[[dict[str, Any]], str] | None = None  # text (or fn of request)
    tool_calls: list[dict[str, Any]] | None = None  # [{"name", "arguments": dict|str}]
    json: Any = None  # object sent as the content, JSON-encoded
    refusal: str | None = None  # message.refusal, content None
    status: int | None = None  # HTTP error status with an OpenAI error body
    fault: str | None = None  # one of FAULTS
    code: str | None = None  # error.code override (e.g. "context_length_exceeded")
    message: str | None = None  # error.message override
    echo_key: bool = False  # error.message quotes the request's API key (as some servers do)
    retry_after: float | None = None  # Retry-After header (seconds) on an error
    times: int | None = None  # uses allowed; None = unlimited
    latency_ms: float | None = None  # replaces the server's latency for this rule
    hang_s: float = 60.0  # how long "hang" sleeps (ends early on disconnect/stop)
    finish_reason: str | None = None  # override ("length", "content_filter", ...)
    usage: bool | dict[str, int] | None = None  # False: omit; dict: override numbers
    content_type: str = "application/json"  # header sent with the "not_json" body
    response_id: str | None = None  # the completion's id (default chatcmpl-fake<n>)
    chunk_delay_ms: float = 0.0  # pause between the frames of a streamed answer
    hits: int = field(default=0, init=False)  # times this rule answered

    def __post_init__(self) -> None:
        if self.fault == "context_length":
            self.status, self.code = 400, self.code or "context_length_exceeded"
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; expected one of {FAULTS}")
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(f"status must be 400..599, got {self.status}")
        if self.times is not None and self.times < 1:
            raise ValueError(f"times must be >= 1, got {self.times}")

    def matches(self, body: dict[str, Any]) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return (
            (self.system is None or self.system in P.system_prompt(body))
            and (self.user is None or self.user in P.last_user(body))
            and (self.model is None or self.model == body.get("model"))
            and (self.when is None or bool(self.when(body)))
        )


@dataclass
class RecordedRequest:
    """One request as received; headers keep Authorization (tests grep for key leaks)."""

    id: str
    time: float
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes
    rule: Rule | None = None
    outcome: str = ""  # "reply", "status:429", "hang", "drop", ...
    usage: dict[str, Any] | None = None  # the usage block of a reply delivered whole

    @property
    def api_key(self) -> str | None:
        auth = self.headers.get("authorization", "")
        return auth[7:] if auth.lower().startswith("bearer ") else None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body.get("messages", []) if isinstance(self.body, dict) else []

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def system(self) -> str:
        return P.system_prompt(self.body) if isinstance(self.body, dict) else ""

    @property
    def last_user(self) -> str:
        return P.last_user(self.body) if isinstance(self.body, dict) else ""

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and bool(self.body.get("stream"))
