"""Prices from the real genai-prices data, user overrides, and budget limits."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import genai_prices
import pytest

from pliny.audit.reader import read_events
from pliny.audit.summary import summarize
from pliny.audit.writer import AuditLog
from pliny.config.settings import Budgets, Limit, load_settings
from pliny.errors import BudgetExceeded, ConfigError
from pliny.events import EventBus, LLMCall, parse
from pliny.llm.budget import BudgetGuard
from pliny.llm.pricing import PricingTable, table_source

OPENAI = "https://api.openai.com/v1"
SOURCE = f"genai-prices {genai_prices.__version__}"


@pytest.fixture(scope="module")
def table() -> PricingTable:
    return PricingTable.load(api_url=OPENAI)


def mtok(model: str, when: datetime, field: str) -> Decimal:
    """genai-prices' own price for ``model`` at ``when``, per 1M tokens."""
    usage = genai_prices.Usage(input_tokens=1)
    calc = genai_prices.calc_price(
        usage, model, provider_api_url=OPENAI, genai_request_timestamp=when
    )
    return getattr(calc.model_price, field)


# -- pricing ------------------------------------------------------------------------


def test_gpt_4o_mini_costs_what_genai_prices_says_for_that_date(table: PricingTable) -> None:
    when = datetime(2025, 9, 1, tzinfo=UTC)
    fields = ("input_mtok", "output_mtok", "cache_read_mtok")
    inp, out, hit = (mtok("gpt-4o-mini", when, f) for f in fields)
    # 1000 prompt tokens of which 200 cached, 500 completion tokens, by hand
    by_hand = (800 * inp + 200 * hit + 500 * out) / 1_000_000
    quote = table.quote("gpt-4o-mini", 1000, 500, 200, when)
    assert quote is not None and quote.usd == pytest.approx(float(by_hand), abs=1e-12)
    assert (quote.source, quote.provider) == (SOURCE, "openai") == (table_source(), "openai")
    # the list price on that date: $0.15 / $0.60 / $0.075 per 1M
    assert (inp, out, hit) == (Decimal("0.15"), Decimal("0.6"), Decimal("0.075"))
    assert table.price("gpt-4o-mini", 1_000_000, 0, 0, when) == pytest.approx(0.15)


def test_price_follows_the_date_of_the_call(table: PricingTable) -> None:
    # OpenAI cut o3 from $10/$40 to $2/$8 per 1M on 2025-06-10
    before, after = datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 6, 20, tzinfo=UTC)
    assert table.price("o3", 1_000_000, 1_000_000, 0, before) == pytest.approx(10 + 40)
    assert table.price("o3", 1_000_000, 1_000_000, 0, after) == pytest.approx(2 + 8)
    assert mtok("o3", before, "input_mtok") == 5 * mtok("o3", after, "input_mtok")


def test_cached_tokens_beyond_prompt_are_clamped(table: PricingTable) -> None:
    when = datetime(2025, 9, 1, tzinfo=UTC)
    hit = float(mtok("gpt-4.1", when, "cache_read_mtok"))
    assert table.price("gpt-4.1", 100, 0, 500, when) == pytest.approx(100 * hit / 1e6)


def test_dated_snapshot_priced_as_its_base_model(table: PricingTable) -> None:
    assert table.price("gpt-4o-2024-08-06", 1000, 100) == table.price("gpt-4o", 1000, 100)
    assert table.price("GPT-4.1-nano-2025-04-14", 10, 10) == table.price("gpt-4.1-nano", 10, 10)


def test_unknown_model_is_unpriced_and_warned_once_per_table() -> None:
    fresh = PricingTable.load(api_url=OPENAI)
    for model in ("mystery-model", "fake-model", "smollm2-135m-instruct"):
        assert fresh.price(model, 1000, 1000) is None and fresh.quote(model, 1, 1) is None
    assert PricingTable.load().price("mystery-model", 1, 1) is None  # no endpoint: by name
    assert fresh.warn_once("mystery-model") is True
    assert fresh.warn_once("mystery-model") is False
    assert fresh.warn_once("other-model") is True
    assert PricingTable.load().warn_once("mystery-model") is True  # per session table


def test_provider_comes_from_the_endpoint_url_else_the_model_name() -> None:
    groq = PricingTable.load(api_url="https://api.groq.com/openai/v1")
    quote = groq.quote("llama-3.1-8b-instant", 1000, 1000)
    assert quote is not None and quote.provider == "groq"
    assert groq.quote("gpt-4o-mini", 1000, 1000) is None  # groq does not serve it: unpriced
    # a proxy or local server genai-prices does not know: the model name decides
    proxy = PricingTable.load(api_url="http://127.0.0.1:8000/v1")
    assert proxy.api_url is None
    via_proxy = proxy.quote("gpt-4o-mini", 1000, 1000)
    assert via_proxy is not None and via_proxy.provider == "openai"
    assert via_proxy.usd == PricingTable.load(api_url=OPENAI).price("gpt-4o-mini", 1000, 1000)


def test_user_config_overrides_win_and_add_models(tmp_path: Path, table: PricingTable) -> None:
    (tmp_path / "pliny.yaml").write_text(
        "pricing:\n"
        "  gpt-4o: {input: 5.0, output: 15.0}\n"
        "  my-finetune: {input: 1.0, output: 2.0, cached_input: 0.5}\n"
    )
    settings = load_settings(tmp_path)
    custom = PricingTable.load(settings.pricing, api_url=OPENAI)
    # no cached_input in the override: cached tokens cost the input rate
    quote = custom.quote("gpt-4o", 1000, 1000, 400)
    assert quote is not None and quote.usd == pytest.approx((1000 * 5 + 1000 * 15) / 1e6)
    assert (quote.source, quote.provider) == ("pliny.yaml", None)
    assert custom.price("gpt-4o-2024-08-06", 1000, 1000) == quote.usd  # a snapshot of it
    assert custom.price("my-finetune", 1000, 1000, 400) == pytest.approx(
        (600 * 1.0 + 400 * 0.5 + 1000 * 2.0) / 1e6
    )
    assert custom.quote("gpt-4o-mini", 10, 10) == table.quote("gpt-4o-mini", 10, 10)
    assert custom.hash != table.hash and PricingTable.load().hash == table.hash
    assert len(table.hash) == 12


def test_bad_pricing_override_in_user_config_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "pliny.yaml").write_text("pricing:\n  gpt-4o: {input: 1.0, ouput: 2.0}\n")
    with pytest.raises(ConfigError, match=r"pliny.yaml:2:\d+: pricing\.gpt-4o"):
        load_settings(tmp_path)


def test_pricing_makes_no_network_call_and_starts_no_updater() -> None:
    probe = (
        "import socket, threading\n"
        "def refuse(*a, **k):\n    raise OSError('network used')\n"
        "socket.socket.connect = socket.socket.connect_ex = refuse\n"
        "socket.create_connection = socket.getaddrinfo = refuse\n"
        "from pliny.llm.pricing import PricingTable\n"
        "t = PricingTable.load(api_url='https://api.openai.com/v1')\n"
        "print(t.price('gpt-4o-mini', 1000, 1000), t.price('o3', 10, 10),"
        " threading.active_count())\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    gpt, o3, threads = proc.stdout.split()
    assert float(gpt) > 0 and float(o3) > 0 and threads == "1"


def test_old_audit_lines_without_price_source_still_load_and_summarize() -> None:
    old = {
        "v": 1,
        "type": "llm_call",
        "ts": "2025-08-01T10:00:00.000000Z",
        "seq": 1,
        "session": "s",
        "phase": "p",
        "agent": "a",
        "model": "gpt-4o",
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "cost_usd": 0.00035,
        "pricing_hash": "320edc12e1a8",
    }
    new = {**old, "seq": 2, "cost_usd": None, "model": "mystery", "price_source": None}
    priced = {**old, "seq": 3, "price_source": SOURCE, "price_provider": "openai"}
    events = [parse(d) for d in (old, new, priced)]
    assert isinstance(events[0], LLMCall) and events[0].price_source is None
    summary = summarize(events)
    assert summary.totals.calls == 3 and summary.totals.cost_usd == pytest.approx(0.0007)
    assert summary.unpriced_models == ["mystery"] and summary.price_sources == [SOURCE]


# -- budgets ------------------------------------------------------------------------


def call(phase: str, agent: str, tokens: int, cost: float | None, **kw: object) -> LLMCall:
    return LLMCall(
        phase=phase,
        agent=agent,
        prompt_tokens=tokens - 50,
        completion_tokens=50,
        cost_usd=cost,
        **kw,
    )


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
