"""Reading audit logs: whole-file reads, filters, and ``follow`` (tail -f).

Readers are tolerant: unknown event types and fields are kept (a newer Pliny
may have written them), a torn final line is skipped (the writer repairs it
on its next open), and an invalid middle line is skipped and reported by
line number (``pliny audit verify`` says why).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from pliny.events import Event, parse

TERMINAL = frozenset({"session_completed", "session_failed", "session_cancelled", "session_paused"})


def parse_line(raw: bytes) -> Event | None:
    """The event on one complete line, or None when the line is not one."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    try:
        return parse(data)
    except ValidationError:
        return None


@dataclass
class LogContents:
    events: list[Event] = field(default_factory=list)
    bad_lines: list[int] = field(default_factory=list)  # 1-based, skipped
    torn_bytes: int = 0  # an unterminated final line, skipped


def read_log(path: str | Path) -> LogContents:
    out = LogContents()
    lines = Path(path).read_bytes().split(b"\n")
    out.torn_bytes = len(lines[-1])
    for number, raw in enumerate(lines[:-1], start=1):
        event = parse_line(raw)
        if event is None:
            out.bad_lines.append(number)
        else:
            out.events.append(event)
    return out


def read_events(path: str | Path) -> list[Event]:
    return read_log(path).events


def filter_events(
    events: Iterable[Event],
    types: Iterable[str] | None = None,
    phases: Iterable[str] | None = None,
    agents: Iterable[str] | None = None,
) -> list[Event]:
    """Events matching every given filter (each filter: any of its values)."""
    return [e for e in events if matches(e, types, phases, agents)]


def matches(
    event: Event,
    types: Iterable[str] | None = None,
    phases: Iterable[str] | None = None,
    agents: Iterable[str] | None = None,
) -> bool:
    return (
        (not types or event.type in set(types))
        and (not phases or event.phase in set(phases))
        and (not agents or event.agent in set(agents))
    )


def follow(
    path: str | Path,
    until: Callable[[Event], bool] | None = None,
    poll: float = 0.1,
    timeout: float | None = None,
) -> Iterator[Event]:
    """Yield every event of the log, then new ones as another process appends them.

    Stops after an event for which ``until`` is true, or when the newest
    event in the file is terminal (session completed, failed, cancelled or
    paused) — a terminal event followed by more (the session was resumed)
    does not stop it. ``timeout`` (seconds, total) bounds the wait; the file
    may not exist yet.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    path = Path(path)
    while not path.exists():
        if _expired(deadline):
            return
        time.sleep(poll)
    with open(path, "rb") as f:
        tail = _Tail(f.fileno())
        while True:
            batch = tail.read_lines()
            for event in batch:
                yield event
                if until is not None and until(event):
                    return
            if batch and batch[-1].type in TERMINAL:
                return
            if _expired(deadline):
                return
            if not batch:
                time.sleep(poll)


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


class _Tail:
    """Incremental line reader that survives the writer truncating a torn tail.

    It re-reads an incomplete last line from its start on every poll instead
    of buffering it, so a tail the writer truncated and replaced is read fresh.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.line_start = 0  # offset just after the last complete line consumed

    def read_lines(self) -> list[Event]:
        size = os.fstat(self.fd).st_size
        if size < self.line_start:  # lines we consumed were moved aside
            self.line_start = _after_last_newline(self.fd, size)
        if size == self.line_start:
            return []
        data = os.pread(self.fd, size - self.line_start, self.line_start)
        end = data.rfind(b"\n") + 1
        self.line_start += end
        return [e for e in map(parse_line, data[:end].split(b"\n")[:-1]) if e is not None]


Tail = _Tail  # public name for other incremental readers (the web view's stream and fold)


def _after_last_newline(fd: int, size: int) -> int:
    start = max(0, size - 65536)
    return start + os.pread(fd, size - start, start).rfind(b"\n") + 1
