"""YAML loading that remembers where every value came from.

pydantic reports errors as a path of keys (``phases.0.agents.1.nmae``); users
need ``file:line:column``. We compose the YAML node tree ourselves so each
path maps back to a source mark, and layered configs keep the mark of the
layer that set a value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pliny.errors import ConfigError

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Mark:
    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass
class Sourced:
    """Plain Python data plus a map from value path to source mark."""

    data: Any
    marks: dict[Loc, Mark]

    def mark_for(self, loc: Loc) -> Mark | None:
        """The mark of the deepest prefix of ``loc`` that exists."""
        for end in range(len(loc), -1, -1):
            mark = self.marks.get(tuple(loc[:end]))
            if mark is not None:
                return mark
        return None


# libyaml's parser when available (~15x faster; same nodes and marks).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Hostile input (billion laughs: aliases of aliases) composes to a small node
# graph that expands exponentially when converted. Configs and frameworks are
# small: cap the file, and the nodes aliases may add beyond the document's own.
MAX_FILE_BYTES = 1 << 20
MAX_ALIAS_NODES = 100_000
MAX_DEPTH = 200


def _mark(node: yaml.Node, file: str) -> Mark:
    return Mark(file, node.start_mark.line + 1, node.start_mark.column + 1)


def _convert(
    node: yaml.Node, file: str, loc: Loc, marks: dict[Loc, Mark], loader: yaml.SafeLoader
) -> Any:
    marks[loc] = _mark(node, file)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # `<<: *defaults` merge keys; explicit keys win
        out: dict[Any, Any] = {}
        merged: set[Any] = set()
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in out and key in merged:
                merged.discard(key)
            elif key in out:
                raise ConfigError(f"{_mark(key_node, file)}: duplicate key {key!r}")
            if _is_merged(key_node, node):
                merged.add(key)
            out[key] = _convert(value_node, file, (*loc, key), marks, loader)
            # A key's own position is more useful than its value's for
            # "unknown key" errors; values keep theirs via the child path.
            marks.setdefault((*loc, key, "__key__"), _mark(key_node, file))
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, file, (*loc, i), marks, loader) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _is_merged(key_node: yaml.Node, mapping: yaml.Node) -> bool:
    """A key that came from a ``<<`` merge sits before the mapping's own start."""
    return key_node.start_mark.index < mapping.start_mark.index


def load_text(text: str, file: str) -> Sourced:
    """Parse one YAML document; syntax errors become one ConfigError line."""
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        raise ConfigError(f"{where}: invalid YAML: {exc.problem}") from None
    marks: dict[Loc, Mark] = {}
    if node is None:
        return Sourced({}, {(): Mark(file, 1, 1)})
    _check_expansion(node, file)
    try:
        return Sourced(_convert(node, file, (), marks, yaml.SafeLoader("")), marks)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        raise ConfigError(f"{where}: invalid YAML: {exc.problem or exc.context}") from None


def _check_expansion(root: yaml.Node, file: str) -> None:
    """Refuse recursive aliases, deep nesting and alias expansion past the bounds.

    Counts the nodes conversion would visit (memoised per node, so linear in
    the composed graph) before anything is expanded.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigError(f"{_mark(node, file)}: recursive alias (refused)")
        if depth > MAX_DEPTH:
            raise ConfigError(f"{_mark(node, file)}: nested deeper than {MAX_DEPTH} levels")
        active.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item, depth + 1) for item in node.value)
        active.discard(key)
        sizes[key] = total
        return total

    expanded = size(root, 0)
    if expanded - len(sizes) > MAX_ALIAS_NODES:
        raise ConfigError(
            f"{_mark(root, file)}: aliases expand to {expanded:,} nodes, "
            f"more than {MAX_ALIAS_NODES:,} allowed (YAML bomb?)"
        )


def load_file(path: Path) -> Sourced:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB (refused)")
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return load_text(text, str(path))


def merge(base: Sourced, over: Sourced) -> Sourced:
    """Deep-merge ``over`` onto ``base``: mappings merge, anything else replaces."""
    marks = dict(base.marks)

    def walk(a: Any, b: Any, loc: Loc) -> Any:
        if isinstance(a, dict) and isinstance(b, dict):
            out = dict(a)
            for key, value in b.items():
                out[key] = walk(a.get(key), value, (*loc, key)) if key in a else value
                if key not in a:
                    _copy_marks(over.marks, marks, (*loc, key))
            return out
        _drop_marks(marks, loc)
        _copy_marks(over.marks, marks, loc)
        return b

    if not isinstance(over.data, dict):
        return over
    data = walk(base.data if isinstance(base.data, dict) else {}, over.data, ())
    return Sourced(data, marks)


def _copy_marks(src: dict[Loc, Mark], dst: dict[Loc, Mark], prefix: Loc) -> None:
    n = len(prefix)
    for loc, mark in src.items():
        if loc[:n] == prefix:
            dst[loc] = mark


def _drop_marks(marks: dict[Loc, Mark], prefix: Loc) -> None:
    n = len(prefix)
    for loc in [loc for loc in marks if loc[:n] == prefix and len(loc) > n]:
        del marks[loc]


def format_validation_error(exc: Any, source: Sourced, model_name: str = "") -> str:
    """One line per problem: ``file:line:col: field.path: what was expected``."""
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not _is_union_tag(p))
        on_key = err["type"] == "extra_forbidden" or "[key]" in err["loc"]
        where = source.marks.get((*loc, "__key__")) if on_key else None
        where = where or source.mark_for(loc)
        path = ".".join(str(p) for p in loc) or model_name or "(document)"
        lines.append(f"{where}: {path}: {_describe(err)}")
    return "\n".join(lines)


def _is_union_tag(part: Any) -> bool:
    # pydantic inserts the union member's name (e.g. "function-after[...]")
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _describe(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key (typo?)"
    if kind == "missing":
        return "required field is missing"
    msg = err["msg"]
    value = err.get("input")
    if kind not in {"value_error", "assertion_error"} and not isinstance(value, dict | list):
        msg = f"{msg} (got {value!r})"
    return msg.removeprefix("Value error, ")
