"""CLI start-up: `pliny --help` and `pliny session list` wall time, subprocess, median.

`session list` runs in a workspace holding a few sessions (made with `pliny session
start`). Baseline in the same run: `python -c pass` (the interpreter's own start-up).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.benchkit import Result, Row, bench_env, make_workspace, pliny_argv, timed

TARGET_S = 0.3
SESSIONS = 5


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")


def run(quick: bool) -> Result:
    reps = 5 if quick else 11
    env = bench_env("http://127.0.0.1:9/v1")  # never contacted: these commands make no call
    result = Result("cli", details={"reps": reps, "sessions_in_workspace": SESSIONS})
    with tempfile.TemporaryDirectory(prefix="pliny-bench-cli-") as tmp:
        ws = make_workspace(Path(tmp), "ws")
        for i in range(SESSIONS):
            _run(pliny_argv("session", "start", f"bench session {i}"), ws, env)
        python = timed(lambda: _run([sys.executable, "-c", "pass"], ws, env), reps)
        cases = {
            "pliny --help": pliny_argv("--help"),
            "pliny session list": pliny_argv("session", "list"),
            "pliny session list --json": pliny_argv("session", "list", "--json"),
        }
        samples = {
            name: timed(lambda a=argv: _run(a, ws, env), reps) for name, argv in cases.items()
        }
    base = statistics.median(python)
    result.details["python_c_pass_s"] = base
    result.details["runs_s"] = {k: [round(x, 4) for x in v] for k, v in samples.items()}
    for name, runs in samples.items():
        wall = statistics.median(runs)
        result.rows.append(
            Row(name, wall, "s", base, "python -c pass", f"<= {TARGET_S} s", wall <= TARGET_S)
        )
    return result
