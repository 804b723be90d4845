"""The checkpoint store's own crash-safe state file (``checkpoints.json``).

Holds what git cannot: the session's base (the user's HEAD when the session
started), writes not yet checkpointed, every path the session ever wrote,
the user's pre-images, and an in-flight rollback. Each save is atomic
(temp file, fsync, rename), so ``kill -9`` leaves the old or the new state.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pliny.atomicfile import atomic_write
from pliny.errors import UsageError

VERSION = 1


@dataclass
class CheckpointState:
    path: Path
    base_commit: str | None
    base_tree: str
    # path -> {"blob": sha | None (deleted), "mode": "100644", "agent": str | None}
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    managed: set[str] = field(default_factory=set)
    # path -> [blob sha, mode] of the user's uncommitted version, None if it was absent
    preimages: dict[str, list[str] | None] = field(default_factory=dict)
    rollback: dict[str, str] | None = None  # {"name", "commit"} while one is in flight

    @classmethod
    def load_or_create(
        cls, path: Path, new_base: Callable[[], tuple[str | None, str]]
    ) -> CheckpointState:
        if path.exists():
            return cls.load(path)
        base_commit, base_tree = new_base()
        state = cls(path, base_commit, base_tree)
        state.save()
        return state

    @classmethod
    def load(cls, path: Path) -> CheckpointState:
        try:
            raw = json.loads(path.read_text("utf-8"))
            if raw.get("version") != VERSION:
                raise ValueError(f"unsupported version {raw.get('version')!r}")
            return cls(
                path=path,
                base_commit=raw["base_commit"],
                base_tree=str(raw["base_tree"]),
                pending={str(k): dict(v) for k, v in raw["pending"].items()},
                managed=set(raw["managed"]),
                preimages=dict(raw["preimages"]),
                rollback=raw.get("rollback"),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UsageError(
                f"{path}: corrupt checkpoint state ({type(exc).__name__}: {exc})",
                code="PLINY-CORRUPT-STATE",
            ) from None

    def save(self, *, durable: bool = True) -> None:
        """Atomic; ``durable=False`` skips the fsyncs (survives kill -9, not power loss)."""
        data = {
            "version": VERSION,
            "base_commit": self.base_commit,
            "base_tree": self.base_tree,
            "pending": self.pending,
            "managed": sorted(self.managed),
            "preimages": self.preimages,
            "rollback": self.rollback,
        }
        atomic_write(self.path, json.dumps(data, sort_keys=True).encode(), durable=durable)
