"""The audit log writer, tail repair, verify, reader and follow."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pliny.audit.reader import filter_events, follow, read_events, read_log
from pliny.audit.writer import GENESIS, AuditLog, verify
from pliny.errors import SystemFailure
from pliny.events import (
    KNOWN,
    TRANSIENT,
    Error,
    Event,
    PhaseStarted,
    SessionCompleted,
    SessionFailed,
    SessionResumed,
    ToolCall,
)
from tests.audit_samples import every_event_type, llm_call


def write(path: Path, events: list[Event], fsync: str = "none") -> None:
    with AuditLog(path, fsync=fsync) as log:  # type: ignore[arg-type]
        for event in events:
            log(event)


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def strip_chain(data: dict) -> dict:
    return {k: v for k, v in data.items() if k not in ("prev", "hash")}


# -- writer and reader ----------------------------------------------------------


def test_round_trip_every_event_type(tmp_path: Path) -> None:
    path = tmp_path / "s1.jsonl"
    every = every_event_type()
    sent = [e for e in every if e.type not in TRANSIENT]  # bus-only events are never logged
    assert {e.type for e in sent} >= {"llm_call", "circuit_closed", "log_repaired"}
    write(path, every, fsync="every_event")
    got = read_events(path)
    assert [e.seq for e in got] == list(range(1, len(sent) + 1))
    for original, back in zip(sent, got, strict=True):
        assert type(back) is type(original)
        assert strip_chain(back.model_dump()) == original.model_dump()
    assert len(KNOWN) - len(TRANSIENT) <= len(got)


def test_unknown_future_types_and_fields_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write(path, [Event(type="quantum_call", qubits=3), Error(message="x", severity="high")])
    first, second = read_events(path)
    assert first.type == "quantum_call" and first.model_extra["qubits"] == 3
    assert isinstance(second, Error) and second.model_extra["severity"] == "high"
    assert verify(path).ok


def test_odd_text_is_written_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    texts = ["naïve ☃ 日本", 'line\nbreak "quoted" \\ back', "lone \ud800 surrogate", ""]
    write(path, [Error(message=t) for t in texts])
    assert [e.message for e in read_events(path)] == texts
    assert verify(path).ok and len(lines(path)) == 4


def test_each_event_is_one_line_with_chain_fields(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write(path, [PhaseStarted(phase="p"), llm_call(1), SessionCompleted()])
    raw = lines(path)
    assert len(raw) == 3 and all(line.endswith(b"\n") for line in raw)
    records = [json.loads(line) for line in raw]
    assert records[0]["prev"] == GENESIS
    for before, record in zip(raw, records[1:], strict=False):
        assert record["prev"] == hashlib.sha256(before[:-1]).hexdigest()
    assert list(records[0])[-1] == "hash"


def test_seq_continues_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write(path, [llm_call(i) for i in range(3)])
    with AuditLog(path) as log:
        assert log.last_seq == 3 and log.repaired is None
        event = llm_call(9)
        log(event)
        assert event.seq == 4
    write(path, [SessionCompleted()])
    assert [e.seq for e in read_events(path)] == [1, 2, 3, 4, 5]
    assert verify(path).ok


def test_closed_log_refuses_writes(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "s.jsonl")
    log.close()
    with pytest.raises(SystemFailure, match="closed"):
        log(SessionCompleted())


@pytest.mark.parametrize("policy", ["every_event", "group", "none"])
def test_concurrent_writers_keep_one_chain(tmp_path: Path, policy: str) -> None:
    path = tmp_path / "s.jsonl"
    log = AuditLog(path, fsync=policy, group_commit_ms=5)  # type: ignore[arg-type]

    def work(n: int) -> None:
        for i in range(150):
            log(llm_call(n * 1000 + i))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    assert not any(t.name == "pliny-audit-fsync" for t in threading.enumerate())
    result = verify(path)
    assert result.ok and result.events == 600
    assert sorted(e.request_id for e in read_events(path)) == sorted(
        f"chatcmpl-{n * 1000 + i:012d}" for n in range(4) for i in range(150)
    )


def test_secrets_never_reach_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    canary = "canary-7f3a9c1e5b2d"
    monkeypatch.setenv("PLINY_TEST_API_KEY", canary)
    monkeypatch.setenv("SOME_PASSWORD", "hunter2hunter2")
    path = tmp_path / "s.jsonl"
    events = [
        Error(message=f"upstream said: invalid key {canary}"),
        ToolCall(tool="http", arguments={"headers": {"Authorization": "Bearer abcdef123456"}}),
        ToolCall(tool="x", arguments={"nested": [f"pw hunter2hunter2 and {canary}"]}),
        Error(message="leaked sk-proj-AbCdEf0123456789xyz in a traceback"),
        Error(message="a normal message about sk- prefixes and tokens"),
    ]
    write(path, events)
    data = path.read_bytes()
    for secret in (canary, "hunter2hunter2", "abcdef123456", "sk-proj-AbCdEf0123456789xyz"):
        assert secret.encode() not in data
    assert data.count(b"[REDACTED]") == 5
    assert read_events(path)[-1].message == "a normal message about sk- prefixes and tokens"
    assert verify(path).ok


# -- verify ---------------------------------------------------------------------


@pytest.fixture
def ten(tmp_path: Path) -> Path:
    path = tmp_path / "s.jsonl"
    write(path, [llm_call(i) for i in range(10)])
    return path


def test_verify_passes_on_an_intact_log(ten: Path) -> None:
    result = verify(ten)
    assert (result.ok, result.events, result.first_bad_line) == (True, 10, None)


def test_verify_detects_a_removed_line(ten: Path) -> None:
    raw = lines(ten)
    ten.write_bytes(b"".join(raw[:4] + raw[5:]))
    result = verify(ten)
    assert not result.ok and result.first_bad_line == 5 and "seq 6" in result.reason


def test_verify_detects_reordered_lines(ten: Path) -> None:
    raw = lines(ten)
    raw[6], raw[7] = raw[7], raw[6]
    ten.write_bytes(b"".join(raw))
    assert verify(ten).first_bad_line == 7


def test_verify_detects_an_inserted_line(ten: Path) -> None:
    raw = lines(ten)
    ten.write_bytes(b"".join(raw[:3] + [raw[1]] + raw[3:]))
    assert verify(ten).first_bad_line == 4


def test_verify_detects_an_edited_line(ten: Path) -> None:
    raw = lines(ten)
    record = json.loads(raw[2])
    record["completion_tokens"] = 1  # cheaper than it was
    raw[2] = json.dumps(record, separators=(",", ":")).encode() + b"\n"
    ten.write_bytes(b"".join(raw))
    result = verify(ten)
    assert result.first_bad_line == 3 and "hash" in result.reason


def test_verify_detects_an_edit_with_a_recomputed_own_hash(ten: Path) -> None:
    from pliny.audit.writer import encode_line

    raw = lines(ten)
    record = json.loads(raw[2])
    del record["hash"]
    record["cost_usd"] = 0.0
    raw[2] = encode_line(record)  # own hash is right, the next line's prev is not
    ten.write_bytes(b"".join(raw))
    result = verify(ten)
    assert result.first_bad_line == 4 and "prev" in result.reason


def test_verify_reports_an_invalid_middle_line_and_reopen_leaves_it(ten: Path) -> None:
    raw = lines(ten)
    raw[4] = b"garbage\n"
    ten.write_bytes(b"".join(raw))
    with AuditLog(ten) as log:
        assert log.repaired is None and log.last_seq == 10
    assert verify(ten).first_bad_line == 5


def test_verify_accepts_but_reports_a_torn_tail_before_repair(ten: Path) -> None:
    with open(ten, "ab") as f:
        f.write(b'{"v":1,"type":"llm_')
    result = verify(ten)
    assert (result.ok, result.events, result.torn_bytes) == (True, 10, 19)


# -- torn tail repair ---------------------------------------------------------------


@pytest.mark.parametrize(
    "torn", [b'{"v":1,"type":"llm_call","se', b"\x00\x00\x00\x00", b'{"not":"a seq"}\n']
)
def test_torn_tail_is_moved_aside_and_recorded(ten: Path, torn: bytes) -> None:
    with open(ten, "ab") as f:
        f.write(torn)
    with AuditLog(ten) as log:
        assert log.repaired is not None and log.repaired.bytes == len(torn)
        log(SessionCompleted())
    side = ten.with_name("s.jsonl.torn-1")
    assert side.read_bytes() == torn
    events = read_events(ten)
    assert [e.type for e in events[-2:]] == ["log_repaired", "session_completed"]
    assert events[-2].side_file == side.name and events[-2].seq == 11
    assert verify(ten).ok


def test_second_repair_gets_a_new_side_file(ten: Path) -> None:
    for n in (1, 2):
        with open(ten, "ab") as f:
            f.write(b"{partial")
        AuditLog(ten).close()
        assert ten.with_name(f"s.jsonl.torn-{n}").read_bytes() == b"{partial"
    assert verify(ten).ok and read_log(ten).bad_lines == []


def test_repair_finds_the_last_line_when_it_is_longer_than_the_read_window(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    big = "x" * 300_000  # the tail scan starts with 64 KiB and must widen
    write(path, [llm_call(0), Error(message=big)])
    with open(path, "ab") as f:
        f.write(b'{"v":1,"type":"ll')
    with AuditLog(path) as log:
        assert log.last_seq == 3 and log.repaired is not None
    assert verify(path).ok and read_events(path)[1].message == big


def test_a_log_that_is_only_a_torn_line_restarts_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"v":1,"ty')
    with AuditLog(path) as log:
        assert log.repaired is not None and log.repaired.seq == 1
    assert verify(path).ok


# -- property tests -----------------------------------------------------------------

TEXT = st.text(min_size=0, max_size=40)
EVENTS = st.lists(
    st.builds(
        lambda cls, message: cls(session="p", message=message),
        st.sampled_from(
            [cls for cls in KNOWN if cls.model_fields["type"].default not in TRANSIENT]
        ),
        TEXT,
    ),
    min_size=1,
    max_size=12,
)
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(events=EVENTS, data=st.data())
def test_any_truncation_reopens_keeping_every_complete_line(events: list, data) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.jsonl"
        write(path, events)
        full = path.read_bytes()
        cut = data.draw(st.integers(0, len(full)), label="cut")
        path.write_bytes(full[:cut])
        kept = full[: full.rfind(b"\n", 0, cut) + 1]
        with AuditLog(path) as log:
            log(SessionCompleted())
        after = path.read_bytes()
        assert after.startswith(kept)
        added = [json.loads(line) for line in after[len(kept) :].splitlines()]
        if cut > len(kept):
            assert added[0]["type"] == "log_repaired" and added[0]["bytes"] == cut - len(kept)
            assert (Path(tmp) / "p.jsonl.torn-1").read_bytes() == full[len(kept) : cut]
        assert [a["type"] for a in added][-1] == "session_completed"
        assert len(added) == 1 + (cut > len(kept))
        result = verify(path)
        assert result.ok and result.events == kept.count(b"\n") + len(added)


@PROPS
@given(events=EVENTS, data=st.data())
def test_any_single_byte_edit_fails_verify_at_that_line(events: list, data) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.jsonl"
        write(path, events)
        raw = lines(path)
        index = data.draw(st.integers(0, len(raw) - 1), label="line")
        offset = data.draw(st.integers(0, len(raw[index]) - 2), label="offset")
        old = raw[index][offset]
        new = data.draw(st.integers(0, 255).filter(lambda b: b != old), label="byte")
        line = bytearray(raw[index])
        line[offset] = new
        raw[index] = bytes(line)
        path.write_bytes(b"".join(raw))
        result = verify(path)
        assert not result.ok and result.first_bad_line == index + 1


# -- reading and follow ----------------------------------------------------------------


def test_read_skips_torn_tail_and_filters(ten: Path) -> None:
    with open(ten, "ab") as f:
        f.write(b'{"v":1')
    contents = read_log(ten)
    assert len(contents.events) == 10 and contents.torn_bytes == 6
    agent1 = filter_events(contents.events, types=["llm_call"], agents=["agent-1"])
    assert [e.seq for e in agent1] == [2, 6, 10]
    assert filter_events(contents.events, phases=["nope"]) == []


def test_follow_survives_a_repair_and_skips_past_terminal_events(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write(path, [llm_call(0), SessionFailed(message="boom"), SessionResumed()])
    with open(path, "ab") as f:
        f.write(b'{"v":1,"type":"tor')
    stream = follow(path, poll=0.01, timeout=10)
    assert [next(stream).type for _ in range(3)] == [
        "llm_call",
        "session_failed",
        "session_resumed",
    ]
    write(path, [llm_call(1), SessionCompleted()])  # reopen repairs the torn tail first
    rest = list(stream)
    assert [e.type for e in rest] == ["log_repaired", "llm_call", "session_completed"]
    assert [e.seq for e in rest] == [4, 5, 6]


def test_follow_stops_on_predicate_and_on_timeout(ten: Path) -> None:
    assert [e.seq for e in follow(ten, until=lambda e: e.seq == 3, poll=0.01)] == [1, 2, 3]
    assert len(list(follow(ten, poll=0.01, timeout=0.2))) == 10  # no terminal event


WRITER = textwrap.dedent(
    """
    import sys, time
    from pliny.audit.writer import AuditLog
    from pliny.events import LLMCall, SessionCompleted, SessionStarted
    with AuditLog(sys.argv[1], fsync="every_event") as log:
        log(SessionStarted(session="f"))
        for i in range(40):
            time.sleep(0.005)
            log(LLMCall(session="f", agent="a", model="gpt-4o", prompt_tokens=i))
        log(SessionCompleted(session="f"))
    """
)


@pytest.mark.timeout(60)
def test_follow_sees_everything_another_process_appends(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
    try:
        seen = list(follow(path, poll=0.01, timeout=30))
    finally:
        child.wait(timeout=30)
    assert child.returncode == 0
    assert [e.seq for e in seen] == list(range(1, 43))
    assert [e.prompt_tokens for e in seen[1:-1]] == list(range(40))
    assert seen[-1].type == "session_completed"
