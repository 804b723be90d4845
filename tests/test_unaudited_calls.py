"""A paid call whose ``llm_call`` event the audit log refused is recorded as paid, once.

Real parts: the gateway talks to the fake server through the openai client, the journal is
a real SQLite file, and the failing audit log is a real ``AuditLog`` whose file is
``/dev/full`` (every write fails with ENOSPC, no mount needed).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from pliny.audit.reader import read_events
from pliny.audit.writer import AuditLog
from pliny.config.settings import load_settings
from pliny.errors import AuditFailure
from pliny.events import EventBus, LLMCall
from pliny.llm.endpoint import EndpointChoice
from pliny.llm.gateway import CallContext, LLMGateway
from pliny.llm.journal import Journal
from pliny.llm.pricing import PricingTable
from tests.fakeserver import FakeServer

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}]


def gateway(tmp_path: Path, server: FakeServer, log: AuditLog) -> LLMGateway:
    bus = EventBus(session="s1")
    bus.subscribe(log)
    endpoint = EndpointChoice("remote", server.base_url, "sk-test", "gpt-4o-mini", "test")
    return LLMGateway(
        load_settings(tmp_path),
        endpoint,
        bus,
        journal=Journal(tmp_path / "journal.sqlite"),
        pricing=PricingTable.load(),
    )


async def ask(gw: LLMGateway) -> None:
    try:
        await gw.chat(CallContext("research", "scout"), MESSAGES)
    finally:
        await gw.close()
        gw.journal.close()  # type: ignore[union-attr]


def full_disk_log(tmp_path: Path) -> AuditLog:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    os.symlink("/dev/full", tmp_path / "full.jsonl")
    return AuditLog(tmp_path / "full.jsonl", session="s1")


def test_a_call_the_audit_log_refused_is_recovered_as_paid_exactly_once(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    with pytest.raises(AuditFailure, match="ENOSPC"):
        asyncio.run(ask(gateway(tmp_path, fake_server, full_disk_log(tmp_path))))
    assert fake_server.count() == 1  # paid at the server, journaled, not audited

    log_file = tmp_path / "audit.jsonl"
    for run in range(2):  # the disk is fixed; the second run must not record it again
        with AuditLog(log_file, session="s1") as log:
            gw = gateway(tmp_path, fake_server, log)
            assert gw.recover_unaudited(read_events(log_file)) == (1 if run == 0 else 0)
            asyncio.run(ask(gw))  # the agent asks again: answered from the journal
    assert fake_server.count() == 1, "the recorded answer was paid twice"
    calls = [e for e in read_events(log_file) if e.type == "llm_call"]
    paid = [e for e in calls if not e.replayed]
    assert len(paid) == 1 and paid[0].recovered, calls
    assert paid[0].cost_usd and paid[0].cost_usd > 0 and paid[0].prompt_tokens > 0
    assert [e.replayed for e in calls] == [False, True, True]
    assert all(e.cost_usd == 0 for e in calls[1:])


def test_a_pending_call_already_in_the_log_is_not_recorded_twice(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """A crash after the audit ack but before the journal heard of it: the log has it."""
    journal = Journal(tmp_path / "journal.sqlite")
    event = LLMCall(
        phase="research",
        agent="scout",
        request_hash="h1",
        request_id="r1",
        prompt_tokens=10,
        completion_tokens=5,
        cost_usd=0.001,
    )
    journal.put("scout", 1, "h1", 1, {"content": "hi"}, event=event.model_dump_json())
    journal.close()
    log_file = tmp_path / "audit.jsonl"
    with AuditLog(log_file, session="s1") as log:
        log(event)
    with AuditLog(log_file, session="s1") as log:
        gw = gateway(tmp_path, fake_server, log)
        assert gw.recover_unaudited(read_events(log_file)) == 0
        assert gw.journal.unaudited() == []  # type: ignore[union-attr]
        asyncio.run(gw.close())
        gw.journal.close()  # type: ignore[union-attr]
    assert len([e for e in read_events(log_file) if e.type == "llm_call"]) == 1
