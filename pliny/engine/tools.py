"""Workspace file tools the agents may call.

Every path is resolved inside the workspace; ``..``, absolute paths,
symlinks that point out, and anything under ``.git`` (at any depth),
``.pliny`` or the audit directory (nested too, e.g. ``var/audit``) are
refused with a message the model sees (a ToolError), never an exception
that kills the run. Pliny's own config files (``readonly``: ``pliny.yaml``,
the ``--config`` file, the framework in use) may be read, never written:
a rewritten config could make the next run execute commands.

Guarded paths are compared after ``resolve()`` (symlinks) and casefolded (a
case-insensitive filesystem must not let ``PLINY.YAML`` through), and a
read-only file is also matched by inode (hard links).
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pliny.errors import ToolError

PROTECTED = (".git", ".pliny")
MAX_READ_BYTES = 200_000
MAX_LIST = 500
MAX_MATCHES = 100

WriteHook = Callable[[str, bytes, str | None], None]


@dataclass
class ToolResult:
    ok: bool
    content: str
    error: str | None = None
    written: str | None = None  # workspace-relative path of a file written


def _key(path: Path) -> str:
    return str(path).casefold()


def _under(key: str, base: str) -> bool:
    return key == base or key.startswith(base.rstrip(os.sep) + os.sep)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # either one does not exist (yet)
        return False


@dataclass
class Workspace:
    root: Path
    # Dirs never read or written: workspace-relative (nested is fine) or absolute.
    protected: tuple[str | Path, ...] = PROTECTED
    # Files that may be read but never written: Pliny's own configuration.
    readonly: tuple[str | Path, ...] = ()
    on_write: list[WriteHook] = field(default_factory=list)
    before_write: list[Callable[[str], None]] = field(default_factory=list)

    def resolve(self, path: str, *, for_write: bool = False) -> tuple[Path, str]:
        """Absolute path and POSIX relative path, or ToolError."""
        if not isinstance(path, str) or not path.strip():
            raise ToolError("path must be a non-empty string", code="PLINY-TOOL-BAD-PATH")
        raw = PurePosixPath(path.strip())
        if raw.is_absolute() or path.startswith(("/", "\\")) or (raw.parts and ":" in raw.parts[0]):
            raise ToolError(f"{path}: absolute paths are not allowed", code="PLINY-TOOL-ESCAPE")
        if ".." in raw.parts:
            raise ToolError(f"{path}: '..' is not allowed", code="PLINY-TOOL-ESCAPE")
        root = self.root.resolve()
        target = (root / raw).resolve()
        if target != root and root not in target.parents:
            raise ToolError(f"{path}: resolves outside the workspace", code="PLINY-TOOL-ESCAPE")
        rel = target.relative_to(root).as_posix() if target != root else "."
        if ".git" in rel.casefold().split("/"):  # nested repos too: hooks run code
            raise ToolError(f"{path}: .git/ is off limits", code="PLINY-TOOL-PROTECTED")
        if (name := self.protected_dir(target)) is not None:
            raise ToolError(f"{path}: {name}/ is off limits", code="PLINY-TOOL-PROTECTED")
        if for_write and (target == root or target.is_dir()):
            raise ToolError(f"{path}: is a directory", code="PLINY-TOOL-BAD-PATH")
        if for_write and self.is_readonly(target):
            raise ToolError(
                f"{path}: Pliny's configuration is read-only for agents",
                code="PLINY-TOOL-PROTECTED",
            )
        return target, rel

    def _guarded(self, entries: tuple[str | Path, ...]) -> list[tuple[str | Path, Path]]:
        root = self.root.resolve()
        return [(entry, (root / entry).resolve()) for entry in entries]

    def protected_dir(self, target: Path) -> str | None:
        """The protected entry ``target`` (resolved) is in or is, else None."""
        key = _key(target)
        for entry, base in self._guarded(self.protected):
            if _under(key, _key(base)):
                return str(entry)
        return None

    def _listable(self, directory: Path) -> bool:
        if directory.name.casefold() == ".git":
            return False
        return self.protected_dir(directory.resolve()) is None

    def is_readonly(self, target: Path) -> bool:
        key = _key(target)
        return any(
            key == _key(file) or _same_file(target, file)
            for _, file in self._guarded(self.readonly)
        )

    # -- the tools ---------------------------------------------------------
    def list_files(self, path: str = ".", pattern: str = "*") -> str:
        base, _ = self.resolve(path)
        if not base.is_dir():
            raise ToolError(f"{path}: not a directory", code="PLINY-TOOL-NOT-FOUND")
        root = self.root.resolve()
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            rel_dir = Path(dirpath).relative_to(root).as_posix()
            dirnames[:] = sorted(d for d in dirnames if self._listable(Path(dirpath, d)))
            for name in sorted(filenames):
                rel = f"{rel_dir}/{name}" if rel_dir != "." else name
                if fnmatch.fnmatch(name, pattern):
                    found.append(rel)
                if len(found) >= MAX_LIST:
                    return "\n".join(found) + f"\n... (truncated at {MAX_LIST} files)"
        return "\n".join(found) if found else "(no files)"

    def read_file(self, path: str) -> str:
        target, rel = self.resolve(path)
        if not target.is_file():
            raise ToolError(f"{path}: no such file", code="PLINY-TOOL-NOT-FOUND")
        data = target.read_bytes()[:MAX_READ_BYTES]
        text = data.decode("utf-8", errors="replace")
        if target.stat().st_size > MAX_READ_BYTES:
            text += f"\n... (truncated at {MAX_READ_BYTES} bytes)"
        return text

    def write_file(self, path: str, content: str, agent: str | None = None) -> str:
        target, rel = self.resolve(path, for_write=True)
        data = content.encode("utf-8")
        for hook in self.before_write:  # e.g. keep the user's uncommitted version for rollback
            hook(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.pliny-tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)  # never a half-written file in a checkpoint
        for write_hook in self.on_write:
            write_hook(rel, data, agent)
        return f"wrote {len(data)} bytes to {rel}"

    def search_files(self, query: str, path: str = ".", pattern: str = "*") -> str:
        if not query:
            raise ToolError("query must not be empty", code="PLINY-TOOL-BAD-ARGS")
        listing = self.list_files(path, pattern)
        matches: list[str] = []
        for rel in listing.splitlines():
            if rel.startswith(("(", "...")):
                continue
            try:  # through resolve(): a symlink out of the workspace is skipped
                target, _ = self.resolve(rel)
                lines = target.read_text("utf-8", errors="replace").splitlines()
            except (OSError, ToolError):
                continue
            for number, line in enumerate(lines, 1):
                if query.lower() in line.lower():
                    matches.append(f"{rel}:{number}: {line.strip()[:200]}")
                    if len(matches) >= MAX_MATCHES:
                        return "\n".join(matches) + "\n... (truncated)"
        return "\n".join(matches) if matches else f"(no matches for {query!r})"

    def call(self, name: str, arguments: dict[str, Any], agent: str | None = None) -> ToolResult:
        """Run a tool by name; failures become a ToolResult the model can read."""
        fn = _TOOLS.get(name)
        if fn is None:
            err = f"unknown tool {name!r}"
            return ToolResult(False, f"error: {err}", err)
        try:
            if name == "write_file":
                out = self.write_file(**arguments, agent=agent)
                _, rel = self.resolve(arguments["path"])
                return ToolResult(True, out, written=rel)
            return ToolResult(True, fn(self, **arguments))
        except ToolError as exc:
            return ToolResult(False, f"error: {exc.message}", exc.message)
        except TypeError as exc:  # wrong/missing arguments from the model
            return ToolResult(False, f"error: bad arguments: {exc}", str(exc))
        except OSError as exc:
            return ToolResult(False, f"error: {exc.strerror or exc}", str(exc))
        except Exception as exc:  # noqa: BLE001 - a tool bug must not kill the agent
            return ToolResult(False, f"error: {type(exc).__name__}: {exc}", str(exc))


_TOOLS: dict[str, Callable[..., str]] = {
    "list_files": Workspace.list_files,
    "read_file": Workspace.read_file,
    "write_file": Workspace.write_file,
    "search_files": Workspace.search_files,
}

_PATH = {"type": "string", "description": "path relative to the workspace root"}
SCHEMAS: dict[str, dict[str, Any]] = {
    "list_files": {
        "description": "List files under a workspace directory (recursive).",
        "parameters": {
            "type": "object",
            "properties": {
                "path": {**_PATH, "default": "."},
                "pattern": {"type": "string", "description": "glob on file names, e.g. *.py"},
            },
        },
    },
    "read_file": {
        "description": "Read a UTF-8 text file from the workspace.",
        "parameters": {"type": "object", "properties": {"path": _PATH}, "required": ["path"]},
    },
    "write_file": {
        "description": "Create or overwrite a text file in the workspace.",
        "parameters": {
            "type": "object",
            "properties": {"path": _PATH, "content": {"type": "string"}},
            "required": ["path", "content"],
        },
    },
    "search_files": {
        "description": "Case-insensitive text search across workspace files.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "path": {**_PATH, "default": "."},
                "pattern": {"type": "string", "description": "glob on file names"},
            },
            "required": ["query"],
        },
    },
}


def openai_tools(names: Sequence[str]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": n, **SCHEMAS[n]}} for n in names]


def timed_call(
    ws: Workspace, name: str, args: dict[str, Any], agent: str | None
) -> tuple[ToolResult, float]:
    start = time.perf_counter()
    result = ws.call(name, args, agent)
    return result, (time.perf_counter() - start) * 1000
