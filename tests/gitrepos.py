"""Real git repositories for the checkpoint tests (no mocks)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pliny.checkpoints.store import CheckpointStore

USER = ["-c", "user.name=User", "-c", "user.email=user@example.com"]


@pytest.fixture(autouse=True)
def no_git_identity(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """No global/system git config: Pliny must work with no user.name configured."""
    empty = tmp_path_factory.mktemp("home") / "gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(var, raising=False)


def git(ws: Path, *args: str, check: bool = True) -> str:
    identity = USER if args[0] != "config" else []
    out = subprocess.run(["git", *identity, *args], cwd=ws, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"git {args} failed: {out.stderr}")
    return out.stdout.strip()


def make_repo(ws: Path, files: dict[str, str] | None = None) -> Path:
    ws.mkdir(parents=True, exist_ok=True)
    git(ws, "init", "-q", "-b", "main")
    if files:
        for rel, text in files.items():
            (ws / rel).parent.mkdir(parents=True, exist_ok=True)
            (ws / rel).write_text(text)
        git(ws, "add", "-A")
        git(ws, "commit", "-q", "-m", "user commit")
    return ws


def store(ws: Path, session: str = "s1") -> CheckpointStore:
    return CheckpointStore(ws, session, ws / ".pliny" / "sessions" / session)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (including .git), byte for byte."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def tree_files(ws: Path, rev: str) -> dict[str, str]:
    names = git(ws, "ls-tree", "-r", "--name-only", rev).splitlines()
    return {n: git(ws, "show", f"{rev}:{n}") for n in names}
