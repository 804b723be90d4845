"""An unexpected error (a bug) fails the session cleanly and leaves its traceback in run.log."""

from __future__ import annotations

from pathlib import Path

from pliny.api import run


def test_bug_traceback_is_kept_in_the_session_log(fake_server, tmp_path: Path) -> None:
    def broken_listener(event) -> None:  # stands in for a bug inside Pliny
        if event.type == "phase_started":
            raise RuntimeError("boom-7d1e: listener bug")

    env = {"OPENAI_BASE_URL": fake_server.base_url, "OPENAI_API_KEY": "sk-x"}
    out = run("rise", "t", workspace=tmp_path, env=env, listeners=[broken_listener])
    assert (out.status, out.exit_code) == ("failed", 1)
    assert out.error is not None and out.error.code == "PLINY-SYS-UNEXPECTED"
    log = (tmp_path / ".pliny" / "sessions" / out.session.id / "run.log").read_text()
    assert "unexpected error in session" in log
    assert "Traceback" in log and "boom-7d1e: listener bug" in log
