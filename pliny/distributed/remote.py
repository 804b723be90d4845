"""The worker's side of the protocol: the coordinator's journal, ledger and outbox, remotely.

An agent's attempt reaches the coordinator with Temporal updates to its own
workflow (:mod:`pliny.distributed.workflow`), each answered by the
coordinator process (:mod:`pliny.distributed.coordinator`). The agent runs
on a thread of its own, with its own event loop, so that the gateway's
synchronous journal and budget calls can wait for the coordinator's answer
without ever blocking the worker's loop (which keeps heartbeating).

Events and file writes are queued in order and travel with the next request;
a paid answer's ``llm_call`` travels in the very request that records the
answer, so a recorded answer is always an audited one. Anything over
``SPILL_BYTES`` crosses in parts by digest, never as one large payload.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import itertools
import json
import threading
from pathlib import Path
from typing import Any

from pliny.distributed.shared import CHUNK, SPILL_BYTES, is_spilled
from pliny.distributed.taxonomy import from_details
from pliny.distributed.workflow import UPDATE
from pliny.errors import Cancelled
from pliny.events import Event, parse

FILES_PER_REQUEST = 256


class Remote:
    """One activity attempt's requests to its coordinator."""

    def __init__(self, handle: Any, loop: asyncio.AbstractEventLoop, origin: str) -> None:
        self.handle, self.loop, self.origin = handle, loop, origin
        self._updates = itertools.count(1)
        self._seq = itertools.count(1)
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._waiting: set[concurrent.futures.Future[Any]] = set()
        self._cancelled = False

    # -- what the attempt did, in order (any thread) ------------------------------------
    def add_event(self, body: dict[str, Any]) -> None:
        with self._lock:
            self._pending.append({"kind": "event", "seq": next(self._seq), "body": body})

    def add_write(self, rel: str, data: bytes, agent: str | None) -> None:
        item = {"kind": "write", "path": rel, "agent": agent}
        with self._lock:
            self._pending.append(
                {**item, "seq": next(self._seq), "data": base64.b64encode(data).decode()}
            )

    def take(self) -> list[dict[str, Any]]:
        with self._lock:
            items, self._pending = self._pending, []
        return items

    # -- requests ---------------------------------------------------------------------
    def call(self, op: str, **args: Any) -> Any:
        """From the agent's thread: blocks that thread (only) until the coordinator answers."""
        if self._cancelled:
            raise Cancelled("the agent's activity was cancelled")
        future = asyncio.run_coroutine_threadsafe(self.request(op, args, self.take()), self.loop)
        self._waiting.add(future)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise Cancelled("the agent's activity was cancelled") from None
        finally:
            self._waiting.discard(future)

    def cancel(self) -> None:
        self._cancelled = True
        for future in list(self._waiting):
            future.cancel()

    async def request(self, op: str, args: dict[str, Any], items: list[Any] | None = None) -> Any:
        body: Any = {
            "origin": self.origin,
            "op": op,
            "args": args,
            "items": self.take() if items is None else items,
        }
        text = json.dumps(body, ensure_ascii=False)
        if len(text.encode()) > SPILL_BYTES:
            body = {"$blob": await self.upload(text)}
        out = await self._update(body)
        if "error" in out:
            raise from_details(out["error"])
        return await self.unspill(out["ok"])

    async def spill(self, value: Any) -> Any:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
        return {"$blob": await self.upload(text)} if len(text.encode()) > SPILL_BYTES else value

    async def unspill(self, value: Any) -> Any:
        if not is_spilled(value):
            return value
        digest, parts, index, raw = value["$blob"], 1, 0, b""
        while index < parts:
            got = await self._raw("blob_get", digest=digest, index=index)
            raw, parts, index = raw + base64.b64decode(got["data"]), got["parts"], index + 1
        if hashlib.sha256(raw).hexdigest() != digest:
            raise LookupError(f"blob {digest} came back altered")
        return json.loads(raw)

    async def upload(self, text: str) -> str:
        raw = text.encode()
        digest = hashlib.sha256(raw).hexdigest()
        for index in range(max(1, -(-len(raw) // CHUNK))):
            part = base64.b64encode(raw[index * CHUNK : (index + 1) * CHUNK]).decode()
            await self._raw("blob_put", digest=digest, index=index, data=part)
        return digest

    async def _raw(self, op: str, **args: Any) -> Any:
        out = await self._update({"origin": self.origin, "op": op, "args": args, "items": []})
        return out["ok"]

    async def _update(self, body: Any) -> Any:
        from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError

        update_id = f"{self.origin}/{next(self._updates)}"  # a retry is deduplicated by Temporal
        while True:
            try:
                return await self.handle.execute_update(UPDATE, body, id=update_id)
            except WorkflowUpdateRPCTimeoutOrCancelledError:
                continue  # the coordinator is away; `pliny session resume` brings it back


class RemoteJournal:
    """The gateway's journal, kept by the coordinator: a recorded answer is never re-paid."""

    def __init__(self, remote: Remote, outbox: Outbox) -> None:
        self.remote, self.outbox = remote, outbox

    def get(self, agent: str, cycle: int, rhash: str, occurrence: int) -> dict[str, Any] | None:
        return self.remote.call("journal_get", key=[agent, cycle, rhash, occurrence])

    def put(
        self,
        agent: str,
        cycle: int,
        rhash: str,
        occurrence: int,
        response: dict[str, Any],
        event: str | None = None,
    ) -> None:
        if event is not None:  # the llm_call goes with its answer, in one request
            self.outbox.paid(event)
        self.remote.call("journal_put", key=[agent, cycle, rhash, occurrence], response=response)

    def audited(self, agent: str, cycle: int, rhash: str, occurrence: int) -> None:
        """Nothing to do: the coordinator audits what its outbox holds."""

    def forget(self, agents: list[str], cycle: int | None = None) -> int:
        return self.remote.call("journal_forget", agents=agents, cycle=cycle)


class RemoteBudget:
    """The gateway's budget check: a reservation in the coordinator's ledger."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote

    def check(self, phase: str | None, agent: str | None, tokens: int, cost: float | None) -> None:
        self.remote.call("budget_check", phase=phase, agent=agent, tokens=tokens, cost=cost)


class Outbox:
    """The bus listener that queues the attempt's events (a paid call's already went)."""

    def __init__(self, remote: Remote, context: dict[str, Any]) -> None:
        from pliny.llm.gateway import _call_identity

        self.remote, self.context, self._identity = remote, context, _call_identity
        self._sent: set[tuple[Any, ...]] = set()

    def __call__(self, event: Event) -> None:
        if event.type == "llm_call" and self._identity(event) in self._sent:
            self._sent.discard(self._identity(event))
            return
        self.remote.add_event(event.model_dump(mode="json", exclude_none=True))

    def paid(self, raw: str) -> None:
        event = parse(json.loads(raw))
        for key, value in self.context.items():  # as the bus will stamp it
            if getattr(event, key, None) is None:
                setattr(event, key, value)
        self._sent.add(self._identity(event))
        self.remote.add_event(event.model_dump(mode="json", exclude_none=True))


async def sync_tree(remote: Remote, tree: Path) -> None:
    """Bring this worker's copy of the coordinator's workspace up to date (changed files only)."""
    index_path = tree.parent / "index.json"
    index: dict[str, str] = json.loads(index_path.read_text()) if index_path.exists() else {}
    manifest: dict[str, str] = await remote.request("manifest", {})
    stale = sorted(rel for rel, sha in manifest.items() if index.get(rel) != sha)
    for start in range(0, len(stale), FILES_PER_REQUEST):
        paths = stale[start : start + FILES_PER_REQUEST]
        got = await remote.request("files_get", {"paths": paths})
        for rel in paths:
            target = tree / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(base64.b64decode(got[rel]))
            index[rel] = manifest[rel]
    for rel in set(index) - set(manifest):  # gone at the coordinator (a rollback, say)
        (tree / rel).unlink(missing_ok=True)
        del index[rel]
    tree.mkdir(parents=True, exist_ok=True)
    index_path.write_text(json.dumps(index))
