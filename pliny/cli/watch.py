"""`pliny watch [ID]`: a running session's live view, from another terminal.

Fed only by the session's audit log (the engine's event stream on disk), so
it never locks or advances anything and shows what ``pliny execute`` shows:
events are folded into the same ``pliny.observe.progress.Progress`` and drawn with
``pliny.observe.progress.render``. On a terminal the table redraws in place; into a pipe
it prints one line per event. It exits 0 when the session ends (completed,
failed, cancelled, paused), at once (after one final table) when it is not
running, and when the running process disappears without a final event.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from pliny.cli.common import WorkspaceOpt, workspace_path

if TYPE_CHECKING:
    from pliny.events import Event
    from pliny.observe.progress import Progress

IDLE_S = 0.25  # redraw (elapsed time, ETA) this often when no event arrives
LIVENESS_S = 2.0  # how often an idle watch checks that the session's process still exists


def register(app: typer.Typer) -> None:
    app.command("watch")(watch)


def watch(
    session_id: str = typer.Argument(None, metavar="[ID]", help="Session id (default: current)."),
    workspace: Path | None = WorkspaceOpt,
) -> None:
    """Follow a session's progress from its audit log until it ends."""
    target = _Target.resolve(workspace_path(workspace), session_id)
    view = _View(target)
    if not target.running:
        view.print_final()
        return
    if sys.stdout.isatty():
        view.live()
    else:
        view.lines()
    view.print_end()


class _Target:
    """The session to watch: its id, audit log, framework and whether it runs now."""

    def __init__(
        self,
        workspace: Path,
        sid: str,
        log: Path,
        framework: str | None,
        running: bool,
        status: str | None,
    ) -> None:
        self.workspace, self.sid, self.log = workspace, sid, log
        self.framework, self.running, self.status = framework, running, status

    @classmethod
    def resolve(cls, workspace: Path, session_id: str | None) -> _Target:
        from pliny.audit.log import log_path
        from pliny.errors import UsageError
        from pliny.lifecycle.sessionconfig import audit_settings
        from pliny.lifecycle.store import SessionStore

        store = SessionStore(workspace)
        sid = session_id or store.current()
        if not sid:
            raise UsageError("no current session: pass a session ID (see `pliny session list`)")
        try:
            state = store.load(sid)  # a dead in_progress session loads as crashed
        except UsageError:
            log = log_path(workspace, audit_settings(workspace, sid), sid)
            if not log.is_file():
                raise
            return cls(workspace, sid, log, None, False, None)  # state removed, log kept
        log = log_path(workspace, audit_settings(workspace, state.id), state.id)  # sid: a prefix
        return cls(
            workspace, state.id, log, state.framework, state.status == "in_progress", state.status
        )

    def alive(self) -> bool:
        """Whether the process that holds the session still exists (no lock taken)."""
        import psutil

        from pliny.lifecycle.store import SessionStore

        owner = SessionStore(self.workspace).lock(self.sid).owner()
        if not owner.isdigit():
            return False
        try:  # a killed process nobody reaped yet is a zombie: gone too
            return psutil.Process(int(owner)).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False


class _View:
    def __init__(self, target: _Target) -> None:
        self.target = target
        self.progress = _progress(target.workspace, target.framework)
        self.clock = _WallClock()
        self.crashed = False

    # -- folding ----------------------------------------------------------------
    def fold(self, event: Event) -> None:
        if event.type == "session_started" and not self.progress.phases:
            self.target.framework = getattr(event, "framework", "") or self.target.framework
            self.progress = _progress(self.target.workspace, self.target.framework)
        self.progress(event)
        self.clock.stamp(self.progress, event)

    def events(self) -> Iterator[Event | None]:
        """Events as they are appended; None when idle (time to redraw)."""
        import queue
        import threading

        items: queue.Queue[Any] = queue.Queue()
        done = object()

        def pump() -> None:
            from pliny.audit.log import follow

            try:
                for event in follow(self.target.log):
                    items.put(event)
            finally:
                items.put(done)

        threading.Thread(target=pump, name="pliny-watch", daemon=True).start()
        checked = time.monotonic()
        while True:
            try:
                item = items.get(timeout=IDLE_S)
            except queue.Empty:
                if time.monotonic() - checked >= LIVENESS_S:
                    checked = time.monotonic()
                    if not self.target.alive():
                        self.crashed = True
                        return
                yield None
                continue
            if item is done:
                return
            yield item

    # -- output -----------------------------------------------------------------
    def title(self) -> str:
        framework = self.target.framework or "?"
        return f"{self.target.sid} · {framework} · {self.progress.status}"

    def overlay_streaming(self) -> None:
        """Tokens still streaming in (the running session's side file, not the log)."""
        from pliny.lifecycle.store import SessionStore
        from pliny.observe.streaming import read

        counts = read(SessionStore(self.target.workspace).dir(self.target.sid))
        for name, view in self.progress.agents.items():
            view.streaming = counts.get(name, 0)

    def live(self) -> None:
        from rich.console import Console
        from rich.live import Live

        from pliny.observe.progress import render

        with Live(
            render(self.progress, self.title()), console=Console(), refresh_per_second=4
        ) as live:
            for event in self.events():
                if event is not None:
                    self.fold(event)
                self.overlay_streaming()
                live.update(render(self.progress, self.title()))

    def lines(self) -> None:
        for event in self.events():
            if event is not None:
                self.fold(event)
                print(_event_line(event, self.progress), flush=True)

    def print_final(self) -> None:
        from pliny.audit.log import read_events

        if not self.target.log.is_file():
            typer.echo(
                f"session {self.target.sid} ({self.target.status}): not run yet, "
                "no audit log to show"
            )
            return
        for event in read_events(self.target.log):
            self.fold(event)
        if self.target.status:
            self.progress.status = self.target.status
        self.clock.freeze(self.progress)
        from pliny.observe.progress import render

        _console().print(render(self.progress, self.title()))
        self.print_end()

    def print_end(self) -> None:
        p = self.progress
        if self.crashed:
            p.status = "crashed"
            sid = self.target.sid
            typer.echo(
                f"session {sid}: its process is gone without a final event (crashed); "
                f"`pliny session resume {sid}` continues it"
            )
        line = (
            f"session {self.target.sid} {p.status}: {p.calls} calls, {p.tokens:,} tokens, "
            f"{p.usage.cost_text()}"
        )
        if p.last_error and p.status != "completed":
            line += f" · {p.last_error}"
        typer.echo(line)


def _progress(workspace: Path, framework: str | None) -> Progress:
    """Progress laid out from the framework; bare (filled in by events) if it cannot be loaded."""
    from pliny.errors import PlinyError
    from pliny.framework.model import load
    from pliny.observe.progress import Progress

    for candidate in (framework, str(workspace / framework) if framework else None):
        if candidate:
            try:
                return Progress.for_framework(load(candidate))
            except (PlinyError, OSError):
                continue
    return Progress()


class _WallClock:
    """Puts the events' own timestamps on the progress (Progress stamps fold time).

    Folding a log that another process wrote would otherwise show every
    agent as having taken 0 s and the run as having started just now.
    """

    def __init__(self) -> None:
        self.run_start: float | None = None
        self.last: float | None = None

    def stamp(self, progress: Progress, event: Event) -> None:
        wall = _wall(event.ts)
        if wall is None:
            return
        self.last = wall
        mono = time.monotonic() - (time.time() - wall)
        if event.type in ("session_started", "session_resumed"):
            self.run_start = wall
            progress.started = mono
        view = progress.agents.get(event.agent or "")
        if view is None:
            return
        if event.type == "agent_started":
            view.started = mono
        elif event.type in ("agent_completed", "agent_failed"):
            view.ended = mono

    def freeze(self, progress: Progress) -> None:
        """For a finished run: elapsed = its own length, not the time since it began."""
        if self.run_start is not None and self.last is not None:
            progress.started = time.monotonic() - (self.last - self.run_start)


def _wall(ts: str) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


def _event_line(event: Event, progress: Progress) -> str:
    """``time type phase/agent | status | phase marks | tokens cost`` (see render.to_line)."""
    from pliny.framework.render import to_line

    where = "/".join(x for x in (event.phase, event.agent) if x) or "-"
    data = {
        "status": progress.status,
        "phases": [
            {
                "name": name,
                "state": progress.phase_state.get(name, "waiting").replace("waiting", "pending"),
            }
            for name in progress.phases
        ],
        "totals": progress.usage.totals(),
    }
    clock = event.ts[11:19] if len(event.ts) >= 19 else event.ts
    return f"{clock} {event.type:<18} {where:<32} | {to_line(data)}"


def _console() -> Any:
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 140)
