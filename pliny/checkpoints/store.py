"""Git checkpoints of a session's workspace, kept apart from the user's work.

The rule (learned from aider): the user's work is sacred. Pliny never moves
the user's HEAD, never touches the user's index or branches, and never
commits a file Pliny did not write. A workspace that is not a git repository
is ``git init``-ed; that is the only change made to the user's repo state.

How it works:

* When an agent writes a file, :meth:`CheckpointStore.record_write` stores
  the bytes as a blob and remembers ``path -> blob`` in a *pending* map that
  is written atomically to ``<state_dir>/checkpoints.json`` (survives
  ``kill -9``).
* :meth:`CheckpointStore.commit` builds the next tree from the previous
  checkpoint's tree (at first the user's HEAD tree, or the empty tree on an
  unborn branch) plus the pending blobs, optionally only one agent's. Only
  the directories on changed paths are read and rewritten, straight in the
  object database: no scan of the working tree and no index (a private
  ``GIT_INDEX_FILE`` was measured first; git rewrites and re-hashes the whole
  index twice per commit, so its cost grew with workspace size).
* The commit's parent is the previous checkpoint (at first the user's HEAD
  commit), so ``git log`` shows what the session built on. The message ends
  with trailers: ``Pliny-Session``, ``Pliny-Checkpoint``, ``Pliny-Seq`` plus
  whatever the caller passes (``Pliny-Phase``, ``Pliny-Agent``,
  ``Pliny-Tokens``, ``Pliny-Cost-USD``...).
* Refs, so plain git sees everything::

      refs/pliny/<session>/head                 latest checkpoint of the session
      refs/pliny/<session>/checkpoints/<name>   a named checkpoint

      git for-each-ref refs/pliny/              every checkpoint of every session
      git log refs/pliny/<session>/head         a session's history, trailers included
      git diff refs/pliny/<s>/checkpoints/after-research refs/pliny/<s>/head

  Names follow ``git check-ref-format`` and hold no ``/``. Phase checkpoints
  are ``after-<phase>``; per-agent ones are ``after-<phase>.<agent>``.
  Re-using a name moves it to the new checkpoint (like ``git tag -f``).
* :meth:`CheckpointStore.rollback` restores only the files this session
  manages. It first checks each one is still what Pliny last wrote or
  restored; if the user edited one, it refuses and changes nothing unless
  ``force=True``. When an agent overwrote a file the user had changed but
  not committed, the user's version (the *pre-image*, kept under
  ``<state_dir>/preimages/``) is what a rollback to an earlier point brings
  back. ``.git``, ``.pliny/`` and the audit directory are never written.

Commits are serialized with a lock. Objects are written before any ref
moves, and each ref update is one atomic git transaction that also checks
the session head did not move under us, so a kill at any point leaves either
the old or the new checkpoint (plus, at worst, an unreferenced object).
"""

from __future__ import annotations

import builtins
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from pliny.atomicfile import atomic_write
from pliny.checkpoints.files import OTHER, WorkspaceFiles
from pliny.checkpoints.git import Entry, GitRepo, RefRecord, check_ref_component
from pliny.checkpoints.refs import (
    REF_ROOT,
    CheckpointInfo,
    delete_session_refs,
    info_from,
    list_all,
    session_ref,
)
from pliny.checkpoints.state import CheckpointState
from pliny.errors import UsageError

PROTECTED_DIRS = (".pliny", "audit-logs")
_OWN_TRAILERS = ("Pliny-Session", "Pliny-Checkpoint", "Pliny-Seq")
__all__ = [
    "CheckpointInfo",
    "CheckpointStore",
    "RollbackResult",
    "delete_session_refs",
    "list_all",
]


@dataclass(frozen=True)
class RollbackResult:
    name: str
    commit: str
    restored: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    overwritten: list[str] = field(default_factory=list)  # user edits replaced (force=True)

    @property
    def files(self) -> list[str]:
        """Every path the rollback wrote or deleted."""
        return sorted(self.restored + self.deleted)


class CheckpointStore:
    """Checkpoints of one session. Thread-safe; one process per session."""

    def __init__(
        self,
        workspace: Path,
        session_id: str,
        state_dir: Path,
        *,
        protected: tuple[str, ...] = PROTECTED_DIRS,
    ) -> None:
        self.session = check_ref_component(session_id, "session id")
        self.workspace = Path(workspace).resolve()
        self.state_dir = Path(state_dir).resolve()
        self.protected = tuple(protected)
        self.head_ref = session_ref(self.session)
        self._lock = threading.RLock()
        git = GitRepo.open(self.workspace, init=True)
        assert git is not None  # init=True never returns None
        self._git: GitRepo = git
        self._git.refuse_if_busy()  # before writing anything of ours
        self._files = WorkspaceFiles(
            self.workspace, self.state_dir, self.protected, self._git.blob_id
        )
        self._state = CheckpointState.load_or_create(
            self.state_dir / "checkpoints.json", self._new_base
        )
        # One process per session (the session lock): any lock here is a dead writer's.
        self._git.clear_stale_ref_locks(f"{REF_ROOT}/{self.session}")
        for litter in self.state_dir.glob(".*.pliny-tmp"):
            litter.unlink(missing_ok=True)
        self._head = self._git.resolve_ref(self.head_ref)
        self._head_tree = self._git.tree_of(self._head) if self._head else self._state.base_tree
        self._seq = max((c.seq for c in self.list()), default=0)
        self._base_cache: dict[str, Entry] | None = None

    def close(self) -> None:
        """Stop the git helper processes GitPython keeps open (also done on exit)."""
        self._git.repo.close()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _new_base(self) -> tuple[str | None, str]:
        base = self._git.head_commit()
        return base, (self._git.tree_of(base) if base else self._git.empty_tree())

    # -- recording writes --------------------------------------------------
    @property
    def head(self) -> str | None:
        """Commit of the latest checkpoint (None before the first)."""
        return self._head

    @property
    def pending(self) -> dict[str, tuple[str | None, str | None]]:
        """``path -> (blob id or None for a deletion, agent)`` not yet checkpointed."""
        with self._lock:
            return {p: (e["blob"], e["agent"]) for p, e in self._state.pending.items()}

    def capture_preimage(self, path: str | PurePosixPath) -> None:
        """Keep the file's current bytes if the user changed it; call BEFORE writing it."""
        rel = self._files.check_path(path)
        with self._lock:
            if self._remember_preimage(rel, None):
                self._state.save()

    def record_write(self, path: str | PurePosixPath, content: bytes, agent: str | None) -> str:
        """Store ``content`` as the pending version of ``path``; returns its blob id."""
        rel = self._files.check_path(path)
        sha = self._git.store_blob(content)
        mode = self._files.git_mode(rel)
        with self._lock:
            self._remember_preimage(rel, content)
            self._state.pending[rel] = {"blob": sha, "mode": mode, "agent": agent}
            self._state.managed.add(rel)
            # Per-write saves skip fsync (they are ~4 ms each on the event loop):
            # the rename still survives kill -9; commit() saves durably.
            self._state.save(durable=False)
        return sha

    def record_delete(self, path: str | PurePosixPath, agent: str | None) -> None:
        """Record that an agent deleted ``path`` (call before deleting it)."""
        rel = self._files.check_path(path)
        with self._lock:
            self._remember_preimage(rel, None)
            self._state.pending[rel] = {"blob": None, "mode": "0", "agent": agent}
            self._state.managed.add(rel)
            self._state.save()

    def write_file(self, path: str | PurePosixPath, content: bytes, agent: str | None) -> str:
        """Record and write ``path`` atomically, keeping the user's pre-image."""
        rel = self._files.check_path(path)
        self.capture_preimage(rel)
        sha = self.record_write(rel, content, agent)
        mode = 0o755 if self._files.git_mode(rel) == "100755" else 0o644
        atomic_write(self._files.abs(rel), content, mode, durable=False)
        return sha

    def _remember_preimage(self, rel: str, new: bytes | None) -> bool:
        """On first touch, keep the user's uncommitted version of ``rel``. True if kept."""
        st = self._state
        if rel in st.managed or rel in st.preimages:
            return False
        disk = self._files.blob(rel)
        base = self._git.entry_at(self._state.base_tree, rel)
        if disk == OTHER or disk == (base.sha if base else None):
            return False  # nothing of the user's to keep
        if new is not None and disk == self._git.blob_id(new):
            return False  # already overwritten by the caller: too late to keep it
        if disk is None:
            st.preimages[rel] = None  # the user had deleted a committed file
            return True
        data = (self.workspace / rel).read_bytes()
        atomic_write(self.state_dir / "preimages" / disk, data)
        st.preimages[rel] = [disk, self._files.git_mode(rel)]
        return True

    # -- committing --------------------------------------------------------
    def commit(
        self,
        name: str,
        message: str,
        trailers: dict[str, str] | None = None,
        agents: list[str] | None = None,
    ) -> CheckpointInfo:
        """Checkpoint the pending writes (only ``agents``' own if given) as ``name``."""
        check_ref_component(name)
        with self._lock:
            self._refuse_if_interrupted()
            chosen = {
                p: e
                for p, e in self._state.pending.items()
                if agents is None or e["agent"] in agents
            }
            seq, when = self._seq + 1, _now()
            text = self._message(name, message, trailers or {}, agents, seq)
            commit, tree = self._make_commit(chosen, text, when)
            self._git.update_refs(
                [
                    (self.head_ref, commit, self._head or self._git.zero),
                    (session_ref(self.session, name), commit, None),
                ],
                reason=f"pliny checkpoint {name}",
            )
            self._head, self._head_tree, self._seq = commit, tree, seq
            for path in chosen:
                del self._state.pending[path]
            # Losing this save to a power cut only re-commits the same blobs later.
            self._state.save(durable=False)
        rec = RefRecord(session_ref(self.session, name), commit, when, text)
        return info_from(self.session, rec, tuple(sorted(chosen)))

    def _make_commit(
        self, chosen: dict[str, dict[str, Any]], text: str, when: int
    ) -> tuple[str, str]:
        """Tree (head's + ``chosen``) and commit; nothing points at them yet."""
        changes = {p: Entry(e["mode"], e["blob"]) if e["blob"] else None for p, e in chosen.items()}
        tree = self._git.edit_tree(self._head_tree, changes) if changes else self._head_tree
        parent = self._head or self._state.base_commit
        return self._git.commit_tree(tree, parent, text, when), tree

    def _message(
        self, name: str, message: str, trailers: dict[str, str], agents: list[str] | None, seq: int
    ) -> str:
        subject, _, body = message.strip().partition("\n")
        subject = subject.strip() or f"Pliny checkpoint {name}"
        lines = {"Pliny-Session": self.session, "Pliny-Checkpoint": name, "Pliny-Seq": str(seq)}
        if agents and "Pliny-Agent" not in trailers:
            lines["Pliny-Agent"] = ", ".join(agents)
        for key, value in trailers.items():
            if not key or not all(c.isalnum() or c == "-" for c in key) or not key.isascii():
                raise UsageError(f"invalid trailer key {key!r}: use letters, digits and '-'")
            if key not in _OWN_TRAILERS:
                lines[key] = " ".join(str(value).split())  # one line per trailer
        block = "\n".join(f"{k}: {v}" for k, v in lines.items())
        return f"{subject}\n\n" + (f"{body.strip()}\n\n" if body.strip() else "") + block + "\n"

    # -- listing -----------------------------------------------------------
    def list(self) -> list[CheckpointInfo]:
        """This session's named checkpoints, oldest first."""
        prefix = f"{REF_ROOT}/{self.session}/checkpoints/"
        infos = [info_from(self.session, r) for r in self._git.for_each_ref(prefix)]
        return sorted(infos, key=lambda c: (c.seq, c.created, c.name))

    def get(self, name: str) -> CheckpointInfo:
        found = {c.name: c for c in self.list()}
        if name not in found:
            known = ", ".join(found) or "none yet"
            raise UsageError(
                f"unknown checkpoint {name!r} in session {self.session} (known: {known})",
                code="PLINY-UNKNOWN-CHECKPOINT",
            )
        return found[name]

    # -- rollback ----------------------------------------------------------
    def rollback(self, name: str, *, force: bool = False) -> RollbackResult:
        """Restore the files this session manages to checkpoint ``name``."""
        target = self.get(name)
        with self._lock:
            self._git.refuse_if_busy()
            plan, overwritten = self._plan_rollback(target.commit, force)
            self._state.rollback = {"name": name, "commit": target.commit}
            self._state.save()  # an interrupted rollback is finished by running it again
            restored, deleted = self._files.apply(plan, self._read)
            self._git.update_refs(
                [(self.head_ref, target.commit, self._head or self._git.zero)],
                reason=f"pliny rollback {name}",
            )
            self._head, self._head_tree = target.commit, self._git.tree_of(target.commit)
            self._state.pending.clear()
            self._state.rollback = None
            self._state.save()
        return RollbackResult(name, target.commit, restored, deleted, overwritten)

    def _plan_rollback(
        self, commit: str, force: bool
    ) -> tuple[dict[str, Entry | None], builtins.list[str]]:
        """What each managed path must become, after checking the user left them alone."""
        st = self._state
        paths = sorted(st.managed | set(st.pending))
        want_tree = self._git.ls_tree(commit)
        head_tree = self._git.ls_tree(self._head_tree)
        intent = self._git.ls_tree(st.rollback["commit"]) if st.rollback else None
        plan: dict[str, Entry | None] = {}
        changed: list[str] = []
        for path in paths:
            plan[path] = self._content_at(path, want_tree)
            known = {_sha(self._content_at(path, head_tree))}
            if path in st.pending:
                known.add(st.pending[path]["blob"])
            if intent is not None:
                known.add(_sha(self._content_at(path, intent)))
            if self._files.blob(path) not in known:
                changed.append(path)
        if changed and not force:
            more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
            shown = ", ".join(changed[:5]) + more
            raise UsageError(
                f"refusing to roll back: changed outside Pliny since it last wrote them: {shown}",
                code="PLINY-USER-CHANGES",
                hint="commit or move your edits, or use --force to overwrite them",
            )
        return plan, changed

    def _content_at(self, path: str, tree: dict[str, Entry]) -> Entry | None:
        """The file at a checkpoint: its tree entry, or the user's pre-image if untouched."""
        entry, base = tree.get(path), self._base().get(path)
        if entry != base or path not in self._state.preimages:
            return entry
        pre = self._state.preimages[path]
        return Entry(pre[1], pre[0]) if pre else None

    def _read(self, shas: set[str]) -> dict[str, bytes]:
        """Blob contents: pre-images from the state dir, the rest from git."""
        pre_dir = self.state_dir / "preimages"
        local = {sha: (pre_dir / sha).read_bytes() for sha in shas if (pre_dir / sha).exists()}
        return {**self._git.read_blobs(shas - set(local)), **local}

    def _refuse_if_interrupted(self) -> None:
        if self._state.rollback:
            name = self._state.rollback["name"]
            raise UsageError(
                f"a rollback to {name!r} was interrupted; run `pliny rollback {name}` again"
            )

    # -- helpers -----------------------------------------------------------
    def _base(self) -> dict[str, Entry]:
        if self._base_cache is None:
            self._base_cache = self._git.ls_tree(self._state.base_tree)
        return self._base_cache


def _sha(entry: Entry | None) -> str | None:
    return entry.sha if entry else None


def _now() -> int:
    return int(datetime.now(UTC).timestamp())
