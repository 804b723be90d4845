"""The page's actions: the CLI's own cancel, resume and rollback, nothing new.

Cancel and rollback call the functions behind ``pliny session cancel`` and
``pliny rollback`` (same refusals, same messages). Resume starts ``pliny
session resume ID`` as a detached process: the server never runs a session
in its own process, so stopping the server stops no run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pliny.errors import UsageError
from pliny.lifecycle.store import SessionStore

# `python -c` instead of the `pliny` script: the same interpreter and import path as the server.
RESUME_CODE = "import sys; from pliny.cli import main; sys.argv[0] = 'pliny'; main()"


def cancel(workspace: Path, session_id: str) -> str:
    from pliny.lifecycle.views import cancel_running

    return cancel_running(workspace, session_id)


async def rollback(workspace: Path, session_id: str, name: str, force: bool = False) -> str:
    from pliny.lifecycle.rollback import rollback_session

    return await rollback_session(workspace, session_id, name, force)


def resume(workspace: Path, session_id: str) -> str:
    store = SessionStore(workspace)
    state = store.load(session_id)
    if store.is_locked(state.id):
        raise UsageError(f"session {state.id!r} is already running")
    if state.status == "completed":
        raise UsageError(f"session {state.id!r} is completed; nothing to resume")
    log = store.dir(state.id) / "web-resume.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", RESUME_CODE, "session", "resume", state.id],
            cwd=workspace,
            env=os.environ.copy(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: outlives the server
        )
    return f"resuming {state.id} (pid {proc.pid}); output in {log}"
