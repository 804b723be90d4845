"""Checkpoints against real git repositories in tmp dirs (no mocks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pliny.checkpoints import CheckpointStore, delete_session_refs, list_all
from pliny.errors import ToolError, UsageError
from pliny.gitrepo import check_ref_component

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
    out = subprocess.run(["git", *USER, *args], cwd=ws, capture_output=True, text=True)
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


# -- repository states -----------------------------------------------------------


def test_plain_directory_is_initialized(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text("user notes")
    s = store(ws)
    s.write_file("out.md", b"# report", "writer")
    info = s.commit("after-research", "research done", {"Pliny-Phase": "research"})
    assert (ws / ".git").is_dir()
    assert tree_files(ws, info.commit) == {"out.md": "# report"}  # never the user's notes
    assert git(ws, "rev-parse", "refs/pliny/s1/head") == info.commit
    assert git(ws, "log", "-1", "--format=%an <%ae>", info.commit) == "Pliny <pliny@localhost>"


def test_unborn_branch(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws")
    s = store(ws)
    s.write_file("a.txt", b"A", "alice")
    info = s.commit("after-research", "m")
    assert git(ws, "rev-list", "--parents", "-n", "1", info.commit) == info.commit  # root
    assert git(ws, "rev-parse", "--verify", "-q", "HEAD", check=False) == ""  # still unborn
    assert git(ws, "symbolic-ref", "HEAD") == "refs/heads/main"


def test_user_head_index_and_edits_untouched(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws", {"user.txt": "v1", "staged.txt": "s1", "keep.txt": "k"})
    (ws / "user.txt").write_text("unstaged edit")
    (ws / "staged.txt").write_text("staged edit")
    git(ws, "add", "staged.txt")
    (ws / "scratch.txt").write_text("untracked")
    user_head = git(ws, "rev-parse", "HEAD")
    status = git(ws, "status", "--porcelain")
    before = snapshot(ws / ".git")

    s = store(ws)
    s.write_file("src/app.py", b"print('hi')\n", "coder")
    first = s.commit("after-execute", "code")
    s.write_file("src/app.py", b"print('bye')\n", "coder")
    second = s.commit("after-evaluate", "more")

    after = snapshot(ws / ".git")
    for key in ("HEAD", "index", "refs/heads/main"):
        assert after.get(key) == before.get(key), key
    assert git(ws, "rev-parse", "HEAD") == user_head
    assert git(ws, "branch", "--format=%(refname)") == "refs/heads/main"
    extra = {"?? .pliny/", "?? src/"}
    assert set(git(ws, "status", "--porcelain").splitlines()) - extra == set(status.splitlines())
    assert (ws / "user.txt").read_text() == "unstaged edit"
    files = tree_files(ws, second.commit)
    assert files == {"user.txt": "v1", "staged.txt": "s1", "keep.txt": "k",
                     "src/app.py": "print('bye')"}
    assert git(ws, "rev-parse", f"{first.commit}^") == user_head
    assert git(ws, "rev-parse", f"{second.commit}^") == first.commit


def test_signing_config_and_hooks_do_not_break_commits(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws", {"a": "1"})
    git(ws, "config", "commit.gpgsign", "true")
    git(ws, "config", "gpg.program", "false")  # signing would fail
    s = store(ws)
    s.write_file("b", b"2", None)
    assert s.commit("c1", "m").commit == git(ws, "rev-parse", "refs/pliny/s1/checkpoints/c1")


@pytest.mark.parametrize("state", ["merge", "rebase", "cherry-pick", "detached"])
def test_busy_or_detached_repo_is_refused_and_untouched(tmp_path: Path, state: str) -> None:
    ws = make_repo(tmp_path / "ws", {"f.txt": "base"})
    if state == "detached":
        git(ws, "checkout", "-q", "--detach")
    else:
        git(ws, "checkout", "-q", "-b", "other")
        (ws / "f.txt").write_text("other")
        git(ws, "commit", "-qam", "other")
        git(ws, "checkout", "-q", "main")
        (ws / "f.txt").write_text("main")
        git(ws, "commit", "-qam", "main")
        command = {"merge": ["merge", "other"], "rebase": ["rebase", "other"],
                   "cherry-pick": ["cherry-pick", "other"]}[state]
        assert subprocess.run(["git", *USER, *command], cwd=ws, capture_output=True).returncode
    before = snapshot(ws)
    with pytest.raises(UsageError) as err:
        store(ws)
    assert "\n" not in str(err.value) and err.value.exit_code == 2
    word = "detached" if state == "detached" else state.split("-")[0]
    assert word in str(err.value)
    assert snapshot(ws) == before
    assert not (ws / ".pliny").exists()


@pytest.mark.parametrize("how", ["executable", "path"])
def test_git_missing_is_one_clean_line(tmp_path: Path, how: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_PYTHON")}
    if how == "executable":
        env["GIT_PYTHON_GIT_EXECUTABLE"] = str(tmp_path / "no" / "git")
    else:
        env["PATH"] = str(tmp_path / "empty")
    code = (
        "import sys; from pathlib import Path\n"
        "from pliny.checkpoints import CheckpointStore\nfrom pliny.errors import PlinyError\n"
        "try:\n    CheckpointStore(Path(sys.argv[1]), 's', Path(sys.argv[1]) / '.pliny/s')\n"
        "except PlinyError as e:\n    print(type(e).__name__, e.exit_code, e); sys.exit(2)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(ws)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stdout.startswith("UsageError 2 git is not installed")
    assert out.stdout.count("\n") == 1
    assert list(ws.iterdir()) == []


def test_workspace_in_a_subdirectory_of_a_repo(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"top.txt": "t", "sub/old.txt": "o"})
    s = store(repo / "sub")
    s.write_file("new.txt", b"n", "a")
    info = s.commit("c1", "m")
    assert tree_files(repo, info.commit) == {"top.txt": "t", "sub/old.txt": "o", "sub/new.txt": "n"}
    s.write_file("old.txt", b"changed", "a")
    s.commit("c2", "m")
    s.rollback("c1")
    assert (repo / "sub/old.txt").read_text() == "o"
    assert (repo / "sub/new.txt").read_text() == "n"
    assert not (repo / "sub/.git").exists()


# -- commits, names, trailers ------------------------------------------------------


def test_per_agent_checkpoint_holds_only_that_agents_files(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws", {"base.txt": "b"})
    s = store(ws)
    s.write_file("alice.md", b"from alice", "alice")
    s.write_file("bob.md", b"half from bob", "bob")
    a = s.commit("after-research.alice", "alice", agents=["alice"])
    assert set(tree_files(ws, a.commit)) == {"base.txt", "alice.md"}
    assert a.files == ("alice.md",) and a.trailers["Pliny-Agent"] == "alice"
    assert set(s.pending) == {"bob.md"}
    b = s.commit("after-research.bob", "bob", agents=["bob"])
    assert tree_files(ws, b.commit)["bob.md"] == "half from bob"
    assert s.pending == {}


def test_trailers_parse_back_with_plain_git(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws")
    s = store(ws, "sess-42")
    s.write_file("x", b"1", "a")
    trailers = {"Pliny-Phase": "research", "Pliny-Tokens": "1234",
                "Pliny-Cost-USD": "0.0123", "Pliny-Note": "two\nlines"}
    s.commit("after-research", "Research finished\n\nbody text", trailers)
    [info] = s.list()
    assert info.subject == "Research finished"
    assert info.trailers["Pliny-Session"] == "sess-42"
    assert info.trailers["Pliny-Checkpoint"] == "after-research"
    assert info.trailers["Pliny-Note"] == "two lines"
    message = git(ws, "log", "-1", "--format=%B", "refs/pliny/sess-42/head")
    parsed = subprocess.run(["git", "interpret-trailers", "--parse"], input=message,
                            capture_output=True, text=True, check=True).stdout
    expected = {**trailers, "Pliny-Note": "two lines", "Pliny-Session": "sess-42",
                "Pliny-Checkpoint": "after-research", "Pliny-Seq": "1"}
    assert dict(line.split(": ", 1) for line in parsed.splitlines()) == expected
    with pytest.raises(UsageError, match="trailer key"):
        s.commit("c2", "m", {"Bad Key": "x"})


def test_named_refs_are_visible_to_plain_git(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws", {"a": "1"})
    s = store(ws)
    names = ["after-research", "after-identify.alice", "after-identify"]
    for n in names:
        s.write_file(f"{n}.txt", n.encode(), None)
        s.commit(n, f"checkpoint {n}")
    refs = git(ws, "for-each-ref", "--format=%(refname)", "refs/pliny/").splitlines()
    assert set(refs) == {"refs/pliny/s1/head"} | {f"refs/pliny/s1/checkpoints/{n}" for n in names}
    log = git(ws, "log", "--format=%s", "refs/pliny/s1/head").splitlines()
    assert log == [f"checkpoint {n}" for n in reversed(names)] + ["user commit"]
    assert [c.name for c in s.list()] == names
    assert [c.name for c in list_all(ws)["s1"]] == names
    assert delete_session_refs(ws, "s1") == 4
    assert list_all(ws) == {} and git(ws, "for-each-ref", "refs/pliny/") == ""


def test_reusing_a_name_moves_it(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws")
    s = store(ws)
    first = s.commit("after-analyze", "loop 1")
    second = s.commit("after-analyze", "loop 2")
    assert first.commit != second.commit
    assert [(c.name, c.commit) for c in s.list()] == [("after-analyze", second.commit)]


@pytest.mark.parametrize("bad", ["", "a b", "a/b", ".hidden", "x.lock", "a..b", "a~1",
                                 "a:b", "q?", "st*r", "br[", "back\\slash", "end.", "a@{b"])
def test_invalid_names_are_refused(tmp_path: Path, bad: str) -> None:
    ws = make_repo(tmp_path / "ws")
    s = store(ws)
    with pytest.raises(UsageError, match="invalid checkpoint name"):
        s.commit(bad, "m")
    assert git(ws, "for-each-ref", "refs/pliny/") == ""
    with pytest.raises(UsageError, match="invalid session id"):
        store(ws, bad or "/")


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab.@{}~^:?*[\\-_ é\x7f\t")), max_size=8))
def test_name_rules_match_git_check_ref_format(name: str) -> None:
    ref = f"refs/pliny/s/checkpoints/{name}"
    git_ok = subprocess.run(["git", "check-ref-format", ref]).returncode == 0
    try:
        check_ref_component(name)
        ours = True
    except UsageError:
        ours = False
    assert ours == git_ok, name


def test_unknown_checkpoint_lists_known_names(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws")
    s = store(ws)
    with pytest.raises(UsageError, match=r"unknown checkpoint 'nope'.*none yet"):
        s.rollback("nope")
    s.commit("after-research", "m")
    with pytest.raises(UsageError, match=r"known: after-research\)"):
        s.get("nope")


@pytest.mark.parametrize("path", [".pliny/x", "audit-logs/a.jsonl", ".git/config", "d/.GIT/x",
                                  "../out", "/etc/passwd", "", "."])
def test_protected_paths_are_refused(tmp_path: Path, path: str) -> None:
    s = store(make_repo(tmp_path / "ws"))
    with pytest.raises(ToolError):
        s.record_write(path, b"x", "a")
    assert s.pending == {}


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
from pliny.checkpoints import CheckpointStore
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
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(ws), "loop"],
                                 start_new_session=True)
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
