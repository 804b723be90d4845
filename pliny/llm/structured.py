"""``response_format`` for an agent with an ``output_schema``.

Remote endpoints get OpenAI structured outputs, ``{type: json_schema,
json_schema: {name, schema, strict}}`` (vLLM, llama.cpp server and Ollama take
it too), so a server that constrains decoding answers a valid instance, not
just "some JSON object". ``strict`` is true only when OpenAI's strict mode
accepts the schema as written: every object closed with ``additionalProperties:
false``, every property required, no unsupported keyword. A server that rejects
json_schema with a 400 gets JSON mode instead (``json_mode``); the schema is
always in the system prompt too, and an invalid answer is re-asked.
"""

from __future__ import annotations

import re
import sys
from typing import Any

NAME_CHARS = re.compile(r"[^a-zA-Z0-9_-]")  # OpenAI: ^[a-zA-Z0-9_-]{1,64}$
# Keywords OpenAI strict mode rejects (its supported subset, 2025).
NOT_STRICT = frozenset(
    {
        "allOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "dependentRequired",
        "dependentSchemas",
        "patternProperties",
        "unevaluatedProperties",
        "unevaluatedItems",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "prefixItems",
    }
)
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")
JSON_OBJECT: dict[str, Any] = {"type": "json_object"}


def schema_name(agent: str) -> str:
    """The agent's name as a valid json_schema name."""
    return NAME_CHARS.sub("_", agent)[:64] or "output"


def json_schema_format(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": schema_name(name), "schema": schema, "strict": is_strict(schema)},
    }


def is_strict(schema: dict[str, Any]) -> bool:
    """Whether OpenAI strict mode accepts ``schema`` unchanged (root: an object)."""
    return schema.get("type") == "object" and "anyOf" not in schema and _strict_node(schema)


def _strict_node(node: Any) -> bool:
    if not isinstance(node, dict):
        return isinstance(node, bool)
    if NOT_STRICT & node.keys():
        return False
    kind = node.get("type")
    is_object = kind == "object" or (isinstance(kind, list) and "object" in kind)
    if (is_object or "properties" in node) and not _closed(node):
        return False
    items = node.get("items")
    children: list[Any] = [] if items is None else [items]
    children += node.get("anyOf", [])
    for key in _SUBSCHEMA_MAPS:
        children += list(node.get(key, {}).values())
    return not isinstance(items, list) and all(_strict_node(c) for c in children)


def _closed(node: dict[str, Any]) -> bool:
    """additionalProperties false and every property required."""
    props = node.get("properties", {})
    return node.get("additionalProperties") is False and set(node.get("required", [])) == set(props)


def wants_json_schema(request: dict[str, Any]) -> bool:
    fmt = request.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") == "json_schema"


def json_mode(request: dict[str, Any]) -> dict[str, Any]:
    """The request for an endpoint without structured outputs: JSON mode."""
    return {**request, "response_format": JSON_OBJECT} if wants_json_schema(request) else request


def rejects_json_schema(exc: BaseException, request: dict[str, Any]) -> bool:
    """A 400/422 that names response_format/json_schema, to a json_schema request."""
    openai = sys.modules.get("openai")
    if openai is None or not isinstance(exc, openai.APIStatusError):
        return False
    if exc.status_code not in (400, 422) or not wants_json_schema(request):
        return False
    body = exc.body if isinstance(exc.body, dict) else {}
    text = f"{exc.message} {body.get('message', '')} {body.get('param', '')}".lower()
    return "json_schema" in text or "response_format" in text
