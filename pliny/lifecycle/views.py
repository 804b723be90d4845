"""Read-side views of sessions: snapshots, cancel, removal, retention.

A snapshot is rebuilt from the audit log (the engine's event stream on
disk), so it never advances or locks anything and works while the session
runs in another process.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pliny.errors import UsageError
from pliny.lifecycle.store import SessionState, SessionStore

if TYPE_CHECKING:  # imported where used: `pliny session list` stays quick to start
    from pliny.lifecycle.runstate import RollbackFold
    from pliny.observe.progress import Progress


def age(iso: str) -> str:
    try:
        then = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return "?"
    seconds = (datetime.now(UTC) - then).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def progress_of(workspace: Path, state: SessionState) -> Progress:
    """The session's Progress in its *current* state: rollbacks applied (see runstate)."""
    return _fold(workspace, state).progress


def _fold(workspace: Path, state: SessionState) -> RollbackFold:
    from pliny.audit.log import log_path, read_events
    from pliny.framework.model import load
    from pliny.lifecycle.runstate import RollbackFold
    from pliny.lifecycle.sessionconfig import audit_settings
    from pliny.observe.progress import Progress

    log = log_path(workspace, audit_settings(workspace, state.id), state.id)
    fold = RollbackFold(Progress.for_framework(load(state.framework or "rise")))
    if log.exists():
        for event in read_events(log):
            fold.progress(event)
            fold(event)
    fold.progress.status = state.status
    fold.progress.session = state.id
    return fold


def snapshot(workspace: Path, session_id: str | None, fmt: str) -> str:
    from pliny.framework.model import load
    from pliny.framework.render import render

    store = SessionStore(workspace)
    state = store.resolve(session_id)
    if not state.framework:
        if fmt == "json":
            import json

            return json.dumps({"session": state.model_dump(), "graph": None}, indent=2)
        return f"{state.id} ({state.name}): {state.status}, not run yet"
    fold = _fold(workspace, state)
    if fmt == "json":
        import json

        data = show_data(load(state.framework), fold) | {"session": state.model_dump()}
        return json.dumps(data, indent=2)
    text = render(load(state.framework), fmt, fold.progress)
    if fmt == "text":
        header = (
            f"session {state.id} ({state.name}) · {state.status} · task: {(state.task or '')[:80]}"
        )
        if state.error:
            header += f"\nerror: {state.error.get('message')}"
        return header + "\n" + text + _current_line(fold)
    return text


def show_data(framework: Any, fold: Any) -> dict[str, Any]:
    """`session show --format json` (the web view serves the same): graph, totals, current state.

    totals: spent in total (every run, like the audit log); current_state: what the
    agents as shown account for, without the work a rollback took back.
    """
    from pliny.framework.render import graph_data

    data = graph_data(framework, fold.progress)
    data["totals"] = {**data["totals"], **fold.spent()}
    data["current_state"] = fold.current()
    return data


def _current_line(fold: RollbackFold) -> str:
    """Text: the current state's figures, when a rollback set them apart from the spent ones."""
    if fold.rolled_back_to is None:
        return ""
    c, s = fold.current(), fold.spent()
    return (
        f"\ncurrent state (rolled back to {c['rolled_back_to']}): {c['calls']} calls · "
        f"{c['tokens']:,} tokens · ${c['cost_usd']:.4f}; spent in total: "
        f"{s['calls']} calls · {s['tokens']:,} tokens · ${s['cost_usd']:.4f}"
    )


def cancel_running(workspace: Path, session_id: str | None) -> str:
    store = SessionStore(workspace)
    state = store.resolve(session_id)
    lock = store.lock(state.id)
    if not lock.held_elsewhere():
        raise UsageError(f"session {state.id!r} is not running (status {state.status})")
    try:
        pid = int(lock.owner())
        os.kill(pid, signal.SIGTERM)  # the runner maps SIGTERM to a clean cancel
    except (ValueError, ProcessLookupError):
        raise UsageError(f"session {state.id!r} is starting or stopping; try again") from None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and lock.held_elsewhere():
        time.sleep(0.1)
    return f"cancelled {state.id} (pid {pid}); resume with `pliny session resume {state.id}`"


def remove(workspace: Path, session_id: str, refs: bool) -> str:
    store = SessionStore(workspace)
    session_id = store.remove(session_id)
    dropped = 0
    if refs:
        from pliny.checkpoints.store import delete_session_refs

        dropped = delete_session_refs(workspace, session_id)
    extra = f", {dropped} git ref(s)" if refs else " (git refs kept; --refs removes them)"
    return f"removed {session_id}: state and journal{extra}; audit log kept"


def clean(workspace: Path, everything: bool, older_than: float | None, refs: bool) -> list[str]:
    store = SessionStore(workspace)
    removed = []
    cutoff = time.time() - older_than if older_than else None
    for state in store.list():
        if state.status == "in_progress" or (state.status != "completed" and not everything):
            continue
        created = datetime.fromisoformat(state.updated.replace("Z", "+00:00")).timestamp()
        if cutoff is not None and created > cutoff:
            continue
        remove(workspace, state.id, refs)
        removed.append(state.id)
    return removed


def apply_retention(workspace: Path, settings: object) -> list[str]:
    """`sessions.state_retention`: drop completed sessions older than it (at session start)."""
    retention = settings.sessions.state_retention  # type: ignore[attr-defined]
    return clean(workspace, False, retention, False) if retention else []


RESUMABLE = ("failed", "crashed", "cancelled", "paused")


def execution_summary(workspace: Path, state: SessionState) -> dict[str, object]:
    """What `session status` shows: one run's figures folded from the audit log."""
    from pliny.audit.log import log_path, read_events
    from pliny.framework.model import load
    from pliny.lifecycle.sessionconfig import audit_settings
    from pliny.observe.progress import Progress

    log = log_path(workspace, audit_settings(workspace, state.id), state.id)
    events = read_events(log) if log.is_file() else []
    try:
        progress = Progress.for_framework(load(state.framework)) if state.framework else Progress()
    except UsageError:  # its framework file is gone: the log still has the figures
        progress = Progress()
    for event in events:
        progress(event)
    agents = progress.agents.values()
    error = (state.error or {}).get("message") or progress.last_error
    return {
        "session": state.id,
        "name": state.name,
        "status": state.status,
        "framework": state.framework,
        "task": state.task,
        "phase": state.phase,
        "agents_done": sum(a.state == "done" for a in agents),
        "agents_total": len(agents),
        "calls": progress.usage.calls,
        "tokens": progress.usage.tokens,
        "cost_usd": round(progress.usage.cost_usd, 6),
        "unpriced_calls": progress.usage.unpriced_calls,
        "elapsed_s": round(_elapsed(events, state.status == "in_progress"), 1),
        "checkpoint": progress.checkpoints[-1] if progress.checkpoints else None,
        "error": error if state.status != "completed" else None,
        "resumable": state.status in RESUMABLE and bool(state.framework),
    }


def _elapsed(events: list, running: bool) -> float:
    """Seconds spent running: each run from its start event to its last event (or now)."""
    total, start, last = 0.0, None, None
    for event in events:
        at = datetime.fromisoformat(event.ts.replace("Z", "+00:00")).timestamp()
        if event.type in ("session_started", "session_resumed"):
            if start is not None and last is not None:
                total += last - start
            start = at
        last = at
    if start is not None and last is not None:
        total += (time.time() if running else last) - start
    return total


def cost_text(summary: dict) -> str:
    """The usage fold's wording: `$0.0123`, `$0.0123 + unpriced` or `unpriced`."""
    from pliny.usage import format_cost

    return format_cost(summary["cost_usd"], summary["unpriced_calls"], summary["calls"])


def duration_text(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def status_text(summary: dict) -> str:
    s = summary
    resume = f" · resume: pliny session resume {s['session']}" if s["resumable"] else ""
    lines = [
        f"session    {s['session']} ({s['name']})",
        f"status     {s['status']} · resumable: {'yes' if s['resumable'] else 'no'}{resume}",
        f"framework  {s['framework'] or '-'} · phase {s['phase'] or '-'}",
        f"agents     {s['agents_done']}/{s['agents_total']} done",
        f"usage      {s['calls']} calls · {s['tokens']:,} tokens · {cost_text(s)}",
        f"elapsed    {duration_text(s['elapsed_s'])}",
    ]
    if s["error"]:
        lines.append(f"error      {s['error']}")
    return "\n".join(lines)
