"""Rich rendering for `pliny audit` (imported only when a table is printed)."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from pliny.audit.summary import Stats, Summary
from pliny.events import Event

_BASE = {"v", "type", "ts", "seq", "session", "phase", "agent", "prev", "hash"}
_STYLE = {
    "llm_call": "cyan",
    "tool_call": "blue",
    "retry": "yellow",
    "error": "red",
    "agent_failed": "red",
    "session_failed": "bold red",
    "budget_exceeded": "bold yellow",
    "session_completed": "bold green",
    "crash_detected": "bold red",
    "warning": "yellow",
    "log_repaired": "magenta",
    "rollback": "magenta",
    "checkpoint_created": "green",
}


def _time(ts: str) -> str:
    return ts[11:23] if len(ts) >= 23 else ts


def _usd(cost: float | None) -> str:
    return "unpriced" if cost is None else f"${cost:.6f}"


def _buckets(d: dict[str, Any]) -> str:
    """ " (cache read 500, reasoning 64)": the subsets, only those present."""
    parts = [
        f"{label} {d[key]}"
        for key, label in (
            ("cached_tokens", "cache read"),
            ("cache_write_tokens", "cache write"),
            ("reasoning_tokens", "reasoning"),
        )
        if d.get(key)
    ]
    return f" ({', '.join(parts)})" if parts else ""


def describe(event: Event) -> str:
    """A one-line gist of the fields that matter for this event type."""
    d: dict[str, Any] = event.model_dump(mode="json")
    kind = event.type
    if kind == "llm_call":
        est = " (estimated)" if d.get("tokens_estimated") else ""
        how = " replayed" if d.get("replayed") else " cache hit" if d.get("cache_hit") else ""
        at = f" @{d['endpoint']}" if d.get("endpoint") else ""
        return (
            f"{d.get('model')}{at} {d.get('prompt_tokens')}+"
            f"{d.get('completion_tokens')} tok{est}{_buckets(d)}, {d.get('latency_ms')} ms, "
            f"{_usd(d.get('cost_usd'))}, attempt {d.get('attempt')}{how}"
        )
    if kind == "tool_call":
        status = "ok" if d.get("ok") else f"error: {d.get('error')}"
        return f"{d.get('tool')} {status} ({d.get('duration_ms')} ms)"
    if kind == "retry":
        return (
            f"{d.get('category')} attempt {d.get('attempt')} in {d.get('delay_ms')} ms: "
            f"{d.get('message')}"
        )
    if kind in ("error", "agent_failed", "session_failed"):
        return f"{d.get('category')} {d.get('code')}: {d.get('message')}"
    rest = {k: v for k, v in d.items() if k not in _BASE and v not in (None, "", [], {})}
    text = ", ".join(f"{k}={v}" for k, v in rest.items())
    return text if len(text) <= 160 else text[:157] + "..."


def events_table(events: list[Event], title: str) -> Table:
    table = Table(title=title, show_lines=False, expand=False)
    for name, justify in (("seq", "right"), ("time", "left"), ("type", "left")):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    table.add_column("phase")
    table.add_column("agent")
    table.add_column("detail", overflow="fold")
    for e in events:
        table.add_row(
            str(e.seq),
            _time(e.ts),
            Text(e.type, style=_STYLE.get(e.type, "")),
            e.phase or "",
            e.agent or "",
            describe(e),
        )
    return table


def event_row_text(event: Event) -> Text:
    """One streamed line for --follow (a table cannot grow row by row)."""
    text = Text(f"{event.seq!s:>5} {_time(event.ts)} ")
    text.append(f"{event.type:<18}", style=_STYLE.get(event.type, ""))
    where = "/".join(p for p in (event.phase, event.agent) if p)
    text.append(f" {where:<24} {describe(event)}")
    return text


def _cost(stats: Stats) -> str:
    return stats.cost_text()


def _retries(stats: Stats) -> str:
    return ", ".join(f"{k}:{v}" for k, v in sorted(stats.retries.items())) or "-"


def _secs(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.1f}s"


def _calls(stats: Stats) -> str:
    extra = [
        f"+{n} {what}"
        for n, what in ((stats.replayed_calls, "replayed"), (stats.cache_hits, "cached"))
        if n
    ]
    return f"{stats.calls} ({', '.join(extra)})" if extra else str(stats.calls)


def _tokens(stats: Stats) -> str:
    # "~" marks totals that include tiktoken estimates (endpoint reported no usage)
    mark = "~" if stats.estimated_calls else ""
    base = f"{mark}{stats.prompt_tokens}/{stats.completion_tokens}"
    return f"{base}/{stats.cached_tokens}/{stats.cache_write_tokens}/{stats.reasoning_tokens}"


def _stats_row(stats: Stats) -> list[str]:
    errors = stats.errors + stats.failures
    return [_calls(stats), _tokens(stats), _cost(stats), _retries(stats), str(errors)]


# in/out are the totals; cache read/write are parts of "in", reasoning part of "out"
_STAT_COLUMNS = ["calls", "tokens in/out/cache-r/cache-w/reason", "cost", "retries", "errors"]


def _stats_table(title: str, first: list[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for name in first:  # names whole; numbers fold, never "…" (a cut number is a wrong one)
        table.add_column(name, no_wrap=True)
    for name in _STAT_COLUMNS:
        justify = "left" if name == "retries" else "right"
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    return table


def summary_renderables(s: Summary) -> list[Any]:
    head = Text(f"session {s.session}  {s.name!r}  framework {s.framework or '-'}  ")
    head.append(s.status, style="bold")
    head.append(f"  wall {_secs(s.wall_ms)}  events {s.events}  checkpoints {s.checkpoints}")
    out: list[Any] = [head]
    phases = _stats_table("phases", ["phase", "cycles", "duration"])
    for p in s.phases:
        phases.add_row(p.name, str(p.cycles), _secs(p.duration_ms), *_stats_row(p))
    agents = _stats_table("agents", ["agent", "phase", "status", "duration"])
    for a in s.agents:
        agents.add_row(a.name, a.phase or "", a.status, _secs(a.duration_ms), *_stats_row(a))
    totals = _stats_table("totals", [])
    totals.add_row(*_stats_row(s.totals))
    out += [phases, agents, totals]
    if s.unpriced_models:
        out.append(
            Text(f"unpriced models (cost unknown): {', '.join(s.unpriced_models)}", style="yellow")
        )
    if s.totals.estimated_calls:
        out.append(
            Text(f"~ {s.totals.estimated_calls} call(s) reported no usage: tokens estimated")
        )
    history = Table(title="history", title_justify="left")
    for name in ("seq", "time", "event", "detail"):
        history.add_column(name, overflow="fold")
    for h in s.history:
        history.add_row(str(h.seq), h.ts[:19].replace("T", " "), h.type, h.detail)
    out.append(history)
    return out
