"""One execution of a session, wired end to end.

settings -> session (lock, state) -> listeners (audit, budget, checkpoints,
caller's) -> endpoint (embedded server if needed) -> gateway -> engine.
The session's final status is decided here, in one place, for every way a
run can end: completed, failed (resumable), paused (budget), cancelled.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pliny.config.settings import Settings, load_settings
from pliny.engine.agent import AgentRun
from pliny.errors import BudgetExceeded, Cancelled, PlinyError, SystemFailure
from pliny.events import (
    CrashDetected,
    Event,
    EventBus,
    SessionCancelled,
    SessionCompleted,
    SessionFailed,
    SessionPaused,
    SessionResumed,
    SessionStarted,
)
from pliny.framework import model as fwmod
from pliny.lifecycle import assembly as wiring
from pliny.lifecycle import sessionconfig
from pliny.lifecycle.gitignore import hide_from_git
from pliny.lifecycle.store import SessionState, SessionStore
from pliny.logs import logger


@dataclass
class RunOptions:
    workspace: Path
    framework: str | None = None
    task: str | None = None
    session_id: str | None = None
    name: str | None = None
    config_path: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # settings from CLI flags
    model: str | None = None
    parallel: bool | None = None
    rerun: list[str] = field(default_factory=list)
    listeners: list[Callable[[Event], None]] = field(default_factory=list)
    env: dict[str, str] | None = None
    metrics_port: int | None = None  # serve Prometheus metrics on 127.0.0.1 while running
    from_phase: str | None = None  # re-run from this phase, reusing earlier phases' results
    until_phase: str | None = None  # stop (status paused) after this phase completes
    timeout: float | None = None  # this run only (`--timeout`); not saved for resumes
    metrics: Any = None  # a pliny.observe.metrics.Metrics already serving (bound before prepare)
    executor: str | None = None  # where agents run (EXECUTORS); None: the session's, else local
    executor_options: dict[str, Any] = field(default_factory=dict)  # e.g. address, task_queue
    allow_alert_commands: bool = False  # run alert commands from the workspace pliny.yaml
    otlp: str | None = None  # OTLP/HTTP endpoint for live traces (else OTEL_EXPORTER_OTLP_*)


@dataclass
class Outcome:
    session: SessionState
    status: str
    error: PlinyError | None
    results: dict[str, Any]
    exit_code: int


def prepare(opts: RunOptions) -> tuple[Settings, SessionStore, SessionState, fwmod.Framework]:
    """Validate everything before any state is written (bad input changes nothing)."""
    from pliny.distributed import check_executor_options, register_executors
    from pliny.engine.executor import check_executor

    register_executors()
    if opts.executor is not None:
        check_executor(opts.executor)
        check_executor_options(opts.executor, opts.executor_options)
    store = SessionStore(opts.workspace)
    state = _session_to_run(store, opts)
    if state is None and (opts.rerun or opts.from_phase):
        flag = "--rerun" if opts.rerun else "--from-phase"
        raise fwmod.UsageError(f"{flag} needs a session that has run (--session ID)")
    if state is not None and (pending := state.options.get("rollback_pending")):
        raise fwmod.UsageError(
            f"session {state.id!r}: a rollback to {pending!r} was interrupted; "
            f"run `pliny rollback {pending}` again first"
        )
    overrides = deep_merge(state.options.get("overrides", {}) if state else {}, opts.overrides)
    # The file layer the session started with (or an explicit new --config), never re-read
    # silently: a resume keeps its budget and audit dir.
    layer, config_snapshot = sessionconfig.choose_layer(opts.workspace, state, opts.config_path)
    settings = load_settings(opts.workspace, opts.config_path, overrides, layer=layer)
    sessionconfig.announce_overrides(state, opts.overrides)
    if settings.alerts:
        from pliny.observe.alerts import validate_rules

        validate_rules(settings.alerts)
    name = opts.framework or (state.framework if state else None) or "rise"
    chosen = (
        str(Path(opts.framework).resolve())
        if opts.framework and fwmod.is_path(opts.framework)
        else opts.framework
    )
    if state and state.framework and chosen and chosen != state.framework:
        raise fwmod.UsageError(
            f"session {state.id!r} runs framework {state.framework!r}, not {opts.framework!r}"
        )
    framework = fwmod.load(name)
    if fwmod.is_path(name):  # saved absolute: a resume may run from another directory
        name = str(Path(name).resolve())
    task = opts.task or (state.task if state else None)
    if not task:
        where = f" (session {state.id!r} was started without one)" if state else ""
        raise fwmod.UsageError(f'no task: pass --task "..."{where}')
    for agent in opts.rerun:
        try:
            framework.agent(agent)
        except KeyError:
            raise fwmod.UsageError(f"--rerun: unknown agent {agent!r}") from None
    for flag, phase in (("--from-phase", opts.from_phase), ("--until-phase", opts.until_phase)):
        if phase is not None and phase not in [p.name for p in framework.phases]:
            known = ", ".join(p.name for p in framework.phases)
            raise fwmod.UsageError(f"{flag}: unknown phase {phase!r} (phases: {known})")
    if settings.execution.checkpoint != "none":
        _check_git(opts.workspace)
    _check_endpoint(opts, settings, state)
    if state is None:
        from pliny.lifecycle.views import apply_retention

        apply_retention(opts.workspace, settings)
        # Written whole, as a run in progress: if this process dies before the run
        # proper starts, the session shows `crashed` and `resume` can finish it.
        options = {sessionconfig.KEY: config_snapshot, "overrides": overrides}
        state = store.create(
            opts.name or task[:60],
            opts.session_id,
            framework=name,
            task=task,
            status="in_progress",
            pid=os.getpid(),
            options=options,
        )
    state.framework, state.task = name, task
    state.options["overrides"] = overrides
    state.options[sessionconfig.KEY] = config_snapshot
    if opts.model:
        state.options["model"] = opts.model
    if opts.parallel is not None:
        state.options["parallel"] = opts.parallel
    _choose_executor(opts, state)
    return settings, store, state, framework


def _session_to_run(store: SessionStore, opts: RunOptions) -> SessionState | None:
    """The session this run continues, or None to create one.

    With a task and no ``--session``, the current session is used while it has
    never run (the `session start` then `execute -t` quick start); once it has
    run, or with ``--name``, a task starts a new session.
    """
    if opts.session_id:
        found = store.lookup(opts.session_id)  # an id or a unique prefix
        if found is None and opts.task:
            return None  # a new session under that id
        return store.load(found or opts.session_id)
    if not opts.task:
        return store.resolve(None)
    current = store.current()
    if opts.name or not current or not (store.dir(current) / "state.json").exists():
        return None
    state = store.load(current)
    return state if state.status == "created" else None


def _choose_executor(opts: RunOptions, state: SessionState) -> None:
    """A resume without --executor runs where the session ran before."""
    if opts.executor is None:
        from pliny.distributed import check_executor_options

        saved = dict(state.options.get("executor") or {"name": "local"})
        opts.executor = saved.pop("name")
        opts.executor_options = {**saved, **opts.executor_options}
        check_executor_options(opts.executor, opts.executor_options)  # still reachable?
    elif opts.executor == "local":
        state.options.pop("executor", None)
    else:
        state.options["executor"] = {"name": opts.executor, **opts.executor_options}


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Saved CLI overrides + this run's: `--timeout` on resume keeps a saved `--checkpoint`."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = deep_merge(out[key], value) if both else value
    return out


def _forget(session_dir: Path, agents: list[str]) -> None:
    """Drop re-run agents' recorded answers once, so a crash mid-rerun replays the new ones."""
    from pliny.llm.journal import Journal

    journal = Journal(session_dir / "journal.sqlite")
    try:
        journal.forget(agents)
    finally:
        journal.close()


def _check_endpoint(opts: RunOptions, settings: Settings, state: SessionState | None) -> None:
    """A malformed OPENAI_BASE_URL (or missing key) is bad input: refused before any state."""
    from pliny.llm.endpoint import resolve

    model = opts.model or (state.options.get("model") if state else None)
    resolve(settings.llm, opts.env if opts.env is not None else os.environ, model)


def _check_git(workspace: Path) -> None:
    """Refuse a busy repo (merge, rebase, detached HEAD) or missing git before writing anything."""
    from pliny.checkpoints.git import GitRepo

    repo = GitRepo.open(workspace, init=False)
    if repo is not None:
        repo.refuse_if_busy()


async def execute(opts: RunOptions, prepared: tuple[Any, ...] | None = None) -> Outcome:
    """Run a session; ``prepared`` is ``prepare(opts)``'s result when the caller already has it."""
    from pliny.observe.metrics import Metrics

    metrics = opts.metrics or Metrics()
    # Bound before anything is written: a busy port is bad input that changes nothing.
    server = metrics.serve(opts.metrics_port) if opts.metrics_port is not None else None
    try:
        settings, store, state, framework = prepared or prepare(opts)
        with store.lock(state.id):
            previous = state.status
            if previous == "created":  # runs now: a kill from here on reads as crashed
                state.status, state.pid = "in_progress", os.getpid()
                store.save(state)
                state.status = previous
            forget = None
            if not (opts.rerun or opts.from_phase) and state.status == "failed":
                from pliny.lifecycle.rollback import failed_agents_of_stuck_phase

                opts.rerun, forget = await failed_agents_of_stuck_phase(store, state, framework)
            if opts.rerun or opts.from_phase:
                from pliny.lifecycle.rollback import prepare_from_phase, prepare_rerun

                if opts.from_phase:
                    await prepare_from_phase(store, state, framework, opts.from_phase)
                else:
                    await prepare_rerun(store, state, opts.rerun)
                store.save(state)  # the fork point first, then drop the old answers
                _forget(store.dir(state.id), state.fresh_agents if forget is None else forget)
            return await _run_locked(opts, settings, store, state, framework, metrics)
    finally:
        if server is not None:
            server.stop()


async def _run_locked(
    opts: RunOptions,
    settings: Settings,
    store: SessionStore,
    state: SessionState,
    framework: fwmod.Framework,
    metrics: Any,
) -> Outcome:
    from pliny.audit.log import AuditLog, log_path, read_events

    previous = state.status
    # load() reports a dead owner's "in_progress" as "crashed"; a new session has no runs yet.
    crashed = state.started_runs > 0 and previous in ("in_progress", "crashed")
    state.status, state.pid, state.error = "in_progress", os.getpid(), None
    state.started_runs += 1
    store.save(state)
    from pliny import logs

    log_sink = logs.session_log(store.dir(state.id))
    logger.info(
        "run {} of session {} (pid {}, was {})", state.started_runs, state.id, os.getpid(), previous
    )
    bus = EventBus(session=state.id)
    audit_path = log_path(opts.workspace, settings.audit, state.id)
    hide_from_git(store.root)  # sessions created before this existed
    hide_from_git(audit_path.parent, workspace=opts.workspace)
    audit = AuditLog(
        audit_path, fsync=settings.audit.fsync, group_commit_ms=settings.audit.group_commit_ms
    )
    bus.subscribe(audit)
    history = read_events(audit_path)  # read once; every listener primes from it on resume
    metrics.prime(history)  # totals cover the whole session after a resume
    bus.subscribe(metrics)
    for listener in opts.listeners:  # before the first event, so callers see session_started
        bus.subscribe(listener)
    started = time.monotonic()
    async with AsyncExitStack() as stack:
        stack.callback(logs.stop, log_sink)
        stack.callback(audit.close)
        wiring.attach_tracing(opts, bus, stack, history)  # sees session_started; ends first
        if crashed:
            bus.emit(
                CrashDetected(previous_pid=None, detail="session was in progress; its process died")
            )
        if state.started_runs == 1:
            bus.emit(
                SessionStarted(
                    name=state.name,
                    framework=state.framework or "",
                    task=state.task or "",
                    pid=os.getpid(),
                )
            )
        else:
            bus.emit(
                SessionResumed(from_status="crashed" if crashed else previous, pid=os.getpid())
            )
        try:
            results, stopped_at = await _run_engine(
                opts, settings, store, state, framework, bus, stack, history
            )
        except BaseException as exc:  # noqa: BLE001 - every ending is recorded, then re-raised or mapped
            return _ended(store, state, bus, exc)
        state.fork_from, state.fresh_agents = None, []
        if stopped_at:
            state.status = "paused"
            store.save(state)
            bus.emit(SessionPaused(reason=f"stopped after phase {stopped_at} (--until-phase)"))
            return Outcome(state, "paused", None, results, 0)
        state.status = "completed"
        store.save(state)
        bus.emit(SessionCompleted(duration_ms=round((time.monotonic() - started) * 1000, 1)))
        return Outcome(state, "completed", None, results, 0)


def _executor_options(
    opts: RunOptions, settings: Settings, state: SessionState
) -> dict[str, Any] | None:
    """Plain data a remote worker needs to rebuild this run: names and paths, no secrets."""
    if opts.executor in (None, "local"):
        return None
    from pliny.audit.log import log_path

    workspace = opts.workspace.resolve()
    launch = {
        "workspace": str(workspace),
        "session_dir": str(SessionStore(opts.workspace).dir(state.id).resolve()),
        "audit_path": str(log_path(workspace, settings.audit, state.id)),
        "framework": state.framework,
        "config_path": str(opts.config_path.resolve()) if opts.config_path else None,
        "overrides": state.options.get("overrides", {}),
        "model": state.options.get("model"),
    }
    return {**opts.executor_options, "launch": launch}


def _ended(store: SessionStore, state: SessionState, bus: EventBus, exc: BaseException) -> Outcome:
    from pliny.llm.classify import classify

    err = exc if isinstance(exc, PlinyError) else classify(exc)
    if err.code == "PLINY-SYS-UNEXPECTED":  # a bug: keep the traceback in run.log
        logger.opt(exception=exc).error("unexpected error in session {}", state.id)
    else:
        logger.info("session {} ended: {} {}", state.id, err.code, err.message)
    ending: list[Event]
    if isinstance(err, Cancelled):
        state.status, ending = "cancelled", [SessionCancelled(reason=err.message)]
    elif isinstance(err, BudgetExceeded):
        breach = getattr(err, "breach", None)
        ending = [breach.to_event()] if breach is not None else []
        state.status = "paused"
        ending.append(SessionPaused(reason=err.message))
    else:
        state.status = "failed"
        ending = [SessionFailed(category=err.category, code=err.code, message=err.message)]
    state.error = {"category": str(err.category), "code": err.code, "message": str(err)}
    store.save(state)  # first: a full disk under the audit log must not hide the ending
    try:
        for event in ending:
            bus.emit(event)
    except PlinyError as again:  # the audit log is what failed (e.g. ENOSPC): err says so
        logger.info("session {}: ending not audited: {}", state.id, again.message)
    return Outcome(state, state.status, err, {}, err.exit_code)


async def _run_engine(
    opts: RunOptions,
    settings: Settings,
    store: SessionStore,
    state: SessionState,
    framework: fwmod.Framework,
    bus: EventBus,
    stack: AsyncExitStack,
    history: list[Event],
) -> tuple[dict[str, Any], str | None]:
    """Run the graph; returns the results and the phase it stopped after (--until-phase)."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from pliny.atomicfile import private_file
    from pliny.engine.executor import make_executor, settings_digest
    from pliny.engine.graph import Engine, join_node
    from pliny.llm.journal import Journal

    session_dir = store.dir(state.id)
    workspace = wiring.build_workspace(opts, settings, state.framework)
    wiring.attach_listeners(opts, settings, state, bus, workspace, history)
    if settings.alerts:
        from pliny.observe.alerts import commands_trusted

        env = opts.env if opts.env is not None else os.environ
        trusted = commands_trusted(opts.config_path, opts.allow_alert_commands, env)
        await wiring.start_alerts(settings, state, bus, stack, history, trusted)
    here = opts.executor in (None, "local")  # a distributed executor's calls go from workers
    gateway = await wiring.gateway(
        opts, settings, state, bus, session_dir, stack, history, calls_here=here
    )
    run = AgentRun(
        framework,
        settings,
        gateway,
        workspace,
        bus,
        state.id,
        use_tools=wiring.use_tools(settings, gateway),
        cache=wiring.open_cache(opts.workspace, framework, stack),
    )
    options = _executor_options(opts, settings, state)
    executor = make_executor(opts.executor or "local", run, options)
    if (aclose := getattr(executor, "aclose", None)) is not None:
        stack.push_async_callback(aclose)  # e.g. the coordinator's own Temporal worker
    engine = Engine(
        framework,
        executor,
        bus,
        settings,
        session=state.id,
        digest=settings_digest(settings),
        parallel=state.options.get("parallel", settings.execution.parallel),
        fresh=set(state.fresh_agents),
    )
    private_file(graph_db := session_dir / "graph.sqlite")  # state holds prompts and answers
    saver = await stack.enter_async_context(AsyncSqliteSaver.from_conn_string(str(graph_db)))
    stop = [join_node(opts.until_phase)] if opts.until_phase else None
    graph = engine.build().compile(checkpointer=saver, interrupt_after=stop)
    config: dict[str, Any] = {
        "configurable": {"thread_id": state.id},
        "max_concurrency": settings.execution.max_concurrency,
        "recursion_limit": 10_000,
    }
    snapshot = await graph.aget_state(config)
    head = (snapshot.config or {}).get("configurable", {}).get("checkpoint_id")
    if state.fork_from and head != state.options.get("fork_base"):
        state.fork_from = None  # an earlier run already took the fork: continue its branch
    if state.fork_from:
        config["configurable"]["checkpoint_id"] = state.fork_from
        graph_input = None
    elif snapshot.next:
        graph_input = None  # unfinished: continue where it stopped
    elif snapshot.values.get("trail"):
        return snapshot.values.get("results", {}), None  # already complete
    else:
        graph_input = {"task": state.task}
    stack.callback(Journal.close, run.gateway.journal) if run.gateway.journal else None
    timeout = opts.timeout if opts.timeout is not None else settings.execution.timeouts.session
    try:
        async with asyncio.timeout(timeout):
            final = await graph.ainvoke(graph_input, config, durability="sync")
    except TimeoutError:
        raise SystemFailure(
            f"session timed out after {timeout:g}s",
            code="PLINY-TIMEOUT-SESSION",
            recoverable=True,
            hint="`pliny session resume` continues it",
        ) from None
    if opts.until_phase and (await graph.aget_state(config)).next:
        return final.get("results", {}), opts.until_phase
    return final.get("results", {}), None
