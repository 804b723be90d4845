"""kill -9 a real writer process mid-stream: every acknowledged event survives.

The child writes llm_call events as fast as it can and prints each event's
seq *after* the write returned (the acknowledgement). The parent SIGKILLs it
at a random point after at least 200 acks, reopens the log (repairing any
torn tail) and checks that every acked event is there, intact, and that the
chain verifies.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pliny.audit.reader import read_events
from pliny.audit.writer import AuditLog, verify
from pliny.events import SessionResumed

CHILD = textwrap.dedent(
    """
    import sys
    from pliny.audit.writer import AuditLog
    from pliny.events import LLMCall

    log = AuditLog(sys.argv[1], fsync=sys.argv[2], group_commit_ms=50)
    out, i = sys.stdout, 0
    while True:
        event = LLMCall(session="crash", phase="p", agent=f"a{i % 4}", model="gpt-4o",
                        prompt_tokens=i, completion_tokens=7, request_id=f"req-{i}",
                        finish_reason="stop " * (i % 50))
        log(event)
        out.write(f"{event.seq}\\n")
        out.flush()
        i += 1
    """
)


def _run_and_kill(path: Path, policy: str, min_acks: int, rng: random.Random) -> list[int]:
    """Start the writer, SIGKILL it after ``min_acks``+random acks; all acked seqs."""
    stop_after = min_acks + rng.randrange(0, 200)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), policy],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    acked: list[int] = []
    try:
        for line in child.stdout:
            acked.append(int(line))
            if len(acked) >= stop_after:
                os.kill(child.pid, signal.SIGKILL)
                break
        # acks already in the pipe were printed after their write returned: they count
        acked.extend(int(line) for line in child.stdout.read().split())
    finally:
        child.kill()
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL, "the writer died before it was killed"
    return acked


@pytest.mark.timeout(60)
@pytest.mark.parametrize("policy", ["every_event", "group"])
def test_sigkill_loses_no_acknowledged_event(tmp_path: Path, policy: str) -> None:
    rng = random.Random(20250806)
    path = tmp_path / "crash.jsonl"
    rounds = 3 if policy == "every_event" else 1
    all_acked: list[int] = []
    for round_no in range(rounds):
        acked = _run_and_kill(path, policy, 200, rng)
        assert len(acked) >= 200 and acked == list(range(acked[0], acked[-1] + 1))
        all_acked += acked
        with AuditLog(path) as log:  # repairs a torn tail, if the kill left one
            log(SessionResumed(session="crash", from_status="crashed"))
        events = read_events(path)
        by_seq = {e.seq: e for e in events}
        missing = [s for s in all_acked if s not in by_seq]
        assert not missing, f"round {round_no}: acknowledged events lost: {missing[:10]}"
        result = verify(path)
        assert result.ok, f"round {round_no}: {result}"
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # content check: each acked llm_call holds what the child wrote for it
    calls = [e for e in read_events(path) if e.type == "llm_call"]
    for event in calls:
        assert event.request_id == f"req-{event.prompt_tokens}"
        assert event.finish_reason == "stop " * (event.prompt_tokens % 50)
    assert len(calls) >= len(all_acked)
    print(f"{policy}: {rounds} kills, {len(all_acked)} acked, {len(calls)} events on disk")
