"""The one way Pliny talks to a model: the ``openai`` SDK's async client.

``LLMGateway.chat`` wraps each call in, from the outside in: the resume
journal (a recorded answer is replayed, never re-paid), the budget check,
the single-stream queue (the embedded model serves one request at a time),
the endpoint's circuit breaker, and the category retry policy. Every attempt
that reaches the network ends as an ``llm_call`` or ``retry`` event.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pliny.errors import AIError, NetworkError
from pliny.events import Error, EventBus, LLMCall, LLMProgress, LLMQueued, utcnow
from pliny.llm import buckets, stream, structured, tokens
from pliny.llm.circuit import gave_up
from pliny.llm.classify import Code, bad_response, classify
from pliny.llm.journal import Journal, request_hash
from pliny.llm.retry import ModelChain, RetryInfo, call_with_retry, strategies_for_chain
from pliny.logs import logger

if TYPE_CHECKING:
    from pliny.config.settings import Settings
    from pliny.llm.budget import BudgetCheck
    from pliny.llm.circuit import CircuitBreakers
    from pliny.llm.endpoint import EndpointChoice
    from pliny.llm.pricing import Price, PricingTable
    from pliny.llm.ratelimit import EndpointLimiter


@dataclass
class CallContext:
    """Who is calling: stamps events and keys the journal."""

    phase: str
    agent: str
    cycle: int = 1
    fresh: bool = False  # --rerun/--from-phase: skip the result cache (the journal was cleared)
    seen: Counter[str] = field(default_factory=Counter)


@dataclass
class Reply:
    content: str
    tool_calls: list[dict[str, Any]]  # [{id, name, arguments (JSON string)}]
    finish_reason: str | None
    model: str
    replayed: bool = False


def normalize(completion: Any) -> dict[str, Any]:
    """The parts of a ChatCompletion we keep (and journal), as plain JSON."""
    choice = completion.choices[0] if completion.choices else None
    message = choice.message if choice else None
    usage = completion.usage
    return {
        "id": completion.id,
        "model": completion.model,
        "content": (message.content or "") if message else "",
        "refusal": getattr(message, "refusal", None) if message else None,
        "tool_calls": [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments or "{}"}
            for c in (message.tool_calls or [])
            if getattr(c, "function", None)
        ]
        if message
        else [],
        "finish_reason": choice.finish_reason if choice else None,
        "usage": None if usage is None else buckets.from_usage(usage).journaled(),
    }


class LLMGateway:
    def __init__(
        self,
        settings: Settings,
        endpoint: EndpointChoice,
        bus: EventBus,
        *,
        journal: Journal | None = None,
        pricing: PricingTable | None = None,
        budget: BudgetCheck | None = None,
        breakers: CircuitBreakers | None = None,
    ) -> None:
        from openai import AsyncOpenAI

        from pliny.llm.endpoint import host_of

        self.settings = settings
        self.endpoint = endpoint
        self.bus = bus
        self.journal = journal
        self.pricing = pricing
        self.budget = budget
        self.breakers = breakers
        self.host = host_of(endpoint.base_url or "https://api.openai.com/v1")
        local = endpoint.kind == "local"
        timeout = settings.execution.timeouts.llm_call or (
            settings.llm.local.timeout if local else settings.llm.timeout
        )
        self._max_tokens_cap = settings.llm.local.max_tokens if local else None
        # max_retries=0: Pliny's category policy is the only retry, so every
        # attempt is visible in the audit log.
        self.client = AsyncOpenAI(
            base_url=endpoint.base_url,
            api_key=endpoint.api_key,
            max_retries=0,
            timeout=timeout,
        )
        self._queue = asyncio.Semaphore(1) if endpoint.single_stream else None
        b = settings.budgets
        # The pre-call estimate needs tiktoken (~0.2 s to load): only when a limit is set.
        self._budgeted = any(
            lim.max_cost_usd is not None or lim.max_tokens is not None
            for lim in (b, *b.phases.values(), *b.agents.values())
        )
        self._waiting = 0
        self.limiter = _limiter(settings, self.host)
        # Opt-in (llm.stream: true): some OpenAI-compatible proxies drop the usage chunk,
        # and then tokens would be estimated where a whole answer reports them.
        self.stream = bool(settings.llm.stream)
        self._json_mode_only = False  # the endpoint rejected json_schema: for the rest of the run

    async def close(self) -> None:
        await self.client.close()

    async def chat(
        self,
        ctx: CallContext,
        messages: list[dict[str, Any]],
        *,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        tools: list[dict[str, Any]] | None = None,
        json_schema: dict[str, Any] | None = None,
    ) -> Reply:
        """One model turn; AI errors move along the fallback model chain."""
        chain = ModelChain.of(model or self.endpoint.model, self.settings.llm.fallback_models)
        request = self._request(
            chain.current, messages, temperature, max_tokens, tools, json_schema, ctx.agent
        )
        return await self._call(ctx, request, chain)

    def _request(
        self,
        model: str,
        messages: list[dict[str, Any]],
        temperature: float | None,
        max_tokens: int | None,
        tools: list[dict[str, Any]] | None,
        json_schema: dict[str, Any] | None,
        schema_name: str = "output",
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "temperature": self.settings.llm.temperature if temperature is None else temperature,
            "max_tokens": min(
                max_tokens or self.settings.llm.max_tokens, self._max_tokens_cap or 1 << 30
            ),
        }
        if tools:
            request["tools"] = tools
        if json_schema is not None and self.endpoint.kind == "local":
            # llama.cpp turns the schema into a grammar, which is what lets a
            # tiny local model answer validly.
            request["response_format"] = {"type": "json_object", "schema": json_schema}
        elif json_schema is not None:
            # Always built as json_schema, even once the endpoint fell back to JSON
            # mode: the journal key must not depend on what this run has learnt.
            request["response_format"] = structured.json_schema_format(json_schema, schema_name)
        return request

    async def _answer(self, ctx: CallContext, request: dict[str, Any], model: str) -> dict:
        """One HTTP request, whole or streamed, as the normalized answer dict."""
        if not self.stream:
            completion = await self._create(ctx, request, model)
            if not hasattr(completion, "choices"):  # the SDK returns a str for non-JSON
                raise bad_response(self.host, completion)
            return normalize(completion)
        # Not part of the request dict: the journal key is the same streamed or not.
        extra = {"stream": True, "stream_options": {"include_usage": True}}
        chunks = await self._create(ctx, request, model, **extra)
        if not hasattr(chunks, "__aiter__"):
            raise bad_response(self.host, chunks)
        started = time.perf_counter()

        def progress(tokens_so_far: int) -> None:
            elapsed = (time.perf_counter() - started) * 1000
            self.bus.emit(
                LLMProgress(
                    phase=ctx.phase,
                    agent=ctx.agent,
                    model=model,
                    completion_tokens=tokens_so_far,
                    elapsed_ms=round(elapsed, 1),
                )
            )

        try:
            data = await stream.read(chunks, self.host, progress)
        finally:
            await chunks.close()  # a cut or cancelled stream must not leak its connection
        data["streamed"] = True
        return data

    async def _create(
        self, ctx: CallContext, request: dict[str, Any], model: str, **extra: Any
    ) -> Any:
        """One HTTP request; json_schema becomes JSON mode where the endpoint rejects it."""
        if self._json_mode_only:
            request = structured.json_mode(request)
        try:
            return await self.client.chat.completions.create(**{**request, "model": model}, **extra)
        except Exception as exc:
            if not structured.rejects_json_schema(exc, request):
                raise
            self._fall_back_to_json_mode(ctx, exc)
        # Not a retry: the 400 was free and says nothing about the endpoint's health.
        return await self.client.chat.completions.create(
            **{**structured.json_mode(request), "model": model}, **extra
        )

    def _fall_back_to_json_mode(self, ctx: CallContext, exc: Exception) -> None:
        if self._json_mode_only:  # a parallel agent got there first
            return
        self._json_mode_only = True
        from pliny.events import Warning_

        message = (
            f"{self.host} does not accept response_format json_schema "
            f"({classify(exc).message}); using json_object with the schema in the prompt "
            "for the rest of the run"
        )
        logger.warning("{}/{}: {}", ctx.phase, ctx.agent, message)
        self.bus.emit(Warning_(phase=ctx.phase, agent=ctx.agent, message=message))

    async def _call(self, ctx: CallContext, request: dict[str, Any], chain: ModelChain) -> Reply:
        rhash = request_hash(request)
        ctx.seen[rhash] += 1
        key = (ctx.agent, ctx.cycle, rhash, ctx.seen[rhash])
        if self.journal and (recorded := self.journal.get(*key)):
            self.bus.emit(
                self._call_event(
                    ctx, request, recorded, rhash, latency_ms=0, attempt=0, replayed=True
                )
            )
            return self._reply(recorded, replayed=True)
        if self.budget is not None and self._budgeted:
            self._check_budget(ctx, request)
        async with self._slot(ctx):
            data, attempt, latency = await self._send_with_retry(ctx, request, chain, rhash)
        event = self._call_event(ctx, request, data, rhash, latency_ms=latency, attempt=attempt)
        if self.journal:  # answer and its pending llm_call in one commit: paid is never lost
            self.journal.put(*key, data, event=event.model_dump_json())
        self.bus.emit(event)
        if self.journal:
            self.journal.audited(*key)
        return self._reply(data)

    def recover_unaudited(self, history: list[Any]) -> int:
        """Emit the paid calls an earlier run journaled but could not audit (e.g. disk full).

        Each is a paid ``llm_call`` flagged ``recovered`` with its real tokens and
        cost and its original ``ts`` (when it was paid), emitted once: a copy the
        log already holds (a crash right after the ack) is only dropped from the
        journal. Returns how many were emitted.
        """
        if self.journal is None:
            return 0
        logged = {_call_identity(e) for e in history if e.type == "llm_call"}
        emitted = 0
        for key, raw in self.journal.unaudited():
            event = LLMCall.model_validate_json(raw)
            if _call_identity(event) not in logged:
                self.bus.emit(event.model_copy(update={"recovered": True}))
                emitted += 1
            self.journal.audited(*key)
        return emitted

    def _check_budget(self, ctx: CallContext, request: dict[str, Any]) -> None:
        assert self.budget is not None  # the caller checked
        estimate_tokens = tokens.count_messages(request["messages"]) + request["max_tokens"]
        cost = None
        if self.pricing is not None:
            cost = self.pricing.price(
                request["model"], estimate_tokens - request["max_tokens"], request["max_tokens"], 0
            )
        self.budget.check(ctx.phase, ctx.agent, estimate_tokens, cost or 0.0)

    def _slot(self, ctx: CallContext) -> Any:
        """The single-stream queue; announces waiting agents to the live view."""
        gateway = self

        class _Slot:
            async def __aenter__(self) -> None:
                if gateway._queue is None:
                    return
                if gateway._queue.locked():
                    gateway._waiting += 1
                    gateway.bus.emit(
                        LLMQueued(phase=ctx.phase, agent=ctx.agent, waiting=gateway._waiting)
                    )
                    try:
                        await gateway._queue.acquire()
                    finally:
                        gateway._waiting -= 1
                else:
                    await gateway._queue.acquire()

            async def __aexit__(self, *exc: object) -> None:
                if gateway._queue is not None:
                    gateway._queue.release()

        return _Slot()

    async def _send_with_retry(
        self, ctx: CallContext, request: dict[str, Any], chain: ModelChain, rhash: str
    ) -> tuple[dict[str, Any], int, float]:
        attempts = 0
        started = 0.0

        async def attempt(number: int) -> dict[str, Any]:
            nonlocal attempts, started
            attempts = number
            breaker = self.breakers.get(self.host) if self.breakers is not None else None
            estimate = _rough_tokens(request)
            ticket = await self.limiter.acquire(estimate) if self.limiter else None
            started = time.perf_counter()
            try:
                if breaker is not None:
                    breaker.before_call()  # open circuit: fails fast, retried after it closes
                data = await self._answer(ctx, request, chain.current)
                try:
                    _check_answer(data, request)
                except AIError as exc:  # the tokens were paid: record them, then retry
                    latency = (time.perf_counter() - started) * 1000
                    self.bus.emit(
                        self._call_event(
                            ctx,
                            request,
                            data,
                            rhash,
                            latency_ms=latency,
                            attempt=number,
                            rejected=exc.code,
                        )
                    )
                    raise
            except BaseException as exc:  # a cancelled trial must release the half-open slot
                err = classify(exc)
                if breaker is not None and err.code != Code.NET_CIRCUIT_OPEN:
                    breaker.record_failure(err)
                if self.limiter is not None:
                    self.limiter.failure(ticket, err)  # a 429 pauses every agent
                raise
            if breaker is not None:
                breaker.record_success()
            if self.limiter is not None:
                used = data["usage"] or {}
                self.limiter.success(
                    ticket,
                    estimate,
                    used.get("prompt_tokens", 0) + used.get("completion_tokens", 0),
                )
            return data

        def on_retry(info: RetryInfo) -> None:
            logger.debug(
                "{}/{} attempt {} failed ({}), retry in {:.0f} ms: {}",
                ctx.phase,
                ctx.agent,
                info.attempt,
                info.code,
                info.delay_ms,
                info.message,
            )
            self.bus.emit(info.as_event(phase=ctx.phase, agent=ctx.agent))
            failed = chain.current
            if chain.advance(info.error):  # AI errors: the next model, not the same request
                message = f"{failed}: {info.message}; switching to {chain.current}"
                self.bus.emit(
                    Error(
                        phase=ctx.phase,
                        agent=ctx.agent,
                        category=info.category,
                        code=info.code,
                        message=message,
                        recoverable=True,
                    )
                )

        strategies = strategies_for_chain(self.settings.error_handling.by_category(), chain)
        try:
            data = await call_with_retry(attempt, strategies=strategies, on_retry=on_retry)
        except NetworkError as err:  # the endpoint is down: say which, how often, how long
            breaker = self.breakers.get(self.host) if self.breakers is not None else None
            url = self.endpoint.base_url or "https://api.openai.com/v1"
            raise gave_up(err, url, breaker) from err
        return data, attempts, (time.perf_counter() - started) * 1000

    def _call_event(
        self,
        ctx: CallContext,
        request: dict[str, Any],
        data: dict[str, Any],
        rhash: str,
        *,
        latency_ms: float,
        attempt: int,
        replayed: bool = False,
        rejected: str | None = None,
    ) -> LLMCall:
        usage: dict[str, int] | None = data.get("usage")
        estimated = usage is None
        if usage is None:
            usage = {
                "prompt_tokens": tokens.count_messages(request["messages"]),
                "completion_tokens": tokens.count(data.get("content") or "")
                + sum(tokens.count(c["arguments"]) for c in data.get("tool_calls", [])),
                "cached_tokens": 0,
            }
        model = data.get("model") or request["model"]
        ts = utcnow()  # prices change by date: the call's own time picks the price
        cost, table_hash, quote = self._price(model, usage, replayed, ts)
        return LLMCall(
            ts=ts,
            phase=ctx.phase,
            agent=ctx.agent,
            model=model,
            endpoint=self.host,
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            cached_tokens=usage["cached_tokens"],
            cache_write_tokens=usage.get("cache_write_tokens", 0),
            reasoning_tokens=usage.get("reasoning_tokens", 0),
            tokens_estimated=estimated,
            latency_ms=round(latency_ms, 2),
            cost_usd=cost,
            pricing_hash=table_hash,
            price_source=quote.source if quote else None,
            price_provider=quote.provider if quote else None,
            request_model=request["model"],
            attempt=attempt,
            request_id=data.get("id"),
            request_hash=rhash,
            replayed=replayed,
            finish_reason=data.get("finish_reason"),
            tool_calls=len(data.get("tool_calls", [])),
            rejected=rejected,
            streamed=bool(data.get("streamed")),
        )

    def _price(
        self, model: str, usage: dict[str, int], replayed: bool, ts: str
    ) -> tuple[float | None, str | None, Price | None]:
        if self.endpoint.kind == "local":
            return 0.0, None, None
        if self.pricing is None:
            return None, None, None
        if replayed:
            return 0.0, self.pricing.hash, None
        when = datetime.fromisoformat(ts)
        quote = self.pricing.quote(
            model,
            usage["prompt_tokens"],
            usage["completion_tokens"],
            usage["cached_tokens"],
            when,
            cache_write_tokens=usage.get("cache_write_tokens", 0),
        )
        if quote is None and self.pricing.warn_once(model):
            from pliny.events import Warning_

            self.bus.emit(
                Warning_(
                    message=f"model {model!r} is not in the pricing table: "
                    "its calls are recorded as unpriced"
                )
            )
        return (None if quote is None else quote.usd), self.pricing.hash, quote

    @staticmethod
    def _reply(data: dict[str, Any], replayed: bool = False) -> Reply:
        return Reply(
            content=data.get("content") or "",
            tool_calls=data.get("tool_calls", []),
            finish_reason=data.get("finish_reason"),
            model=data.get("model") or "",
            replayed=replayed,
        )


def _limiter(settings: Settings, host: str) -> EndpointLimiter | None:
    """The endpoint's shared limiter (one gateway per run: every agent shares it)."""
    llm = settings.llm
    if not llm.shared_rate_limit and not (llm.requests_per_minute or llm.tokens_per_minute):
        return None
    from pliny.llm.ratelimit import EndpointLimiter

    limiter = EndpointLimiter(host, llm.requests_per_minute, llm.tokens_per_minute)
    limiter.pause_on_429 = llm.shared_rate_limit
    return limiter


def _rough_tokens(request: dict[str, Any]) -> int:
    """Worst case for the tokens-per-minute bucket without loading a tokenizer: ~4 chars a
    token, plus max_tokens; settled with the real usage after the call."""
    chars = sum(len(str(m.get("content") or "")) for m in request["messages"])
    return chars // 4 + 1 + int(request.get("max_tokens") or 0)


def _call_identity(event: Any) -> tuple[Any, ...]:
    """What tells one paid call's llm_call apart (a recovered copy keeps its ``ts``)."""
    fields = ("agent", "request_hash", "request_id", "ts", "replayed")
    return tuple(getattr(event, name, None) for name in fields)


def _check_answer(data: dict[str, Any], request: dict[str, Any]) -> None:
    """An empty answer or a refusal is an AI error (fallback model, then fail)."""
    if data.get("refusal"):
        raise AIError(f"model refused: {data['refusal'][:200]}", code=Code.AI_REFUSAL)
    if not (data.get("content") or "").strip() and not data.get("tool_calls"):
        raise AIError("model returned an empty answer", code=Code.AI_EMPTY)
