"""One usage fold (pliny/usage.py) behind every view of calls, tokens and cost.

Unit tests of the pure fold on hand-built events, then real runs: a R-I-S-E
session against the fake server fails mid-agent (the executor's second turn
gets a 400), is resumed (its first turn replays from the journal), and every
view — checkpoint trailers, ``audit summary``, ``session show`` and the
resumed run's final line — must agree with the tokens the server served. And
a model missing from the pricing table must read "unpriced", never $0.0000.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench.crashkit import SESSION, _first_turn, execute_args, git, init_workspace, run, script
from pliny.events import LLMCall
from pliny.usage import Usage, call_kind, fold, format_cost
from tests.fakeserver import FakeServer

pytestmark = pytest.mark.timeout(120)


def _call(**over: Any) -> LLMCall:
    fields: dict[str, Any] = {"prompt_tokens": 100, "completion_tokens": 20, "cost_usd": 0.01}
    return LLMCall(**(fields | over))


# -- the fold -------------------------------------------------------------------------
def test_replayed_and_cached_calls_count_apart_and_add_nothing() -> None:
    usage = fold(
        [
            _call(cached_tokens=30, latency_ms=100),
            _call(replayed=True, cost_usd=0.0),  # the journal's copy of the call above
            _call(cache_hit=True, prompt_tokens=0, completion_tokens=0, cost_usd=0.0),
            _call(cost_usd=None, tokens_estimated=True),  # unpriced model
        ]
    )
    assert (usage.calls, usage.replayed_calls, usage.cache_hits) == (2, 1, 1)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.tokens) == (200, 40, 240)
    assert (usage.cached_tokens, usage.estimated_calls, usage.latency_ms) == (30, 1, 100)
    assert (usage.cost_usd, usage.unpriced_calls) == (0.01, 1)
    assert usage.cost_text() == "$0.0100 + unpriced"


def test_a_replayed_unpriced_call_is_not_counted_unpriced_again() -> None:
    usage = fold([_call(cost_usd=None), _call(cost_usd=None, replayed=True)])
    assert (usage.calls, usage.replayed_calls, usage.unpriced_calls) == (1, 1, 1)
    assert usage.cost_text() == "unpriced"


def test_call_kind_ignores_other_events() -> None:
    from pliny.events import Retry

    assert call_kind(Retry()) is None and Usage().add(Retry()) is None
    assert [call_kind(_call(**f)) for f in ({}, {"replayed": True}, {"cache_hit": True})] == [
        "paid",
        "replayed",
        "cache_hit",
    ]


@pytest.mark.parametrize(
    ("cost", "unpriced", "calls", "text"),
    [
        (0.0, 0, 0, "$0.0000"),  # nothing spent is a true $0
        (0.0, 0, 3, "$0.0000"),  # priced at 0 (the embedded model)
        (0.00003, 0, 1, "<$0.0001"),  # paid, but too little to show: never a $0 that reads free
        (0.0, 3, 3, "unpriced"),
        (0.0123, 1, 3, "$0.0123 + unpriced"),
    ],
)
def test_format_cost(cost: float, unpriced: int, calls: int, text: str) -> None:
    assert format_cost(cost, unpriced, calls) == text


# -- real runs ------------------------------------------------------------------------
def _served_tokens(server: FakeServer) -> int:
    """What the server billed: the usage blocks of the replies it delivered."""
    return sum(r.usage["total_tokens"] for r in server.requests if r.usage)


def _trailers(ws: Path) -> dict[str, dict[str, str]]:
    """Checkpoint name -> its commit's Pliny-* trailers, read with plain git."""
    refs = git(ws, "for-each-ref", "--format=%(refname)", f"refs/pliny/{SESSION}/checkpoints/")
    out = {}
    for ref in refs.stdout.split():
        body = git(ws, "log", "-1", "--format=%(trailers:only,unfold)", ref).stdout
        out[ref.rsplit("/", 1)[1]] = dict(
            line.split(": ", 1) for line in body.splitlines() if ": " in line
        )
    return out


def _final_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if f"session {SESSION} ·" in line]
    assert lines, stderr[-2000:]
    return lines[-1]


def _cli_json(ws: Path, server: FakeServer, *args: str) -> Any:
    done = run(ws, server, *args)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.slow  # two or three real CLI runs (~12 s)
def test_every_view_agrees_with_the_server_after_a_failed_run_is_resumed(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    ws = init_workspace(tmp_path)
    # The executor's second turn (after its write_file ran) is refused once: the
    # session fails there, and the resume replays its first turn from the journal.
    fake_server.fail(400, system="careful implementer", when=lambda b: not _first_turn(b), times=1)
    script(fake_server)
    failed = run(ws, fake_server, *execute_args(SESSION, "agent"))
    assert failed.returncode == 1, failed.stderr[-2000:]
    first_run = fake_server.count()

    resumed = run(ws, fake_server, "session", "resume", SESSION)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    sent = fake_server.count() - first_run
    served = _served_tokens(fake_server)
    assert sent == 1 and served > 0

    trailers = _trailers(ws)
    tokens = [int(t["Pliny-Tokens"]) for t in trailers.values()]
    # Trailers are the session's running total at each checkpoint.
    assert int(trailers["after-execute"]["Pliny-Tokens"]) == max(tokens) == served, trailers

    summary = _cli_json(ws, fake_server, "audit", "summary", SESSION, "--json")["totals"]
    assert (summary["tokens"], summary["replayed_calls"]) == (served, 1)
    assert summary["calls"] == first_run - 1 + sent  # the 400 was not a paid call
    shown = _cli_json(ws, fake_server, "session", "show", SESSION, "--format", "json")["totals"]
    assert (shown["tokens"], shown["calls"], shown["replayed_calls"]) == (
        served,
        summary["calls"],
        1,
    )
    cost = pytest.approx(summary["cost_usd"], abs=1e-6)  # views round to 6 places
    assert shown["cost_usd"] == cost and summary["cost_usd"] > 0
    assert float(trailers["after-execute"]["Pliny-Cost-USD"]) == cost

    line = _final_line(resumed.stderr)
    this_run = re.search(r"this run: (\d+) calls? sent \(\+(\d+) replayed\)", line)
    assert this_run, line
    assert (int(this_run[1]), int(this_run[2])) == (sent, 1), line
    assert f"session: {first_run - 1 + sent} calls, {served:,} tokens" in line, line


@pytest.mark.slow  # two or three real CLI runs (~12 s)
def test_an_unpriced_model_reads_unpriced_everywhere(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    ws = init_workspace(tmp_path)
    script(fake_server)
    done = run(ws, fake_server, *execute_args(SESSION, "phase", "--model", "no-such-model-x1"))
    assert done.returncode == 0, done.stderr[-2000:]
    views = {"execute": done.stderr, "final line": _final_line(done.stderr)}
    for fmt in ("text", "json", "dot", "line"):
        shown = run(ws, fake_server, "session", "show", SESSION, "--format", fmt)
        assert shown.returncode == 0, shown.stderr
        views[f"show {fmt}"] = shown.stdout
    if shutil.which("dot"):
        views["show svg"] = run(
            ws, fake_server, "session", "show", SESSION, "--format", "svg"
        ).stdout
    listed = run(ws, fake_server, "checkpoint", "list", "--session", SESSION)
    assert listed.returncode == 0, listed.stderr
    views["checkpoint list"] = listed.stdout
    for name, text in views.items():
        assert "$0.0000" not in text and "0.000000" not in text, f"{name}:\n{text}"
        assert "unpriced" in text, f"{name}:\n{text}"
    totals = json.loads(views["show json"])["totals"]
    assert totals["calls"] > 0 and totals["unpriced_calls"] == totals["calls"]
    assert totals["cost"] == "unpriced"
