"""Alert rules: thresholds, durations, re-arming, commands, the bus and the audit log."""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from pathlib import Path

import pytest

from pliny.audit.log import AuditLog, read_events
from pliny.config.settings import AlertRule
from pliny.errors import ConfigError
from pliny.events import (
    Alert,
    Error,
    Event,
    EventBus,
    LLMCall,
    PhaseCompleted,
    PhaseStarted,
    Retry,
    SessionCompleted,
)
from pliny.logs import logger
from pliny.observe.alerts import METRICS, AlertMonitor, validate_rules, watch_loop


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def rule(metric: str, op: str, threshold: float, **extra: object) -> AlertRule:
    return AlertRule(metric=metric, operator=op, threshold=threshold, **extra)


def monitor(*rules: AlertRule, clock: Clock | None = None) -> tuple[AlertMonitor, list[Event]]:
    out: list[Event] = []
    return AlertMonitor(list(rules), emit=out.append, clock=clock or Clock(), session="s1"), out


def call(cost: float | None = 0.0, **extra: object) -> LLMCall:
    fields: dict[str, object] = {
        "session": "s1",
        "phase": "p",
        "agent": "a",
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "cost_usd": cost,
    }
    return LLMCall(**(fields | extra))


def test_cost_fires_once_with_value_and_message() -> None:
    mon, out = monitor(rule("cost_usd", "gt", 1.0, name="spend"))
    mon(call(0.6))
    assert out == []
    mon(call(0.6))
    mon(call(0.6))  # still above: no second alert
    mon(call(5.0, replayed=True))  # replayed calls cost nothing
    assert len(out) == 1
    alert = out[0]
    assert isinstance(alert, Alert)
    assert (alert.rule, alert.metric, alert.threshold) == ("spend", "cost_usd", 1.0)
    assert alert.value == pytest.approx(1.2)
    assert "spend" in alert.message and "1.2" in alert.message


def test_default_rule_name_and_tokens_llm_calls() -> None:
    mon, out = monitor(rule("tokens", "gte", 300), rule("llm_calls", "eq", 3))
    mon(call())
    mon(call())
    assert [a.rule for a in out] == ["tokens gte 300"]
    mon(call())
    assert [a.rule for a in out] == ["tokens gte 300", "llm_calls eq 3"]
    mon(call())  # llm_calls == 4 clears the eq rule, re-arming it; nothing fires
    assert len(out) == 2


@pytest.mark.parametrize(
    ("op", "threshold", "fires_after"),
    [("gt", 2, 3), ("gte", 2, 2), ("eq", 2, 2), ("lte", 1, 0), ("lt", 1, 0)],
)
def test_operators(op: str, threshold: float, fires_after: int) -> None:
    mon, out = monitor(rule("llm_calls", op, threshold))
    mon.tick()  # evaluated with 0 calls
    fired_at = 0 if out else None
    for n in range(1, 5):
        mon(call())
        if out and fired_at is None:
            fired_at = n
    assert fired_at == fires_after


def test_error_rate_needs_duration_then_rearms() -> None:
    clock = Clock()
    mon, out = monitor(rule("error_rate", "gt", 0.2, duration="10s", name="flaky"), clock=clock)
    mon(call())
    mon(Retry(session="s1", category="network"))  # 1 failed of 2 attempts: 0.5
    clock.t = 9.9
    mon.tick()
    assert out == []
    clock.t = 10.0
    mon.tick()
    assert [a.rule for a in out] == ["flaky"]
    assert out[0].value == pytest.approx(0.5)
    for _ in range(8):  # 1 failed of 10: 0.1, the condition clears and re-arms
        mon(call())
    clock.t = 50
    mon(Error(session="s1", category="ai"))  # 2/11: still below
    mon(Error(session="s1", category="ai"))  # 3/12 = 0.25: holds again from t=50
    clock.t = 59
    mon.tick()
    assert len(out) == 1
    clock.t = 60
    mon.tick()
    assert len(out) == 2 and out[1].value == pytest.approx(0.25)


def test_error_rate_is_zero_before_anything_happens() -> None:
    mon, out = monitor(rule("error_rate", "gte", 0))
    mon.tick()
    assert out[0].value == 0


def test_phase_duration_via_tick_once_per_slow_phase() -> None:
    clock = Clock()
    mon, out = monitor(rule("phase_duration_s", "gt", 30, name="slow"), clock=clock)
    mon(PhaseStarted(session="s1", phase="research"))
    clock.t = 29
    mon.tick()
    assert out == []
    clock.t = 31
    mon.tick()
    clock.t = 35
    mon.tick()
    assert [(a.rule, a.phase) for a in out] == [("slow", "research")]
    assert out[0].value == pytest.approx(31)
    mon(PhaseCompleted(session="s1", phase="research"))
    clock.t = 40
    mon(PhaseStarted(session="s1", phase="identify"))
    clock.t = 71
    mon.tick()
    assert [(a.phase, a.value) for a in out[1:]] == [("identify", pytest.approx(31))]


def test_nothing_fires_after_the_session_ended() -> None:
    clock = Clock()
    mon, out = monitor(rule("cost_usd", "gt", 1, duration=60), clock=clock)
    mon(call(2.0))
    mon(SessionCompleted(session="s1"))
    clock.t = 100
    mon.tick()
    assert out == []


def test_agent_failures_and_retries() -> None:
    from pliny.events import AgentFailed

    mon, out = monitor(rule("agent_failures", "gte", 2), rule("retries", "gt", 2))
    mon(AgentFailed(session="s1", agent="a", category="network", skipped=True))
    for _ in range(3):
        mon(Retry(session="s1", category="network"))
    mon(AgentFailed(session="s1", agent="b", category="ai"))
    assert [a.metric for a in out] == ["retries", "agent_failures"]


def test_config_literal_if_any_matches_the_known_metrics() -> None:
    from typing import get_args

    declared = get_args(AlertRule.model_fields["metric"].annotation)
    assert not declared or set(declared) == set(METRICS)


def test_unknown_metric_is_rejected_naming_the_rule() -> None:
    # model_construct: the config may already refuse the name (a Literal); the monitor must too.
    unknown = AlertRule.model_construct(
        name="p99", metric="latency_p99", operator="gt", threshold=1, duration=None, command=None
    )
    bad = [rule("cost_usd", "gt", 1), unknown]
    with pytest.raises(ConfigError, match=r"alerts\[1\] \(p99\): unknown metric 'latency_p99'"):
        validate_rules(bad)
    with pytest.raises(ConfigError, match="phase_duration_s"):  # the message lists known ones
        AlertMonitor(bad, emit=print)
    with pytest.raises(ConfigError, match=r"alerts\[0\].*command"):
        validate_rules([rule("tokens", "gt", 1, command="notify 'unclosed")])
    validate_rules([rule(m, "gt", 1) for m in METRICS])


def test_command_runs_detached_with_env(tmp_path: Path) -> None:
    """The command waits for a file the test writes only after the alert returned:
    if firing waited for the command, this test would hang instead of passing."""
    out_file, go = tmp_path / "out.json", tmp_path / "go"
    script = (
        "import json, os, sys, time, pathlib\n"
        "deadline = time.time() + 20\n"
        "while not pathlib.Path(sys.argv[2]).exists() and time.time() < deadline:\n"
        "    time.sleep(0.02)\n"
        "env = {k: v for k, v in os.environ.items() if k.startswith('PLINY_ALERT_')}\n"
        "pathlib.Path(sys.argv[1]).write_text(json.dumps({'env': env, 'argv': sys.argv[3:]}))\n"
    )
    command = shlex.join([sys.executable, "-c", script, str(out_file), str(go), "two words"])
    mon, out = monitor(rule("cost_usd", "gt", 0.5, name="budget", command=command))
    mon(call(0.75))
    assert len(out) == 1 and not out_file.exists()
    go.touch()
    assert mon.reap(wait=20) == [0]
    written = json.loads(out_file.read_text())
    assert written["argv"] == ["two words"]  # shlex, no shell
    assert written["env"]["PLINY_ALERT_RULE"] == "budget"
    assert written["env"]["PLINY_ALERT_VALUE"] == "0.75"
    assert written["env"]["PLINY_ALERT_SESSION"] == "s1"
    assert mon.children == []


def test_command_failures_never_raise() -> None:
    missing = rule("llm_calls", "gte", 1, command="/nonexistent/pliny-notify --now")
    failing = rule("llm_calls", "gte", 2, command=shlex.join([sys.executable, "-c", "exit(3)"]))
    mon, out = monitor(missing, failing)
    mon(call())
    assert [e.type for e in out] == ["alert", "warning"]
    assert "did not start" in out[1].message
    mon(call())
    assert mon.reap(wait=20) == [3]


def test_on_the_bus_into_the_audit_log_with_a_warning(tmp_path: Path) -> None:
    warnings: list[str] = []
    sink = logger.add(warnings.append, level="WARNING", format="{message}")
    try:
        bus = EventBus(session="demo")
        log = AuditLog(tmp_path / "demo.jsonl")
        bus.subscribe(log)
        mon = AlertMonitor([rule("cost_usd", "gt", 1, name="spend")], emit=bus.emit)
        bus.subscribe(mon)
        bus.emit(call(0.5, session=None))
        bus.emit(call(0.7, session=None))
        log.close()
    finally:
        logger.remove(sink)
    events = read_events(tmp_path / "demo.jsonl")
    assert [e.type for e in events] == ["llm_call", "llm_call", "alert"]
    assert events[2].session == "demo" and events[2].rule == "spend"
    assert any("spend" in w for w in warnings)


def test_prime_counts_earlier_runs_and_remembers_fired_rules() -> None:
    earlier = [call(0.8), Alert(session="s1", rule="spend"), call(0.8)]
    mon, out = monitor(rule("cost_usd", "gt", 1, name="spend"), rule("cost_usd", "gt", 2))
    mon.prime(earlier)
    assert mon.totals.cost_usd == pytest.approx(1.6)
    mon(call(0.5))  # 2.1: "spend" already fired in the log; the other fires now
    assert [a.rule for a in out] == ["cost_usd gt 2"]


def test_watch_loop_ticks_until_cancelled() -> None:
    clock = Clock()
    mon, out = monitor(rule("phase_duration_s", "gt", 5), clock=clock)
    mon(PhaseStarted(session="s1", phase="execute"))

    async def scenario() -> None:
        task = asyncio.create_task(watch_loop(mon, interval=0.01))
        clock.t = 6
        for _ in range(500):
            if out:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert [a.metric for a in out] == ["phase_duration_s"]
