"""What the coordinator and its workers share through the session directory.

One SQLite file, ``.pliny/sessions/<id>/distributed.sqlite``, next to the
resume journal, on the filesystem every worker mounts:

* ``outbox``: every audit event and workspace write a worker produced, in
  the order it produced them, keyed by the workflow, run and activity
  attempt. A row is written *as the event happens* (before the agent sees
  an answer), so even an attempt whose worker was SIGKILLed leaves its paid
  calls behind; the coordinator appends each row to the audit log exactly
  once (the row's ``origin`` is stamped on the event and skipped if seen).
* ``blobs``: inputs and results too large for a Temporal payload (2 MB),
  content-addressed; the payload carries only the digest.
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
    def append(self, workflow: str, origin: str, kind: str, body: dict[str, Any]) -> None:
        with self.lock:
            self.db.execute(
                "INSERT OR IGNORE INTO outbox (workflow, origin, kind, body) VALUES (?, ?, ?, ?)",
                (workflow, origin, kind, json.dumps(body, ensure_ascii=False)),
            )

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
        if not (isinstance(value, dict) and set(value) == {"$blob"}):
            return value
        with self.lock:
            row = self.db.execute(
                "SELECT body FROM blobs WHERE digest=?", (value["$blob"],)
            ).fetchone()
        if row is None:
            raise LookupError(f"shared blob {value['$blob']} is missing from {self.path}")
        return json.loads(row[0])
