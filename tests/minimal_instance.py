"""The smallest JSON value that validates against a JSON Schema.

What a server that enforces ``response_format: json_schema`` to the letter, and no
more, may answer: only required properties, the first enum value, the minimum
number, empty strings and arrays where allowed. The fake server sends it
(tests/fakeserver.py, ``structured="exact"``); every value is checked with
``jsonschema`` before it is returned, so a gap in this generator fails loudly.
"""

from __future__ import annotations

import math
from typing import Any

import jsonschema

_FIRST_TYPE = ("null", "boolean", "integer", "number", "string", "array", "object")


class Unsupported(ValueError):
    """The schema uses something this generator does not cover."""


def minimal_instance(schema: dict[str, Any]) -> Any:
    """The minimal valid instance of ``schema`` (validated; raises Unsupported)."""
    value = _generate(schema, schema)
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(value))
    if errors:
        raise Unsupported(f"generated {value!r} does not validate: {errors[0].message}")
    return value


def _generate(node: Any, root: dict[str, Any]) -> Any:
    if node is True or node == {}:
        return None
    if not isinstance(node, dict):
        raise Unsupported(f"schema node {node!r}")
    if "$ref" in node:
        return _generate(_resolve(node["$ref"], root), root)
    if "const" in node:
        return node["const"]
    if "enum" in node:
        return node["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in node:
            return _generate(node[key][0], root)
    if "allOf" in node:
        merged = {k: v for k, v in node.items() if k != "allOf"}
        for part in node["allOf"]:
            merged = _merge(merged, part)
        return _generate(merged, root)
    return _by_type(node, _type_of(node), root)


def _type_of(node: dict[str, Any]) -> str:
    kind = node.get("type")
    if isinstance(kind, list):  # ["string", "null"]: the cheapest first
        return min(kind, key=_FIRST_TYPE.index)
    if kind is None:
        if "properties" in node or "required" in node:
            return "object"
        if "items" in node:
            return "array"
        return "null"
    return kind


def _by_type(node: dict[str, Any], kind: str, root: dict[str, Any]) -> Any:
    if kind == "null":
        return None
    if kind == "boolean":
        return False
    if kind in ("integer", "number"):
        return _number(node, integer=kind == "integer")
    if kind == "string":
        return "a" * int(node.get("minLength", 0))
    if kind == "array":
        items = node.get("items", {})
        return [_generate(items, root) for _ in range(int(node.get("minItems", 0)))]
    if kind == "object":
        props = node.get("properties", {})
        return {name: _generate(props.get(name, {}), root) for name in node.get("required", [])}
    raise Unsupported(f"type {kind!r}")


def _number(node: dict[str, Any], *, integer: bool) -> int | float:
    low = node.get("minimum")
    if "exclusiveMinimum" in node:
        ex = node["exclusiveMinimum"]
        low = math.floor(ex) + 1 if integer else ex + 1e-9
        low = max(low, node.get("minimum", low))
    if low is None:  # no lower bound: 0, unless the upper bound is below it
        low = min(0, node.get("maximum", 0))
        if "exclusiveMaximum" in node and node["exclusiveMaximum"] <= low:
            ex = node["exclusiveMaximum"]
            low = math.ceil(ex) - 1 if integer else ex - 1e-9
        return math.floor(low) if integer else low
    return math.ceil(low) if integer else low


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    if not ref.startswith("#/"):
        raise Unsupported(f"non-local $ref {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = {**a, **b}
    out["required"] = [*a.get("required", []), *b.get("required", [])]
    out["properties"] = {**a.get("properties", {}), **b.get("properties", {})}
    return out
