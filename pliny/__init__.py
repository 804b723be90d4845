"""Pliny: multi-agent LLM orchestration on YAML phase graphs.

The public front. Each name is loaded on first use, so ``import pliny``
(and ``pliny --help``) stays cheap::

    import pliny

    outcome = pliny.run("rise", "Summarise this repo", workspace=".")
    for s in pliny.sessions("."):
        print(s.id, s.status)
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "run",
    "arun",
    "stream",
    "load_framework",
    "sessions",
    "session",
    "Session",
    "Stream",
    "RunKwargs",
    "Framework",
    "Outcome",
    "AgentTask",
    "Executor",
    "Event",
    "EventBus",
    "SessionStarted",
    "SessionResumed",
    "SessionCompleted",
    "SessionFailed",
    "SessionCancelled",
    "SessionPaused",
    "CrashDetected",
    "PhaseStarted",
    "PhaseCompleted",
    "AgentStarted",
    "AgentCompleted",
    "AgentFailed",
    "LLMQueued",
    "LLMCall",
    "ToolCall",
    "Retry",
    "Error",
    "CheckpointCreated",
    "Rollback",
    "BudgetExceededEvent",
    "Alert",
    "CircuitChanged",
    "PlinyError",
    "Category",
    "ConfigError",
    "UsageError",
    "NetworkError",
    "ToolError",
    "ValidationFailure",
    "AIError",
    "SystemFailure",
    "BudgetExceeded",
    "Cancelled",
]

_WHERE: dict[str, str] = {
    "run": "pliny.api",
    "arun": "pliny.api",
    "stream": "pliny.api",
    "load_framework": "pliny.api",
    "sessions": "pliny.api",
    "session": "pliny.api",
    "Session": "pliny.api",
    "Stream": "pliny.api",
    "RunKwargs": "pliny.api",
    "Framework": "pliny.framework.model",
    "Outcome": "pliny.lifecycle.runner",
    "AgentTask": "pliny.engine.executor",
    "Executor": "pliny.engine.executor",
    "Event": "pliny.events",
    "EventBus": "pliny.events",
    "SessionStarted": "pliny.events",
    "SessionResumed": "pliny.events",
    "SessionCompleted": "pliny.events",
    "SessionFailed": "pliny.events",
    "SessionCancelled": "pliny.events",
    "SessionPaused": "pliny.events",
    "CrashDetected": "pliny.events",
    "PhaseStarted": "pliny.events",
    "PhaseCompleted": "pliny.events",
    "AgentStarted": "pliny.events",
    "AgentCompleted": "pliny.events",
    "AgentFailed": "pliny.events",
    "LLMQueued": "pliny.events",
    "LLMCall": "pliny.events",
    "ToolCall": "pliny.events",
    "Retry": "pliny.events",
    "Error": "pliny.events",
    "CheckpointCreated": "pliny.events",
    "Rollback": "pliny.events",
    "BudgetExceededEvent": "pliny.events",
    "Alert": "pliny.events",
    "CircuitChanged": "pliny.events",
    "PlinyError": "pliny.errors",
    "Category": "pliny.errors",
    "ConfigError": "pliny.errors",
    "UsageError": "pliny.errors",
    "NetworkError": "pliny.errors",
    "ToolError": "pliny.errors",
    "ValidationFailure": "pliny.errors",
    "AIError": "pliny.errors",
    "SystemFailure": "pliny.errors",
    "BudgetExceeded": "pliny.errors",
    "Cancelled": "pliny.errors",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'pliny' has no attribute {name!r}")
    value = getattr(import_module(where), name)
    globals()[name] = value  # the next access skips this hook
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # what type checkers and IDEs see
    from pliny.api import (
        RunKwargs,
        Session,
        Stream,
        arun,
        load_framework,
        run,
        session,
        sessions,
        stream,
    )
    from pliny.engine.executor import (
        AgentTask,
        Executor,
    )
    from pliny.errors import (
        AIError,
        BudgetExceeded,
        Cancelled,
        Category,
        ConfigError,
        NetworkError,
        PlinyError,
        SystemFailure,
        ToolError,
        UsageError,
        ValidationFailure,
    )
    from pliny.events import (
        AgentCompleted,
        AgentFailed,
        AgentStarted,
        Alert,
        BudgetExceededEvent,
        CheckpointCreated,
        CircuitChanged,
        CrashDetected,
        Error,
        Event,
        EventBus,
        LLMCall,
        LLMQueued,
        PhaseCompleted,
        PhaseStarted,
        Retry,
        Rollback,
        SessionCancelled,
        SessionCompleted,
        SessionFailed,
        SessionPaused,
        SessionResumed,
        SessionStarted,
        ToolCall,
    )
    from pliny.framework.model import Framework
    from pliny.lifecycle.runner import Outcome
