"""Prometheus metrics folded from engine events.

``Metrics`` is an EventBus listener, so ``pliny execute --metrics-port`` (live,
over HTTP) and ``pliny metrics ID`` (from the audit log, for node_exporter's
textfile collector) show the same numbers. Each instance owns a private
``CollectorRegistry``: nothing leaks into prometheus_client's global one,
so two runs in one process never collide.

Accounting follows ``pliny.usage`` (as ``pliny audit summary`` does): a
call answered from the resume journal or the result cache is counted
(``replayed="true"``) but adds no tokens, cost or call duration; the call
that first got the answer did.
Errors are ``error`` and ``agent_failed`` events (failures the run saw);
retried attempts are counted apart in ``pliny_retries_total``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info
from prometheus_client.exposition import generate_latest

from pliny.errors import UsageError
from pliny.events import Event
from pliny.usage import call_kind

STATUSES = ["in_progress", "completed", "failed", "cancelled", "paused", "crashed"]
_STATUS_OF = {
    "session_started": "in_progress",
    "session_resumed": "in_progress",
    "crash_detected": "crashed",
    "session_completed": "completed",
    "session_failed": "failed",
    "session_cancelled": "cancelled",
    "session_paused": "paused",
}
_ENDS = frozenset({"session_completed", "session_failed", "session_cancelled", "session_paused"})
# LLM calls take seconds; agents take seconds to many minutes.
CALL_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, float("inf"))
AGENT_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, float("inf"))


def _field(event: Event, name: str, default: Any = None) -> Any:
    """Known fields and extras alike; an old or odd log line must never raise here."""
    value = getattr(event, name, default)
    return default if value is None else value


def _amount(event: Event, name: str) -> float:
    """A non-negative number (counters refuse to go down, even for a hand-edited log)."""
    value = _field(event, name, 0)
    return max(0.0, float(value)) if isinstance(value, int | float) else 0.0


class Metrics:
    """Prometheus metrics of one session, updated by ``metrics(event)``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.llm_calls = Counter(
            "pliny_llm_calls",
            "LLM calls (replayed: answered from the resume journal or result cache, not sent)",
            ["model", "phase", "agent", "replayed"],
            registry=reg,
        )
        self.tokens = Counter(
            "pliny_tokens",
            "Tokens of calls sent (cached: part of prompt)",
            ["kind", "model"],
            registry=reg,
        )
        self.cost = Counter(
            "pliny_cost_usd", "Cost of priced calls in USD", ["model"], registry=reg
        )
        self.errors = Counter(
            "pliny_errors", "Errors (error and agent_failed events)", ["category"], registry=reg
        )
        self.retries = Counter("pliny_retries", "Retried attempts", ["category"], registry=reg)
        self.unpriced = Counter(
            "pliny_unpriced_calls", "Calls whose model has no price", registry=reg
        )
        self.cache_hits = Counter(
            "pliny_cache_hits", "Calls answered from the result cache", ["agent"], registry=reg
        )
        self.agent_failures = Counter(
            "pliny_agent_failures", "Agents that gave up", ["phase", "category"], registry=reg
        )
        self.call_duration = Histogram(
            "pliny_llm_call_duration_seconds",
            "LLM call latency",
            ["model"],
            buckets=CALL_BUCKETS,
            registry=reg,
        )
        self.agent_duration = Histogram(
            "pliny_agent_duration_seconds",
            "Agent run time (completed agents, reused results excluded)",
            ["phase"],
            buckets=AGENT_BUCKETS,
            registry=reg,
        )
        self.in_flight = Gauge("pliny_agents_in_flight", "Agents running now", registry=reg)
        self.session_info = Info(
            "pliny_session", "The session these metrics describe", registry=reg
        )
        self.status = Enum(
            "pliny_session_status",
            "The session's status",
            ["session"],
            states=STATUSES,
            registry=reg,
        )
        self._running: set[tuple[str | None, str | None]] = set()
        self._info: dict[str, str] = {}
        self._lock = threading.Lock()  # the in-flight set; prometheus metrics lock themselves

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> Metrics:
        """Metrics of a session rebuilt from its audit log."""
        metrics = cls()
        metrics.prime(events)
        return metrics

    def prime(self, events: Iterable[Event]) -> None:
        """Fold earlier events (a resumed session's log) so totals cover the whole session."""
        for event in events:
            self(event)

    def exposition(self) -> str:
        """The Prometheus text exposition format (what /metrics serves)."""
        return generate_latest(self.registry).decode()

    def serve(self, port: int, host: str = "127.0.0.1") -> MetricsServer:
        """Serve /metrics on ``host:port`` in a daemon thread; port 0 picks a free one."""
        return MetricsServer(self.registry, port, host)

    # -- folding events -------------------------------------------------------
    def __call__(self, event: Event) -> None:
        handler = getattr(self, f"_on_{event.type}", None)
        if handler is not None:
            handler(event)
        if event.type in _STATUS_OF:
            self._set_status(event)

    def _set_status(self, event: Event) -> None:
        if event.session and not self._info.get("session"):
            self._info["session"] = event.session
        self.status.labels(session=self._info.get("session", "")).state(_STATUS_OF[event.type])
        if event.type in _ENDS or event.type in ("crash_detected", "session_resumed"):
            # Agents of a finished or dead process are not running any more.
            with self._lock:
                self._running.clear()
                self.in_flight.set(0)

    def _on_session_started(self, event: Event) -> None:
        self._info.update(session=event.session or "", framework=_field(event, "framework", ""))
        self.session_info.info(self._info)

    def _on_llm_call(self, event: Event) -> None:
        model = _field(event, "model", "") or "unknown"
        kind = call_kind(event)  # the rule of pliny.usage: only paid calls add amounts
        self.llm_calls.labels(
            model=model,
            phase=event.phase or "",
            agent=event.agent or "",
            replayed=str(kind != "paid").lower(),
        ).inc()
        if kind == "cache_hit":
            self.cache_hits.labels(agent=event.agent or "").inc()
        if kind != "paid":
            return
        for tokens in ("prompt", "completion", "cached"):
            self.tokens.labels(kind=tokens, model=model).inc(_amount(event, f"{tokens}_tokens"))
        cost = getattr(event, "cost_usd", 0.0)
        if cost is None:
            self.unpriced.inc()
        else:
            self.cost.labels(model=model).inc(max(0.0, cost))
        self.call_duration.labels(model=model).observe(_amount(event, "latency_ms") / 1000)

    def _on_agent_started(self, event: Event) -> None:
        with self._lock:
            self._running.add((event.phase, event.agent))
            self.in_flight.set(len(self._running))

    def _agent_ended(self, event: Event) -> None:
        with self._lock:
            self._running.discard((event.phase, event.agent))
            self.in_flight.set(len(self._running))

    def _on_agent_completed(self, event: Event) -> None:
        self._agent_ended(event)
        if not _field(event, "reused", False):
            seconds = _amount(event, "duration_ms") / 1000
            self.agent_duration.labels(phase=event.phase or "").observe(seconds)

    def _on_agent_failed(self, event: Event) -> None:
        self._agent_ended(event)
        category = _field(event, "category", "") or "unknown"
        self.errors.labels(category=category).inc()
        self.agent_failures.labels(phase=event.phase or "", category=category).inc()

    def _on_error(self, event: Event) -> None:
        self.errors.labels(category=_field(event, "category", "") or "unknown").inc()

    def _on_retry(self, event: Event) -> None:
        self.retries.labels(category=_field(event, "category", "") or "unknown").inc()


class MetricsServer:
    """A running /metrics endpoint; calling it (or ``stop()``) shuts it down."""

    def __init__(self, registry: CollectorRegistry, port: int, host: str) -> None:
        from prometheus_client import start_http_server

        try:
            self._httpd, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            why = exc.strerror or exc
            raise UsageError(f"cannot serve metrics on {host}:{port}: {why}") from None
        self.host = host
        self.port: int = self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    __call__ = stop

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
