"""Pricing arithmetic and lookup, user overrides, and budget limits."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pliny.audit.reader import read_events
from pliny.audit.writer import AuditLog
from pliny.config import resources
from pliny.config.settings import Budgets, Limit, load_settings
from pliny.errors import BudgetExceeded, ConfigError
from pliny.events import EventBus, LLMCall
from pliny.llm.budget import BudgetGuard
from pliny.llm.pricing import PricingTable

YAML_PRICES = yaml.safe_load(resources.config_path("pricing.yaml").read_text())["models"]


@pytest.fixture(scope="module")
def table() -> PricingTable:
    return PricingTable.load()


# -- pricing ------------------------------------------------------------------------


def test_builtin_table_lists_current_models_and_free_local_ones() -> None:
    for name in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3",
                 "o4-mini", "gpt-5", "gpt-5-mini"):  # fmt: skip
        assert YAML_PRICES[name]["input"] > 0 and YAML_PRICES[name]["output"] > 0
    assert YAML_PRICES["local"] == YAML_PRICES["smollm2-135m-instruct"] == {
        "input": 0, "output": 0, "cached_input": 0,
    }  # fmt: skip


def test_price_by_hand_from_the_yaml_values(table: PricingTable) -> None:
    p = YAML_PRICES["gpt-4o"]
    # 1000 prompt tokens of which 200 cached, 500 completion tokens
    by_hand = (800 * p["input"] + 200 * p["cached_input"] + 500 * p["output"]) / 1_000_000
    assert table.price("gpt-4o", 1000, 500, 200) == pytest.approx(by_hand, abs=1e-12)
    # with the list prices of the file: 800*2.50 + 200*1.25 + 500*10.00 = 7250 per 1M
    assert by_hand == pytest.approx(0.00725)
    m = YAML_PRICES["gpt-4o-mini"]
    assert table.price("gpt-4o-mini", 1_000_000, 0) == pytest.approx(m["input"])
    assert table.price("gpt-4o-mini", 0, 1_000_000) == pytest.approx(m["output"])
    assert table.price("gpt-4o-mini", 10, 0, 10) == pytest.approx(10 * m["cached_input"] / 1e6)
    assert table.price("smollm2-135m-instruct", 5000, 5000) == 0.0
    assert table.price("local", 1, 1) == 0.0


def test_cached_tokens_beyond_prompt_are_clamped(table: PricingTable) -> None:
    p = YAML_PRICES["gpt-4.1"]
    assert table.price("gpt-4.1", 100, 0, 500) == pytest.approx(100 * p["cached_input"] / 1e6)


def test_dated_snapshot_priced_as_its_base_model(table: PricingTable) -> None:
    assert table.price("gpt-4o-2024-08-06", 1000, 100) == table.price("gpt-4o", 1000, 100)
    assert table.price("gpt-4o-mini-2024-07-18", 1000, 100) == table.price("gpt-4o-mini", 1000, 100)
    assert table.price("GPT-4.1-nano-2025-04-14", 10, 10) == table.price("gpt-4.1-nano", 10, 10)
    # a different model sharing a prefix is not a snapshot: unpriced, not mispriced
    for name in ("o3-mini", "gpt-4o-audio-preview", "gpt-4o-mini-tts", "gpt-5-codex"):
        assert table.price(name, 10, 10) is None, name


def test_unknown_model_is_unpriced_and_warned_once_per_table(table: PricingTable) -> None:
    fresh = PricingTable.load()
    assert fresh.price("mystery-model", 1000, 1000) is None
    assert fresh.warn_once("mystery-model") is True
    assert fresh.warn_once("mystery-model") is False
    assert fresh.warn_once("other-model") is True
    assert PricingTable.load().warn_once("mystery-model") is True  # per session table


def test_user_config_overrides_and_adds_models(tmp_path: Path, table: PricingTable) -> None:
    (tmp_path / "pliny.yaml").write_text(
        "pricing:\n"
        "  gpt-4o: {input: 5.0, output: 15.0}\n"
        "  my-finetune: {input: 1.0, output: 2.0, cached_input: 0.5}\n"
    )
    settings = load_settings(tmp_path)
    custom = PricingTable.load(settings.pricing)
    # no cached_input in the override: cached tokens cost the input rate
    assert custom.price("gpt-4o", 1000, 1000, 400) == pytest.approx((1000 * 5 + 1000 * 15) / 1e6)
    assert custom.price("my-finetune", 1000, 1000, 400) == pytest.approx(
        (600 * 1.0 + 400 * 0.5 + 1000 * 2.0) / 1e6
    )
    assert custom.price("gpt-4o-mini", 10, 10) == table.price("gpt-4o-mini", 10, 10)
    assert custom.hash != table.hash and PricingTable.load().hash == table.hash
    assert len(table.hash) == 12


def test_bad_pricing_file_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "pricing.yaml"
    bad.write_text("models:\n  gpt-x: {input: 1.0, output: 2.0}\n  gpt-y: {input: -3, output: 1}\n")
    with pytest.raises(ConfigError, match=rf"{bad}:3:\d+: models\.gpt-y\.input"):
        PricingTable.load(path=bad)


def test_bad_pricing_override_in_user_config_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "pliny.yaml").write_text("pricing:\n  gpt-4o: {input: 1.0, ouput: 2.0}\n")
    with pytest.raises(ConfigError, match=r"pliny.yaml:2:\d+: pricing\.gpt-4o"):
        load_settings(tmp_path)


# -- budgets ------------------------------------------------------------------------


def call(phase: str, agent: str, tokens: int, cost: float | None, **kw: object) -> LLMCall:
    return LLMCall(phase=phase, agent=agent, prompt_tokens=tokens - 50, completion_tokens=50,
                   cost_usd=cost, **kw)  # fmt: skip


def test_session_token_limit_trips_at_the_right_call() -> None:
    guard = BudgetGuard(Budgets(max_tokens=1000))
    allowed = 0
    with pytest.raises(BudgetExceeded) as info:
        for _ in range(10):
            guard.check("research", "alice", 300, 0.0)
            guard(call("research", "alice", 300, 0.01))
            allowed += 1
    assert allowed == 3  # 900 used + 300 estimated > 1000
    breach = info.value.breach
    assert (breach.scope, breach.limit, breach.limit_value) == ("session", "max_tokens", 1000)
    assert (breach.used, breach.estimate) == (900, 300)
    message = str(info.value)
    assert "session" in message and "max_tokens" in message and "900" in message
    assert "budgets.max_tokens" in message
    event = breach.to_event(phase="research", agent="alice")
    assert (event.type, event.scope, event.used) == ("budget_exceeded", "session", 900)


def test_phase_cost_limit_only_applies_to_that_phase() -> None:
    guard = BudgetGuard(Budgets(phases={"research": Limit(max_cost_usd=0.01)}))
    for _ in range(2):
        guard.check("research", "a", 10, 0.004)
        guard(call("research", "a", 100, 0.004))
    with pytest.raises(BudgetExceeded) as info:
        guard.check("research", "b", 10, 0.004)  # 0.008 + 0.004 > 0.01
    assert info.value.breach.scope == "phase:research"
    assert "budgets.phases.research.max_cost_usd" in str(info.value)
    for _ in range(5):
        guard.check("identify", "a", 10, 0.004)
        guard(call("identify", "a", 100, 0.004))
    assert guard.session.cost_usd == pytest.approx(0.028)


def test_agent_limit_and_scope_order() -> None:
    budgets = Budgets(max_cost_usd=1.0, agents={"alice": Limit(max_tokens=500)})
    guard = BudgetGuard(budgets)
    guard(call("p", "alice", 400, 0.001))
    guard.check("p", "bob", 400, 0.001)
    with pytest.raises(BudgetExceeded) as info:
        guard.check("p", "alice", 200, 0.001)
    assert info.value.breach.scope == "agent:alice"
    guard(call("p", "bob", 100, 0.999))
    with pytest.raises(BudgetExceeded) as info:
        guard.check("p", "alice", 200, 0.01)
    assert info.value.breach.scope == "session"  # the widest scope is reported first


def test_replayed_and_unpriced_calls() -> None:
    guard = BudgetGuard(Budgets(max_cost_usd=0.05, max_tokens=10_000))
    guard(call("p", "a", 1000, 0.04, replayed=True))
    guard(call("p", "a", 1000, 0.04, cache_hit=True))
    assert (guard.session.calls, guard.session.tokens, guard.session.cost_usd) == (0, 0, 0.0)
    guard(call("p", "a", 1000, None))
    assert (guard.session.tokens, guard.session.cost_usd) == (1000, 0.0)
    assert guard.session.unpriced_calls == 1 and guard.agents["a"].unpriced_calls == 1
    guard.check("p", "a", 100, None)  # an unpriced estimate checks as 0


def test_guard_on_the_bus_and_rebuilt_from_the_log_on_resume(tmp_path: Path) -> None:
    budgets = Budgets(max_cost_usd=0.02, phases={"p1": Limit(max_tokens=250)})
    path = tmp_path / "s.jsonl"
    bus = EventBus(session="s")
    guard = BudgetGuard(budgets)
    with AuditLog(path) as log:
        bus.subscribe(log)
        bus.subscribe(guard)
        bus.emit(call("p1", "a", 100, 0.005))
        bus.emit(call("p1", "b", 100, 0.005))
        bus.emit(call("p2", "a", 300, 0.006, replayed=True))
        bus.emit(call("p2", "c", 300, 0.006))
    with pytest.raises(BudgetExceeded, match="phase:p1"):
        guard.check("p1", "a", 100, 0.001)
    rebuilt = BudgetGuard.from_events(read_events(path), budgets)
    assert rebuilt.session == guard.session and rebuilt.phases == guard.phases
    assert rebuilt.agents == guard.agents and rebuilt.session.tokens == 500
    with pytest.raises(BudgetExceeded, match="session budget max_cost_usd"):
        rebuilt.check("p2", "c", 10, 0.005)  # 0.016 + 0.005 > 0.02
    raised = Budgets(max_cost_usd=1.0, phases={"p1": Limit(max_tokens=10_000)})
    resumed = BudgetGuard.from_events(read_events(path), raised)
    resumed.check("p2", "c", 10, 0.005)
    resumed.check("p1", "a", 100, 0.001)


def test_budgets_from_user_yaml(tmp_path: Path) -> None:
    (tmp_path / "pliny.yaml").write_text(
        "budgets:\n  max_cost_usd: 2.5\n  agents:\n    writer: {max_tokens: 100}\n"
    )
    guard = BudgetGuard(load_settings(tmp_path).budgets)
    guard.check("p", "reader", 1000, 1.0)
    with pytest.raises(BudgetExceeded, match="agent:writer"):
        guard.check("p", "writer", 101, 0.0)
