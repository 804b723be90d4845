"""Opt-in result cache: same agent spec, rendered prompt and model -> same result.

An agent or phase with ``cache: {ttl: 1h}`` may reuse a result recorded by
any earlier session in the workspace instead of calling the model. The cache
is one SQLite file, ``<workspace>/.pliny/cache.sqlite``, shared across
sessions and processes (WAL, busy timeout); each entry carries its own expiry.

The key is the sha256 of canonical JSON (sorted keys, no whitespace) of the
agent spec without the fields that cannot change the answer (``cache``,
``timeout``), the rendered messages and the model. Callers should put every
input that shapes the answer into the spec they pass (effective temperature,
max_tokens, whether tools are offered), or two different calls could share
a key.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pliny.atomicfile import private_file
from pliny.errors import SystemFailure

CACHE_FILE = Path(".pliny") / "cache.sqlite"
KEY_VERSION = 1  # bump when the key's inputs change meaning: old entries stop matching
IGNORED_SPEC_FIELDS = frozenset({"cache", "timeout"})
_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    model TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0,
    result TEXT NOT NULL
)
"""


def cache_path(workspace: Path) -> Path:
    return workspace / CACHE_FILE


def ttl_for(phase: Any, agent: Any) -> float | None:
    """Seconds a result of ``agent`` may be reused: the agent's ``cache``, else its phase's."""
    spec = agent.cache or phase.cache
    return spec.ttl if spec is not None else None


def cache_key(agent_spec: dict[str, Any], rendered_messages: list[Any], model: str) -> str:
    spec = {k: v for k, v in agent_spec.items() if k not in IGNORED_SPEC_FIELDS}
    canonical = json.dumps(
        {"v": KEY_VERSION, "agent": spec, "messages": rendered_messages, "model": model},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    key: str
    agent: str
    model: str
    created: float  # unix time
    expires: float  # unix time
    hits: int

    def expired(self, now: float | None = None) -> bool:
        return self.expires <= (time.time() if now is None else now)


class ResultCache:
    """The SQLite-backed cache; safe to share between threads of one process."""

    key = staticmethod(cache_key)

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        private_file(self.path)  # cached answers: owner only (-wal/-shm follow)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            # A lost entry after power loss only costs a model call: skip per-put fsync.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise SystemFailure(
                f"{self.path}: unusable result cache: {exc}",
                code="PLINY-CACHE-CORRUPT",
                hint="delete the file; it only holds reusable results",
            ) from None

    def get(self, key: str, now: float | None = None) -> dict[str, Any] | None:
        """The result stored under ``key`` if it has not expired, else None."""
        now = time.time() if now is None else now
        with self._lock:
            row = self._db.execute(
                "SELECT result FROM results WHERE key = ? AND expires > ?", (key, now)
            ).fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE results SET hits = hits + 1 WHERE key = ?", (key,))
        return json.loads(row[0])

    def put(
        self,
        key: str,
        result: dict[str, Any],
        ttl_s: float,
        *,
        agent: str = "",
        model: str = "",
        now: float | None = None,
    ) -> None:
        """Store (or replace) ``result`` for ``ttl_s`` seconds."""
        if ttl_s <= 0:
            raise ValueError(f"ttl must be positive, got {ttl_s}")
        now = time.time() if now is None else now
        data = json.dumps(result, ensure_ascii=False)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO results (key, agent, model, created, expires, hits, result)"
                " VALUES (?, ?, ?, ?, ?, 0, ?)",
                (key, agent, model, now, now + ttl_s, data),
            )

    def clear(self, expired_only: bool = False, now: float | None = None) -> int:
        """Remove every entry (or only expired ones); how many were removed."""
        now = time.time() if now is None else now
        with self._lock:
            if expired_only:
                cursor = self._db.execute("DELETE FROM results WHERE expires <= ?", (now,))
            else:
                cursor = self._db.execute("DELETE FROM results")
        return cursor.rowcount

    def list(self) -> list[CacheEntry]:
        """All entries, oldest first (expired ones too, until cleared)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, agent, model, created, expires, hits FROM results ORDER BY created"
            ).fetchall()
        return [CacheEntry(*row) for row in rows]

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
