"""Running a session's agents on other machines (Temporal workers).

Nothing here is imported by ``pliny --help``: ``temporalio`` loads only when
the ``temporal`` executor is chosen or ``pliny worker`` runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pliny.engine.agent import AgentRun
    from pliny.engine.executor import Executor


def _temporal(run: AgentRun, **options: Any) -> Executor:
    from pliny.distributed.executor import TemporalExecutor

    return TemporalExecutor(run, **options)


def register_executors() -> None:
    """Make ``--executor temporal`` known (lazily: no temporalio import here)."""
    from pliny.engine.executor import EXECUTORS

    EXECUTORS.setdefault("temporal", _temporal)


def check_executor_options(name: str, options: dict[str, Any]) -> None:
    """Bad input before anything is written: an unreachable Temporal server, say."""
    if name != "temporal":
        return
    from pliny.distributed.executor_options import check

    check(options)
