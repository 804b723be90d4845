"""Rollback, crash safety and concurrency of checkpoints, with real git and real kills."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pliny.checkpoints.store import CheckpointStore
from pliny.errors import UsageError
from tests.gitrepos import git, make_repo, no_git_identity, snapshot, store, tree_files

__all__ = ["no_git_identity"]  # the autouse fixture, imported so pytest applies it here


# -- rollback ------------------------------------------------------------------------


def _three_checkpoints(ws: Path) -> CheckpointStore:
    s = store(ws)
    s.write_file("report.md", b"v1", "a")
    s.commit("after-research", "r")
    s.write_file("report.md", b"v2", "a")
    s.write_file("deep/dir/new.txt", b"later", "b")
    s.commit("after-identify", "i")
    return s


def test_rollback_restores_content_and_deletes_later_files(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws", {"user.txt": "u"})
    s = _three_checkpoints(ws)
    s.write_file("uncommitted.txt", b"pending", "c")
    result = s.rollback("after-research")
    assert (ws / "report.md").read_bytes() == b"v1"
    assert not (ws / "deep").exists() and not (ws / "uncommitted.txt").exists()
    assert result.restored == ["report.md"]
    assert result.deleted == ["deep/dir/new.txt", "uncommitted.txt"]
    assert git(ws, "rev-parse", "refs/pliny/s1/head") == s.get("after-research").commit
    assert s.pending == {}
    s.write_file("report.md", b"v3", "a")
    again = s.commit("after-identify", "redo")
    assert git(ws, "rev-parse", f"{again.commit}^") == s.get("after-research").commit
    assert tree_files(ws, again.commit) == {"user.txt": "u", "report.md": "v3"}
    forward = s.rollback("after-research")  # and it survives a new process
    assert forward.restored == ["report.md"]
    assert store(ws).rollback("after-research").restored == []


def test_rollback_refuses_user_edits_and_changes_nothing(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws", {"user.txt": "u"})
    s = _three_checkpoints(ws)
    (ws / "report.md").write_text("the user's own edit")
    (ws / "user.txt").write_text("never managed")
    before = snapshot(ws)
    with pytest.raises(UsageError, match="report.md") as err:
        s.rollback("after-research")
    assert "\n" not in str(err.value) and "--force" in str(err.value)
    assert snapshot(ws) == before
    result = s.rollback("after-research", force=True)
    assert result.overwritten == ["report.md"]
    assert (ws / "report.md").read_bytes() == b"v1"
    assert (ws / "user.txt").read_text() == "never managed"  # never Pliny's


def test_rollback_brings_back_the_users_uncommitted_versions(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws", {"tracked.txt": "committed", "gone.txt": "g"})
    (ws / "tracked.txt").write_text("user's uncommitted edit")
    (ws / "untracked.txt").write_text("user's untracked file")
    (ws / "gone.txt").unlink()
    s = store(ws)
    s.commit("start", "nothing yet")
    for rel in ("tracked.txt", "untracked.txt", "gone.txt"):
        s.write_file(rel, b"agent", "a")
    info = s.commit("after-execute", "x")
    assert tree_files(ws, info.commit)["tracked.txt"] == "agent"
    s.rollback("start")
    assert (ws / "tracked.txt").read_text() == "user's uncommitted edit"
    assert (ws / "untracked.txt").read_text() == "user's untracked file"
    assert not (ws / "gone.txt").exists()
    assert "user's" not in "".join(tree_files(ws, s.get("start").commit).values())


def test_tool_layer_flow_capture_then_write_then_record(tmp_path: Path) -> None:
    """How a tool that writes files itself keeps the user's version restorable."""
    ws = make_repo(tmp_path / "ws", {"cfg.ini": "committed"})
    (ws / "cfg.ini").write_text("user's uncommitted tweak")
    s = store(ws)
    s.commit("start", "m")
    s.capture_preimage("cfg.ini")
    (ws / "cfg.ini").write_bytes(b"agent")  # the tool's own write
    s.record_write("cfg.ini", b"agent", "a")
    s.commit("after-execute", "m")
    s.rollback("start")
    assert (ws / "cfg.ini").read_text() == "user's uncommitted tweak"


def test_rollback_restores_the_executable_bit(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws")
    s = store(ws)
    s.write_file("run.sh", b"#!/bin/sh\necho 1\n", "a")
    os.chmod(ws / "run.sh", 0o755)
    s.record_write("run.sh", (ws / "run.sh").read_bytes(), "a")
    s.commit("c1", "m")
    assert git(ws, "ls-tree", "refs/pliny/s1/head", "run.sh").startswith("100755")
    s.write_file("run.sh", b"#!/bin/sh\necho 2\n", "a")
    s.commit("c2", "m")
    os.chmod(ws / "run.sh", 0o644)
    s.rollback("c1")
    assert os.stat(ws / "run.sh").st_mode & 0o111


def test_rollback_refuses_a_symlinked_directory_leading_outside(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws")
    s = store(ws)
    s.write_file("d/f.txt", b"1", "a")
    s.commit("c1", "m")
    s.write_file("d/f.txt", b"2", "a")
    s.commit("c2", "m")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.txt").write_bytes(b"2")
    (ws / "d/f.txt").unlink()
    (ws / "d").rmdir()
    (ws / "d").symlink_to(outside)
    with pytest.raises(UsageError, match="outside the workspace"):
        s.rollback("c1")
    assert (outside / "f.txt").read_bytes() == b"2"


def test_interrupted_rollback_blocks_commits_until_rerun(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws")
    s = _three_checkpoints(ws)
    state_file = ws / ".pliny/sessions/s1/checkpoints.json"
    state = json.loads(state_file.read_text())
    target = s.get("after-research").commit
    state["rollback"] = {"name": "after-research", "commit": target}
    state_file.write_text(json.dumps(state))
    (ws / "report.md").write_bytes(b"v1")  # the crash happened after this file was restored
    reopened = store(ws)
    with pytest.raises(UsageError, match="interrupted"):
        reopened.commit("c3", "m")
    assert reopened.rollback("after-research").deleted == ["deep/dir/new.txt"]
    reopened.commit("c3", "m")


def test_corrupt_state_file_is_one_clear_line(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws")
    store(ws)
    state_file = ws / ".pliny/sessions/s1/checkpoints.json"
    state_file.write_text("{not json")
    with pytest.raises(UsageError, match="checkpoints.json: corrupt checkpoint state") as err:
        store(ws)
    assert "\n" not in str(err.value)


def test_rollback_refused_when_repo_becomes_busy(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws", {"a": "1"})
    s = _three_checkpoints(ws)
    (ws / ".git" / "MERGE_HEAD").write_text(git(ws, "rev-parse", "HEAD") + "\n")
    before = snapshot(ws)
    with pytest.raises(UsageError, match="merge"):
        s.rollback("after-research")
    assert snapshot(ws) == before


# -- crash safety, concurrency, integrity -----------------------------------------

_CHILD = """
import os, signal, sys
from pathlib import Path
from pliny.checkpoints.store import CheckpointStore
ws = Path(sys.argv[1]); mode = sys.argv[2]
s = CheckpointStore(ws, "s1", ws / ".pliny/sessions/s1")
if mode == "write":
    s.write_file("survives.txt", b"written before the kill", "alice")
    os.kill(os.getpid(), signal.SIGKILL)
i = 0
while True:  # commit until killed
    i += 1
    s.write_file(f"f{i % 7}.txt", str(i).encode(), "a")
    s.commit(f"c{i % 5}", "loop")
"""


def test_pending_writes_survive_kill_9(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws", {"a": "1"})
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(ws), "write"], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    s = store(ws)
    assert list(s.pending) == ["survives.txt"] and s.pending["survives.txt"][1] == "alice"
    info = s.commit("after-research", "m")
    assert tree_files(ws, info.commit)["survives.txt"] == "written before the kill"


def test_kill_9_during_commits_leaves_a_consistent_store(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws", {"a": "1"})
    for delay in (0.45, 0.6, 0.75):
        # its own process group, so the kill also takes the git child it may be running
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(ws), "loop"], start_new_session=True
        )
        try:
            child.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        s = store(ws)
        latest = s.list()[-1] if s.list() else None
        if latest is not None:  # nothing on disk may look like a user edit after a crash
            s.rollback(latest.name)
            for rel, text in tree_files(ws, latest.commit).items():
                assert (ws / rel).read_text() == text, rel
        s.write_file("after.txt", str(delay).encode(), "z")
        s.commit("after-crash", "m")
    assert max(c.seq for c in store(ws).list()) > 3 + 5  # the children did commit
    fsck = subprocess.run(["git", "fsck", "--strict"], cwd=ws, capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr


def test_locks_left_by_a_killed_git_are_cleared(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws", {"a": "1"})
    store(ws).commit("c1", "m")
    (ws / ".git/refs/pliny/s1/head.lock").write_text("")
    (ws / ".pliny/sessions/s1/checkpoints.next.lock").write_text("")
    s = store(ws)
    assert s.commit("c2", "m").commit == git(ws, "rev-parse", "refs/pliny/s1/head")


def test_threads_commit_serially(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws", {"a": "1"})
    s = store(ws)
    errors: list[BaseException] = []

    def agent(name: str) -> None:
        try:
            for i in range(8):
                s.write_file(f"{name}.txt", f"{name} {i}".encode(), name)
                s.commit(f"after-p{i}.{name}", f"{name} {i}", agents=[name])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=agent, args=(f"agent{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    infos = s.list()
    assert sorted(c.seq for c in infos) == list(range(1, 33))
    assert git(ws, "rev-list", "--count", "refs/pliny/s1/head") == "33"  # linear chain
    for info in infos:
        name = info.name.split(".")[1]
        assert tree_files(ws, info.commit)[f"{name}.txt"] == f"{name} {info.name[7]}"
    fsck = subprocess.run(["git", "fsck", "--strict"], cwd=ws, capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr


def test_fsck_clean_after_many_commits_and_rollbacks(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws", {"a": "1"})
    s = store(ws)
    for i in range(40):
        s.write_file(f"d{i % 4}/f{i % 9}.txt", str(i).encode(), f"a{i % 3}")
        if i % 7 == 3:
            s.record_delete(f"d{i % 4}/f{(i + 1) % 9}.txt", "a0")
            (ws / f"d{i % 4}/f{(i + 1) % 9}.txt").unlink(missing_ok=True)
        s.commit(f"c{i}", f"commit {i}", {"Pliny-Tokens": str(i * 10)})
        if i % 13 == 12:
            s.rollback(f"c{i - 5}")
    fsck = subprocess.run(["git", "fsck", "--strict"], cwd=ws, capture_output=True, text=True)
    assert fsck.returncode == 0 and "error" not in fsck.stderr, fsck.stderr
    head = git(ws, "rev-parse", "refs/pliny/s1/head")
    for rel, text in tree_files(ws, head).items():
        assert (ws / rel).read_text() == text
