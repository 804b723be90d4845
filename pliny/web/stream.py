"""Server-Sent Events from a session's audit log: the one event stream, live.

Every event of the log (after the client's ``Last-Event-ID`` or ``?after=``),
then each new one as the running process appends it, read with the audit
reader's incremental ``Tail`` (which survives the writer repairing a torn
tail). The event id is the audit ``seq``, so a reconnecting browser picks up
where it stopped. Reads run in a worker thread; the wait between polls is an
``asyncio.sleep``, so an idle stream holds no thread.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio

from pliny.audit.reader import Tail
from pliny.web.data import event_json

POLL_S = 0.1
HEARTBEAT_S = 15.0


def sse(data: dict, event_id: int | None = None, kind: str = "audit") -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def audit_stream(
    path: Path, after: int, disconnected: Callable[[], Awaitable[bool]]
) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    while not path.exists():
        if await disconnected():
            return
        await asyncio.sleep(POLL_S * 5)
    with open(path, "rb") as f:
        tail = Tail(f.fileno())
        idle = 0.0
        while True:
            batch = await anyio.to_thread.run_sync(tail.read_lines)
            fresh = [e for e in batch if (e.seq or 0) > after]
            if fresh:
                after = fresh[-1].seq or after
                yield "".join(sse(event_json(e), e.seq) for e in fresh)
                idle = 0.0
                continue
            if await disconnected():
                return
            await asyncio.sleep(POLL_S)
            idle += POLL_S
            if idle >= HEARTBEAT_S:  # keeps proxies from closing an idle stream
                yield ": keep-alive\n\n"
                idle = 0.0
