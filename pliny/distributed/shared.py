"""What the coordinator keeps for its workers: one SQLite file it alone opens.

``.pliny/sessions/<id>/distributed.sqlite``, next to the resume journal, on
the coordinator's disk. Workers never open it: they reach it through
Temporal updates (:mod:`pliny.distributed.coordinator`), so no filesystem
is shared between machines.

* ``outbox``: every audit event and workspace write a worker produced, in
  the order it produced them, keyed by the workflow, run, activity attempt
  and sequence number (``origin``). A worker sends its events with its next
  journal or budget request, and a paid answer's ``llm_call`` in the same
  request that records the answer, so even an attempt whose worker was
  SIGKILLed leaves its paid calls behind; the coordinator appends each row
  to the audit log exactly once (the row's ``origin`` is stamped on the
  event and skipped if seen).
* ``blobs``: inputs, results and requests too large for a Temporal payload
  (2 MB), content-addressed; the payload carries only the digest, and the
  content crosses in ``CHUNK``-byte parts (``blob_parts`` while uploading).
* ``budget_*``: the budget ledger (see :mod:`pliny.distributed.ledger`).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

FILENAME = "distributed.sqlite"
SPILL_BYTES = 256 * 1024  # payload values above this travel by digest, not inline
CHUNK = 384 * 1024  # bytes per part: 512 KB of base64, far under the 2 MB payload limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow TEXT NOT NULL,
    origin TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_workflow ON outbox (workflow, id);
CREATE TABLE IF NOT EXISTS blobs (digest TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blob_parts (
    digest TEXT NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (digest, idx)
);
CREATE TABLE IF NOT EXISTS budget_base (
    scope TEXT PRIMARY KEY, tokens INTEGER NOT NULL, cost REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS budget_use (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    scopes TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    cost REAL NOT NULL,
    reserved INTEGER NOT NULL
);
"""


def shared_path(session_dir: Path) -> Path:
    return session_dir / FILENAME


class SharedStore:
    """The session's shared SQLite file; safe across threads and processes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            self.db.close()

    # -- outbox ---------------------------------------------------------------
    def append(self, workflow: str, origin: str, kind: str, body: dict[str, Any]) -> bool:
        """False if ``origin`` was already there (a retried request): nothing is added."""
        with self.lock:
            cur = self.db.execute(
                "INSERT OR IGNORE INTO outbox (workflow, origin, kind, body) VALUES (?, ?, ?, ?)",
                (workflow, origin, kind, json.dumps(body, ensure_ascii=False)),
            )
        return cur.rowcount == 1

    def rows(self, workflow: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(origin, kind, body) of one workflow, in the order they were written."""
        with self.lock:
            found = self.db.execute(
                "SELECT origin, kind, body FROM outbox WHERE workflow=? ORDER BY id", (workflow,)
            ).fetchall()
        return [(o, k, json.loads(b)) for o, k, b in found]

    # -- blobs ----------------------------------------------------------------
    def spill(self, value: Any) -> Any:
        """``value`` itself if small, else ``{"$blob": digest}`` with the JSON stored here."""
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
        if len(text.encode()) <= SPILL_BYTES:
            return value
        digest = hashlib.sha256(text.encode()).hexdigest()
        with self.lock:
            self.db.execute("INSERT OR IGNORE INTO blobs VALUES (?, ?)", (digest, text))
        return {"$blob": digest}

    def unspill(self, value: Any) -> Any:
        if not is_spilled(value):
            return value
        return json.loads(self.text(value["$blob"]))

    def text(self, digest: str) -> str:
        with self.lock:
            row = self.db.execute("SELECT body FROM blobs WHERE digest=?", (digest,)).fetchone()
        if row is None:
            row = (self._assemble(digest),)
        return row[0]

    def put_part(self, digest: str, index: int, data: bytes) -> None:
        """One uploaded part of a worker's blob (idempotent: a retried update rewrites it)."""
        with self.lock:
            self.db.execute(
                "INSERT OR REPLACE INTO blob_parts VALUES (?, ?, ?)", (digest, index, data)
            )

    def part(self, digest: str, index: int) -> tuple[bytes, int]:
        """Part ``index`` of a blob and how many parts it has."""
        raw = self.text(digest).encode()
        return raw[index * CHUNK : (index + 1) * CHUNK], max(1, -(-len(raw) // CHUNK))

    def _assemble(self, digest: str) -> str:
        with self.lock:
            parts = self.db.execute(
                "SELECT data FROM blob_parts WHERE digest=? ORDER BY idx", (digest,)
            ).fetchall()
        raw = b"".join(bytes(p[0]) for p in parts)
        if not parts or hashlib.sha256(raw).hexdigest() != digest:
            raise LookupError(f"shared blob {digest} is missing from {self.path}")
        text = raw.decode()
        with self.lock:
            self.db.execute("INSERT OR IGNORE INTO blobs VALUES (?, ?)", (digest, text))
            self.db.execute("DELETE FROM blob_parts WHERE digest=?", (digest,))
        return text


def is_spilled(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"$blob"}
