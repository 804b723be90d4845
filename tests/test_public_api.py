"""The public interface: what ``import pliny`` promises, checked as a user uses it.

Names, signatures and lazy loading are contracts: changing them breaks
users, so this file pins them. Behaviour is checked end to end against the
fake OpenAI server.
"""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import typing
from dataclasses import fields
from pathlib import Path

import pytest

import pliny
from pliny.api import RunKwargs
from pliny.lifecycle.runner import RunOptions
from tests.fakeserver import FakeServer

PUBLIC = {
    "run",
    "arun",
    "stream",
    "load_framework",
    "sessions",
    "session",
    "Session",
    "Stream",
    "RunKwargs",
    "Framework",
    "Outcome",
    "AgentTask",
    "Executor",
    "Event",
    "LLMCall",
    "PhaseStarted",
    "AgentCompleted",
    "PlinyError",
    "ConfigError",
    "UsageError",
    "BudgetExceeded",
    "Cancelled",
}
HOOKS = {
    "on_phase_start",
    "on_phase_end",
    "on_agent_start",
    "on_agent_end",
    "on_llm_call",
    "on_error",
}


def env(server: FakeServer) -> dict[str, str]:
    return {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test"}


# -- names and signatures --------------------------------------------------------------


def test_every_public_name_resolves() -> None:
    assert set(pliny.__all__) >= PUBLIC
    for name in pliny.__all__:
        assert getattr(pliny, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = pliny.nope  # type: ignore[attr-defined]


def test_import_pliny_loads_nothing_heavy() -> None:
    code = (
        "import sys, pliny\n"
        "heavy = {'langgraph', 'openai', 'git', 'pydantic', 'pliny.api'} & set(sys.modules)\n"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_run_arun_and_stream_take_the_same_typed_keywords() -> None:
    for fn in (pliny.run, pliny.arun, pliny.stream):
        params = inspect.signature(fn).parameters
        assert list(params)[:2] == ["framework", "task"], fn
        assert params["kw"].kind is inspect.Parameter.VAR_KEYWORD
        assert "Unpack[RunKwargs]" in str(params["kw"].annotation), fn
    hints = typing.get_type_hints(RunKwargs)
    option_fields = {f.name for f in fields(RunOptions)}
    # Every keyword is a RunOptions field, a hook, or config (RunOptions.config_path).
    assert set(hints) - option_fields - HOOKS == {"config"}


def test_an_unknown_keyword_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="budget_usd"):
        pliny.run("rise", "t", workspace=tmp_path, budget_usd=1)  # type: ignore[call-arg]
    assert not (tmp_path / ".pliny").exists()


def test_load_framework_returns_the_model() -> None:
    fw = pliny.load_framework("care")
    assert isinstance(fw, pliny.Framework)
    assert [p.name for p in fw.phases] == ["context", "analyze", "respond", "evaluate"]
    with pytest.raises(pliny.ConfigError):
        pliny.load_framework("no-such-framework")


# -- sessions on disk ------------------------------------------------------------------


def test_sessions_history_checkpoints_rollback_and_resume(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    outcome = pliny.run("rise", "Summarise", workspace=tmp_path, env=env(fake_server))
    assert isinstance(outcome, pliny.Outcome) and outcome.status == "completed"
    (handle,) = pliny.sessions(tmp_path)
    assert handle.id == outcome.session.id and handle.status == "completed"
    assert pliny.session(handle.id[:12], tmp_path).id == handle.id  # a unique prefix
    kinds = [e.type for e in handle.history()]
    assert kinds[0] == "session_started" and kinds[-1] == "session_completed"
    names = [c.name for c in handle.checkpoints()]
    assert names[:2] == ["after-research", "after-identify"]
    sent = len(fake_server.requests)
    assert "after-research" in handle.rollback("after-research")
    resumed = handle.resume(env=env(fake_server))
    assert resumed.status == "completed", resumed.error
    # identify, synthesize and execute ran again on their recorded answers: nothing re-paid
    assert len(fake_server.requests) == sent
    after = [e.type for e in handle.history()]
    tail = after[after.index("rollback") :]
    assert tail.count("agent_completed") == 3 and tail[-1] == "session_completed"
    with pytest.raises(pliny.UsageError):
        pliny.session("no-such-session", tmp_path)


def test_cancel_on_a_running_stream_raises_cancelled_error(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    fake_server.latency_ms = 1000
    seen: list[str] = []

    async def consume() -> pliny.Stream:
        events = pliny.stream("rise", "Summarise", workspace=tmp_path, env=env(fake_server))
        with pytest.raises(asyncio.CancelledError):
            async for event in events:
                seen.append(event.type)
                if event.type == "agent_started":
                    events.cancel()
        return events

    events = asyncio.run(consume())
    assert events.outcome is not None and events.outcome.status == "cancelled"
    assert seen[-1] == "session_cancelled"
    handle = pliny.session(events.outcome.session.id, tmp_path)
    assert handle.status == "cancelled"
    assert handle.history()[-1].type == "session_cancelled"
    fake_server.latency_ms = 0
    resumed = handle.resume(env=env(fake_server))
    assert resumed.status == "completed", resumed.error
