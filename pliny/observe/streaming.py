"""Tokens of answers still streaming in, for `pliny watch` in another terminal.

``llm_progress`` events stay out of the audit log (a long stream would add a
line every half second), so ``watch``, which reads the log, cannot see them.
This listener keeps the running counts in a small side file next to the
session state, ``streaming.json`` (``{agent: completion tokens so far}``),
rewritten atomically when a count changes and removed when the run ends;
``watch`` overlays it on what it folded from the log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pliny.atomicfile import atomic_write
from pliny.events import Event

FILE = "streaming.json"
TERMINAL = {"session_completed", "session_failed", "session_cancelled", "session_paused"}


class StreamingFile:
    """A bus listener: the side file mirrors the agents whose answer is streaming now."""

    def __init__(self, session_dir: Path) -> None:
        self.path = session_dir / FILE
        self.counts: dict[str, int] = {}

    def __call__(self, event: Event) -> None:
        agent = event.agent or ""
        if event.type == "llm_progress":
            self.counts[agent] = int(getattr(event, "completion_tokens", 0))
        elif event.type == "llm_call" and agent in self.counts:
            del self.counts[agent]  # the call's final counts are in the log now
        elif event.type in TERMINAL:
            self.counts.clear()
        else:
            return
        self._write()

    def _write(self) -> None:
        if self.counts:
            atomic_write(self.path, json.dumps(self.counts).encode())
        else:
            self.path.unlink(missing_ok=True)


def read(session_dir: Path) -> dict[str, int]:
    """The counts a running session wrote; {} when nothing streams (or the file is odd)."""
    try:
        data: Any = json.loads((session_dir / FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): int(v) for k, v in data.items() if isinstance(v, int) and v >= 0}
