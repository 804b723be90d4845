"""What the web view shows, read from the same places as the CLI; nothing here writes.

Sessions come from ``SessionStore``, run state from the audit log folded into
``Progress`` (as ``session show`` and ``watch`` do), the graph from
``framework.render.graph_data`` (the ``session show --format json`` document),
checkpoints from the git refs (``refs/pliny/<session>/...``), and the chain
check from ``audit.writer.verify``. Folds are incremental: each call reads
only the lines appended since the previous one, so a live page stays cheap.
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pliny.audit.log import log_path
from pliny.audit.reader import Tail, read_log
from pliny.errors import UsageError
from pliny.events import Event
from pliny.framework.model import Framework, load
from pliny.framework.render import COLORS, FILL, graph_data, to_svg
from pliny.lifecycle.runstate import RollbackFold
from pliny.lifecycle.sessionconfig import audit_settings
from pliny.lifecycle.store import SessionState, SessionStore, dump
from pliny.lifecycle.views import age, show_data
from pliny.observe.progress import Progress

PREVIEW_CHARS = 600
EVENT_FIELDS_SKIP = {"v", "prev", "hash"}


@dataclass
class AgentExtras:
    """What the shared Progress fold does not keep per agent."""

    model: str = ""
    retries: int = 0
    errors: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


@dataclass
class Fold:
    framework: str | None
    progress: Progress
    extras: dict[str, AgentExtras]
    rollbacks: RollbackFold  # the current state after a rollback, as `session show`
    events: int = 0
    offset: int = 0  # just after the last complete line folded


class Reader:
    """Read-only views over one workspace, with per-log fold caching."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self.store = SessionStore(workspace)
        self._folds: dict[str, Fold] = {}
        self._frameworks: dict[str, Framework] = {}
        self._lock = threading.Lock()

    # -- primitives ----------------------------------------------------------
    def state(self, session_id: str) -> SessionState:
        return self.store.load(session_id)  # unknown -> UsageError (404 in the app)

    def log(self, session_id: str) -> Path:
        # the session's own audit dir (a --config may have moved it), as every reader asks
        return log_path(self.workspace, audit_settings(self.workspace, session_id), session_id)

    def framework(self, name: str | None) -> Framework:
        key = name or "rise"
        if key not in self._frameworks:
            self._frameworks[key] = load(key)
        return self._frameworks[key]

    def fold(self, state: SessionState) -> Fold:
        """The log folded into Progress; only lines appended since the last call are read."""
        path = self.log(state.id)
        with self._lock:
            fold = self._folds.get(state.id)
            if fold is None or fold.framework != state.framework:
                fold = self._new_fold(state.framework)
                self._folds[state.id] = fold
            try:
                with open(path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size < fold.offset:  # a torn tail was moved aside: fold afresh
                        fold = self._folds[state.id] = self._new_fold(state.framework)
                    tail = Tail(f.fileno())
                    tail.line_start = fold.offset
                    for event in tail.read_lines():
                        fold.progress(event)
                        fold.rollbacks(event)
                        _extra(fold.extras, event)
                        fold.events += 1
                    fold.offset = tail.line_start
            except FileNotFoundError:
                pass
            return fold

    def _new_fold(self, framework: str | None) -> Fold:
        fw = self.framework(framework)
        extras = {a.name: AgentExtras(model=a.model or "") for p in fw.phases for a in p.agents}
        progress = Progress.for_framework(fw)
        return Fold(framework, progress, extras, RollbackFold(progress))

    # -- the session list ------------------------------------------------------
    def sessions(self) -> list[dict[str, Any]]:
        rows = []
        for state in self.store.list():
            try:
                p = self.fold(state).progress
            except UsageError:  # its framework file is gone: still listed, without figures
                p = Progress()
            rows.append(
                {
                    "id": state.id,
                    "name": state.name,
                    "status": state.status,
                    "framework": state.framework,
                    "phase": state.phase,
                    "created": state.created,
                    "updated": state.updated,
                    "age": age(state.created),
                    **p.usage.totals(),
                }
            )
        return rows

    # -- one session -------------------------------------------------------------
    def session(self, session_id: str) -> dict[str, Any]:
        """`session show --format json` plus agent cards and the run's totals."""
        state = self.state(session_id)
        if not state.framework:
            return {
                "session": dump(state),
                "graph": None,
                "agents": [],
                "totals": None,
                "palette": {"stroke": COLORS, "fill": FILL},
                "svg": False,
            }
        fold = self.fold(state)
        progress = fold.progress
        progress.status, progress.session = state.status, state.id
        graph = show_data(self.framework(state.framework), fold.rollbacks)
        summary = progress.summary()
        return {
            "session": dump(state),
            "graph": graph,
            "agents": [self._card(fold, a) for p in summary["phases"] for a in p["agents"]],
            "totals": graph["totals"],
            "current_state": graph["current_state"],
            "files_written": summary["files_written"],
            "error": summary["error"],
            "events": fold.events,
            "palette": {"stroke": COLORS, "fill": FILL},
            "svg": shutil.which("dot") is not None,
        }

    def _card(self, fold: Fold, agent: dict[str, Any]) -> dict[str, Any]:
        view = fold.progress.agents[agent["name"]]
        extra = fold.extras.get(agent["name"], AgentExtras())
        return agent | {
            "phase": view.phase,
            "model": extra.model,
            "retries": extra.retries,
            "errors": extra.errors[-5:],
            "files": extra.files,
            "preview": self._preview(view.output),
        }

    def _preview(self, rel: str | None) -> str | None:
        if not rel:
            return None
        root = self.workspace.resolve()
        path = (root / rel).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return None
        with open(path, "rb") as f:
            head = f.read(PREVIEW_CHARS * 4)
        return head.decode("utf-8", "replace")[:PREVIEW_CHARS]

    def svg(self, session_id: str) -> str | None:
        """The graph as Graphviz SVG (what `session show --format svg` prints), if `dot` exists."""
        if shutil.which("dot") is None:
            return None
        state = self.state(session_id)
        if not state.framework:
            return None
        fold = self.fold(state)
        fold.progress.status = state.status
        return to_svg(graph_data(self.framework(state.framework), fold.progress))

    # -- audit ---------------------------------------------------------------------
    def events(self, session_id: str, after: int = 0, limit: int = 2000) -> list[dict[str, Any]]:
        self.state(session_id)
        path = self.log(session_id)
        if not path.exists():
            return []
        out = [event_json(e) for e in read_log(path).events if (e.seq or 0) > after]
        return out[-limit:]

    def verify(self, session_id: str) -> dict[str, Any]:
        from pliny.audit.writer import verify

        self.state(session_id)
        path = self.log(session_id)
        if not path.exists():
            return {"ok": None, "events": 0, "message": "no audit log yet"}
        result = verify(path)
        if result.ok:
            torn = f"; torn tail of {result.torn_bytes} bytes" if result.torn_bytes else ""
            message = f"chain intact: {result.events} events{torn}"
        else:
            message = f"line {result.first_bad_line}: {result.reason}"
        return {"ok": result.ok, "events": result.events, "message": message}

    # -- checkpoints -------------------------------------------------------------
    def checkpoints(self, session_id: str) -> list[dict[str, Any]]:
        from pliny.checkpoints.refs import list_all

        self.state(session_id)
        return [c.to_dict() for c in list_all(self.workspace).get(session_id, [])]

    def diff(self, session_id: str, base: str, target: str) -> dict[str, Any]:
        """``git diff`` between two of the session's checkpoints (by name)."""
        known = {c["name"]: c["commit"] for c in self.checkpoints(session_id)}
        for name in (base, target):
            if name not in known:
                names = ", ".join(known) or "none"
                raise UsageError(
                    f"unknown checkpoint {name!r} of session {session_id!r} (known: {names})"
                )
        from pliny.checkpoints.git import GitRepo

        repo = GitRepo.open(self.workspace, init=False)
        assert repo is not None  # checkpoints exist, so the repo does
        a, b = known[base], known[target]
        return {
            "base": base,
            "target": target,
            "stat": repo.repo.git.diff("--stat", a, b),
            "patch": repo.repo.git.diff(a, b),
        }


def _extra(extras: dict[str, AgentExtras], event: Event) -> None:
    if not event.agent:
        return
    extra = extras.setdefault(event.agent, AgentExtras())
    kind = event.type
    if kind == "llm_call" and (model := getattr(event, "model", "")):
        extra.model = model
    elif kind == "retry":
        extra.retries += 1
    elif kind in ("agent_failed", "error"):
        extra.errors.append(f"{event.category}: {event.message}")  # type: ignore[attr-defined]
    elif kind == "agent_completed":
        files = event.files_written  # type: ignore[attr-defined]
        extra.files.extend(f for f in files if f not in extra.files)


def event_json(event: Event) -> dict[str, Any]:
    data = event.model_dump(mode="json", exclude_none=True)
    return {k: v for k, v in data.items() if k not in EVENT_FIELDS_SKIP}
