"""The parts a run is assembled from: listeners, the LLM gateway, services.

The runner decides *when* (session lifecycle); this module decides *what* is
attached to a run's event bus and how the gateway is built, so data keeps
flowing one way: engine events out to listeners.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pliny.config.settings import WORKSPACE_CONFIG, Settings
from pliny.engine.tools import Workspace
from pliny.events import Event, EventBus, Warning_
from pliny.lifecycle.store import SessionState, SessionStore

if TYPE_CHECKING:
    from pliny.framework import model as fwmod
    from pliny.lifecycle.runner import RunOptions


@dataclass
class PhaseTracker:
    """Keeps ``state.phase`` current so `session list` shows where a run is."""

    store: SessionStore
    state: SessionState

    def __call__(self, event: Event) -> None:
        if event.type == "phase_started" and event.phase != self.state.phase:
            self.state.phase = event.phase
            self.store.save(self.state)


def build_workspace(opts: RunOptions, settings: Settings, framework: str | None) -> Workspace:
    """The agents' file tools: Pliny's state and audit log off limits, its config read-only."""
    from pliny.config.settings import STATE_DIR
    from pliny.framework import model as fwmod

    readonly: list[str | Path] = [WORKSPACE_CONFIG]
    if opts.config_path is not None:  # relative to the cwd, as load_settings read it
        readonly.append(Path(opts.config_path).resolve())
    if framework:
        readonly.append(fwmod.resolve(framework).resolve())
    return Workspace(
        opts.workspace, protected=(".git", STATE_DIR, settings.audit.dir), readonly=tuple(readonly)
    )


def attach_listeners(
    opts: RunOptions,
    settings: Settings,
    state: SessionState,
    bus: EventBus,
    workspace: Workspace,
    history: list[Event],
) -> None:
    from pliny.checkpoints.listener import CheckpointListener

    mode = settings.execution.checkpoint
    if mode != "none":
        listener = CheckpointListener.open(opts.workspace, state.id, mode, bus, settings.audit.dir)
        listener.prime(history)
        workspace.before_write.append(listener.store.capture_preimage)
        workspace.on_write.append(listener.record_write)
        bus.subscribe(listener)
    store = SessionStore(opts.workspace)
    bus.subscribe(PhaseTracker(store, state))
    if settings.llm.stream:  # tokens streaming in, for `pliny watch` (the log has no progress)
        from pliny.observe.streaming import StreamingFile

        bus.subscribe(StreamingFile(store.dir(state.id)))


def attach_tracing(opts: RunOptions, bus: EventBus, stack: Any, history: list[Event]) -> None:
    """Live OpenTelemetry spans when ``--otlp`` or ``OTEL_EXPORTER_OTLP_*`` names an endpoint."""
    env = opts.env if opts.env is not None else os.environ
    names = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    if not opts.otlp and not any(env.get(n) for n in names):
        return
    try:
        from pliny.observe.otel import OtelListener, endpoint_from_env, traces_url
    except ImportError:  # the CLI refuses --otlp without it; the variable only warns
        from loguru import logger

        logger.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the otel extra is not installed "
            "(pip install 'pliny-orchestrator[otel]'): no traces"
        )
        return
    url = traces_url(opts.otlp) if opts.otlp else endpoint_from_env(env)
    listener = OtelListener(url or "")
    listener.prime(history)
    bus.subscribe(listener)
    stack.callback(listener.close)


async def gateway(
    opts: RunOptions,
    settings: Settings,
    state: SessionState,
    bus: EventBus,
    session_dir: Path,
    stack: AsyncExitStack,
    history: list[Event],
    *,
    calls_here: bool = True,
) -> Any:
    """``calls_here`` False: workers make the calls, so no embedded model is started here."""
    from pliny.llm.budget import BudgetGuard
    from pliny.llm.circuit import CircuitBreakers
    from pliny.llm.endpoint import resolve
    from pliny.llm.gateway import LLMGateway
    from pliny.llm.journal import Journal
    from pliny.llm.pricing import PricingTable

    endpoint = resolve(
        settings.llm, opts.env if opts.env is not None else os.environ, state.options.get("model")
    )
    if endpoint.kind == "local" and calls_here:
        endpoint = await start_embedded(settings, endpoint, stack)
    budget = BudgetGuard.from_events(history, settings.budgets)
    bus.subscribe(budget)

    def circuit_changed(change: Any) -> None:
        if (event := change.as_event()) is not None:
            bus.emit(event)

    breakers = CircuitBreakers.from_settings(
        settings.error_handling.circuit_breaker, on_change=circuit_changed
    )
    gateway = LLMGateway(
        settings,
        endpoint,
        bus,
        journal=Journal(session_dir / "journal.sqlite"),
        pricing=PricingTable.load(
            settings.pricing, api_url=endpoint.base_url or "https://api.openai.com/v1"
        ),
        budget=budget,
        breakers=breakers,
    )
    stack.push_async_callback(gateway.close)
    gateway.recover_unaudited(history)  # paid calls a full disk kept out of the log
    return gateway


async def start_embedded(settings: Settings, endpoint: Any, stack: AsyncExitStack) -> Any:
    from pliny.llm.embedded import EmbeddedServer

    # Started from the main thread on purpose: the server's parent-death
    # signal fires when the *spawning thread* exits, so no worker threads.
    server = EmbeddedServer(settings.llm.local, model_alias=endpoint.model)
    sync_stack = ExitStack()
    sync_stack.enter_context(server)
    stack.callback(sync_stack.close)
    return endpoint.served_at(server.base_url, server.api_key)


async def start_alerts(
    settings: Settings,
    state: SessionState,
    bus: EventBus,
    stack: AsyncExitStack,
    history: list[Event],
    trusted: bool,
) -> None:
    """Start the alert monitor; commands only from a ``trusted`` config (see alerts.py)."""
    import contextlib

    from pliny.observe.alerts import AlertMonitor, watch_loop, without_commands

    rules = settings.alerts
    if not trusted:
        rules, warning = without_commands(rules)
        if warning:
            bus.emit(Warning_(message=warning))
    monitor = AlertMonitor(rules, emit=bus.emit, session=state.id)
    monitor.prime(history)
    bus.subscribe(monitor)
    ticker = asyncio.create_task(watch_loop(monitor, 1.0))  # phases that hang emit nothing

    async def stop() -> None:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        monitor.close(wait=0)

    stack.push_async_callback(stop)


def open_cache(workspace: Path, framework: fwmod.Framework, stack: AsyncExitStack) -> Any:
    if not any(p.cache or any(a.cache for a in p.agents) for p in framework.phases):
        return None
    from pliny.engine.cache import ResultCache, cache_path

    cache = ResultCache(cache_path(workspace))
    stack.callback(cache.close)
    return cache


def use_tools(settings: Settings, gateway: Any) -> bool:
    choice = settings.llm.supports_tools
    return choice == "yes" or (choice == "auto" and gateway.endpoint.kind != "local")
