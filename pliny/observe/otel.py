"""OpenTelemetry traces of a session, after the GenAI semantic conventions.

One trace per session (its id derived from the session id, so a resumed run
lands in the same trace), one ``invoke_workflow`` span per run of it::

    invoke_workflow rise          session_started / session_resumed -> its end
      invoke_agent planner        agent_started -> agent_completed / agent_failed
        chat gpt-4o-mini          llm_call (started ``latency_ms`` before it)
        execute_tool write_file   tool_call (started ``duration_ms`` before it)

Spans take their times from the events themselves and their ids from the
session and the opening event's ``seq``, so the audit log of a run exported
later (``pliny audit export``) gives the same tree, ids included, as the
live export did. Replayed and cache-hit calls carry ``pliny.replayed`` /
``pliny.cache_hit`` and ``pliny.cost_usd`` 0, so no dashboard counts them twice.

Needs the ``otel`` extra (opentelemetry-sdk + the OTLP/HTTP exporter); this
module is imported only when a trace is asked for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as GA
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.trace import SpanKind, Status, StatusCode

from pliny.events import Event
from pliny.logs import logger

TRACES_PATH = "/v1/traces"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RUN_STARTS = ("session_started", "session_resumed")
_RUN_ENDS = ("session_completed", "session_failed", "session_cancelled", "session_paused")
_BASE_FIELDS = {"v", "type", "ts", "seq", "session", "phase", "agent", "prev", "hash"}


def traces_url(endpoint: str) -> str:
    """An OTLP base URL (``http://host:4318``) or a full traces URL -> the traces URL."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


def endpoint_from_env(env: Mapping[str, str]) -> str | None:
    """The standard variables: the traces-only URL first, else the base one."""
    if url := env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return url
    if base := env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return traces_url(base)
    return None


def _ns(ts: str) -> int:
    """An event's ISO timestamp as Unix nanoseconds, exactly (no float rounding)."""
    when = datetime.fromisoformat(ts)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def _id(bits: int, *parts: object) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[: bits // 8], "big") or 1


class _Ids(IdGenerator):
    """Ids chosen by the builder just before each span starts (random when not set)."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0
        self._random = RandomIdGenerator()

    def generate_trace_id(self) -> int:
        return self.trace_id or self._random.generate_trace_id()

    def generate_span_id(self) -> int:
        span_id, self.span_id = self.span_id, 0
        return span_id or self._random.generate_span_id()


def _attrs(**values: Any) -> dict[str, Any]:
    """Span attributes without the unknowns (OpenTelemetry takes no None)."""
    return {k.replace("__", "."): v for k, v in values.items() if v is not None and v != ""}


def _framework_name(event: Event) -> str:
    """``rise``, or a framework file's stem (sessions save file frameworks as paths)."""
    name = getattr(event, "framework", "") or ""
    return Path(name).stem if name.endswith((".yaml", ".yml")) else name


def _server(endpoint: str) -> dict[str, Any]:
    host, _, port = endpoint.partition(":")
    return {SERVER_ADDRESS: host, **({SERVER_PORT: int(port)} if port.isdigit() else {})}


class SpanBuilder:
    """Engine events in, spans out: the same code for a live run and an audit log."""

    def __init__(self, provider: TracerProvider, ids: _Ids) -> None:
        from pliny import __version__

        self.tracer = provider.get_tracer("pliny", __version__)
        self.ids = ids
        self.framework = ""
        self.runs = 0
        self.run: Span | None = None
        self.agents: dict[tuple[str, str], Span] = {}
        self.agent_models: dict[tuple[str, str], str] = {}
        self.last_ns = 0

    def prime(self, history: Iterable[Event]) -> None:
        """Learn the framework name and run count from earlier runs (nothing exported)."""
        for event in history:
            if event.type == "session_started":
                self.framework = _framework_name(event) or self.framework
            if event.type in _RUN_STARTS:
                self.runs += 1

    def __call__(self, event: Event) -> None:
        at = _ns(event.ts)
        handler = getattr(self, "_on_" + event.type, None)
        if handler is not None:
            handler(event, at)
        elif self.run is not None:
            self._note(self.run, event, at)
        self.last_ns = max(self.last_ns, at)

    def finish(self, reason: str = "interrupted") -> None:
        """End what is still open (a run that crashed): at the last event's time."""
        for span in self.agents.values():
            self._end(span, self.last_ns, error=reason)
        self.agents.clear()
        if self.run is not None:
            self.run.set_attribute("pliny.status", reason)
            self._end(self.run, self.last_ns, error=reason)
            self.run = None

    # -- spans ------------------------------------------------------------------

    def _start(
        self,
        name: str,
        parent: Span | None,
        event: Event,
        at: int,
        kind: SpanKind,
        attributes: dict[str, Any],
    ) -> Span:
        self.ids.trace_id = _id(128, "pliny-trace", event.session)
        self.ids.span_id = _id(64, "pliny-span", event.session, event.seq) if event.seq else 0
        context = trace.set_span_in_context(parent) if parent is not None else Context()
        common = _attrs(
            pliny__session=event.session, pliny__phase=event.phase, pliny__agent=event.agent
        )
        # The SDK tracer with its default always-on sampler returns its own Span (start_time).
        return self.tracer.start_span(  # type: ignore[return-value]
            name, context=context, kind=kind, start_time=at, attributes={**common, **attributes}
        )

    @staticmethod
    def _end(span: Span, at: int, error: str | None = None, message: str = "") -> None:
        if error:
            span.set_attribute(ERROR_TYPE, error)
            span.set_status(Status(StatusCode.ERROR, message or error))
        span.end(end_time=max(at, span.start_time or at))

    @staticmethod
    def _note(span: Span, event: Event, at: int) -> None:
        """Any other event: a span event with its plain fields."""
        data = event.model_dump(mode="json", exclude_none=True)
        fields = {
            f"pliny.{k}": v
            for k, v in data.items()
            if k not in _BASE_FIELDS and isinstance(v, str | int | float | bool)
        }
        span.add_event(event.type, attributes=fields, timestamp=at)

    def _parent(self, event: Event) -> Span | None:
        return self.agents.get((event.phase or "", event.agent or "")) or self.run

    # -- session ----------------------------------------------------------------

    def _run_start(self, event: Event, at: int, resumed: bool) -> None:
        self.finish()  # the previous run's process died without an ending event
        self.runs += 1
        name = f"invoke_workflow {self.framework}".strip()
        self.run = self._start(
            name,
            None,
            event,
            at,
            SpanKind.INTERNAL,
            _attrs(
                gen_ai__operation__name=GA.GenAiOperationNameValues.INVOKE_WORKFLOW.value,
                gen_ai__workflow__name=self.framework,
                pliny__run=self.runs,
                pliny__resumed=resumed,
                pliny__resumed_from=getattr(event, "from_status", None) if resumed else None,
            ),
        )

    def _on_session_started(self, event: Event, at: int) -> None:
        self.framework = _framework_name(event) or self.framework
        self._run_start(event, at, resumed=False)

    def _on_crash_detected(self, event: Event, at: int) -> None:
        self.finish("crashed")  # the dead run ends at its own last event, not now

    def _on_session_resumed(self, event: Event, at: int) -> None:
        self._run_start(event, at, resumed=True)

    def _run_end(self, event: Event, at: int) -> None:
        if self.run is None:
            return
        status = event.type.removeprefix("session_")
        self.run.set_attribute("pliny.status", status)
        for span in self.agents.values():  # a cancelled run leaves its agents mid-way
            self._end(span, at, error=status)
        self.agents.clear()
        failed = event.type == "session_failed"
        self._end(
            self.run,
            at,
            error=getattr(event, "code", None) if failed else None,
            message=getattr(event, "message", ""),
        )
        self.run = None

    _on_session_completed = _on_session_failed = _run_end
    _on_session_cancelled = _on_session_paused = _run_end

    # -- agents -----------------------------------------------------------------

    def _on_agent_started(self, event: Event, at: int) -> None:
        key = (event.phase or "", event.agent or "")
        model = getattr(event, "model", "") or None
        self.agent_models[key] = model or ""
        self.agents[key] = self._start(
            f"invoke_agent {event.agent}",
            self.run,
            event,
            at,
            SpanKind.INTERNAL,
            _attrs(
                gen_ai__operation__name=GA.GenAiOperationNameValues.INVOKE_AGENT.value,
                gen_ai__agent__name=event.agent,
                gen_ai__request__model=model,
            ),
        )

    def _agent_end(self, event: Event, at: int) -> Span:
        key = (event.phase or "", event.agent or "")
        span = self.agents.pop(key, None)
        if span is None:  # no start seen (a log cut short): span its recorded duration
            start = at - int(getattr(event, "duration_ms", 0) * 1e6)
            span = self._start(
                f"invoke_agent {event.agent}",
                self.run,
                event,
                start,
                SpanKind.INTERNAL,
                _attrs(gen_ai__agent__name=event.agent),
            )
        return span

    def _on_agent_completed(self, event: Event, at: int) -> None:
        span = self._agent_end(event, at)
        span.set_attributes(
            _attrs(
                pliny__reused=getattr(event, "reused", False),
                pliny__cycle=getattr(event, "cycle", None),
                pliny__output=getattr(event, "output_path", None),
            )
        )
        self._end(span, at)

    def _on_agent_failed(self, event: Event, at: int) -> None:
        span = self._agent_end(event, at)
        span.set_attributes(
            _attrs(
                pliny__attempts=getattr(event, "attempts", None),
                pliny__skipped=getattr(event, "skipped", None),
            )
        )
        self._end(
            span,
            at,
            error=getattr(event, "code", "") or "agent_failed",
            message=getattr(event, "message", ""),
        )

    # -- calls ------------------------------------------------------------------

    def _on_llm_call(self, event: Event, at: int) -> None:
        e: Any = event
        free = e.replayed or e.cache_hit  # not paid in this run: never counted twice
        requested = e.request_model or self.agent_models.get((e.phase or "", e.agent or ""))
        attributes = _attrs(
            gen_ai__operation__name=GA.GenAiOperationNameValues.CHAT.value,
            gen_ai__provider__name=e.price_provider or "openai",  # Pliny speaks the OpenAI API
            gen_ai__request__model=requested or e.model,
            gen_ai__response__model=e.model,
            gen_ai__response__id=e.request_id,
            gen_ai__response__finish_reasons=[e.finish_reason] if e.finish_reason else None,
            pliny__replayed=e.replayed,
            pliny__cache_hit=e.cache_hit,
            pliny__attempt=e.attempt,
            pliny__tokens_estimated=e.tokens_estimated or None,
            pliny__cost_usd=0.0 if free else e.cost_usd,
            pliny__unpriced=True if (e.cost_usd is None and not free) else None,
            pliny__price_source=e.price_source,
            pliny__tool_calls=e.tool_calls or None,
        )
        attributes |= {
            GA.GEN_AI_USAGE_INPUT_TOKENS: e.prompt_tokens,
            GA.GEN_AI_USAGE_OUTPUT_TOKENS: e.completion_tokens,
            GA.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: e.cached_tokens,
            GA.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: getattr(e, "cache_write_tokens", 0),
            GA.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: getattr(e, "reasoning_tokens", 0),
        }
        if e.endpoint:
            attributes |= _server(e.endpoint)
        start = at - int(e.latency_ms * 1e6)
        span = self._start(
            f"chat {e.model}".strip(),
            self._parent(event),
            event,
            start,
            SpanKind.CLIENT,
            attributes,
        )
        self._end(span, at, error=e.rejected)

    def _on_tool_call(self, event: Event, at: int) -> None:
        e: Any = event
        start = at - int(e.duration_ms * 1e6)
        span = self._start(
            f"execute_tool {e.tool}",
            self._parent(event),
            event,
            start,
            SpanKind.INTERNAL,
            _attrs(
                gen_ai__operation__name=GA.GenAiOperationNameValues.EXECUTE_TOOL.value,
                gen_ai__tool__name=e.tool,
                gen_ai__tool__type="function",
                pliny__tool__by=e.by,
            ),
        )
        self._end(span, at, error=None if e.ok else "tool_error", message=e.error or "")

    def _on_retry(self, event: Event, at: int) -> None:
        if (span := self._parent(event)) is not None:
            self._note(span, event, at)

    _on_error = _on_retry


class _Reporting(SpanExporter):
    """The OTLP exporter, but a failed export is one warning, never a failed session."""

    def __init__(self, inner: SpanExporter, url: str) -> None:
        self.inner, self.url = inner, url
        self.failures = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:  # noqa: BLE001 - tracing must not take the run down
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.failures += 1
            if self.failures == 1:
                logger.warning(
                    "OTLP export to {} failed: spans dropped (the session goes on)", self.url
                )
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _provider(processor_for: Any) -> tuple[TracerProvider, _Ids]:
    from pliny import __version__

    ids = _Ids()
    resource = Resource.create({"service.name": "pliny", "service.version": __version__})
    provider = TracerProvider(resource=resource, id_generator=ids)
    provider.add_span_processor(processor_for)
    return provider, ids


def otlp_exporter(url: str, timeout_s: float | None = None) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # The SDK logs each failed attempt to stderr when nothing else handles it.
    sdk_log = logging.getLogger("opentelemetry")
    if not sdk_log.handlers:
        sdk_log.addHandler(logging.NullHandler())
    names = ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
    if any(os.environ.get(n) for n in names):
        timeout_s = None  # the standard variable wins
    return OTLPSpanExporter(endpoint=url, timeout=timeout_s)


class OtelListener:
    """A run's event-bus listener exporting spans over OTLP/HTTP as they end."""

    def __init__(self, url: str, exporter: SpanExporter | None = None) -> None:
        self.url = url
        self.exporter = _Reporting(exporter or otlp_exporter(url, timeout_s=5.0), url)
        self.provider, ids = _provider(BatchSpanProcessor(self.exporter))
        self.builder = SpanBuilder(self.provider, ids)

    def prime(self, history: Iterable[Event]) -> None:
        self.builder.prime(history)

    def __call__(self, event: Event) -> None:
        try:
            self.builder(event)
        except Exception:  # noqa: BLE001 - a tracing bug must not fail the run
            logger.opt(exception=True).warning("OpenTelemetry span for {} failed", event.type)

    def close(self) -> None:
        """End open spans, send what is left (bounded by the exporter's timeout)."""
        self.builder.finish()
        self.provider.shutdown()


def spans_of(events: Iterable[Event]) -> list[ReadableSpan]:
    """The spans of an audit log's events, ended in order."""
    memory = InMemorySpanExporter()
    provider, ids = _provider(SimpleSpanProcessor(memory))
    builder = SpanBuilder(provider, ids)
    for event in events:
        builder(event)
    builder.finish()
    provider.shutdown()
    return list(memory.get_finished_spans())


def otlp_request(spans: Sequence[ReadableSpan]) -> Any:
    """The OTLP ``ExportTraceServiceRequest`` protobuf of ``spans`` (what OTLP/HTTP posts)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    return encode_spans(spans)


def otlp_json(spans: Sequence[ReadableSpan]) -> str:
    """OTLP/JSON: the protobuf JSON mapping, with ids as hex as the OTLP spec asks."""
    from google.protobuf.json_format import MessageToDict

    data = MessageToDict(otlp_request(spans))
    for resource in data.get("resourceSpans", []):
        for scope in resource.get("scopeSpans", []):
            for span in scope.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = _b64_to_hex(span[key])
    return json.dumps(data, indent=2)


def _b64_to_hex(value: str) -> str:
    import base64

    return base64.b64decode(value).hex()


def send(spans: Sequence[ReadableSpan], url: str, timeout_s: float = 10.0) -> bool:
    """Post ``spans`` to an OTLP/HTTP receiver; True when it accepted them."""
    exporter = otlp_exporter(url, timeout_s)
    try:
        return exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
