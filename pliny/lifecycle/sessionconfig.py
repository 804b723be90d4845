"""The settings a session started with, kept in its state for every later run.

A session's settings are built-in defaults < its config file (``--config``, else
``pliny.yaml``) < CLI flags. The flags are kept in ``options["overrides"]``; the
file layer is kept here as a snapshot (``options["config"]``): its path, the hash
of its bytes and its parsed values, secret-shaped strings scrubbed. So a resume
keeps the budget and audit dir it started with even when the file changed or is
gone, and a new value applies only when the resume command line says so.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pliny.config.settings import AuditSettings, Settings, _flags_source, load_settings, user_file
from pliny.config.yamlsource import Mark, Sourced, load_file
from pliny.errors import UsageError
from pliny.lifecycle.store import SessionState
from pliny.logs import logger

KEY = "config"  # in SessionState.options


def snapshot(path: Path | None) -> dict[str, Any]:
    """The file layer as it is now, with no secret in it (state.json is not a vault)."""
    if path is None:
        return {"path": None, "sha256": None, "data": {}, "redacted": False}
    from pliny.redact import Redactor

    data = load_file(path).data or {}
    scrubbed = Redactor().scrub(data)
    return {
        "path": str(path.resolve()),
        "sha256": _sha256(path),
        "data": scrubbed,
        "redacted": scrubbed != data,
    }


def choose_layer(
    workspace: Path, state: SessionState | None, config_path: Path | None
) -> tuple[Sourced, dict[str, Any]]:
    """The file layer for this run, and the snapshot to keep for the next one.

    New session, or ``--config`` given: the file as it is now (announced when it
    replaces a session's own). Otherwise the session's snapshot; a session from
    before snapshots existed reads ``pliny.yaml`` as it always did.
    """
    saved = state.options.get(KEY) if state is not None else None
    if config_path is not None or saved is None:
        path = user_file(workspace, config_path)
        if saved is not None and state is not None:
            logger.warning(
                "using {} instead of the settings session {!r} started with", path, state.id
            )
        return (load_file(path) if path else _empty()), snapshot(path)
    assert state is not None
    return restore(saved, state.id, user_file(workspace, None)), saved


def restore(saved: dict[str, Any], session_id: str, now: Path | None) -> Sourced:
    """The snapshot as a settings layer; the file itself only for scrubbed secrets.

    ``now`` is the file a new run would read (to say when it differs).
    """
    path = Path(saved["path"]) if saved.get("path") else None
    current = _sha256(path) if path is not None and path.is_file() else None
    if saved.get("redacted"):
        # The real values are only in the file: usable while it is unchanged.
        if path is None or current != saved.get("sha256"):
            raise UsageError(
                f"session {session_id!r} started with secret-shaped values from {path}, "
                "which are not kept in session state, and that file changed: "
                f"pass --config {path} (or another file) to resume"
            )
        return load_file(path)
    changed = path if current is not None and current != saved.get("sha256") else None
    if changed is None and path is None and now is not None:
        changed = now  # a pliny.yaml that appeared after the session started
    if changed is not None:
        logger.warning(
            "{} changed since session {!r} started; resuming with the settings it started "
            "with (pass --config {} to use the file as it is now)",
            changed,
            session_id,
            changed,
        )
    if path is None:
        return _empty()
    layer = _flags_source(saved.get("data") or {})
    mark = Mark(f"{path} (as session {session_id} started)", 1, 1)
    return Sourced(layer.data, {loc: mark for loc in layer.marks})


def announce_overrides(state: SessionState | None, overrides: dict[str, Any]) -> None:
    """Say which values of a continued session's settings this command line changes."""
    if state is None or not state.started_runs:
        return
    saved = dict(_leaves(state.options.get("overrides", {})))
    for key, value in _leaves(overrides):
        if key not in saved or saved[key] != value:
            logger.warning(
                "{}={} from the command line overrides the settings session {!r} started with",
                key,
                value,
                state.id,
            )


def settings_of(workspace: Path, state: SessionState) -> Settings:
    """A session's settings as its runs had them, quietly (the audit commands).

    From the snapshot as kept: a scrubbed secret cannot move the audit dir.
    """
    overrides = state.options.get("overrides", {})
    saved = state.options.get(KEY)
    if saved is None:
        return load_settings(workspace, None, overrides)
    return load_settings(workspace, None, overrides, layer=_flags_source(saved.get("data") or {}))


def _empty() -> Sourced:
    return Sourced({}, {})


def _leaves(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        out.extend(_leaves(value, name + ".") if isinstance(value, dict) else [(name, value)])
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def audit_settings(workspace: Path, session_id: str) -> AuditSettings:
    """Where a session's audit log lives: its own settings, else the workspace's.

    Every writer and reader outside a run (rollback, checkpoint, watch, metrics,
    audit) asks here, so a custom ``audit.dir`` never splits the log in two.
    """
    from pliny.lifecycle.store import SessionStore

    store = SessionStore(workspace)
    if session_id in store.ids():
        try:
            return settings_of(workspace, store.load(session_id)).audit
        except UsageError:
            pass  # a corrupt state: the workspace's settings, as before
    return load_settings(workspace).audit
