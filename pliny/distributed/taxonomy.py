"""Pliny's error categories on Temporal's terms, and back.

On a worker, an agent's failure becomes an ``ApplicationError`` whose type
is the Pliny class and whose details carry the category, code, message,
hint, attempts (and a budget breach). Whether Temporal may retry the
activity follows the category:

=============================  ===========  ==========================================
category                       Temporal     why
=============================  ===========  ==========================================
config (incl. auth, usage)     never        retrying cannot fix a key or a config
validation (retries exhausted) never        Pliny already re-asked the model
budget                         never        the session pauses; raise the limit, resume
cancelled                      never        someone asked it to stop
ai, tool                       never        Pliny's own policy already ran its course
network, system (recoverable)  yes          another worker/try may get through;
                                            Retry-After becomes ``next_retry_delay``
=============================  ===========  ==========================================

The coordinator turns it back into the same ``PlinyError`` subclass, so the
engine's failure policy sees exactly what the local executor would give it.
A worker that vanished (heartbeat timeout) on every attempt becomes a
recoverable ``SystemFailure``; ``pliny session resume`` tries again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pliny import errors
from pliny.errors import Category, PlinyError, SystemFailure

RETRYABLE = {Category.NETWORK, Category.SYSTEM}
_CLASSES: dict[str, type[PlinyError]] = {
    cls.__name__: cls
    for cls in (
        errors.PlinyError,
        errors.ConfigError,
        errors.UsageError,
        errors.NetworkError,
        errors.ToolError,
        errors.ValidationFailure,
        errors.AIError,
        errors.SystemFailure,
        errors.BudgetExceeded,
        errors.Cancelled,
    )
}


def to_details(err: PlinyError) -> dict[str, Any]:
    breach = getattr(err, "breach", None)
    cls = type(err).__name__ if type(err).__name__ in _CLASSES else "PlinyError"
    return {
        "class": cls,
        "category": str(err.category),
        "code": err.code,
        "message": err.message,
        "recoverable": err.recoverable,
        "hint": err.hint,
        "attempts": getattr(err, "attempts", 1),
        "retry_after": err.retry_after,
        "breach": breach.__dict__ if breach is not None else None,
    }


def retryable(err: PlinyError) -> bool:
    return err.category in RETRYABLE and err.recoverable


def to_application_error(err: PlinyError) -> Any:
    from temporalio.exceptions import ApplicationError

    delay = timedelta(seconds=err.retry_after) if err.retry_after and retryable(err) else None
    return ApplicationError(
        err.message,
        to_details(err),
        type=type(err).__name__,
        non_retryable=not retryable(err),
        next_retry_delay=delay,
    )


def from_details(details: dict[str, Any]) -> PlinyError:
    cls = _CLASSES.get(details.get("class", ""), PlinyError)
    err = cls(
        details.get("message", ""),
        code=details.get("code"),
        recoverable=details.get("recoverable"),
        retry_after=details.get("retry_after"),
        hint=details.get("hint"),
    )
    if cls is PlinyError:
        err.category = Category(details.get("category", "system"))
    err.attempts = details.get("attempts", 1)
    if details.get("breach"):
        from pliny.llm.budget import Breach

        err.breach = Breach(**details["breach"])  # type: ignore[attr-defined]
    return err


def from_temporal(exc: BaseException, agent: str) -> PlinyError:
    """The Pliny error behind a failed agent workflow."""
    from temporalio.exceptions import ApplicationError
    from temporalio.exceptions import TimeoutError as TemporalTimeout

    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ApplicationError) and cause.details:
            details = cause.details[0]
            if isinstance(details, dict) and "class" in details:
                return from_details(details)
        if isinstance(cause, TemporalTimeout):
            kind = cause.type.name if cause.type else "timeout"
            return SystemFailure(
                f"agent {agent}: its worker stopped answering ({kind}) on every attempt",
                code="PLINY-WORKER-LOST",
                recoverable=True,
                hint="start a `pliny worker`, then `pliny session resume`",
            )
        cause = cause.__cause__
    deepest = exc
    while deepest.__cause__ is not None:
        deepest = deepest.__cause__
    return SystemFailure(
        f"agent {agent}: Temporal reported {type(deepest).__name__}: {deepest}",
        code="PLINY-TEMPORAL",
        recoverable=True,
        hint="`pliny session resume` tries again",
    )
