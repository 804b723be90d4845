"""Which file an agent's deliverable goes to when sessions share a workspace.

Two sessions in one workspace both declare ``DELIVERABLE.md``; the second
must not silently overwrite the first's. A registry in
``.pliny/deliverables.json`` (``{path: {session, declared}}``, updated under a
file lock so concurrent runs agree) records which session owns which file:

* a session that already owns a path keeps writing it (resume, ``--rerun``);
* a free declared path (unclaimed, or its owner session deleted, and no file
  there) is claimed as is;
* otherwise the session writes ``<stem>-<session id><suffix>`` beside it and
  the caller tells the user (a user's own ``DELIVERABLE.md`` is kept too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from pliny.atomicfile import atomic_write
from pliny.config.settings import STATE_DIR

if TYPE_CHECKING:
    from pathlib import Path

REGISTRY = "deliverables.json"


@dataclass(frozen=True)
class Claim:
    path: str  # workspace path this session writes its deliverable to
    note: str | None = None  # why it is not the declared path (None: it is)


def claim(root: Path, session: str, declared: str) -> Claim:
    """The path ``session`` writes ``declared`` to, recorded so later runs agree."""
    from filelock import FileLock

    state = root / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    with FileLock(str(state / "deliverables.lock"), timeout=30, mode=0o600):
        owners = _load(state / REGISTRY)
        for path, owner in owners.items():
            if owner == {"session": session, "declared": declared}:
                return Claim(path)
        holder = owners.get(declared, {}).get("session")
        if holder and not (state / "sessions" / holder / "state.json").exists():
            del owners[declared]  # its session was deleted: the claim is stale
            holder = None
        if holder is None and not (root / declared).exists():
            chosen, note = declared, None
        else:
            chosen = suffixed(declared, session)
            whose = (
                f"belongs to session {holder}"
                if holder
                else "already exists and was not written by a Pliny session here"
            )
            note = f"{declared} {whose}, so it was left alone: wrote {chosen} instead"
        owners[chosen] = {"session": session, "declared": declared}
        atomic_write(state / REGISTRY, json.dumps(owners, indent=2, sort_keys=True).encode())
    return Claim(chosen, note)


def suffixed(declared: str, session: str) -> str:
    """``DELIVERABLE.md`` -> ``DELIVERABLE-<session>.md`` (same directory)."""
    path = PurePosixPath(declared)
    return str(path.with_name(f"{path.stem}-{session}{path.suffix}"))


def _load(path: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}  # none yet, or torn by hand: claims are rebuilt as sessions write
    return data if isinstance(data, dict) else {}
