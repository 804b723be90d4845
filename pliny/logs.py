"""Diagnostics through loguru: quiet on the terminal, complete in the session.

stderr shows warnings (``PLINY_LOG=debug|info|...`` to change); each run also
writes a debug log at ``.pliny/sessions/<id>/run.log`` with full tracebacks,
so "this is a bug in Pliny" always comes with the evidence. Secrets are not
logged: only codes, hosts and messages already redacted by the classifier.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from loguru import logger

FORMAT = "{time:YYYY-MM-DDTHH:mm:ss.SSS} {level: <7} {name}: {message}"


def setup() -> None:
    """The CLI's stderr sink (replacing loguru's default DEBUG-to-stderr one)."""
    logger.remove()
    level = os.environ.get("PLINY_LOG", "WARNING").upper()
    # a callable: loguru's format strings cannot call .lower()
    logger.add(sys.stderr, level=level, format=_stderr_format)


def _stderr_format(record: dict) -> str:
    return "pliny: " + record["level"].name.lower() + ": {message}\n"


def session_log(session_dir: Path) -> int:
    """Start the run's debug log; returns the sink id for :func:`stop`."""
    session_dir.mkdir(parents=True, exist_ok=True)
    return logger.add(
        session_dir / "run.log",
        level="DEBUG",
        format=FORMAT,
        enqueue=False,
        backtrace=False,
        diagnose=False,
    )  # fmt: skip - diagnose would log locals


def stop(sink: int) -> None:
    logger.remove(sink)
