"""The Python API: the same runner the CLI uses, typed, with callbacks.

    import pliny

    outcome = pliny.run("rise", "Summarise this repo", workspace=".",
                        on_agent_end=lambda e: print(e.agent, "done"))

    async with pliny.stream("care", "Answer the ticket") as events:
        async for event in events:
            ...                          # events.cancel() ends it: CancelledError

    for s in pliny.sessions("."):
        print(s.id, s.status)
    pliny.session(outcome.session.id).rollback("after-research")

The library is quiet: nothing goes to stderr unless ``PLINY_LOG`` asks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from pliny.events import Event
from pliny.framework.model import Framework, load
from pliny.lifecycle.runner import Outcome, RunOptions, execute

if TYPE_CHECKING:
    from pliny.checkpoints.refs import CheckpointInfo
    from pliny.lifecycle.store import SessionState

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
    """A built-in framework by name (``rise``, ``care``) or a YAML file, validated."""
    return load(name_or_path)


class RunKwargs(TypedDict, total=False):
    """Keywords of :func:`run`, :func:`arun` and :func:`stream`: `pliny execute`'s flags."""

    workspace: str | Path  # default "."
    session_id: str | None  # continue this session instead of starting one
    name: str | None
    config: str | Path | None  # like --config
    overrides: dict[str, Any]  # settings, as nested dicts
    model: str | None
    parallel: bool | None
    rerun: list[str]
    from_phase: str | None
    until_phase: str | None
    timeout: float | None  # this run only
    executor: str  # "local" (default: where the session ran), or "temporal"
    executor_options: dict[str, Any]  # e.g. {"address": "127.0.0.1:7233", "task_queue": "q"}
    env: dict[str, str] | None  # instead of os.environ (endpoint, key)
    otlp: str | None  # OTLP/HTTP URL for live traces (needs the otel extra), like --otlp
    listeners: list[Callback]  # each gets every event
    on_phase_start: Callback
    on_phase_end: Callback
    on_agent_start: Callback
    on_agent_end: Callback
    on_llm_call: Callback
    on_error: Callback


def _hooks(callbacks: dict[str, Callback]) -> Callback:
    routes: dict[str, list[Callback]] = {}
    for hook, fn in callbacks.items():
        for kind in _HOOKS[hook]:
            routes.setdefault(kind, []).append(fn)

    def listen(event: Event) -> None:
        for fn in routes.get(event.type, ()):
            fn(event)

    return listen


def options(
    framework: str | None = None, task: str | None = None, **kw: Unpack[RunKwargs]
) -> RunOptions:
    """The run's options, as ``pliny execute`` builds them from its flags."""
    unknown = set(kw) - set(RunKwargs.__annotations__)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    args: dict[str, Any] = dict(kw)
    callbacks = {hook: args.pop(hook) for hook in _HOOKS if args.get(hook) is not None}
    listeners = [*args.pop("listeners", []), *([_hooks(callbacks)] if callbacks else [])]
    config = args.pop("config", None)
    return RunOptions(
        workspace=Path(args.pop("workspace", ".")).resolve(),
        framework=framework,
        task=task,
        config_path=Path(config).resolve() if config is not None else None,
        listeners=listeners,
        **args,
    )


async def arun(
    framework: str | None = None, task: str | None = None, **kw: Unpack[RunKwargs]
) -> Outcome:
    """Run a session (or with ``session_id=`` continue one); returns its Outcome."""
    return await execute(options(framework, task, **kw))


def run(framework: str | None = None, task: str | None = None, **kw: Unpack[RunKwargs]) -> Outcome:
    """Blocking form of :func:`arun`."""
    return asyncio.run(arun(framework, task, **kw))


class Stream:
    """A running session's events, as an async iterator.

    ``cancel()`` stops the run the way Ctrl-C does (status ``cancelled``,
    resumable); the iteration then raises :class:`asyncio.CancelledError`.
    After the last event, ``outcome`` holds the session's Outcome.
    """

    def __init__(self, opts: RunOptions) -> None:
        self._opts = opts
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._task: asyncio.Task[Outcome] | None = None
        self._cancelled = self._stopping = False
        self.outcome: Outcome | None = None
        opts.listeners.append(self._queue.put_nowait)

    def _start(self) -> asyncio.Task[Outcome]:
        if self._task is None:
            self._task = asyncio.create_task(execute(self._opts))
            self._task.add_done_callback(lambda _: self._queue.put_nowait(None))
        return self._task

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        task = self._start()
        try:
            while (event := await self._queue.get()) is not None:
                yield event
            self.outcome = await task
            if self._cancelled:
                raise asyncio.CancelledError("the session was cancelled (resumable)")
        finally:
            await self.aclose()

    def cancel(self) -> None:
        """End the run: it records ``cancelled`` and the iteration raises CancelledError."""
        self._cancelled = True
        self._stop()

    def _stop(self) -> None:
        # Once only: a second cancel would land in the runner's own cleanup.
        if self._task is not None and not self._task.done() and not self._stopping:
            self._stopping = True
            self._task.cancel()

    async def aclose(self) -> None:
        """Stop the run if it is still going and wait until it has ended."""
        self._stop()
        if self._task is not None:
            done = await asyncio.gather(self._task, return_exceptions=True)
            if isinstance(done[0], Outcome):
                self.outcome = done[0]

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def stream(
    framework: str | None = None, task: str | None = None, **kw: Unpack[RunKwargs]
) -> Stream:
    """Run a session, yielding each engine event as it happens (see :class:`Stream`)."""
    return Stream(options(framework, task, **kw))


# -- sessions on disk -----------------------------------------------------------------


@dataclass
class Session:
    """A session of a workspace: its state, history and checkpoints, and what you can do."""

    id: str
    workspace: Path
    _state: SessionState | None = field(default=None, repr=False)

    @property
    def state(self) -> SessionState:
        from pliny.lifecycle.store import SessionStore

        self._state = SessionStore(self.workspace).load(self.id)
        return self._state

    @property
    def status(self) -> str:
        """created, in_progress, completed, failed, crashed, cancelled or paused."""
        return self.state.status

    def history(self) -> list[Event]:
        """Every event of the session's audit log, oldest first."""
        from pliny.audit.log import log_path, read_events
        from pliny.config.settings import load_settings

        path = log_path(self.workspace, load_settings(self.workspace).audit, self.id)
        return read_events(path) if path.is_file() else []

    def checkpoints(self) -> list[CheckpointInfo]:
        """Its named git checkpoints, oldest first."""
        from pliny.checkpoints.store import CheckpointStore
        from pliny.lifecycle.store import SessionStore

        store = SessionStore(self.workspace)
        return CheckpointStore(self.workspace, self.id, store.dir(self.id)).list()

    def rollback(self, checkpoint: str, *, force: bool = False) -> str:
        """Files and run state back to ``checkpoint`` (the same refusals as the CLI)."""
        from pliny.lifecycle.rollback import rollback_session

        return asyncio.run(rollback_session(self.workspace, self.id, checkpoint, force))

    def resume(self, **kw: Unpack[RunKwargs]) -> Outcome:
        """Continue after a crash, failure, pause or cancel (keywords as :func:`run`)."""
        return asyncio.run(self.aresume(**kw))

    async def aresume(self, **kw: Unpack[RunKwargs]) -> Outcome:
        kw["workspace"], kw["session_id"] = self.workspace, self.id
        return await arun(**kw)

    def cancel(self) -> str:
        """Stop the session running in another process (it ends ``cancelled``, resumable)."""
        from pliny.lifecycle.views import cancel_running

        return cancel_running(self.workspace, self.id)


def sessions(workspace: str | Path = ".") -> list[Session]:
    """The workspace's sessions, oldest first."""
    from pliny.lifecycle.store import SessionStore

    ws = Path(workspace).resolve()
    return [Session(s.id, ws, s) for s in SessionStore(ws).list()]


def session(session_id: str | None = None, workspace: str | Path = ".") -> Session:
    """One session by id (default: the workspace's current one); unknown -> UsageError."""
    from pliny.lifecycle.store import SessionStore

    ws = Path(workspace).resolve()
    state = SessionStore(ws).resolve(session_id)
    return Session(state.id, ws, state)
