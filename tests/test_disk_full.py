"""A full disk under the audit log, for real: the audit dir is a small tmpfs that the fake
server fills up while it answers a call, so that call is paid (and journaled) but its
``llm_call`` event cannot be written (ENOSPC). The run must fail cleanly (one line, exit 1,
resumable, chain intact) and the resume, once space is freed, must record that call as
paid (its real tokens and cost, ``recovered``), exactly once, without re-sending it.

Mounting a tmpfs needs root (or CAP_SYS_ADMIN); the test skips where that is refused.
"""

from __future__ import annotations

import contextlib
import errno
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.crashkit import (
    SESSION,
    completed_run,
    create_session,
    events,
    execute_args,
    init_workspace,
    listed_status,
    run,
    script,
)
from tests.fakeserver import FakeServer

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]  # ~20 s: four R-I-S-E runs
# The findings answer's id makes its llm_call line longer than a tmpfs page, so the line
# cannot fit in the slack left at the end of the log's last page once the disk is full.
FINDINGS_ID = "chatcmpl-" + "f" * 6000
FINDINGS = "FINDINGS: add a cheap /health route."


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Write zeros until the filesystem says ENOSPC: the disk is full."""
    filler = directory / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def filling_reply(directory: Path, state: dict[str, Any]) -> Any:
    """The findings answer; the disk fills up just before the server sends it."""

    def reply(body: dict[str, Any]) -> str:
        state["filler"] = fill(directory)
        return FINDINGS

    return reply


def summary(ws: Path, server: FakeServer) -> dict[str, Any]:
    proc = run(ws, server, "audit", "summary", SESSION, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def paid(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in calls if e["type"] == "llm_call" and not e["replayed"]]


def test_disk_full_on_the_audit_log_never_records_a_paid_call_at_zero(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    # The reference: the same session on a roomy disk.
    ref_ws = tmp_path / "ref"
    ref_ws.mkdir()
    fake_server.script(system="lead analyst", reply=FINDINGS, response_id=FINDINGS_ID)
    completed_run(ref_ws, fake_server, "phase")
    reference_requests = fake_server.count()
    reference = summary(ref_ws, fake_server)
    assert reference["totals"]["cost_usd"] > 0

    fake_server.reset()
    ws = tmp_path / "ws"
    ws.mkdir()
    init_workspace(ws)
    with tmpfs(ws / "audit-logs", "2m") as audit_dir:
        state: dict[str, Any] = {}
        fake_server.script(
            system="lead analyst", reply=filling_reply(audit_dir, state), response_id=FINDINGS_ID
        )
        script(fake_server)
        create_session(ws, fake_server)
        failed = run(ws, fake_server, *execute_args(SESSION, "phase"))
        lines = [s for s in failed.stderr.splitlines() if "ENOSPC" in s]
        assert failed.returncode == 1, failed.stderr[-2000:]
        assert len(lines) == 1 and lines[0].startswith("error: "), failed.stderr[-2000:]
        assert f"free space in {audit_dir}" in lines[0], lines
        assert listed_status(ws, fake_server) == "failed"
        assert run(ws, fake_server, "audit", "verify", SESSION).returncode == 0
        sent = fake_server.count()
        assert all(e.get("request_id") != FINDINGS_ID for e in events(ws)), "it fitted after all"

        # Still full: the resume fails the same clean way and records nothing half-way.
        again = run(ws, fake_server, "session", "resume", SESSION)
        assert again.returncode == 1 and "ENOSPC" in again.stderr, again.stderr[-2000:]
        assert fake_server.count() == sent, "a journaled answer was asked again"

        state["filler"].unlink()  # the disk is fixed
        resumed = run(ws, fake_server, "session", "resume", SESSION)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert listed_status(ws, fake_server) == "completed"
        assert run(ws, fake_server, "audit", "verify", SESSION).returncode == 0

        assert fake_server.count() == reference_requests, "a paid call was sent twice"
        log = events(ws)
        findings = [e for e in paid(log) if e["request_id"] == FINDINGS_ID]
        assert len(findings) == 1, findings
        assert findings[0]["recovered"] and findings[0]["cost_usd"] > 0
        assert findings[0]["prompt_tokens"] > 0
        got = summary(ws, fake_server)
        for key in ("calls", "cost_usd", "prompt_tokens", "completion_tokens"):
            assert got["totals"][key] == pytest.approx(reference["totals"][key]), key
        shown = json.loads(run(ws, fake_server, "session", "show", SESSION, "--json").stdout)
        want = reference["totals"]["cost_usd"]
        assert shown["totals"]["cost_usd"] == pytest.approx(want, abs=1e-6)  # shown rounded
        agents = {a["name"]: a for p in shown["phases"] for a in p["agents"]}
        assert agents["findings"]["cost_usd"] > 0
