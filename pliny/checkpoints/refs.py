"""Checkpoint refs as plain git sees them: ``refs/pliny/<session>/...``.

``git for-each-ref refs/pliny/`` lists every named checkpoint of every
session; :func:`list_all` and :func:`delete_session_refs` work without a
session's state directory (e.g. for ``pliny session rm``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pliny.checkpoints.git import GitRepo, RefRecord, check_ref_component, parse_trailers

REF_ROOT = "refs/pliny"


@dataclass(frozen=True)
class CheckpointInfo:
    session: str
    name: str
    ref: str
    commit: str
    created: datetime
    subject: str
    trailers: dict[str, str]
    files: tuple[str, ...] = ()  # paths changed by this checkpoint (set by commit())

    @property
    def seq(self) -> int:
        return int(self.trailers.get("Pliny-Seq", "0") or 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "name": self.name,
            "ref": self.ref,
            "commit": self.commit,
            "created": self.created.isoformat(),
            "subject": self.subject,
            "trailers": dict(self.trailers),
            "files": list(self.files),
        }


def session_ref(session: str, name: str | None = None) -> str:
    return f"{REF_ROOT}/{session}/" + (f"checkpoints/{name}" if name else "head")


def list_all(workspace: Path) -> dict[str, list[CheckpointInfo]]:
    """Every session's named checkpoints in the repo holding ``workspace``."""
    repo = GitRepo.open(Path(workspace), init=False)
    if repo is None:
        return {}
    sessions: dict[str, list[CheckpointInfo]] = {}
    for rec in repo.for_each_ref(f"{REF_ROOT}/"):
        parts = rec.ref.split("/")
        if len(parts) == 5 and parts[3] == "checkpoints":
            sessions.setdefault(parts[2], []).append(info_from(parts[2], rec))
    for infos in sessions.values():
        infos.sort(key=lambda c: (c.seq, c.created, c.name))
    return sessions


def delete_session_refs(workspace: Path, session_id: str) -> int:
    """Delete ``refs/pliny/<session>/*``; returns how many refs went."""
    check_ref_component(session_id, "session id")
    repo = GitRepo.open(Path(workspace), init=False)
    if repo is None:
        return 0
    refs = [r.ref for r in repo.for_each_ref(f"{REF_ROOT}/{session_id}/")]
    repo.delete_refs(refs)
    return len(refs)


def info_from(session: str, rec: RefRecord, files: tuple[str, ...] = ()) -> CheckpointInfo:
    return CheckpointInfo(
        session=session,
        name=rec.ref.rsplit("/", 1)[1],
        ref=rec.ref,
        commit=rec.commit,
        created=datetime.fromtimestamp(rec.committed, UTC),
        subject=rec.message.split("\n", 1)[0],
        trailers=parse_trailers(rec.message),
        files=files,
    )
