"""Forks stack: a second --rerun (or a rollback) builds on the first, never on an
abandoned branch of the session's graph history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.crashkit import SESSION, agent_of, completed_run, run, script
from tests.fakeserver import FakeServer


@pytest.mark.slow  # ~7 s: real CLI runs
def test_second_rerun_builds_on_the_first(tmp_path: Path) -> None:
    with FakeServer() as server:
        ws = tmp_path / "ws"
        ws.mkdir()
        completed_run(ws, server, "phase")
        server.reset()
        server.script(system="lead analyst", reply="NEW FINDINGS: cheap.")
        script(server)
        assert run(ws, server, "execute", "--rerun", "findings").returncode == 0
        server.reset()
        script(server)
        second = run(ws, server, "execute", "--rerun", "planner")
        assert second.returncode == 0, second.stderr[-1500:]
        planner = [r.body for r in server.requests if agent_of(r.body) == "planner"]
        assert planner, "the planner was asked again"
        assert all("NEW FINDINGS" in json.dumps(body) for body in planner)
        findings = ws / f"pliny-runs/{SESSION}/identify/findings.md"
        assert findings.read_text().startswith("NEW FINDINGS")
        # Only the planner was re-asked. Its (deterministic) answer is the one the
        # first rerun recorded, so the executor's request is identical to a
        # recorded one and is replayed, not paid again.
        asked = {agent_of(r.body) for r in server.requests}
        assert asked == {"planner"}
