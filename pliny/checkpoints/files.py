"""The workspace side of checkpoints: which paths Pliny may touch, what is on
disk now (as git blob ids), and applying a rollback plan to the files.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from pliny.atomicfile import atomic_write
from pliny.checkpoints.git import Entry
from pliny.errors import ToolError, UsageError

OTHER = "<not a regular file>"  # a disk state that never equals a blob id


class WorkspaceFiles:
    def __init__(
        self,
        workspace: Path,
        state_dir: Path,
        protected: tuple[str, ...],
        blob_id: Callable[[bytes], str],
    ) -> None:
        self.root = workspace
        self.state_dir = state_dir
        self.protected = protected
        self.blob_id = blob_id

    def check_path(self, path: str | PurePosixPath) -> str:
        """Normalized workspace-relative path, or ToolError for one Pliny may not write."""
        raw = path.as_posix() if isinstance(path, PurePosixPath) else str(path)
        pure = PurePosixPath(raw)
        if not raw or "\0" in raw or pure.is_absolute() or ".." in pure.parts or not pure.parts:
            raise ToolError(
                f"{raw!r}: not a relative path inside the workspace", code="PLINY-TOOL-ESCAPE"
            )
        rel = "/".join(pure.parts)
        in_state = is_under(self.root / rel, self.state_dir)
        if in_state or self._protected(rel) or any(p.lower() == ".git" for p in pure.parts):
            raise ToolError(
                f"{rel}: Pliny never writes or commits here", code="PLINY-TOOL-PROTECTED"
            )
        return rel

    def _protected(self, rel: str) -> bool:
        """Under a protected dir: nested ones too (``audit.dir: var/audit``), any case."""
        key = rel.casefold()
        for entry in self.protected:
            base = "/".join(PurePosixPath(entry).parts).casefold()
            if base and (key == base or key.startswith(base + "/")):
                return True
        return False

    def abs(self, rel: str) -> Path:
        """Absolute path for ``rel``; refuses when a symlinked directory leads outside."""
        target = self.root / rel
        parent = target.parent
        while not parent.exists():
            parent = parent.parent
        if not is_under(parent.resolve(), self.root):
            raise UsageError(f"{rel}: a parent directory now points outside the workspace")
        return target

    def blob(self, rel: str) -> str | None:
        """Blob id of the file on disk, None if absent, OTHER for a dir or symlink."""
        try:
            st = os.lstat(self.root / rel)
        except FileNotFoundError:
            return None
        except OSError:  # e.g. a parent is now a file
            return OTHER
        if not stat.S_ISREG(st.st_mode):
            return OTHER
        return self.blob_id((self.root / rel).read_bytes())

    def git_mode(self, rel: str) -> str:
        return "100755" if is_executable(self.root / rel) else "100644"

    def apply(
        self, plan: dict[str, Entry | None], read: Callable[[set[str]], dict[str, bytes]]
    ) -> tuple[list[str], list[str]]:
        """Make each path match its plan entry (None = absent); ``read`` fetches blobs."""
        disk = {p: self.blob(p) for p in plan}
        todo = {p: e for p, e in plan.items() if e is not None and disk[p] != e.sha}
        blobs = read({e.sha for e in todo.values()})
        restored, deleted = [], []
        for path, entry in sorted(plan.items()):
            target = self.abs(path)
            if entry is None and disk[path] is not None:
                if target.is_dir() and not target.is_symlink():
                    raise UsageError(f"{path}: is a directory now; not deleting it")
                target.unlink()
                prune_empty_dirs(target.parent, self.root)
                deleted.append(path)
            elif entry is not None and path in todo:
                atomic_write(target, blobs[entry.sha], 0o755 if entry.mode == "100755" else 0o644)
                restored.append(path)
        return restored, deleted


def is_executable(path: Path) -> bool:
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) and bool(mode & 0o100)


def is_under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def prune_empty_dirs(directory: Path, root: Path) -> None:
    """Remove directories a deletion left empty, up to (not including) ``root``."""
    while directory != root and root in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent
