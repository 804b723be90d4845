"""Typed engine events and the bus that carries them.

The engine only *emits*; the audit log, the live view, metrics, checkpoints
and Python callbacks are listeners. The same models are the audit log's
line format (``v`` is the schema version; readers keep unknown fields).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION = 1


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Event(BaseModel):
    model_config = ConfigDict(extra="allow")

    v: int = SCHEMA_VERSION
    type: str
    ts: str = Field(default_factory=utcnow)
    seq: int | None = None  # set by the audit log when written
    session: str | None = None
    phase: str | None = None
    agent: str | None = None


class SessionStarted(Event):
    type: Literal["session_started"] = "session_started"
    name: str = ""
    framework: str = ""
    task: str = ""
    pid: int | None = None


class SessionResumed(Event):
    type: Literal["session_resumed"] = "session_resumed"
    from_status: str = ""
    pid: int | None = None


class SessionCompleted(Event):
    type: Literal["session_completed"] = "session_completed"
    duration_ms: float = 0


class SessionFailed(Event):
    type: Literal["session_failed"] = "session_failed"
    category: str = ""
    code: str = ""
    message: str = ""


class SessionCancelled(Event):
    type: Literal["session_cancelled"] = "session_cancelled"
    reason: str = ""


class SessionPaused(Event):
    type: Literal["session_paused"] = "session_paused"
    reason: str = ""


class CrashDetected(Event):
    type: Literal["crash_detected"] = "crash_detected"
    previous_pid: int | None = None
    detail: str = ""


class PhaseStarted(Event):
    type: Literal["phase_started"] = "phase_started"
    cycle: int = 1
    agents: list[str] = Field(default_factory=list)


class PhaseCompleted(Event):
    type: Literal["phase_completed"] = "phase_completed"
    cycle: int = 1
    duration_ms: float = 0
    next: str | None = None
    succeeded: int = 0
    failed: int = 0


class AgentStarted(Event):
    type: Literal["agent_started"] = "agent_started"
    model: str = ""


class AgentCompleted(Event):
    type: Literal["agent_completed"] = "agent_completed"
    duration_ms: float = 0
    output_path: str | None = None
    files_written: list[str] = Field(default_factory=list)
    reused: bool = False  # result came from a previous run (resume, cache, partial run)
    cycle: int = 1


class AgentFailed(Event):
    type: Literal["agent_failed"] = "agent_failed"
    category: str = ""
    code: str = ""
    message: str = ""
    attempts: int = 0
    skipped: bool = False  # phase policy let the run go on without it


class LLMQueued(Event):
    """An agent is waiting for a slot on a single-stream endpoint (embedded model)."""

    type: Literal["llm_queued"] = "llm_queued"
    waiting: int = 0


class LLMProgress(Event):
    """Tokens so far of a streamed answer (at most every 0.5 s per call).

    Transient: on the bus for the live view, never written to the audit log
    (a long stream would add a line every half second); the call's
    ``llm_call`` records the final counts.
    """

    type: Literal["llm_progress"] = "llm_progress"
    model: str = ""
    completion_tokens: int = 0  # estimated (~4 chars a token) until the final chunk
    elapsed_ms: float = 0


TRANSIENT = frozenset({"llm_progress"})  # bus only: the audit log skips these


class LLMCall(Event):
    type: Literal["llm_call"] = "llm_call"
    model: str = ""
    endpoint: str = ""  # host[:port] only, never a full URL with credentials
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # cache-read tokens: part of prompt_tokens
    cache_write_tokens: int = 0  # cache-write (creation) tokens: part of prompt_tokens
    reasoning_tokens: int = 0  # part of completion_tokens
    streamed: bool = False  # answered as a stream (usage from its final chunk)
    tokens_estimated: bool = False
    latency_ms: float = 0
    cost_usd: float | None = 0.0  # None: model not in the pricing table
    pricing_hash: str | None = None
    price_source: str | None = None  # which table priced it: "genai-prices 0.2.3" | "pliny.yaml"
    price_provider: str | None = None  # the table's provider id ("openai"), when it says
    request_model: str | None = None  # the model asked for (``model`` is the one that answered)
    attempt: int = 1
    request_id: str | None = None
    request_hash: str = ""
    replayed: bool = False  # answered from the resume journal, not re-sent
    recovered: bool = False  # paid in an earlier run that could not audit it (e.g. disk full)
    cache_hit: bool = False  # answered from the opt-in result cache
    finish_reason: str | None = None
    tool_calls: int = 0
    rejected: str | None = None  # paid, but refused by Pliny (empty answer, refusal): error code


class ToolCall(Event):
    type: Literal["tool_call"] = "tool_call"
    tool: str = ""
    arguments: dict[str, Any] = Field(default_factory=dict)
    ok: bool = True
    error: str | None = None
    duration_ms: float = 0
    by: Literal["model", "engine"] = "model"


class Retry(Event):
    type: Literal["retry"] = "retry"
    category: str = ""
    code: str = ""
    attempt: int = 1
    delay_ms: float = 0
    message: str = ""


class Error(Event):
    type: Literal["error"] = "error"
    category: str = ""
    code: str = ""
    message: str = ""
    recoverable: bool = False


class CheckpointCreated(Event):
    type: Literal["checkpoint_created"] = "checkpoint_created"
    name: str = ""
    ref: str = ""
    commit: str = ""
    files: list[str] = Field(default_factory=list)


class Rollback(Event):
    type: Literal["rollback"] = "rollback"
    name: str = ""
    commit: str = ""
    files: list[str] = Field(default_factory=list)
    forked: bool | None = None  # the run state went back too (None: logs before this field)


class BudgetExceededEvent(Event):
    type: Literal["budget_exceeded"] = "budget_exceeded"
    scope: str = "session"  # session | phase:<name> | agent:<name>
    limit: str = ""  # max_cost_usd | max_tokens
    limit_value: float = 0
    used: float = 0
    estimate: float = 0


class Alert(Event):
    type: Literal["alert"] = "alert"
    rule: str = ""
    metric: str = ""
    value: float = 0
    threshold: float = 0
    message: str = ""


class CircuitChanged(Event):
    type: Literal["circuit_opened", "circuit_closed"] = "circuit_opened"
    endpoint: str = ""
    failures: int = 0
    reopen_in_s: float = 0


class LogRepaired(Event):
    type: Literal["log_repaired"] = "log_repaired"
    side_file: str = ""
    bytes: int = 0


class Warning_(Event):
    type: Literal["warning"] = "warning"
    message: str = ""


KNOWN = (
    SessionStarted,
    SessionResumed,
    SessionCompleted,
    SessionFailed,
    SessionCancelled,
    SessionPaused,
    CrashDetected,
    PhaseStarted,
    PhaseCompleted,
    AgentStarted,
    AgentCompleted,
    AgentFailed,
    LLMQueued,
    LLMProgress,
    LLMCall,
    ToolCall,
    Retry,
    Error,
    CheckpointCreated,
    Rollback,
    BudgetExceededEvent,
    Alert,
    CircuitChanged,
    LogRepaired,
    Warning_,
)
_BY_TYPE: dict[str, type[Event]] = {}
for _cls in KNOWN:
    for _t in _cls.model_fields["type"].annotation.__args__:  # type: ignore[union-attr]
        _BY_TYPE[_t] = _cls
EVENT_TYPES = sorted(_BY_TYPE)
_ANY = TypeAdapter(Annotated[dict[str, Any], Field()])


def parse(data: dict[str, Any]) -> Event:
    """An event from its JSON dict; unknown types and fields are kept, not rejected."""
    cls = _BY_TYPE.get(data.get("type", ""), Event)
    return cls.model_validate(data)


Listener = Callable[[Event], None]


class EventBus:
    """Synchronous fan-out: a listener sees an event before ``emit`` returns.

    The audit log relies on that: when ``emit`` returns, the event is on
    disk (per the fsync policy). A failing listener propagates: losing the
    audit record must stop the run, not pass silently.
    """

    def __init__(self, **context: Any) -> None:
        self._listeners: list[Listener] = []
        self._queues: list[asyncio.Queue[Event | None]] = []
        self.context = context  # session=... stamped on every event

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def emit(self, event: Event) -> Event:
        for key, value in self.context.items():
            if getattr(event, key, None) is None:
                setattr(event, key, value)
        for listener in list(self._listeners):
            listener(event)
        for queue in self._queues:
            queue.put_nowait(event)
        return event

    async def stream(self) -> AsyncIterator[Event]:
        """Async iterator of events until ``close()``."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._queues.append(queue)
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._queues.remove(queue)

    def close(self) -> None:
        for queue in self._queues:
            queue.put_nowait(None)
