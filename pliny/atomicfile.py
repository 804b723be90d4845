"""Atomic file replacement, the one way Pliny rewrites state files.

Pliny's own state (audit log, session state, journal, run log) quotes
prompts, answers and errors, so it is private by default: files 0600 and
the folders Pliny creates for them 0700, whatever the umask.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dir(path: Path) -> None:
    """``mkdir -p`` where every folder created here is 0700 (existing ones are left alone)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:  # created meanwhile by another process
            continue


def private_file(path: Path) -> None:
    """Create ``path`` empty if needed, 0600 (before SQLite opens it: -wal/-shm copy the mode)."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a new or renamed file's name) survive power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: Path, data: bytes, mode: int = PRIVATE_FILE, *, durable: bool = True
) -> None:
    """Write ``path`` so a crash leaves the old or the new file, never a torn one.

    ``durable`` fsyncs the data and the directory, so the new file survives a
    power cut; without it the write still survives kill -9 (the page cache
    outlives the process) and the rename is still all-or-nothing. A private
    file (the default mode) gets private new folders too.
    """
    if mode & 0o077:
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.pliny-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:  # on power loss the rename must never expose a file without its data
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
