"""The resume journal: every LLM response, keyed by the request that got it.

LangGraph's checkpointer decides which *nodes* re-run after a crash; this
journal decides which *calls* are re-sent. A response is committed here
(SQLite WAL) before the agent sees it, so after ``kill -9`` a resume replays
it at cost 0 instead of paying for it again. ``synchronous=NORMAL``: a
committed transaction survives any process crash; only a power loss can
lose the last few (then those calls are paid once more, never lost). That also covers
LangGraph's known weakness of re-running a node that had finished (#8039).

Key: (agent, cycle, request hash, occurrence). ``occurrence`` counts identical
requests within one agent run, so a deliberate repeat is not collapsed.

Paid but not audited: the call's ``llm_call`` event is committed here (table
``unaudited``) in the same transaction as its answer, and deleted once the
audit log acknowledged it. A row left behind (the audit write failed, e.g.
disk full, or a crash in between) is emitted by the next run as a *paid*
call flagged ``recovered`` (real tokens and cost), not as a $0 replay, and
once only: a copy already in the log (crash after the ack) is just dropped.
``forget`` leaves these rows alone: the money was spent either way.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from pliny.atomicfile import private_file
from pliny.redact import Redactor

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    agent TEXT NOT NULL,
    cycle INTEGER NOT NULL,
    request_hash TEXT NOT NULL,
    occurrence INTEGER NOT NULL,
    response TEXT NOT NULL,
    created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (agent, cycle, request_hash, occurrence)
);
CREATE TABLE IF NOT EXISTS unaudited (
    agent TEXT NOT NULL,
    cycle INTEGER NOT NULL,
    request_hash TEXT NOT NULL,
    occurrence INTEGER NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (agent, cycle, request_hash, occurrence)
);
"""
_KEY = "agent=? AND cycle=? AND request_hash=? AND occurrence=?"
Key = tuple[str, int, str, int]


def request_hash(request: dict[str, Any]) -> str:
    """Stable hash of what is sent (model, messages, tools, params), not of the key."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class Journal:
    def __init__(self, path: Path) -> None:
        private_file(path)  # full prompts and answers: owner only (-wal/-shm follow)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._redactor = Redactor()

    def get(self, agent: str, cycle: int, rhash: str, occurrence: int) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT response FROM responses WHERE agent=? AND cycle=? AND request_hash=?"
                " AND occurrence=?",
                (agent, cycle, rhash, occurrence),
            ).fetchone()
        return json.loads(row[0]) if row else None

    def put(
        self,
        agent: str,
        cycle: int,
        rhash: str,
        occurrence: int,
        response: dict[str, Any],
        event: str | None = None,
    ) -> None:
        """Record an answer; ``event`` (its ``llm_call`` JSON) stays pending until audited."""
        key = (agent, cycle, rhash, occurrence)
        text = json.dumps(response)
        if self._redactor.needed(text):  # a model may echo a key it saw
            text = json.dumps(self._redactor.scrub(response))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO responses (agent, cycle, request_hash, occurrence,"
                    " response) VALUES (?, ?, ?, ?, ?)",
                    (*key, text),
                )
                if event is not None:
                    self._db.execute(
                        "INSERT OR REPLACE INTO unaudited (agent, cycle, request_hash,"
                        " occurrence, event) VALUES (?, ?, ?, ?, ?)",
                        (*key, event),
                    )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def audited(self, agent: str, cycle: int, rhash: str, occurrence: int) -> None:
        """The audit log acknowledged this call's ``llm_call`` event."""
        with self._lock:
            self._db.execute(
                f"DELETE FROM unaudited WHERE {_KEY}", (agent, cycle, rhash, occurrence)
            )

    def unaudited(self) -> list[tuple[Key, str]]:
        """Paid calls whose ``llm_call`` event the audit log never acknowledged, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT agent, cycle, request_hash, occurrence, event FROM unaudited ORDER BY rowid"
            ).fetchall()
        return [((a, c, h, o), event) for a, c, h, o, event in rows]

    def forget(self, agents: list[str], cycle: int | None = None) -> int:
        """Drop an agent's recorded calls (``--rerun`` wants fresh answers), or one cycle's."""
        with self._lock:
            if cycle is None:
                cur = self._db.executemany(
                    "DELETE FROM responses WHERE agent=?", [(a,) for a in agents]
                )
            else:
                cur = self._db.executemany(
                    "DELETE FROM responses WHERE agent=? AND cycle=?", [(a, cycle) for a in agents]
                )
        return cur.rowcount

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
