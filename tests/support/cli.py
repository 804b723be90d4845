"""Run the real `pliny` CLI in a subprocess: the one helper every CLI test uses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.fakeserver import FakeServer

ENTRY = "from pliny.cli import main; main()"
# `python -c`, not the installed script: the subprocess imports this worktree's pliny
# through the inherited PYTHONPATH.
CLI = [sys.executable, "-c", ENTRY]
TEST_KEY = "sk-test"
# The one stderr line of a config error that points into a YAML file.
LOCATED = re.compile(r"^pliny: error: (?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<what>.+)$")


def cli_env(
    server: FakeServer | None = None,
    env: Mapping[str, str] | None = None,
    *,
    drop: tuple[str, ...] = (),
) -> dict[str, str]:
    """os.environ without the caller's own OPENAI_* (nor ``drop``-prefixed) variables,
    pointed at ``server`` when given; ``env`` is laid on top and wins."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", *drop))}
    if server is not None:
        base |= {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": TEST_KEY}
    return base | dict(env or {})


def pliny(
    cwd: Path,
    *args: str,
    server: FakeServer | None = None,
    env: Mapping[str, str] | None = None,
    drop: tuple[str, ...] = (),
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``pliny ARGS`` run in ``cwd``; stdout and stderr captured as text."""
    return subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        env=cli_env(server, env, drop=drop),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
