"""Sessions: one run of a framework on a task, its state and its lock.

Layout under the workspace (never committed, never rolled back)::

    .pliny/current                     id of the current session
    .pliny/sessions/<id>/state.json    SessionState, written atomically
    .pliny/sessions/<id>/lock          flock held by the running process
    .pliny/sessions/<id>/graph.sqlite  LangGraph checkpointer (thread = id)
    .pliny/sessions/<id>/journal.sqlite recorded LLM responses (resume)

The lock is an OS file lock, so the kernel releases it when its process
dies: a session whose state says ``in_progress`` but whose lock is free was
killed, and shows as ``crashed``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from pliny.atomicfile import PRIVATE_FILE, atomic_write, private_dir
from pliny.config.settings import STATE_DIR
from pliny.errors import UsageError
from pliny.ids import unique_prefix
from pliny.lifecycle.gitignore import hide_from_git
from pliny.redact import Redactor

Status = Literal["created", "in_progress", "completed", "failed", "crashed", "cancelled", "paused"]
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def now() -> str:
    # microseconds: `session list` orders by creation, often several per second
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class SessionState(BaseModel):
    id: str
    name: str
    status: Status = "created"  # never run yet; a run sets in_progress
    framework: str | None = None  # built-in name or path, fixed at first execute
    task: str | None = None
    created: str = Field(default_factory=now)
    updated: str = Field(default_factory=now)
    pid: int | None = None
    options: dict[str, Any] = Field(default_factory=dict)  # CLI overrides kept for resume
    phase: str | None = None  # phase in progress or last completed
    fork_from: str | None = None  # LangGraph checkpoint to continue from (rollback/rerun)
    fresh_agents: list[str] = Field(default_factory=list)  # --rerun: bypass the journal
    error: dict[str, Any] | None = None
    started_runs: int = 0


class SessionStore:
    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self.root = workspace / STATE_DIR
        self._redactor = Redactor()

    def dir(self, session_id: str) -> Path:
        return self.root / "sessions" / session_id

    # -- create / read / write ---------------------------------------------
    def create(self, name: str, session_id: str | None = None, **fields: Any) -> SessionState:
        """A new current session, written once with ``fields`` (framework, task, status)."""
        session_id = session_id or new_id(name)
        if not ID_PATTERN.match(session_id):
            raise UsageError(
                f"invalid session id {session_id!r}: use letters, digits, '.', '_' or '-' "
                "(at most 64, starting with a letter or digit)"
            )
        if (self.dir(session_id) / "state.json").exists():
            raise UsageError(f"session {session_id!r} already exists")
        state = SessionState(id=session_id, name=name, **fields)
        hide_from_git(self.root)
        self.save(state)
        self.set_current(session_id)
        return state

    def lookup(self, given: str) -> str | None:
        """The id of the session named by ``given`` or a unique prefix of it; None if none."""
        if ID_PATTERN.match(given) and (self.dir(given) / "state.json").exists():
            return given
        return unique_prefix(given, self.ids())

    def find(self, given: str) -> str:
        """Like lookup, but an unknown id is a one-line UsageError naming the known ones."""
        found = self.lookup(given)
        if found is None:
            known = ", ".join(self.ids()[:10]) or "none"
            raise UsageError(f"unknown session {given!r} (sessions here: {known})")
        return found

    def load(self, session_id: str) -> SessionState:
        session_id = self.find(session_id)
        path = self.dir(session_id) / "state.json"
        try:
            state = SessionState.model_validate_json(path.read_bytes())
        except (ValidationError, ValueError) as exc:
            first = str(exc).splitlines()[0]
            raise UsageError(f"{path}: corrupt session state: {first}") from None
        if state.status == "in_progress" and not self.is_locked(session_id):
            state.status = "crashed"
        return state

    def save(self, state: SessionState) -> None:
        state.updated = now()
        data = self._redactor.scrub(state.model_dump(mode="json"))  # the task may quote a key
        atomic_write(self.dir(state.id) / "state.json", json.dumps(data, indent=2).encode())

    def ids(self) -> list[str]:
        base = self.root / "sessions"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if (p / "state.json").exists())

    def list(self) -> list[SessionState]:
        out = []
        for session_id in self.ids():
            try:
                out.append(self.load(session_id))
            except UsageError:
                continue  # a corrupt one is reported by `session show`, not here
        return sorted(out, key=lambda s: s.created)

    def remove(self, session_id: str) -> str:
        """Remove a session (by id or unique prefix); returns its id."""
        session_id = self.load(session_id).id
        if self.is_locked(session_id):
            raise UsageError(f"session {session_id!r} is running; cancel it first")
        shutil.rmtree(self.dir(session_id))
        if self.current() == session_id:
            (self.root / "current").unlink(missing_ok=True)
        return session_id

    # -- the current session ------------------------------------------------
    def set_current(self, session_id: str) -> None:
        atomic_write(self.root / "current", session_id.encode())

    def current(self) -> str | None:
        path = self.root / "current"
        return path.read_text().strip() or None if path.exists() else None

    def resolve(self, session_id: str | None) -> SessionState:
        chosen = session_id or self.current()
        if not chosen:
            raise UsageError(
                "no current session: pass --session ID or --task, or `pliny session start`"
            )
        return self.load(chosen)

    # -- locking ----------------------------------------------------------------
    def lock(self, session_id: str) -> SessionLock:
        return SessionLock(self.dir(session_id))

    def is_locked(self, session_id: str) -> bool:
        return SessionLock(self.dir(session_id)).held_elsewhere()


class SessionLock:
    """An flock on ``<session>/lock``; the owner's pid is written beside it."""

    def __init__(self, session_dir: Path) -> None:
        from filelock import FileLock

        self.path = session_dir / "lock"
        self._lock = FileLock(str(self.path), timeout=0, mode=PRIVATE_FILE)

    def held_elsewhere(self) -> bool:
        from filelock import Timeout

        if not self.path.exists():
            return False
        try:
            self._lock.acquire()
        except Timeout:
            return True
        self._lock.release()
        return False

    def owner(self) -> str:
        path = self.path.with_name("owner")
        return path.read_text().strip() if path.exists() else "?"

    def __enter__(self) -> SessionLock:
        from filelock import Timeout

        private_dir(self.path.parent)
        try:
            self._lock.acquire()
        except Timeout:
            raise UsageError(
                f"session {self.path.parent.name!r} is already running (pid {self.owner()}); "
                "wait for it or `pliny session cancel` it"
            ) from None
        atomic_write(self.path.with_name("owner"), str(os.getpid()).encode())
        return self

    def __exit__(self, *exc: object) -> None:
        self.path.with_name("owner").unlink(missing_ok=True)  # no stale pid for `cancel`
        self._lock.release()


def new_id(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24] or "session"
    return f"{slug}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def dump(state: SessionState) -> dict[str, Any]:
    return json.loads(state.model_dump_json())
