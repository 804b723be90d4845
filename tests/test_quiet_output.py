"""What Pliny prints: literal text in doctor's table, well-formed log lines, a quiet library."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from pliny.cli.doctor import _render
from pliny.doctor import Check, Report
from pliny.llm.embedded import INSTALL_FIX

CLI = [sys.executable, "-c", "from pliny.cli import main; main()"]
README = Path(__file__).resolve().parent.parent / "README.md"


def _py(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_doctor_table_prints_brackets_literally(tmp_path: Path, capsys, monkeypatch) -> None:
    ws = tmp_path / "proj[local]"  # a path rich would read as markup
    ws.mkdir()
    proc = subprocess.run(
        [*CLI, "doctor", "-w", str(ws)],
        env={**os.environ, "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert "proj[local]" in proc.stdout, proc.stdout
    monkeypatch.setenv("COLUMNS", "400")  # one line per cell
    report = Report(str(ws), [Check("llama-cpp", "warn", "not installed [x]", INSTALL_FIX)])
    _render(report)
    table = capsys.readouterr().out
    assert "pip install 'pliny-orchestrator[local]'" in table and "[x]" in table


def test_warnings_on_stderr_are_formatted_not_logging_errors() -> None:
    code = (
        "from pliny import logs; logs.setup()\n"
        "from pliny.logs import logger; logger.warning('disk {} nearly full', 'sda')\n"
        "from loguru import logger as host; host.warning('alert x fired')\n"  # alerts.py's logger
    )
    proc = _py(code)
    assert "Logging error" not in proc.stderr
    assert proc.stderr.splitlines() == [
        "pliny: warning: disk sda nearly full",
        "pliny: warning: alert x fired",
    ]


def test_bad_pliny_log_level_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*CLI, "session", "list", "-w", str(tmp_path)],
        env={**os.environ, "PLINY_LOG": "loud"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "pliny: error: PLINY_LOG='loud' is not a log level "
        "(use debug, info, success, warning, error or critical)"
    ]


def test_api_run_writes_nothing_to_stderr(fake_server, tmp_path: Path) -> None:
    fake_server.fail(503, times=1)  # a retry: DEBUG lines, with a traceback, in run.log
    code = (
        "import sys; from pliny.api import run\n"
        f"env = {{'OPENAI_BASE_URL': {fake_server.base_url!r}, 'OPENAI_API_KEY': 'sk-quiet'}}\n"
        f"out = run('rise', 'Document it', workspace={str(tmp_path)!r}, env=env)\n"
        "print(out.status, out.session.id)\n"
    )
    proc = _py(code)
    status, session = proc.stdout.split()
    assert (status, proc.stderr) == ("completed", "")
    log = (tmp_path / ".pliny" / "sessions" / session / "run.log").read_text()
    assert "run 1 of session" in log and "attempt 1 failed" in log  # still complete


def test_readme_says_alert_commands_run_without_a_shell() -> None:
    text = " ".join(README.read_text().split())
    assert re.search(r"alert `command`.*without a shell", text)
    assert "shlex.split" in text and "PLINY_ALERT_VALUE" in text
