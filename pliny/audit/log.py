"""The audit log: one crash-safe, hash-chained JSONL file per session.

``<workspace>/<audit.dir>/<session-id>.jsonl``. The writer, tail repair and
``verify`` live in ``pliny.audit.writer``; reading, filters and ``follow`` in
``pliny.audit.reader``. This module is the entry point the engine and CLI use.
"""

from __future__ import annotations

import re
from pathlib import Path

from pliny.audit.reader import (
    TERMINAL,
    LogContents,
    filter_events,
    follow,
    matches,
    read_events,
    read_log,
)
from pliny.audit.writer import GENESIS, AuditLog, FsyncPolicy, VerifyResult, verify
from pliny.config.settings import AuditSettings
from pliny.errors import UsageError
from pliny.ids import unique_prefix

__all__ = [
    "GENESIS",
    "TERMINAL",
    "AuditLog",
    "FsyncPolicy",
    "LogContents",
    "VerifyResult",
    "filter_events",
    "follow",
    "log_path",
    "matches",
    "open_log",
    "read_events",
    "read_log",
    "verify",
    "existing_log",
]

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def log_path(workspace: Path, settings: AuditSettings, session_id: str) -> Path:
    """Where a session's log lives; refuses ids that could escape the audit dir."""
    if not _SAFE_ID.match(session_id):
        raise UsageError(f"invalid session id {session_id!r}")
    return workspace / settings.dir / f"{session_id}.jsonl"


def existing_log(workspace: Path, settings: AuditSettings, session_id: str) -> Path:
    """The log of a session that has one, else a one-line UsageError (exit 2)."""
    path = log_path(workspace, settings, session_id)
    if path.is_file():
        return path
    logs = sorted(p.stem for p in path.parent.glob("*.jsonl")) if path.parent.is_dir() else []
    found = unique_prefix(session_id, logs)  # an id may be given by a unique prefix
    if found is None:
        raise UsageError(f"unknown session {session_id!r}: no audit log at {path}")
    return path.with_name(f"{found}.jsonl")


def open_log(workspace: Path, settings: AuditSettings, session_id: str) -> AuditLog:
    """Open (repairing a torn tail) the session's log with the configured fsync policy."""
    return AuditLog(
        log_path(workspace, settings, session_id),
        fsync=settings.fsync,
        group_commit_ms=settings.group_commit_ms,
        session=session_id,
    )
