"""The coordinator's side of the worker protocol: what workers ask the session's owner.

The coordinator process serves its own task queue (one per session); every
agent's ``PlinyAgent`` workflow runs there, and a remote agent reaches the
coordinator with Temporal updates to its workflow. Each update runs
:meth:`CoordinatorService.op` here, as a local activity, against files only
this process opens: the resume journal, the outbox and budget ledger
(:mod:`pliny.distributed.shared`) and the git object database.

A request is ``{"origin", "op", "args", "items"}``: ``items`` are the
attempt's events and file writes since its last request, numbered by the
worker; they are stored first (idempotent by ``origin.seq``, so a retried
update adds nothing), then ``op`` runs. Everything is idempotent, because a
local activity is at-least-once.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from temporalio import activity

from pliny.distributed.ledger import SharedBudget
from pliny.distributed.shared import SharedStore, is_spilled
from pliny.distributed.taxonomy import to_details
from pliny.distributed.workflow import OP_ACTIVITY
from pliny.errors import PlinyError
from pliny.events import parse

if TYPE_CHECKING:
    from pliny.engine.agent import AgentRun

RAW = {"blob_get", "blob_put"}  # their results are parts already: never spilled again


def git_sha(data: bytes) -> str:
    """The git blob id of ``data`` (what ``git hash-object`` prints)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's id


class CoordinatorService:
    def __init__(self, run: AgentRun, store: SharedStore) -> None:
        from pliny.checkpoints.git import GitRepo

        self.run = run
        self.store = store
        self.repo = GitRepo.open(run.workspace.root, init=False)
        self._hashes: dict[str, tuple[int, int, str]] = {}

    @activity.defn(name=OP_ACTIVITY)
    async def op(self, request: dict[str, Any]) -> dict[str, Any]:
        workflow = activity.info().workflow_id
        assert workflow is not None  # an Update's local activity always runs in its workflow
        if is_spilled(request):
            request = self.store.unspill(request)
        origin = request["origin"]
        self._items(workflow, origin, request.get("items") or [])
        try:
            out = getattr(self, f"op_{request['op']}")(origin, **(request.get("args") or {}))
        except PlinyError as err:  # a budget refusal, say: the worker raises it again
            return {"error": to_details(err)}
        return {"ok": out if request["op"] in RAW else self.store.spill(out)}

    def _items(self, workflow: str, origin: str, items: list[dict[str, Any]]) -> None:
        for item in items:
            key = f"{origin}.{item['seq']}"
            if item["kind"] == "event":
                new = self.store.append(workflow, key, "event", item["body"])
                if new and item["body"].get("type") == "llm_call":  # settle, once
                    self._budget(origin)(parse(item["body"]))
            else:
                data = base64.b64decode(item["data"])
                body = {"path": item["path"], "agent": item.get("agent")}
                if self.repo is not None:  # a remote agent's file arrives as a git blob
                    body["blob"] = self.repo.store_blob(data)
                else:
                    body["data"] = self.store.spill(item["data"])
                self.store.append(workflow, key, "write", body)

    def _budget(self, origin: str) -> SharedBudget:
        return SharedBudget(self.store, self.run.settings.budgets, owner=origin)

    # -- the operations ----------------------------------------------------------------
    def op_flush(self, origin: str) -> None:
        return None

    def op_journal_get(self, origin: str, key: list[Any]) -> dict[str, Any] | None:
        journal = self.run.gateway.journal
        return journal.get(*key) if journal is not None else None

    def op_journal_put(self, origin: str, key: list[Any], response: dict[str, Any]) -> None:
        # The call's llm_call came in this request's items, stored above: an answer
        # in the journal is an answer in the outbox, so it is audited exactly once.
        if (journal := self.run.gateway.journal) is not None:
            agent, cycle, rhash, occurrence = key
            journal.put(agent, cycle, rhash, occurrence, response)

    def op_journal_forget(self, origin: str, agents: list[str], cycle: int | None) -> int:
        journal = self.run.gateway.journal
        return journal.forget(agents, cycle) if journal is not None else 0

    def op_budget_check(
        self, origin: str, phase: str | None, agent: str | None, tokens: int, cost: float | None
    ) -> None:
        self._budget(origin).check(phase, agent, tokens, cost)

    def op_done(self, origin: str) -> None:
        self._budget(origin).release()

    def op_blob_put(self, origin: str, digest: str, index: int, data: str) -> None:
        self.store.put_part(digest, index, base64.b64decode(data))

    def op_blob_get(self, origin: str, digest: str, index: int) -> dict[str, Any]:
        part, parts = self.store.part(digest, index)
        return {"data": base64.b64encode(part).decode(), "parts": parts}

    def op_manifest(self, origin: str) -> dict[str, str]:
        """Every file an agent here could read, as path -> git blob id."""
        ws = self.run.workspace
        root = ws.root.resolve()
        found: dict[str, str] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if ws._listable(Path(dirpath, d))]  # noqa: SLF001
            for name in filenames:
                path = Path(dirpath, name)
                if path.is_symlink() or not path.is_file():
                    continue
                found[path.relative_to(root).as_posix()] = self._sha(root, path)
        return found

    def op_files_get(self, origin: str, paths: list[str]) -> dict[str, str]:
        """The files' contents, base64 (a batch over the spill size travels in parts)."""
        found = {}
        for path in paths:
            target, _ = self.run.workspace.resolve(path)
            found[path] = base64.b64encode(target.read_bytes()).decode()
        return found

    def _sha(self, root: Path, path: Path) -> str:
        rel = path.relative_to(root).as_posix()
        st = path.stat()
        cached = self._hashes.get(rel)
        if cached is not None and cached[:2] == (st.st_size, st.st_mtime_ns):
            return cached[2]
        sha = git_sha(path.read_bytes())
        self._hashes[rel] = (st.st_size, st.st_mtime_ns, sha)
        return sha
