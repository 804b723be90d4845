"""Pliny's one exception hierarchy.

Every failure is a ``PlinyError`` with a category (which retry strategy
applies), a stable code (for scripts and docs), and whether it is
recoverable (worth retrying or resuming). ``pliny.llm.classify`` maps foreign
exceptions (openai, OSError, git, pydantic) onto these.
"""

from __future__ import annotations

from enum import StrEnum

from pliny.redact import redact


class Category(StrEnum):
    CONFIG = "config"
    NETWORK = "network"
    TOOL = "tool"
    VALIDATION = "validation"
    AI = "ai"
    SYSTEM = "system"
    BUDGET = "budget"  # a limit the user set was reached: pause, not fail
    CANCELLED = "cancelled"  # Ctrl-C, SIGTERM, `pliny session cancel`


# Process exit codes, documented in the README.
EXIT_OK = 0
EXIT_FAILED = 1  # the session failed; `pliny session resume` continues it
EXIT_BAD_INPUT = 2  # usage, config, unknown framework/session/checkpoint
EXIT_BUDGET = 3  # a budget stopped the session (status paused); raise it and resume
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM / cancel; resumable


class PlinyError(Exception):
    category: Category = Category.SYSTEM
    code: str = "PLINY-SYSTEM"
    recoverable: bool = False
    exit_code: int = EXIT_FAILED
    attempts: int = 1  # set by the retry policy when it gives up
    elapsed_s: float | None = None  # ... with the seconds it spent
    budget_s: float | None = None  # ... and the category's time budget (max_elapsed)

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        recoverable: bool | None = None,
        retry_after: float | None = None,
        hint: str | None = None,
    ) -> None:
        message = redact(message)  # errors reach the terminal, audit log and state
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if recoverable is not None:
            self.recoverable = recoverable
        self.retry_after = retry_after  # seconds the server asked us to wait
        self.hint = redact(hint) if hint else hint  # what the user should do next

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class ConfigError(PlinyError):
    """Bad configuration or input: fail fast, never retried."""

    category = Category.CONFIG
    code = "PLINY-CONFIG"
    exit_code = EXIT_BAD_INPUT


class UsageError(ConfigError):
    """Bad CLI input: unknown session, checkpoint, framework..."""

    code = "PLINY-USAGE"


class NetworkError(PlinyError):
    category = Category.NETWORK
    code = "PLINY-NETWORK"
    recoverable = True


class ToolError(PlinyError):
    """A workspace tool refused or failed; the model sees the message."""

    category = Category.TOOL
    code = "PLINY-TOOL"
    recoverable = True


class ValidationFailure(PlinyError):
    """Model output did not match the agent's output schema."""

    category = Category.VALIDATION
    code = "PLINY-VALIDATION"
    recoverable = True


class AIError(PlinyError):
    """The model could not answer: context too long, refusal, empty answer."""

    category = Category.AI
    code = "PLINY-AI"
    recoverable = True


class SystemFailure(PlinyError):
    category = Category.SYSTEM
    code = "PLINY-SYSTEM"


class AuditFailure(SystemFailure):
    """The audit log cannot be written (e.g. ENOSPC): the run stops, resumable.

    Never retried and never turned into an agent failure: nothing may go on
    that the log cannot record.
    """

    code = "PLINY-SYS-AUDIT"
    recoverable = True


class BudgetExceeded(PlinyError):
    category = Category.BUDGET
    code = "PLINY-BUDGET"
    recoverable = True
    exit_code = EXIT_BUDGET


class Cancelled(PlinyError):
    category = Category.CANCELLED
    code = "PLINY-CANCELLED"
    recoverable = True
    exit_code = EXIT_INTERRUPTED
