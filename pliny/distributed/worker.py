"""``pliny worker``: serve agents from one or more Temporal task queues."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any


async def probe_endpoint(workspace: Path, env: Mapping[str, str]) -> str:
    """The LLM endpoint this worker will call, checked reachable (any HTTP answer will do)."""
    import httpx

    from pliny.config.settings import load_settings
    from pliny.errors import ConfigError
    from pliny.llm.endpoint import resolve

    settings = load_settings(workspace)
    endpoint = resolve(settings.llm, env)
    if endpoint.kind == "local":
        raise ConfigError(
            "this worker has no LLM endpoint (workers do not serve the embedded model)",
            code="PLINY-WORKER-ENDPOINT",
            hint="set OPENAI_BASE_URL / OPENAI_API_KEY (or llm.base_url) for `pliny worker`",
        )
    url = (endpoint.base_url or "https://api.openai.com/v1").rstrip("/") + "/models"
    try:
        async with httpx.AsyncClient(timeout=5.0) as http:
            await http.get(url)
    except httpx.HTTPError as exc:
        from pliny.llm.endpoint import host_of

        raise ConfigError(
            f"this worker cannot reach its LLM endpoint {host_of(url)}: "
            f"{type(exc).__name__}: {exc or 'no answer'}",
            code="PLINY-WORKER-ENDPOINT",
            hint="check OPENAI_BASE_URL / llm.base_url and the network from this machine",
        ) from None
    return endpoint.base_url or "https://api.openai.com/v1"


async def serve(
    address: str,
    queues: list[str],
    *,
    env: Mapping[str, str] | None = None,
    workspace: Path | None = None,
    max_concurrent: int = 64,
    identity: str | None = None,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Any = None,
) -> None:
    """Poll ``queues`` until ``stop`` is set (or forever)."""
    from temporalio.worker import Worker

    from pliny.distributed.activity import AgentActivities
    from pliny.distributed.executor_options import connect

    _warm_up()  # heavy imports now, not on the event loop of a first agent (missed heartbeats)
    client = await connect(address)
    activities = AgentActivities(env, workspace, identity=identity, max_concurrent=max_concurrent)
    # Activities only: the agents' workflows run in their coordinator's process.
    workers = [
        Worker(
            client,
            task_queue=queue,
            activities=[activities.run_agent],
            max_concurrent_activities=max_concurrent,
            identity=identity,
        )
        for queue in queues
    ]
    try:
        async with contextlib.AsyncExitStack() as stack:
            for worker in workers:
                await stack.enter_async_context(worker)
            if ready is not None:
                ready.set()
            if on_ready is not None:
                on_ready()
            await (stop.wait() if stop is not None else asyncio.Future())
    finally:
        await activities.aclose()


def _warm_up() -> None:
    import openai

    import pliny.engine.agent
    import pliny.llm.gateway
    import pliny.llm.pricing  # noqa: F401 - imported for the side effect of loading

    openai.AsyncOpenAI(api_key="warm-up", base_url="http://127.0.0.1:9")  # loads httpx, ssl


def run_in_thread(address: str, queues: list[str], **kw: Any) -> Any:
    """A worker on its own event loop in a thread (tests, benchmarks); returns a stopper."""
    import threading

    loop = asyncio.new_event_loop()
    ready, stop = asyncio.Event(), asyncio.Event()
    failure: list[BaseException] = []

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve(address, queues, ready=ready, stop=stop, **kw))
        except BaseException as exc:  # noqa: BLE001 - reported by the stopper
            failure.append(exc)
            loop.call_soon_threadsafe(ready.set)

    thread = threading.Thread(target=main, name="pliny-worker", daemon=True)
    thread.start()
    while not ready.is_set() and thread.is_alive():
        thread.join(0.02)
    if failure:
        raise failure[0]

    def stopper() -> None:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)

    return stopper
