"""Keeping Pliny's own state out of the user's ``git status``.

A ``.gitignore`` holding ``*`` inside the directory itself: unlike a line in
``.git/info/exclude`` it needs no path relative to the repository root, so
it works when the workspace is a sub-folder of a larger repository, when
the repository is created later, and for any ``audit.dir``. It ignores
itself too, so nothing at all shows.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

IGNORE_ALL = "# Pliny's own state (sessions, audit logs): never part of the repository\n*\n"


def hide_from_git(directory: Path, *, workspace: Path | None = None) -> None:
    """Create ``directory`` with an ignore-everything ``.gitignore`` unless it has one.

    Never for the workspace itself or a directory above it (``audit.dir: .``
    would hide the user's own files); a ``.gitignore`` the user wrote is kept.
    """
    target = directory.resolve()
    if workspace is not None:
        root = workspace.resolve()
        if target == root or target in root.parents:
            return
    ignore = target / ".gitignore"
    if ignore.exists():
        return
    target.mkdir(mode=0o700, parents=True, exist_ok=True)  # state: private (0700/0600)
    # Best effort: an unwritable state dir fails loudly elsewhere, not here.
    with contextlib.suppress(FileExistsError, PermissionError):
        fd = os.open(ignore, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(IGNORE_ALL)
