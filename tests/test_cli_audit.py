"""`pliny audit view|summary|verify`, run as real subprocesses."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from pliny.audit.writer import AuditLog
from pliny.events import LLMCall, SessionCompleted, SessionStarted
from tests.audit_samples import sample_session
from tests.support.cli import CLI, pliny


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace whose config moves the audit dir, holding session 'demo'."""
    root = tmp_path_factory.mktemp("ws")
    (root / "pliny.yaml").write_text("audit:\n  dir: logs/audit\n")
    with AuditLog(root / "logs" / "audit" / "demo.jsonl") as log:
        for event in sample_session("demo"):
            log(event)
    return root


def view_json(ws: Path, *args: str) -> list[dict]:
    result = pliny(ws, "audit", "view", "demo", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # the whole stdout is one JSON document


def test_view_json_and_filters(ws: Path) -> None:
    every = view_json(ws)
    assert [e["seq"] for e in every] == list(range(1, 24))
    assert len(view_json(ws, "--type", "llm_call")) == 4
    bob = view_json(ws, "--type", "llm_call,retry", "--agent", "bob")
    assert [e["type"] for e in bob] == ["retry", "llm_call"]
    assert bob[1]["cost_usd"] is None and bob[1]["tokens_estimated"] is True
    identify = view_json(ws, "-p", "identify", "-t", "llm_call", "-t", "agent_completed")
    assert [(e["type"], e["agent"]) for e in identify] == [
        ("llm_call", "carol"),
        ("llm_call", "carol"),
        ("agent_completed", "carol"),
    ]


def test_view_table(ws: Path) -> None:
    result = pliny(ws.parent, "audit", "view", "demo", "-w", str(ws))
    assert result.returncode == 0, result.stderr
    for text in ("llm_call", "mystery-model", "unpriced", "crash_detected", "carol"):
        assert text in result.stdout


def test_summary_json_and_table(ws: Path) -> None:
    result = pliny(ws, "audit", "summary", "demo", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    totals = summary["totals"]
    assert (totals["calls"], totals["replayed_calls"], totals["unpriced_calls"]) == (3, 1, 1)
    assert (totals["prompt_tokens"], totals["completion_tokens"]) == (2300, 600)
    assert totals["cost_usd"] == pytest.approx(0.03)
    assert [p["name"] for p in summary["phases"]] == ["research", "identify"]
    assert [h["type"] for h in summary["history"]][-2:] == ["rollback", "session_completed"]
    text = pliny(ws, "audit", "summary", "demo")
    assert text.returncode == 0, text.stderr
    for word in ("research", "identify", "unpriced", "mystery-model", "rollback", "resumed"):
        assert word in text.stdout


def test_verify_ok_then_tampered(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit-logs" / "t.jsonl") as log:
        for event in sample_session("t"):
            log(event)
    ok = pliny(tmp_path, "audit", "verify", "t")
    assert ok.returncode == 0 and "23 events" in ok.stdout
    path = tmp_path / "audit-logs" / "t.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[4] = lines[4].replace(b'"prompt_tokens":1000', b'"prompt_tokens":10')
    path.write_bytes(b"".join(lines))
    bad = pliny(tmp_path, "audit", "verify", "t")
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and f"{path}:5:" in bad.stderr and "edited" in bad.stderr
    as_json = pliny(tmp_path, "audit", "verify", "t", "--json")
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and (report["ok"], report["first_bad_line"]) == (False, 5)


@pytest.mark.parametrize(
    "args",
    [
        ("view", "nope"),
        ("summary", "nope", "--json"),
        ("verify", "nope"),
        ("view", "../../etc/passwd"),
        ("view", "demo", "--type", "llm_cal"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(ws: Path, args: tuple[str, ...]) -> None:
    result = pliny(ws, "audit", *args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("pliny: error: ") and result.stderr.count("\n") == 1


@pytest.mark.timeout(60)
def test_follow_streams_events_written_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "audit-logs" / "live.jsonl"
    log = AuditLog(path)
    log(SessionStarted(session="live"))
    follower = subprocess.Popen(
        [*CLI, "audit", "view", "live", "--follow", "--json", "-t", "llm_call,session_completed"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for i in range(15):
            time.sleep(0.02)
            log(LLMCall(session="live", agent="a", model="gpt-4o", prompt_tokens=i))
        log(SessionCompleted(session="live"))
        out, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
        log.close()
    assert follower.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["prompt_tokens"] for e in events[:-1]] == list(range(15))
    assert [e["seq"] for e in events] == list(range(2, 18))
    assert events[-1]["type"] == "session_completed"
