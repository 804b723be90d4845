"""State that quotes prompts, answers and errors is private: files 0600, folders 0700.

A real CLI run under a permissive umask (022), then every file Pliny keeps
for itself (audit log, state.json, run.log, the resume journal, the LangGraph
checkpoint db) and every folder holding them is checked with stat. SQLite
removes -wal/-shm on close, so those are checked on open databases.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from pliny.engine.cache import ResultCache
from pliny.llm.journal import Journal

CLI = [sys.executable, "-c", "from pliny.cli import main; main()"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_files_are_private_under_umask_022(fake_server, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "app.py").write_text("print('hello')\n")
    env = {**os.environ, "OPENAI_BASE_URL": fake_server.base_url, "OPENAI_API_KEY": "sk-modes"}
    done = subprocess.run(
        [*CLI, "execute", "-f", "rise", "-t", "Document app.py", "-w", str(ws)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        umask=0o022,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (session,) = (ws / ".pliny" / "sessions").iterdir()
    named = [
        session / "state.json",
        session / "run.log",
        session / "journal.sqlite",
        session / "graph.sqlite",
        *(ws / "audit-logs").glob("*.jsonl"),
    ]
    assert all(p.is_file() for p in named) and len(named) == 5
    kept = [p for root in (ws / ".pliny", ws / "audit-logs") for p in root.rglob("*")]
    files = {str(p.relative_to(ws)): oct(_mode(p)) for p in kept if p.is_file()}
    dirs = {str(p.relative_to(ws)): oct(_mode(p)) for p in kept if p.is_dir()}
    dirs |= {name: oct(_mode(ws / name)) for name in (".pliny", "audit-logs")}
    assert {k: v for k, v in files.items() if v != "0o600"} == {}
    assert {k: v for k, v in dirs.items() if v != "0o700"} == {}
    assert _mode(ws / "app.py") == 0o644  # the user's own files keep their mode


def test_sqlite_companions_are_private_while_open(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        journal = Journal(tmp_path / "s" / "journal.sqlite")
        journal.put("a", 1, "h", 0, {"content": "the answer"})
        cache = ResultCache(tmp_path / "c" / "cache.sqlite")
        cache.put("k", {"content": "x"}, ttl_s=60)
        modes = {p.name: _mode(p) for d in ("s", "c") for p in (tmp_path / d).iterdir()}
        journal.close()
        cache.close()
    finally:
        os.umask(old)
    assert {"journal.sqlite-wal", "journal.sqlite-shm", "cache.sqlite-wal"} <= modes.keys()
    assert {name: oct(mode) for name, mode in modes.items() if mode != 0o600} == {}
    assert _mode(tmp_path / "s") == _mode(tmp_path / "c") == 0o700
