"""Low-level git plumbing for checkpoints, run through GitPython (real git).

Everything here works on *workspace-relative* POSIX paths: when the
workspace is a sub-directory of a larger repository, ``prefix`` maps them to
repository paths. Nothing in this module touches the user's HEAD, index or
branches: trees are edited directly in the object database (only the
directories on changed paths) and commits only ever land on refs the caller
names (``refs/pliny/...``).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from pliny.checkpoints.gittree import Entry, TreeEditing
from pliny.errors import SystemFailure, UsageError

IDENTITY = {
    "GIT_AUTHOR_NAME": "Pliny",
    "GIT_AUTHOR_EMAIL": "pliny@localhost",
    "GIT_COMMITTER_NAME": "Pliny",
    "GIT_COMMITTER_EMAIL": "pliny@localhost",
}
# Paths are data, never glob patterns; never prompt for anything.
BASE_ENV = {"GIT_LITERAL_PATHSPECS": "1", "GIT_TERMINAL_PROMPT": "0"}

# Operations in progress that make the working tree the user's business, not ours.
_BUSY = {
    "rebase-merge": "a rebase",
    "rebase-apply": "a rebase or `git am`",
    "MERGE_HEAD": "a merge",
    "CHERRY_PICK_HEAD": "a cherry-pick",
    "REVERT_HEAD": "a revert",
    "BISECT_LOG": "a bisect",
}
_BAD_REF_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\/]")
MAX_REF_COMPONENT = 200  # loose refs are files; leave room for ".lock"


@dataclass(frozen=True)
class RefRecord:
    ref: str
    commit: str
    committed: int  # unix seconds
    message: str


def import_git() -> ModuleType:
    """GitPython, or a one-line UsageError when no usable git binary exists."""
    try:
        import git
    except ImportError as exc:  # GitPython's import-time refresh found no git
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"git is not installed or not runnable ({first})",
            code="PLINY-GIT-MISSING",
            hint="install git or set GIT_PYTHON_GIT_EXECUTABLE",
        ) from None
    return git


def check_ref_component(value: str, what: str = "checkpoint name") -> str:
    """``git check-ref-format`` rules for one path component (no '/' allowed)."""
    problem = None
    if not value:
        problem = "is empty"
    elif _BAD_REF_CHARS.search(value):
        problem = "contains a space, '/', control character or one of ~^:?*[\\"
    elif value.startswith(".") or value.endswith((".", ".lock")):
        problem = "starts with '.' or ends with '.' or '.lock'"
    elif ".." in value or "@{" in value:
        problem = "contains '..' or '@{'"
    elif len(value.encode()) > MAX_REF_COMPONENT:
        problem = f"is longer than {MAX_REF_COMPONENT} bytes"
    if problem:
        raise UsageError(f"invalid {what} {value!r}: {problem}", code="PLINY-BAD-REF")
    return value


def _first_line(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else "no message"


class GitRepo(TreeEditing):
    """The repository holding a workspace, with the plumbing checkpoints need."""

    def __init__(self, repo: Any, workspace: Path) -> None:
        self.repo = repo
        self.toplevel = Path(repo.working_tree_dir).resolve()
        self.git_dir = Path(repo.git_dir)
        rel = workspace.resolve().relative_to(self.toplevel).as_posix()
        self.prefix = "" if rel == "." else rel + "/"
        self.hash_name = self._object_format()
        self.zero = "0" * (64 if self.hash_name == "sha256" else 40)
        self._trees: dict[str, dict[str, Entry]] = {}
        self._loose: Any = None  # gitdb LooseObjectDB, made on first write

    # -- opening -----------------------------------------------------------
    @classmethod
    def open(cls, workspace: Path, *, init: bool) -> GitRepo | None:
        """The repo containing ``workspace``; ``git init`` it when ``init``, else None."""
        git = import_git()
        workspace = workspace.resolve()
        if not workspace.is_dir():
            raise UsageError(f"workspace {workspace} is not a directory")
        try:
            repo = git.Repo(workspace, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            if not init:
                return None
            repo = cls._init(git, workspace)
        except git.GitError as exc:
            raise UsageError(f"cannot open the git repository: {_first_line(str(exc))}") from None
        if repo.bare or repo.working_tree_dir is None:
            raise UsageError(f"{workspace} is inside a bare git repository")
        return cls(repo, workspace)

    @staticmethod
    def _init(git: ModuleType, workspace: Path) -> Any:
        try:
            return git.Repo.init(workspace)
        except git.GitCommandNotFound as exc:
            raise UsageError(f"git is not installed or not runnable ({exc})") from None
        except git.GitCommandError as exc:
            raise UsageError(f"git init {workspace} failed: {_first_line(exc.stderr)}") from None

    def _object_format(self) -> str:
        reader = self.repo.config_reader("repository")
        return str(reader.get_value("extensions", "objectformat", "sha1")).lower()

    def refuse_if_busy(self) -> None:
        """UsageError when the user is mid-operation or on a detached HEAD."""
        for name, what in _BUSY.items():
            if (self.git_dir / name).exists():
                raise UsageError(
                    f"{self.toplevel} is in the middle of {what}; finish or abort it first",
                    code="PLINY-GIT-BUSY",
                )
        if self.repo.head.is_detached:
            raise UsageError(
                f"{self.toplevel} has a detached HEAD; check out a branch first",
                code="PLINY-GIT-DETACHED",
            )

    # -- running git -------------------------------------------------------
    def run(
        self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None
    ) -> bytes:
        """Run ``git <args>`` in the repository toplevel; stdout bytes or SystemFailure."""
        git = import_git()
        cmd = [self.repo.git.GIT_PYTHON_GIT_EXECUTABLE, *args]
        full_env = {**BASE_ENV, **(env or {})}
        try:
            proc = self.repo.git.execute(
                cmd, istream=subprocess.PIPE, as_process=True, env=full_env
            )
        except git.GitCommandNotFound as exc:
            raise UsageError(f"git is not installed or not runnable ({exc})") from None
        popen = proc.proc
        out, err = popen.communicate(input or b"")
        if popen.returncode != 0:
            raise SystemFailure(
                f"git {args[0]} failed: {_first_line(err)}", code="PLINY-GIT-FAILED"
            )
        return out

    def text(self, *args: str, **kw: Any) -> str:
        return self.run(*args, **kw).decode("utf-8", "surrogateescape").strip()

    # -- objects -----------------------------------------------------------
    def blob_id(self, data: bytes) -> str:
        """The id git gives ``data`` as a blob, computed without a subprocess."""
        h = hashlib.new(self.hash_name)
        h.update(b"blob %d\0" % len(data))
        h.update(data)
        return h.hexdigest()

    def store_blob(self, data: bytes) -> str:
        """Write ``data`` into the object database and return its id."""
        return self.store_object("blob", data)

    def store_object(self, kind: str, data: bytes) -> str:
        """Write a loose object in-process with gitdb (no subprocess per object).

        GitPython's own odb.store runs ``git hash-object`` each time; sha256
        repositories (which gitdb cannot write) go that way too.
        """
        if self.hash_name != "sha1":
            return self.text("hash-object", "-t", kind, "-w", "--stdin", input=data)
        from io import BytesIO

        from gitdb.base import IStream
        from gitdb.db.loose import LooseObjectDB

        if self._loose is None:
            self._loose = LooseObjectDB(str(Path(self.repo.common_dir) / "objects"))
        stream = self._loose.store(IStream(kind, len(data), BytesIO(data)))
        return stream.hexsha.decode() if isinstance(stream.hexsha, bytes) else stream.hexsha

    def read_blobs(self, shas: set[str]) -> dict[str, bytes]:
        """Contents of several blobs with one ``cat-file --batch``."""
        if not shas:
            return {}
        order = sorted(shas)
        out = self.run("cat-file", "--batch", input="".join(s + "\n" for s in order).encode())
        blobs: dict[str, bytes] = {}
        pos = 0
        for sha in order:
            eol = out.index(b"\n", pos)
            header = out[pos:eol].split()
            if len(header) != 3:
                raise SystemFailure(f"git object {sha} is missing from the repository")
            size = int(header[2])
            blobs[sha] = out[eol + 1 : eol + 1 + size]
            pos = eol + 1 + size + 1
        return blobs

    def head_commit(self) -> str | None:
        """The user's HEAD commit, None on an unborn branch."""
        try:
            return self.repo.head.commit.hexsha
        except ValueError:
            return None

    def empty_tree(self) -> str:
        return self.store_object("tree", b"")

    def tree_of(self, commit: str) -> str:
        return self.text("rev-parse", f"{commit}^{{tree}}")

    def ls_tree(self, tree: str) -> dict[str, Entry]:
        """Files of the workspace part of ``tree``, keyed by workspace path."""
        spec = f"{tree}:{self.prefix.rstrip('/')}" if self.prefix else tree
        try:
            out = self.run("ls-tree", "-r", "-z", spec)
        except SystemFailure:
            if self.prefix:  # the workspace directory does not exist in that tree
                return {}
            raise
        entries: dict[str, Entry] = {}
        for record in out.split(b"\0"):
            if not record:
                continue
            meta, _, path = record.partition(b"\t")
            mode, _kind, sha = meta.decode().split()
            entries[path.decode("utf-8", "surrogateescape")] = Entry(mode, sha)
        return entries

    # -- commits and refs --------------------------------------------------
    def commit_tree(self, tree: str, parent: str | None, message: str, when: int) -> str:
        """A commit by Pliny (works with no user identity configured), never signed."""
        args = ["commit-tree", "--no-gpg-sign", "-F", "-"]
        if parent:
            args += ["-p", parent]
        date = f"@{when} +0000"
        env = {**IDENTITY, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
        return self.text(*args, tree, input=message.encode(), env=env)

    def update_refs(self, updates: list[tuple[str, str, str | None]], reason: str) -> None:
        """One atomic transaction of ``(ref, new, expected_old)``; old None = don't care."""
        lines = []
        for ref, new, old in updates:
            lines.append(f"update {ref} {new}" + (f" {old}" if old else ""))
        self.run(
            "update-ref",
            "-m",
            reason,
            "--stdin",
            input=("\n".join(lines) + "\n").encode(),
            env=IDENTITY,
        )

    def delete_refs(self, refs: list[str]) -> None:
        if refs:
            self.run("update-ref", "--stdin", input="".join(f"delete {r}\n" for r in refs).encode())

    def clear_stale_ref_locks(self, ref_dir: str) -> list[Path]:
        """Remove ``*.lock`` files a killed git left under ``ref_dir`` (e.g. refs/pliny/s1).

        Only for refs one process owns at a time; git never removes these itself.
        """
        root = Path(self.repo.common_dir) / ref_dir
        stale = sorted(root.rglob("*.lock")) if root.is_dir() else []
        for lock in stale:
            lock.unlink(missing_ok=True)
        return stale

    def resolve_ref(self, ref: str) -> str | None:
        try:
            return self.text("rev-parse", "-q", "--verify", f"{ref}^{{commit}}")
        except SystemFailure:
            return None

    def for_each_ref(self, prefix: str) -> list[RefRecord]:
        fmt = "%(refname)%00%(objectname)%00%(committerdate:unix)%00%(contents)%00"
        out = self.run("for-each-ref", f"--format={fmt}", prefix).decode("utf-8", "replace")
        fields = out.split("\0")
        records = []
        for i in range(0, len(fields) - 4, 4):
            ref, commit, when, message = fields[i : i + 4]
            records.append(RefRecord(ref.lstrip("\n"), commit, int(when or 0), message))
        return records


def parse_trailers(message: str) -> dict[str, str]:
    """``Key: value`` lines of the message's last paragraph (git's trailer block)."""
    paragraphs = [p for p in message.strip().split("\n\n") if p.strip()]
    if len(paragraphs) < 2:
        return {}
    trailers = {}
    for line in paragraphs[-1].splitlines():
        key, sep, value = line.partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", key):
            return {}
        trailers[key] = value.strip()
    return trailers
