"""A workspace shared with others: a larger git repo around it, other sessions in it.

Real `pliny execute` subprocesses against the fake server, real git repos.
Pliny's own state (``.pliny/``, the audit dir) never shows in the enclosing
repo's ``git status``; a second session never silently overwrites the first
one's deliverable.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.fakeserver import FakeServer
from tests.gitrepos import git, make_repo
from tests.support import cli


def pliny(ws: Path, server: FakeServer, *args: str) -> subprocess.CompletedProcess:
    return cli.pliny(ws, *args, server=server, timeout=120)


def untracked(repo: Path) -> list[str]:
    return git(repo, "status", "--porcelain", "--untracked-files=all").splitlines()


# -- 17a: Pliny's own dirs stay out of the enclosing repo's `git status` ---------------------


@pytest.mark.parametrize("checkpoint", ["phase", "none"])
def test_state_dirs_do_not_show_in_a_parent_repo(
    tmp_path: Path, fake_server: FakeServer, checkpoint: str
) -> None:
    parent = make_repo(tmp_path / "monorepo", {"README.md": "the big repo\n"})
    ws = parent / "services" / "api"
    ws.mkdir(parents=True)
    (ws / "pliny.yaml").write_text("audit:\n  dir: logs/audit\n")  # a nested audit dir too
    proc = pliny(ws, fake_server, "execute", "-f", "rise", "-t", "hi", "--checkpoint", checkpoint)
    assert proc.returncode == 0, proc.stderr
    assert (ws / ".pliny" / "current").is_file() and any((ws / "logs" / "audit").iterdir())
    status = untracked(parent)
    assert not [s for s in status if "/.pliny/" in s or "/logs/audit/" in s], status
    # the user's own files still show: only Pliny's state is hidden
    assert any(s.endswith("services/api/pliny.yaml") for s in status), status
    assert any(s.endswith("services/api/DELIVERABLE.md") for s in status), status


def test_state_dirs_do_not_show_in_the_workspace_repo(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    ws = make_repo(tmp_path / "ws", {"app.py": "print('hi')\n"})
    proc = pliny(ws, fake_server, "execute", "-f", "rise", "-t", "hi")
    assert proc.returncode == 0, proc.stderr
    status = untracked(ws)
    assert not [s for s in status if ".pliny/" in s or "audit-logs/" in s], status


# -- 17b: two sessions, one DELIVERABLE.md -------------------------------------------------


def summary(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow  # ~6 s: real CLI runs
def test_a_second_session_does_not_overwrite_the_first_ones_deliverable(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    executor = "careful implementer"  # the rise executor's role
    fake_server.script(system=executor, user="task-one", reply="FIRST SESSION'S ANSWER")
    fake_server.script(system=executor, user="task-two", reply="SECOND SESSION'S ANSWER")
    first = summary(
        pliny(tmp_path, fake_server, "execute", "-f", "rise", "-t", "task-one", "--json")
    )
    assert "DELIVERABLE.md" in first["files_written"]
    assert (tmp_path / "DELIVERABLE.md").read_text().strip() == "FIRST SESSION'S ANSWER"

    proc = pliny(tmp_path, fake_server, "execute", "-f", "rise", "-t", "task-two")
    assert proc.returncode == 0, proc.stderr
    session = (tmp_path / ".pliny" / "current").read_text().strip()
    assert session != first["session"]
    suffixed = f"DELIVERABLE-{session}.md"
    assert (tmp_path / "DELIVERABLE.md").read_text().strip() == "FIRST SESSION'S ANSWER"
    assert (tmp_path / suffixed).read_text().strip() == "SECOND SESSION'S ANSWER"
    flat = " ".join(proc.stderr.split())
    # said, not silent: which file was written instead, and whose file it left alone
    assert f"wrote {suffixed}" in flat and first["session"] in flat, proc.stderr
    assert "outputs: " in flat and suffixed in flat.split("outputs: ")[1]

    # the first session, run again, still owns and rewrites DELIVERABLE.md
    fake_server.reset()
    fake_server.script(system=executor, reply="FIRST, REVISED")
    again = pliny(tmp_path, fake_server, "execute", "-s", first["session"], "--rerun", "executor")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "DELIVERABLE.md").read_text().strip() == "FIRST, REVISED"
    assert (tmp_path / suffixed).read_text().strip() == "SECOND SESSION'S ANSWER"


def test_a_users_own_deliverable_md_is_not_overwritten(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    (tmp_path / "DELIVERABLE.md").write_text("my own notes\n")
    proc = pliny(tmp_path, fake_server, "execute", "-f", "rise", "-t", "hi")
    assert proc.returncode == 0, proc.stderr
    session = (tmp_path / ".pliny" / "current").read_text().strip()
    assert (tmp_path / "DELIVERABLE.md").read_text() == "my own notes\n"
    assert (tmp_path / f"DELIVERABLE-{session}.md").read_text().strip()
    flat = " ".join(proc.stderr.split())
    assert f"wrote DELIVERABLE-{session}.md" in flat and "not written by" in flat, proc.stderr
