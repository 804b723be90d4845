"""Prometheus metrics from events: parsed back with prometheus_client's own parser."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pliny import events as ev
from pliny.audit.log import AuditLog
from pliny.errors import UsageError
from pliny.observe.metrics import Metrics
from tests.support.cli import pliny

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
S = {"session": "s1"}


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(data: Samples, name: str, **labels: str) -> float:
    return data[(name, frozenset(labels.items()))]


def run_events() -> list[ev.Event]:
    """Two agents, one model priced and one not, a replay, a cache hit, retries, a failure.

    By hand: sent calls 3 (m1: 2, m2: 1); m1 tokens prompt 150, completion 25,
    cached 10, cost 0.75; m2 unpriced; latencies 0.3 s, 1.2 s (m1), 0.05 s (m2).
    """
    p = {**S, "phase": "analyze"}
    return [
        ev.SessionStarted(**S, framework="care", name="demo"),
        ev.PhaseStarted(**p, agents=["a1", "a2"]),
        ev.AgentStarted(**p, agent="a1"),
        ev.AgentStarted(**p, agent="a2"),
        ev.LLMCall(
            **p,
            agent="a1",
            model="m1",
            prompt_tokens=100,
            completion_tokens=20,
            cached_tokens=10,
            cost_usd=0.5,
            latency_ms=300,
        ),
        ev.LLMCall(
            **p,
            agent="a1",
            model="m1",
            prompt_tokens=50,
            completion_tokens=5,
            cost_usd=0.25,
            latency_ms=1200,
        ),
        ev.LLMCall(
            **p,
            agent="a2",
            model="m2",
            prompt_tokens=7,
            completion_tokens=3,
            cost_usd=None,
            latency_ms=50,
        ),
        ev.LLMCall(
            **p,
            agent="a2",
            model="m1",
            prompt_tokens=999,
            completion_tokens=999,
            cost_usd=0.0,
            replayed=True,
        ),
        ev.LLMCall(
            **p,
            agent="a2",
            model="m1",
            prompt_tokens=999,
            completion_tokens=999,
            cost_usd=0.0,
            cache_hit=True,
        ),
        ev.Retry(**p, agent="a2", category="network"),
        ev.Retry(**p, agent="a2", category="network"),
        ev.Retry(**p, agent="a1", category="validation"),
        ev.Error(**p, agent="a2", category="ai"),
        ev.AgentCompleted(**p, agent="a1", duration_ms=4000),
        ev.AgentFailed(**p, agent="a2", category="network", skipped=True),
        ev.AgentCompleted(**p, agent="a3", duration_ms=0, reused=True),
        ev.PhaseCompleted(**p, succeeded=1, failed=1),
        ev.SessionCompleted(**S),
    ]


def test_counters_histograms_and_status_from_events() -> None:
    data = samples(Metrics.from_events(run_events()).exposition())
    calls = "pliny_llm_calls_total"
    assert value(data, calls, model="m1", phase="analyze", agent="a1", replayed="false") == 2
    assert value(data, calls, model="m1", phase="analyze", agent="a2", replayed="true") == 2
    assert value(data, calls, model="m2", phase="analyze", agent="a2", replayed="false") == 1
    assert value(data, "pliny_tokens_total", kind="prompt", model="m1") == 150
    assert value(data, "pliny_tokens_total", kind="completion", model="m1") == 25
    assert value(data, "pliny_tokens_total", kind="cached", model="m1") == 10
    assert value(data, "pliny_tokens_total", kind="prompt", model="m2") == 7
    assert value(data, "pliny_cost_usd_total", model="m1") == pytest.approx(0.75)
    assert ("pliny_cost_usd_total", frozenset({("model", "m2")})) not in data
    assert value(data, "pliny_unpriced_calls_total") == 1
    assert value(data, "pliny_cache_hits_total", agent="a2") == 1
    assert value(data, "pliny_retries_total", category="network") == 2
    assert value(data, "pliny_retries_total", category="validation") == 1
    assert value(data, "pliny_errors_total", category="ai") == 1
    assert value(data, "pliny_errors_total", category="network") == 1
    assert value(data, "pliny_agent_failures_total", phase="analyze", category="network") == 1
    hist = "pliny_llm_call_duration_seconds"
    assert value(data, f"{hist}_count", model="m1") == 2
    assert value(data, f"{hist}_sum", model="m1") == pytest.approx(1.5)
    assert value(data, f"{hist}_bucket", model="m1", le="0.5") == 1
    assert value(data, f"{hist}_bucket", model="m1", le="2.5") == 2
    agent = "pliny_agent_duration_seconds"
    assert value(data, f"{agent}_count", phase="analyze") == 1  # the reused result is left out
    assert value(data, f"{agent}_sum", phase="analyze") == 4
    assert value(data, "pliny_agents_in_flight") == 0
    assert value(data, "pliny_session_info", session="s1", framework="care") == 1
    status = "pliny_session_status"
    assert value(data, status, session="s1", pliny_session_status="completed") == 1
    assert value(data, status, session="s1", pliny_session_status="in_progress") == 0


def test_in_flight_follows_agents_and_a_crash_resets_it() -> None:
    metrics = Metrics()
    p = {**S, "phase": "analyze"}
    for event in run_events()[:4]:
        metrics(event)
    assert value(samples(metrics.exposition()), "pliny_agents_in_flight") == 2
    metrics(ev.AgentCompleted(**p, agent="a1", duration_ms=10))
    assert value(samples(metrics.exposition()), "pliny_agents_in_flight") == 1
    metrics(ev.CrashDetected(**S))
    data = samples(metrics.exposition())
    assert value(data, "pliny_agents_in_flight") == 0
    assert value(data, "pliny_session_status", session="s1", pliny_session_status="crashed") == 1


def test_private_registries_never_touch_the_global_one() -> None:
    one, two = Metrics(), Metrics()  # a shared registry would refuse the second
    one(ev.LLMCall(**S, model="m", cost_usd=1.0))
    assert "pliny_cost_usd_total" in one.exposition()
    assert 'model="m"' not in two.exposition()
    global_names = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert not any(name.startswith("pliny") for name in global_names)


def test_odd_events_never_raise() -> None:
    metrics = Metrics()
    metrics(ev.parse({"type": "from_the_future", "session": "s1", "x": 1}))
    metrics(ev.LLMCall(**S, model="", prompt_tokens=-5, latency_ms=-1))  # hand-edited log
    data = samples(metrics.exposition())
    assert value(data, "pliny_tokens_total", kind="prompt", model="unknown") == 0


def test_serve_on_loopback_then_stop() -> None:
    metrics = Metrics.from_events(run_events())
    server = metrics.serve(0)
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        with urllib.request.urlopen(server.url, timeout=10) as response:
            body = response.read().decode()
    finally:
        server.stop()
    assert value(samples(body), "pliny_cost_usd_total", model="m1") == pytest.approx(0.75)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=5)


def test_serve_on_a_busy_port_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UsageError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            Metrics().serve(port)


# -- `pliny metrics ID` ---------------------------------------------------------
def test_cli_prints_exposition_from_the_audit_log(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit-logs" / "s1.jsonl") as log:
        for event in run_events():
            log(event)
    result = pliny(tmp_path, "metrics", "s1")
    assert result.returncode == 0, result.stderr
    data = samples(result.stdout)
    assert value(data, "pliny_cost_usd_total", model="m1") == pytest.approx(0.75)
    assert value(data, "pliny_tokens_total", kind="prompt", model="m1") == 150
    assert not any(name.endswith("_created") for name, _ in data)  # time of the command: noise
    out = tmp_path / "textfile" / "pliny.prom"
    written = pliny(tmp_path.parent, "metrics", "s1", "-o", str(out), "-w", str(tmp_path))
    assert written.returncode == 0, written.stderr
    assert written.stdout == "" and samples(out.read_text()) == data


def test_cli_unknown_session(tmp_path: Path) -> None:
    result = pliny(tmp_path, "metrics", "nope")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "unknown session 'nope'" in result.stderr
