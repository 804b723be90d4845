"""Streamed answers through the real openai client against the fake server's SSE."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from pliny.audit.reader import read_events
from pliny.audit.writer import AuditLog
from pliny.config.settings import Settings
from pliny.events import Event, EventBus
from pliny.llm.endpoint import EndpointChoice
from pliny.llm.gateway import CallContext, LLMGateway, Reply
from pliny.llm.journal import Journal
from tests.fakeserver import FakeServer

MESSAGES = [{"role": "user", "content": "stream please"}]


def _ask(
    server: FakeServer, tmp_path: Path, *, journal: Journal | None = None, **llm: Any
) -> tuple[Reply, list[Event], list[Event]]:
    """One call; returns the reply, every bus event and the audited events."""
    settings = Settings.model_validate({"llm": {"stream": True, **llm}})
    endpoint = EndpointChoice("remote", server.base_url, "sk-test", "fake-model", "test")
    bus = EventBus(session="s1")
    seen: list[Event] = []
    bus.subscribe(seen.append)
    log = AuditLog(tmp_path / "audit.jsonl")
    bus.subscribe(log)
    gateway = LLMGateway(settings, endpoint, bus, journal=journal)

    async def go() -> Reply:
        try:
            return await gateway.chat(CallContext("p", "a"), MESSAGES)
        finally:
            await gateway.close()

    reply = asyncio.run(go())
    log.close()
    return reply, seen, list(read_events(tmp_path / "audit.jsonl"))


def test_stream_asks_for_usage_and_takes_it_from_the_final_chunk(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    fake_server.script(
        reply="a streamed answer in parts",
        usage={"prompt_tokens": 11, "completion_tokens": 7, "reasoning_tokens": 3},
    )
    reply, _, audited = _ask(fake_server, tmp_path)
    body = fake_server.last.body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert reply.content == "a streamed answer in parts"
    (call,) = [e for e in audited if e.type == "llm_call"]
    assert (call.prompt_tokens, call.completion_tokens, call.reasoning_tokens) == (11, 7, 3)
    assert call.streamed and not call.tokens_estimated


def test_tool_calls_are_assembled_from_deltas(fake_server: FakeServer, tmp_path: Path) -> None:
    args = {"path": "notes/a-rather-long-file-name.md", "content": "x" * 40}
    fake_server.script(
        tool_calls=[
            {"name": "write_file", "arguments": args},
            {"name": "read_file", "arguments": {"path": "b"}},
        ]
    )
    reply, _, _ = _ask(fake_server, tmp_path)
    assert [c["name"] for c in reply.tool_calls] == ["write_file", "read_file"]
    assert json.loads(reply.tool_calls[0]["arguments"]) == args
    assert reply.tool_calls[0]["id"] and reply.finish_reason == "tool_calls"


def test_a_cut_stream_is_retried_like_a_cut_body(fake_server: FakeServer, tmp_path: Path) -> None:
    fake_server.fail("truncated_stream", times=1)  # TCP reset halfway
    fake_server.fail("incomplete_stream", times=1)  # clean close, no finish_reason, no [DONE]
    fake_server.script(reply="whole at last")
    reply, _, audited = _ask(fake_server, tmp_path)
    assert reply.content == "whole at last"
    retries = [e for e in audited if e.type == "retry"]
    assert [r.code for r in retries] == ["PLINY-NET-DROPPED", "PLINY-NET-DROPPED"]
    calls = [e for e in audited if e.type == "llm_call"]
    assert len(calls) == 1 and calls[0].attempt == 3  # the cut attempts were not answers


def test_the_journal_keeps_the_assembled_answer_and_a_resume_replays_it(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    fake_server.script(reply="paid once")
    journal = Journal(tmp_path / "journal.db")
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first, _, _ = _ask(fake_server, tmp_path / "one", journal=journal)
    journal.close()
    sent = fake_server.count()
    again, _, audited = _ask(
        fake_server, tmp_path / "two", journal=Journal(tmp_path / "journal.db")
    )
    assert fake_server.count() == sent == 1  # the resume sent nothing
    assert again.content == first.content == "paid once" and again.replayed
    (call,) = [e for e in audited if e.type == "llm_call"]
    assert call.replayed and call.cost_usd in (0.0, None)


def test_progress_goes_to_the_bus_not_the_audit_log(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    fake_server.script(reply="slow " * 40, chunk_delay_ms=300)
    _, seen, audited = _ask(fake_server, tmp_path)
    progress = [e for e in seen if e.type == "llm_progress"]
    assert progress and all(e.agent == "a" and e.completion_tokens > 0 for e in progress)
    counts = [e.completion_tokens for e in progress]
    assert counts == sorted(counts)
    assert not [e for e in audited if e.type == "llm_progress"]
    assert [e.type for e in audited].count("llm_call") == 1


def test_the_live_view_shows_tokens_streaming_in(fake_server: FakeServer, tmp_path: Path) -> None:
    from rich.console import Console

    from pliny.observe.progress import Progress, render

    fake_server.script(reply="slow " * 40, chunk_delay_ms=300)
    _, seen, _ = _ask(fake_server, tmp_path)
    progress = Progress()
    shown: list[tuple[int, str]] = []
    for event in seen:
        progress(event)
        if event.type == "llm_progress":
            console = Console(width=200, record=True)
            console.print(render(progress))
            shown.append((event.completion_tokens, " ".join(console.export_text().split())))
    assert shown
    for tokens, text in shown:
        assert f"+{tokens:,}…" in text and f"+{tokens:,} streaming" in text
    assert progress.agents["a"].streaming == 0  # the llm_call ended the stream


def test_a_body_that_is_no_event_stream_is_a_bad_response(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    fake_server.fail("not_json", times=1, content_type="text/event-stream")
    reply, _, audited = _ask(fake_server, tmp_path)
    assert reply.content  # retried, then answered
    assert [e.code for e in audited if e.type == "retry"] == ["PLINY-NET-BAD-RESPONSE"]


def test_watch_sees_tokens_streaming_in_from_another_process(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    # A real `pliny execute` in its own process streams a slow answer; what `watch` folds
    # from the log has no llm_progress, so it overlays the session's side file.
    import subprocess
    import sys
    import time

    from pliny.cli.watch import _Target, _View

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "pliny.yaml").write_text("llm:\n  stream: true\nexecution:\n  checkpoint: none\n")
    fw = tmp_path / "one.yaml"
    fw.write_text(
        "name: one\nphases:\n  - name: p\n    agents:\n"
        "      - name: writer\n        role: writer\n        prompt: '{{task}}'\n"
    )
    fake_server.script(reply="slow " * 60, chunk_delay_ms=150)
    env = {
        "OPENAI_BASE_URL": fake_server.base_url,
        "OPENAI_API_KEY": "sk-test",
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    cmd = [
        sys.executable,
        "-c",
        "from pliny.cli import main; main()",
        "execute",
        "-f",
        str(fw),
        "-t",
        "write",
        "--session",
        "s1",
        "--json",
    ]
    proc = subprocess.Popen(cmd, cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            if (ws / ".pliny" / "sessions" / "s1" / "state.json").exists():
                view = _View(_Target.resolve(ws, "s1"))
                view.overlay_streaming()
                if (agent := view.progress.agents.get("writer")) and agent.streaming:
                    seen.append(agent.streaming)
            time.sleep(0.1)
    finally:
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert seen and seen == sorted(seen), seen  # counts grew while the answer streamed
    assert not (ws / ".pliny" / "sessions" / "s1" / "streaming.json").exists()  # gone at the end
