"""Running one agent: prompt in, answer (and files) out.

system role + rendered prompt -> one model turn, or a bounded tool-calling
loop when the agent has tools and the endpoint supports them. An agent with
an ``output_schema`` must answer JSON that validates; otherwise it is re-asked
with the validation errors (the ``validation`` retry strategy bounds it).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pliny.engine.tools import Workspace, openai_tools, timed_call
from pliny.errors import ToolError, ValidationFailure
from pliny.events import EventBus, LLMCall, Retry, ToolCall, Warning_
from pliny.framework.model import PLACEHOLDER, Agent, Framework
from pliny.llm.gateway import CallContext, LLMGateway

if TYPE_CHECKING:
    from pliny.config.settings import Settings

MISSING = "(not available yet)"
READ_TOOLS = {"list_files", "read_file", "search_files"}
DIGEST_CHARS = 6000  # ~1.5k tokens: fits an 8k-context local model with the prompt


@dataclass
class AgentRun:
    """Everything an agent needs from the run around it."""

    framework: Framework
    settings: Settings
    gateway: LLMGateway
    workspace: Workspace
    bus: EventBus
    session: str
    use_tools: bool
    cache: Any = None  # pliny.engine.cache.ResultCache when an agent or phase opts in


def render(template: str, context: dict[str, Any]) -> str:
    """Fill ``{{name}}`` and ``{{agent.field}}`` placeholders."""

    def value(match: re.Match[str]) -> str:
        name, _, field = match.group(1).partition(".")
        item = context.get(name)
        if field:
            item = item.get(field) if isinstance(item, dict) else None
        if item is None or item == "":
            return MISSING
        return item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)

    return PLACEHOLDER.sub(value, template)


def prompt_context(fw: Framework, state: dict[str, Any]) -> dict[str, Any]:
    """task, each agent's answer (text; structured fields by ``agent.field``), each phase."""
    results: dict[str, dict[str, Any]] = state.get("results", {})
    ctx: dict[str, Any] = {"task": state.get("task", ""), "feedback": state.get("feedback", "")}
    for phase in fw.phases:
        parts = []
        for agent in phase.agents:
            res = results.get(agent.name)
            if not res:
                continue
            if res.get("status") == "done":
                ctx[agent.name] = res.get("data") or res.get("text", "")
                parts.append(f"### {agent.name}\n{res.get('text', '')}")
            elif res.get("status") == "failed" and phase.on_agent_failure == "continue":
                ctx[agent.name] = (
                    f"(agent {agent.name} failed: {res.get('error', {}).get('message')})"
                )
                parts.append(f"### {agent.name}\n{ctx[agent.name]}")
        if parts:
            ctx[phase.name] = "\n\n".join(parts)
    return ctx


def schema_instructions(schema: dict[str, Any]) -> str:
    return (
        "\n\nAnswer with a single JSON object and nothing else (no prose, no code fences). "
        f"It must validate against this JSON Schema:\n{json.dumps(schema)}"
    )


def parse_json_answer(text: str) -> Any:
    """The JSON object in an answer, tolerating code fences and chatter around it."""
    cleaned = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip())
    try:
        return json.loads(cleaned)
    except json.JSONDecodeError:
        start, end = cleaned.find("{"), cleaned.rfind("}")
        if start >= 0 and end > start:
            return json.loads(cleaned[start : end + 1])
        raise


def schema_errors(schema: dict[str, Any], text: str) -> tuple[Any, list[str]]:
    import jsonschema

    try:
        data = parse_json_answer(text)
    except json.JSONDecodeError as exc:
        return None, [f"the answer is not valid JSON: {exc.msg} at position {exc.pos}"]
    validator = jsonschema.Draft202012Validator(schema)
    problems = [
        f"{'/'.join(str(p) for p in err.absolute_path) or '(root)'}: {err.message}"
        for err in validator.iter_errors(data)
    ]
    return data, problems


async def run_agent(
    run: AgentRun, phase_name: str, agent: Agent, state: dict[str, Any], ctx: CallContext
) -> dict[str, Any]:
    """Run one agent to its final answer; returns the result stored in graph state."""
    started = time.perf_counter()
    system = agent.role + (schema_instructions(agent.output_schema) if agent.output_schema else "")
    prompt = render(agent.prompt, prompt_context(run.framework, state))
    if not run.use_tools and set(agent.tools) & READ_TOOLS:
        prompt += _workspace_digest(run, ctx, agent)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system},
        {"role": "user", "content": prompt},
    ]
    written: list[str] = []
    key, ttl = _cache_key(run, phase_name, agent, messages)
    if key and not ctx.fresh and (hit := run.cache.get(key)) is not None:
        return _from_cache(run, phase_name, agent, ctx, key, hit, written)
    text = await _converse(run, agent, ctx, messages, written)
    data = None
    if agent.output_schema:
        text, data = await _validated(run, agent, ctx, messages, text)
    if key:
        run.cache.put(
            key,
            {"text": text, "data": data},
            ttl,
            agent=agent.name,
            model=agent.model or run.gateway.endpoint.model,
        )
    output_path = _save_outputs(run, phase_name, agent, text, data, written, ctx.cycle)
    return {
        "status": "done",
        "text": text,
        "data": data,
        "output_path": output_path,
        "files": written,
        "cycle": ctx.cycle,
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
    }


def _cache_key(
    run: AgentRun, phase_name: str, agent: Agent, messages: list[dict[str, Any]]
) -> tuple[str | None, float | None]:
    """The opt-in result cache's key: agent spec, rendered prompt, model."""
    if run.cache is None:
        return None, None
    from pliny.engine.cache import ttl_for

    ttl = ttl_for(run.framework.phase(phase_name), agent)
    if not ttl:
        return None, None
    llm = run.settings.llm
    spec = agent.model_dump(mode="json") | {
        "temperature": llm.temperature if agent.temperature is None else agent.temperature,
        "max_tokens": agent.max_tokens or llm.max_tokens,
        "tools_offered": bool(agent.tools and run.use_tools),
    }
    return run.cache.key(spec, messages, agent.model or run.gateway.endpoint.model), ttl


def _from_cache(
    run: AgentRun,
    phase_name: str,
    agent: Agent,
    ctx: CallContext,
    key: str,
    hit: dict[str, Any],
    written: list[str],
) -> dict[str, Any]:
    """A cache hit: audited as a zero-cost call, outputs rewritten from the stored answer."""
    run.bus.emit(
        LLMCall(
            phase=phase_name,
            agent=agent.name,
            model=agent.model or run.gateway.endpoint.model,
            endpoint=run.gateway.host,
            cost_usd=0.0,
            cache_hit=True,
            attempt=0,
            request_hash=key,
        )
    )
    path = _save_outputs(run, phase_name, agent, hit["text"], hit["data"], written, ctx.cycle)
    return {
        "status": "done",
        "text": hit["text"],
        "data": hit["data"],
        "output_path": path,
        "files": written,
        "cycle": ctx.cycle,
        "duration_ms": 0.0,
        "cached": True,
    }


async def _converse(
    run: AgentRun,
    agent: Agent,
    ctx: CallContext,
    messages: list[dict[str, Any]],
    written: list[str],
) -> str:
    """The tool loop: model turns until an answer without tool calls, bounded."""
    tools = openai_tools(agent.tools) if agent.tools and run.use_tools else None
    tool_failures = 0
    max_tool_failures = run.settings.error_handling.retry_strategies["tool"].max_retries
    for _turn in range(run.settings.execution.max_tool_turns):
        reply = await run.gateway.chat(
            ctx,
            messages,
            model=agent.model,
            temperature=agent.temperature,
            max_tokens=agent.max_tokens,
            tools=tools,
            json_schema=None if tools else agent.output_schema,
        )
        if not reply.tool_calls:
            return reply.content
        messages.append(_assistant_with_calls(reply.content, reply.tool_calls))
        for call in reply.tool_calls:
            ok, content = _run_tool(run, ctx, agent, call, written)
            tool_failures = 0 if ok else tool_failures + 1
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": content})
        if tool_failures > max_tool_failures:
            err = ToolError(
                f"agent {agent.name}: {tool_failures} consecutive tool errors, last: {content}",
                code="PLINY-TOOL-REPEATED",
            )
            err.attempts = tool_failures
            raise err
    # Out of turns: ask for the final answer with tools withdrawn.
    messages.append({"role": "user", "content": "Stop using tools now and give your final answer."})
    reply = await run.gateway.chat(
        ctx, messages, model=agent.model, temperature=agent.temperature, max_tokens=agent.max_tokens
    )
    return reply.content


def _workspace_digest(run: AgentRun, ctx: CallContext, agent: Agent) -> str:
    """For endpoints without tool calling: read the workspace for the agent.

    The same sandboxed tools run, on the engine's behalf (audited ``by:
    engine``), smallest text files first, within a fixed character budget.
    """
    listing, duration = timed_call(run.workspace, "list_files", {}, agent.name)
    _emit_engine_tool(run, ctx, agent, "list_files", {}, listing.ok, duration)
    skip = (run.settings.execution.output_dir + "/",)
    files = [f for f in listing.content.splitlines() if f and not f.startswith(skip + ("(", "..."))]
    root = run.workspace.root
    sized = sorted(
        (f for f in files if (root / f).is_file()), key=lambda f: (root / f).stat().st_size
    )
    parts, budget = [], DIGEST_CHARS
    for rel in sized:
        if budget <= 200:
            break
        result, duration = timed_call(run.workspace, "read_file", {"path": rel}, agent.name)
        _emit_engine_tool(run, ctx, agent, "read_file", {"path": rel}, result.ok, duration)
        if result.ok and "\x00" not in result.content:
            text = result.content[: budget - 100]
            parts.append(f"--- {rel} ---\n{text}")
            budget -= len(text) + 100
    listing_text = "\n".join(files[:100]) or "(no files)"
    return "\n\n## Workspace files (read for you)\n" + listing_text + "\n\n" + "\n\n".join(parts)


def _emit_engine_tool(
    run: AgentRun,
    ctx: CallContext,
    agent: Agent,
    tool: str,
    args: dict[str, Any],
    ok: bool,
    duration: float,
) -> None:
    run.bus.emit(
        ToolCall(
            phase=ctx.phase,
            agent=agent.name,
            tool=tool,
            arguments=args,
            ok=ok,
            duration_ms=round(duration, 2),
            by="engine",
        )
    )


def _assistant_with_calls(content: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": content or None,
        "tool_calls": [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for c in calls
        ],
    }


def _run_tool(
    run: AgentRun, ctx: CallContext, agent: Agent, call: dict[str, Any], written: list[str]
) -> tuple[bool, str]:
    error: str | None
    try:
        args = json.loads(call["arguments"] or "{}")
        if not isinstance(args, dict):
            raise ValueError("arguments must be a JSON object")
    except (json.JSONDecodeError, ValueError) as exc:
        result_ok, content, error, duration, args = (
            False,
            f"error: bad arguments: {exc}",
            str(exc),
            0.0,
            {},
        )
    else:
        if call["name"] not in agent.tools:
            result_ok, content, error, duration = (
                False,
                f"error: tool {call['name']!r} is not available",
                "not available",
                0.0,
            )
        else:
            result, duration = timed_call(run.workspace, call["name"], args, agent.name)
            result_ok, content, error = result.ok, result.content, result.error
            if result.written and result.written not in written:
                written.append(result.written)
    shown = {
        k: (v if not isinstance(v, str) or len(v) <= 200 else v[:200] + "…")
        for k, v in args.items()
    }
    run.bus.emit(
        ToolCall(
            phase=ctx.phase,
            agent=agent.name,
            tool=call["name"],
            arguments=shown,
            ok=result_ok,
            error=error,
            duration_ms=round(duration, 2),
        )
    )
    return result_ok, content


async def _validated(
    run: AgentRun, agent: Agent, ctx: CallContext, messages: list[dict[str, Any]], text: str
) -> tuple[str, Any]:
    """Re-ask with the validation errors until the answer fits the schema."""
    assert agent.output_schema is not None
    strategy = run.settings.error_handling.retry_strategies["validation"]
    for attempt in range(1, strategy.max_retries + 2):
        data, problems = schema_errors(agent.output_schema, text)
        if not problems:
            return text, data
        if attempt > strategy.max_retries:
            break
        run.bus.emit(
            Retry(
                phase=ctx.phase,
                agent=agent.name,
                category="validation",
                code="PLINY-VALIDATION-SCHEMA",
                attempt=attempt,
                delay_ms=0,
                message="; ".join(problems)[:500],
            )
        )
        messages.append({"role": "assistant", "content": text})
        messages.append(
            {
                "role": "user",
                "content": "Your answer does not match the required "
                "JSON Schema:\n- "
                + "\n- ".join(problems)
                + "\nReply again with only the corrected JSON object.",
            }
        )
        reply = await run.gateway.chat(
            ctx,
            messages,
            model=agent.model,
            temperature=agent.temperature,
            max_tokens=agent.max_tokens,
            json_schema=agent.output_schema,
        )
        text = reply.content
    raise ValidationFailure(
        f"agent {agent.name}: answer does not match its output_schema after "
        f"{strategy.max_retries + 1} attempts: {'; '.join(problems)[:300]}",
        code="PLINY-VALIDATION-SCHEMA",
    )


def _save_outputs(
    run: AgentRun, phase: str, agent: Agent, text: str, data: Any, written: list[str], cycle: int
) -> str:
    """Answer -> ``<output_dir>/<session>/<phase>/<agent>.md`` (+ deliverable), via the tool."""
    base = f"{run.settings.execution.output_dir}/{run.session}/{phase}"
    suffix = f".cycle{cycle}" if cycle > 1 else ""
    path = f"{base}/{agent.name}{suffix}.md"
    files = [(path, text)]
    if data is not None:
        files.append((f"{base}/{agent.name}{suffix}.json", json.dumps(data, indent=2)))
    if agent.deliverable and agent.deliverable not in written:
        files.append((_deliverable_path(run, phase, agent), text))
    for target, content in files:
        result, duration = timed_call(
            run.workspace, "write_file", {"path": target, "content": content}, agent.name
        )
        run.bus.emit(
            ToolCall(
                phase=phase,
                agent=agent.name,
                tool="write_file",
                arguments={"path": target},
                ok=result.ok,
                error=result.error,
                duration_ms=round(duration, 2),
                by="engine",
            )
        )
        if not result.ok:
            raise ToolError(f"agent {agent.name}: cannot save output {target}: {result.error}")
        if result.written and result.written not in written:
            written.append(result.written)
    return path


def _deliverable_path(run: AgentRun, phase: str, agent: Agent) -> str:
    """The declared deliverable, or a per-session name when another session owns it."""
    from pliny.engine.deliverable import claim

    assert agent.deliverable is not None
    chosen = claim(run.workspace.root, run.session, agent.deliverable)
    if chosen.note:  # never silent: the live view and the audit log both say it
        run.bus.emit(Warning_(phase=phase, agent=agent.name, message=chosen.note))
    return chosen.path
