"""Wire payloads of the fake OpenAI-compatible server (see tests/fakeserver.py).

Pure functions: request JSON in, response JSON out. Kept apart from the server so
tests can compute the exact reply or token count the server will produce.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

try:  # importable as tests.fakeserver_payloads and from inside tests/
    from tests.minimal_instance import minimal_instance
except ImportError:  # pragma: no cover
    from minimal_instance import minimal_instance  # type: ignore[no-redef]

# Defaults per HTTP status: (error type, error code, message), shaped like OpenAI's.
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("request_forbidden", "permission_denied", "You are not allowed to use this model."),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("server_error", "bad_gateway", "Bad gateway."),
    503: (
        "server_error",
        "service_unavailable",
        "The engine is currently overloaded, please try again later.",
    ),
}
CONTEXT_LIMIT = 4096


def message_text(message: dict[str, Any]) -> str:
    """The text of one chat message: string content, text parts and tool-call arguments."""
    content = message.get("content")
    if isinstance(content, list):
        text = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    else:
        text = content if isinstance(content, str) else ""
    calls = message.get("tool_calls") or []
    return text + "".join(json.dumps(c.get("function", {}), sort_keys=True) for c in calls)


def system_prompt(body: dict[str, Any]) -> str:
    """All system/developer messages joined; "" when there are none."""
    msgs = body.get("messages") or []
    return "\n".join(message_text(m) for m in msgs if m.get("role") in ("system", "developer"))


def last_user(body: dict[str, Any]) -> str:
    """Text of the last user message; "" when there is none."""
    users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    return message_text(users[-1]) if users else ""


def messages_hash(body: dict[str, Any]) -> str:
    """Stable 8-hex digest of the whole messages list (any change in history changes it)."""
    canon = json.dumps(body.get("messages") or [], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canon.encode()).hexdigest()[:8]


def default_reply(body: dict[str, Any]) -> str:
    """The unscripted answer: names the model, quotes the prompt, hashes the history."""
    return (
        f"[fake:{body.get('model', '')}] answer to: {last_user(body)[:60]} #{messages_hash(body)}"
    )


def count_tokens(text: str) -> int:
    """The fake tokenizer: 4 chars per token, rounded up by one; 0 for empty text."""
    return len(text) // 4 + 1 if text else 0


def prompt_tokens(body: dict[str, Any]) -> int:
    """prompt_tokens reported for a request: total message chars // 4 + 1."""
    return sum(len(message_text(m)) for m in body.get("messages") or []) // 4 + 1


def usage_block(
    body: dict[str, Any], completion: str, cached: int, override: dict[str, int] | None = None
) -> dict[str, Any]:
    """OpenAI usage object; `override` may set prompt_tokens/completion_tokens/cached_tokens/
    reasoning_tokens, and the Anthropic-style top-level keys a proxy passes through
    (cache_read_input_tokens, cache_creation_input_tokens), sent only when given."""
    o = override or {}
    prompt = o.get("prompt_tokens", prompt_tokens(body))
    done = o.get("completion_tokens", count_tokens(completion))
    out = {
        "prompt_tokens": prompt,
        "completion_tokens": done,
        "total_tokens": prompt + done,
        "prompt_tokens_details": {
            "cached_tokens": o.get("cached_tokens", cached),
            "audio_tokens": 0,
        },
        "completion_tokens_details": {
            "reasoning_tokens": o.get("reasoning_tokens", 0),
            "audio_tokens": 0,
        },
    }
    for key in ("cache_read_input_tokens", "cache_creation_input_tokens"):
        if key in o:
            out[key] = o[key]
    return out


def tool_call_objects(calls: list[dict[str, Any]], rid: str) -> list[dict[str, Any]]:
    """[{name, arguments: dict|str}] -> OpenAI tool_calls with deterministic ids."""
    out = []
    for i, call in enumerate(calls):
        args = call.get("arguments", {})
        out.append(
            {
                "id": call.get("id", f"call_{rid[-6:]}_{i}"),
                "type": "function",
                "function": {
                    "name": call["name"],
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                },
            }
        )
    return out


def completion_text(
    content: str | None, calls: list[dict[str, Any]] | None, refusal: str | None
) -> str:
    """What the completion tokens are counted over."""
    return (
        (content or "")
        + (refusal or "")
        + "".join(c["function"]["arguments"] + c["function"]["name"] for c in calls or [])
    )


def chat_completion(
    body: dict[str, Any],
    rid: str,
    message: dict[str, Any],
    finish_reason: str,
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    """A non-streaming `chat.completion` object."""
    out = {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", ""),
        "system_fingerprint": "fp_fake",
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
    }
    if usage is not None:
        out["usage"] = usage
    return out


def _pieces(text: str, n: int = 3) -> list[str]:
    """Split text into up to n chunks (a stream should really arrive in parts)."""
    size = max(1, -(-len(text) // n))
    return [text[i : i + size] for i in range(0, len(text), size)]


def stream_chunks(
    body: dict[str, Any],
    rid: str,
    message: dict[str, Any],
    finish_reason: str,
    usage: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """`chat.completion.chunk` objects for a streamed answer, usage chunk last if asked."""
    with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    deltas += [{"content": p} for p in _pieces(message.get("content") or "")]
    if message.get("refusal"):
        deltas.append({"refusal": message["refusal"]})
    for i, call in enumerate(message.get("tool_calls") or []):
        fn = call["function"]
        deltas.append(
            {
                "tool_calls": [
                    {
                        "index": i,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": fn["name"], "arguments": ""},
                    }
                ]
            }
        )
        deltas += [
            {"tool_calls": [{"index": i, "function": {"arguments": p}}]}
            for p in _pieces(fn["arguments"], 2)
        ]
    base = {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", ""),
        "system_fingerprint": "fp_fake",
    }
    extra = {"usage": None} if with_usage else {}
    chunks = [
        {
            **base,
            "choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": None}],
            **extra,
        }
        for d in deltas
    ]
    chunks.append(
        {
            **base,
            "choices": [
                {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason}
            ],
            **extra,
        }
    )
    if with_usage and usage is not None:
        chunks.append({**base, "choices": [], "usage": usage})
    return chunks


def sse(chunks: list[dict[str, Any]], done: bool = True) -> list[bytes]:
    """Server-sent-event frames, `data: [DONE]` last unless done=False."""
    frames = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks]
    return frames + ([b"data: [DONE]\n\n"] if done else [])


def error_body(
    status: int, body: dict[str, Any], code: str | None = None, message: str | None = None
) -> dict[str, Any]:
    """OpenAI error envelope {"error": {message, type, code, param}} for a status."""
    kind, default_code, default_msg = _ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, "Error.")
    )
    code = code or default_code
    param = None
    if code == "context_length_exceeded":
        param = "messages"
        default_msg = (
            f"This model's maximum context length is {CONTEXT_LIMIT} tokens. "
            f"However, your messages resulted in {prompt_tokens(body)} tokens. "
            "Please reduce the length of the messages."
        )
    elif code == "model_not_found":
        param = "model"
        default_msg = (
            f"The model `{body.get('model', '')}` does not exist or you do not have access to it."
        )
    return {
        "error": {"message": message or default_msg, "type": kind, "code": code, "param": param}
    }


# -- response_format as a strict server honours it (FakeServer(structured=...)) -----------
STRUCTURED_MODES = ("exact", "no_json_schema")
JSON_SCHEMA_REJECTED = (
    "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model."
)


def format_type(body: dict[str, Any]) -> str | None:
    """response_format.type of a request ("json_schema", "json_object", ...), or None."""
    fmt = body.get("response_format")
    return fmt.get("type") if isinstance(fmt, dict) else None


def json_schema_rejected() -> dict[str, Any]:
    """The 400 body of a server without structured outputs (OpenAI's wording)."""
    return {
        "error": {
            "message": JSON_SCHEMA_REJECTED,
            "type": "invalid_request_error",
            "code": None,
            "param": "response_format",
        }
    }


def schema_in_prompt(body: dict[str, Any]) -> dict[str, Any] | None:
    """The last line of the system prompt that is a JSON Schema object, if any."""
    found = None
    for line in system_prompt(body).splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and "type" in value:
            found = value
    return found


def structured_reply(body: dict[str, Any], mode: str) -> str | None:
    """The content a strict JSON-mode server sends, or None when the request asks no JSON.

    "exact": json_schema -> the minimal valid instance of that schema, json_object -> {}
    (a server that constrains to "some JSON object" and nothing more).
    "no_json_schema" (json_schema is rejected before this): json_object -> the minimal
    instance of the schema written in the prompt, like a model that reads its instructions.
    """
    kind = format_type(body)
    if kind == "json_schema":
        return json.dumps(minimal_instance(body["response_format"]["json_schema"]["schema"]))
    if kind == "json_object":
        schema = schema_in_prompt(body) if mode == "no_json_schema" else None
        return json.dumps(minimal_instance(schema) if schema else {})
    return None
