"""Diagnostics through loguru: quiet on the terminal, complete in the session.

The CLI's stderr shows warnings (``PLINY_LOG=debug|info|...`` to change);
each run also writes a debug log at ``.pliny/sessions/<id>/run.log`` (0600)
with full tracebacks, so "this is a bug in Pliny" always comes with the
evidence. Every sink goes through :mod:`pliny.redact`: a traceback quoting a
server's "Incorrect API key provided: ..." is written without the key.

Pliny logs through its own loguru logger (its own handlers), so a program
that imports ``pliny.api`` gets nothing on stderr unless it asks:
``pliny.logs.setup()`` adds the same stderr sink the CLI uses.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO, Any

import loguru

from pliny.atomicfile import private_file
from pliny.errors import UsageError
from pliny.redact import redact

FORMAT = "{time:YYYY-MM-DDTHH:mm:ss.SSS} {level: <7} {name}: {message}"


def _own_logger() -> Any:
    """A logger with its own handler set, separate from the host's ``loguru.logger``."""
    try:  # loguru builds its global logger this way; it has no public constructor
        from loguru._logger import Core, Logger

        return Logger(Core(), None, 0, False, False, False, False, True, [], {})
    except (ImportError, TypeError):  # a future loguru: share the global one
        return loguru.logger


logger = _own_logger()


class _Scrubbed:
    """A loguru stream sink that redacts each formatted message (traceback included)."""

    def __init__(self, stream: IO[str], *, owned: bool = False) -> None:
        self._stream = stream
        self._owned = owned

    def write(self, text: str) -> None:
        self._stream.write(redact(text))

    def flush(self) -> None:
        self._stream.flush()

    def stop(self) -> None:  # loguru calls this when the sink is removed
        if self._owned:
            self._stream.close()


def _stderr_format(record: dict[str, Any]) -> str:
    # A callable: loguru's format strings cannot call methods ({level.name.lower()}).
    return "pliny: " + record["level"].name.lower() + ": {message}\n{exception}"


def setup() -> None:
    """The stderr sink at ``PLINY_LOG`` (default WARNING); the CLI calls it at start."""
    level = os.environ.get("PLINY_LOG", "WARNING").strip().upper() or "WARNING"
    try:
        loguru.logger.level(level)
    except ValueError:
        raise UsageError(
            f"PLINY_LOG={level.lower()!r} is not a log level "
            "(use debug, info, success, warning, error or critical)"
        ) from None
    # The CLI owns its process: loguru's default DEBUG-to-stderr sink goes too.
    targets = {id(logger): logger, id(loguru.logger): loguru.logger}.values()
    for target in targets:
        target.remove()
        target.add(_Scrubbed(sys.stderr), level=level, format=_stderr_format, colorize=False)


def session_log(session_dir: Path) -> int:
    """Start the run's debug log; returns the sink id for :func:`stop`."""
    private_file(path := session_dir / "run.log")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    stream = os.fdopen(fd, "a", encoding="utf-8")
    return logger.add(
        _Scrubbed(stream, owned=True),
        level="DEBUG",
        format=FORMAT,
        colorize=False,
        enqueue=False,
        backtrace=False,
        diagnose=False,
    )  # diagnose would log locals


def stop(sink: int) -> None:
    logger.remove(sink)
