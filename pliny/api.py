"""The Python API: the same runner the CLI uses, with callbacks.

import pliny.api as pliny

result = pliny.run("rise", "Summarise this repo", workspace=".",
                   on_agent_end=lambda e: print(e.agent, "done"))

async for event in pliny.stream("care", "Answer the ticket", workspace="."):
    ...
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from pliny.events import Event
from pliny.framework.model import Framework, load
from pliny.lifecycle.runner import Outcome, RunOptions, execute

Callback = Callable[[Event], None]
_HOOKS = {
    "on_phase_start": ("phase_started",),
    "on_phase_end": ("phase_completed",),
    "on_agent_start": ("agent_started",),
    "on_agent_end": ("agent_completed", "agent_failed"),
    "on_llm_call": ("llm_call",),
    "on_error": ("error", "agent_failed", "session_failed"),
}


def load_framework(name_or_path: str) -> Framework:
    return load(name_or_path)


def _listener(callbacks: dict[str, Callback | None]) -> Callback:
    routes: dict[str, list[Callback]] = {}
    for hook, types in _HOOKS.items():
        if (fn := callbacks.get(hook)) is not None:
            for kind in types:
                routes.setdefault(kind, []).append(fn)

    def listen(event: Event) -> None:
        for fn in routes.get(event.type, ()):
            fn(event)

    return listen


def _options(
    framework: str | None, task: str | None, workspace: str | Path, **kw: Any
) -> RunOptions:
    callbacks = {hook: kw.pop(hook, None) for hook in _HOOKS}
    listeners = [*kw.pop("listeners", []), _listener(callbacks)]
    return RunOptions(
        workspace=Path(workspace).resolve(),
        framework=framework,
        task=task,
        listeners=listeners,
        **kw,
    )


async def arun(
    framework: str | None = None, task: str | None = None, *, workspace: str | Path = ".", **kw: Any
) -> Outcome:
    """Run (or with ``session_id=`` resume) a session; returns its Outcome."""
    return await execute(_options(framework, task, workspace, **kw))


def run(
    framework: str | None = None, task: str | None = None, *, workspace: str | Path = ".", **kw: Any
) -> Outcome:
    """Blocking form of :func:`arun`."""
    return asyncio.run(arun(framework, task, workspace=workspace, **kw))


async def stream(
    framework: str | None = None, task: str | None = None, *, workspace: str | Path = ".", **kw: Any
) -> AsyncIterator[Event]:
    """Run a session, yielding each engine event as it happens."""
    queue: asyncio.Queue[Event | None] = asyncio.Queue()
    opts = _options(framework, task, workspace, **kw)
    opts.listeners.append(queue.put_nowait)
    runner = asyncio.create_task(execute(opts))
    runner.add_done_callback(lambda _: queue.put_nowait(None))
    try:
        while (event := await queue.get()) is not None:
            yield event
    finally:
        if not runner.done():
            runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
