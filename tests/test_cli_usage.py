"""Typos on the command line: one line on stderr (or the help), exit 2, never a traceback.

Run by subprocess against the installed typer and, in the slow test, against the
typer versions the pyproject lower bound and the newest release resolve to.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import cli

ROOT = Path(__file__).resolve().parents[1]
# typer's lower bound from pyproject.toml: the oldest release our CLI is tested against.
LOWER = re.search(r'"typer>=([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)

# (argv, what the one stderr line must contain)
TYPOS = [
    (["execute", "--bogus"], "No such option: --bogus"),
    (["sesion", "list"], "No such command 'sesion'"),
    (["session", "lst"], "No such command 'lst'"),
    (["execute", "--metrics-port", "x"], "'--metrics-port'"),
    (["session", "start"], "Missing argument 'NAME'"),
    (["audit", "view"], "missing session id"),
    (["session", "list", "--limit", "0"], "Invalid value for '--limit'"),
]
# A group without its sub-command: the group's help, exit 2.
BARE = [([], "session"), (["session"], "start"), (["audit"], "verify")]


def pliny(*args: str, cwd: Path, pythonpath: str | None = None) -> subprocess.CompletedProcess:
    """The CLI with typer from ``pythonpath`` (an older release) or this venv's."""
    env = {"PYTHONPATH": pythonpath or str(ROOT), "COLUMNS": "100"}
    return cli.pliny(cwd, *args, env=env)


def check_typo(proc: subprocess.CompletedProcess, expected: str) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("pliny: error: "), lines[0]
    assert expected.lower() in lines[0].lower(), lines[0]
    assert proc.stdout == ""


def check_bare(proc: subprocess.CompletedProcess, command: str) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.returncode == 2, proc.stderr
    assert "Usage:" in proc.stdout + proc.stderr and command in proc.stdout + proc.stderr


def check_help_alias(cwd: Path, pythonpath: str | None = None) -> None:
    for args in (["-h"], ["session", "-h"], ["execute", "-h"]):
        short, long = (
            pliny(*args, cwd=cwd, pythonpath=pythonpath),
            pliny(*args[:-1], "--help", cwd=cwd, pythonpath=pythonpath),
        )
        assert short.returncode == 0, short.stderr
        assert short.stdout == long.stdout and "Usage:" in short.stdout


@pytest.mark.parametrize(("args", "expected"), TYPOS)
def test_typo_is_one_line_and_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    check_typo(pliny(*args, cwd=tmp_path), expected)


@pytest.mark.parametrize(("args", "command"), BARE)
def test_group_without_subcommand_prints_help_exit_2(
    tmp_path: Path, args: list[str], command: str
) -> None:
    check_bare(pliny(*args, cwd=tmp_path), command)


def test_dash_h_is_help(tmp_path: Path) -> None:
    check_help_alias(tmp_path)


def test_typo_hint_names_the_command(tmp_path: Path) -> None:
    proc = pliny("execute", "--bogus", cwd=tmp_path)
    assert "`pliny execute --help`" in proc.stderr, proc.stderr


def _install(version: str, target: Path) -> None:
    """typer==version and what it resolves to, into a directory that shadows the venv's."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--target",
            str(target),
            f"typer=={version}",
        ]
        if version
        else [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--target",
            str(target),
            "typer",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        pytest.skip(
            f"cannot install typer {version or 'latest'} from the package index "
            f"(offline?): {proc.stderr.strip().splitlines()[-1:]}"
        )


@pytest.mark.slow
@pytest.mark.parametrize("version", [LOWER, ""], ids=["lower-bound", "latest"])
def test_typos_on_the_lower_bound_and_latest_typer(tmp_path: Path, version: str) -> None:
    target = tmp_path / "site"
    _install(version, target)
    pythonpath = f"{target}{os.pathsep}{ROOT}"
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.metadata as m, typer, pliny; "
            "print(m.version('typer'), typer.__file__, pliny.__file__)",
        ],
        env=os.environ | {"PYTHONPATH": pythonpath},
        capture_output=True,
        text=True,
    )
    installed, typer_file, pliny_file = probe.stdout.split()
    assert typer_file.startswith(str(target)) and pliny_file.startswith(str(ROOT)), probe.stdout
    assert not version or installed == version
    for args, expected in TYPOS:
        check_typo(pliny(*args, cwd=tmp_path, pythonpath=pythonpath), expected)
    for args, command in BARE:
        check_bare(pliny(*args, cwd=tmp_path, pythonpath=pythonpath), command)
    check_help_alias(tmp_path, pythonpath)
    listed = pliny("session", "list", cwd=tmp_path, pythonpath=pythonpath)
    assert listed.returncode == 0 and "no sessions" in listed.stdout, listed.stderr
