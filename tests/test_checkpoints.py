"""Checkpoints against real git repositories in tmp dirs: repo states, commits, names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pliny.checkpoints.git import Entry, GitRepo, check_ref_component
from pliny.checkpoints.store import CheckpointStore, delete_session_refs, list_all
from pliny.errors import ToolError, UsageError
from tests.gitrepos import USER, git, make_repo, no_git_identity, snapshot, store, tree_files

__all__ = ["no_git_identity"]  # the autouse fixture, imported so pytest applies it here


# -- repository states -----------------------------------------------------------


def test_plain_directory_is_initialized(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text("user notes")
    s = store(ws)
    assert (ws / ".git").is_dir()
    assert git(ws, "config", "user.name", check=False) == ""  # no identity anywhere
    subprocess.run(["git", "config", "user.useConfigOnly", "true"], cwd=ws, check=True)
    s.write_file("out.md", b"# report", "writer")
    info = s.commit("after-research", "research done", {"Pliny-Phase": "research"})
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
    assert files == {
        "user.txt": "v1",
        "staged.txt": "s1",
        "keep.txt": "k",
        "src/app.py": "print('bye')",
    }
    assert git(ws, "rev-parse", f"{first.commit}^") == user_head
    assert git(ws, "rev-parse", f"{second.commit}^") == first.commit


def test_user_edit_after_an_agent_write_is_not_committed(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws", {"a": "1"})
    s = store(ws)
    s.write_file("notes.md", b"agent text", "writer")
    (ws / "notes.md").write_text("the user's rewrite")
    info = s.commit("after-research", "m")
    assert tree_files(ws, info.commit)["notes.md"] == "agent text"
    assert (ws / "notes.md").read_text() == "the user's rewrite"


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
        command = {
            "merge": ["merge", "other"],
            "rebase": ["rebase", "other"],
            "cherry-pick": ["cherry-pick", "other"],
        }[state]
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
        "from pliny.checkpoints.store import CheckpointStore\nfrom pliny.errors import PlinyError\n"
        "try:\n    CheckpointStore(Path(sys.argv[1]), 's', Path(sys.argv[1]) / '.pliny/s')\n"
        "except PlinyError as e:\n    print(type(e).__name__, e.exit_code, e); sys.exit(2)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ws)], env=env, capture_output=True, text=True, timeout=60
    )
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
    trailers = {
        "Pliny-Phase": "research",
        "Pliny-Tokens": "1234",
        "Pliny-Cost-USD": "0.0123",
        "Pliny-Note": "two\nlines",
    }
    s.commit("after-research", "Research finished\n\nbody text", trailers)
    [info] = s.list()
    assert info.subject == "Research finished"
    assert info.trailers["Pliny-Session"] == "sess-42"
    assert info.trailers["Pliny-Checkpoint"] == "after-research"
    assert info.trailers["Pliny-Note"] == "two lines"
    message = git(ws, "log", "-1", "--format=%B", "refs/pliny/sess-42/head")
    parsed = subprocess.run(
        ["git", "interpret-trailers", "--parse"],
        input=message,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    expected = {
        **trailers,
        "Pliny-Note": "two lines",
        "Pliny-Session": "sess-42",
        "Pliny-Checkpoint": "after-research",
        "Pliny-Seq": "1",
    }
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


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "a b",
        "a/b",
        ".hidden",
        "x.lock",
        "a..b",
        "a~1",
        "a:b",
        "q?",
        "st*r",
        "br[",
        "back\\slash",
        "end.",
        "a@{b",
    ],
)
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


_NAMES = st.sampled_from(["a", "a.b", "a-b", "ab", "a0", "b", "é"])
_PATHS = st.lists(_NAMES, min_size=1, max_size=3).map("/".join)


@pytest.fixture(scope="module")
def scratch_repo(tmp_path_factory: pytest.TempPathFactory) -> GitRepo:
    repo = GitRepo.open(make_repo(tmp_path_factory.mktemp("trees")), init=False)
    assert repo is not None
    return repo


@settings(max_examples=60, deadline=None)
@given(
    start=st.lists(_PATHS, max_size=6),
    edits=st.lists(st.tuples(_PATHS, st.booleans()), min_size=1, max_size=6),
)
def test_tree_edits_match_git_write_tree(
    scratch_repo: GitRepo, start: list[str], edits: list[tuple[str, bool]]
) -> None:
    """Editing trees in place gives the same tree id as git's own index + write-tree."""
    repo = scratch_repo
    blob = Entry("100644", repo.store_blob(b"x"))
    index = {"GIT_INDEX_FILE": str(repo.git_dir / "ref-index")}
    repo.run("read-tree", "--empty", env=index)

    def by_git(changes: dict[str, Entry | None]) -> str:
        lines = "".join(
            f"{'0' if e is None else e.mode} {e.sha if e else repo.zero}\t{p}\n"
            for p, e in changes.items()
        )
        repo.run("update-index", "--index-info", input=lines.encode(), env=index)
        return repo.text("write-tree", env=index)

    base_changes: dict[str, Entry | None] = {}
    for path in start:  # a file and a directory cannot share a name: later wins, like git
        base_changes = {
            p: e
            for p, e in base_changes.items()
            if not (p.startswith(path + "/") or path.startswith(p + "/"))
        }
        base_changes[path] = blob
    base = by_git(base_changes)
    assert repo.edit_tree(repo.empty_tree(), base_changes) == base
    changes: dict[str, Entry | None] = {}
    for path, keep in edits:
        changes[path] = Entry("100755", repo.store_blob(path.encode())) if keep else None
    changes = {
        p: e
        for p, e in changes.items()
        if not any(q != p and q.startswith(p + "/") for q in changes)
    }
    ours = repo.edit_tree(base, changes)
    assert ours == by_git(changes)


def test_unknown_checkpoint_lists_known_names(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws")
    s = store(ws)
    with pytest.raises(UsageError, match=r"unknown checkpoint 'nope'.*none yet"):
        s.rollback("nope")
    s.commit("after-research", "m")
    with pytest.raises(UsageError, match=r"known: after-research\)"):
        s.get("nope")


@pytest.mark.parametrize(
    "path",
    [".pliny/x", "audit-logs/a.jsonl", ".git/config", "d/.GIT/x", "../out", "/etc/passwd", "", "."],
)
def test_protected_paths_are_refused(tmp_path: Path, path: str) -> None:
    s = store(make_repo(tmp_path / "ws"))
    with pytest.raises(ToolError):
        s.record_write(path, b"x", "a")
    assert s.pending == {}


@pytest.mark.parametrize("path", ["var/audit/s1.jsonl", "VAR/Audit/s1.jsonl", "var/audit"])
def test_a_nested_audit_dir_is_never_committed(tmp_path: Path, path: str) -> None:
    ws = make_repo(tmp_path / "ws")
    s = CheckpointStore(
        ws, "s1", ws / ".pliny" / "sessions" / "s1", protected=(".pliny", "var/audit")
    )
    with pytest.raises(ToolError, match="never writes or commits"):
        s.record_write(path, b"x", "a")
    s.record_write("var/auditor.md", b"fine", "a")  # a sibling with a longer name is not it
    assert list(s.pending) == ["var/auditor.md"]
