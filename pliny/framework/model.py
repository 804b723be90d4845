"""Frameworks: phase graphs of agents, defined in YAML.

A framework is a list of phases; each phase runs its agents (in parallel
unless told otherwise) and then moves on: to ``next`` (default: the
following phase; ``end`` stops), or to the ``goto`` of the first matching
route. A route that jumps back must carry ``max_cycles``; a graph that could
loop forever is rejected at load time.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pliny.config import resources
from pliny.config.settings import Seconds, Strict, validate
from pliny.config.yamlsource import Sourced, load_file
from pliny.errors import ConfigError, UsageError

END = "end"
NAME = r"^[a-z][a-z0-9_-]*$"
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")
ToolName = Literal["list_files", "read_file", "write_file", "search_files"]
RESERVED = {"task", "feedback", "session", END}


class CacheSpec(Strict):
    ttl: Seconds = Field(3600, gt=0)


class Agent(Strict):
    name: str = Field(pattern=NAME)
    role: str = Field(min_length=1, description="system prompt: who the agent is")
    prompt: str = Field(min_length=1, description="template; {{task}}, {{agent}}, {{phase}}")
    model: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    tools: list[ToolName] = Field(default_factory=list)
    output_schema: dict[str, Any] | None = Field(None, description="JSON Schema of the answer")
    deliverable: str | None = Field(None, description="workspace path the answer is written to")
    timeout: Seconds = None
    cache: CacheSpec | None = None
    # Temporal executor: the task queue whose workers run this agent (routing, not content:
    # excluded from dumps so it never changes a result-cache key).
    task_queue: str | None = Field(None, min_length=1, exclude=True)

    @field_validator("output_schema")
    @classmethod
    def _schema_is_object(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") != "object":
            raise ValueError("output_schema must be a JSON Schema with type: object")
        if value is not None:
            import jsonschema

            try:
                jsonschema.Draft202012Validator.check_schema(value)
            except jsonschema.SchemaError as exc:
                where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
                raise ValueError(f"not a valid JSON Schema at {where}: {exc.message}") from None
        return value

    def references(self) -> list[str]:
        return PLACEHOLDER.findall(self.prompt)


class Condition(Strict):
    agent: str
    field: str
    equals: Any = None
    in_: list[Any] | None = Field(None, alias="in")

    @model_validator(mode="after")
    def _one_test(self) -> Condition:
        if ("equals" in self.model_fields_set) == ("in_" in self.model_fields_set):
            raise ValueError("a route condition needs exactly one of `equals` or `in`")
        return self

    def matches(self, value: Any) -> bool:
        if self.in_ is not None:
            return value in self.in_
        return value == self.equals


class Route(Strict):
    when: Condition
    goto: str
    max_cycles: int | None = Field(None, ge=1, description="how often this route may be taken")


class Phase(Strict):
    # no trailing -<digits>: checkpoint `after-<phase>-<n>` means the n-th cycle
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$", description="letters, digits, _ and -")
    title: str | None = None
    description: str | None = None
    agents: list[Agent] = Field(min_length=1)
    parallel: bool | None = None  # None: the run's --parallel/--no-parallel
    max_concurrency: int | None = Field(None, ge=1)
    next: str | None = None  # None: the following phase; "end": stop
    routes: list[Route] = Field(default_factory=list)
    on_agent_failure: Literal["fail", "skip", "continue"] = "fail"
    min_successful_agents: int | None = Field(None, ge=0)
    timeout: Seconds = None
    cache: CacheSpec | None = None
    task_queue: str | None = Field(None, min_length=1, exclude=True)  # default for its agents

    @field_validator("name")
    @classmethod
    def _no_cycle_suffix(cls, value: str) -> str:
        if re.search(r"-\d+$", value):
            raise ValueError("a phase name may not end in -<digits> (reserved for cycle numbers)")
        return value

    @model_validator(mode="after")
    def _min_agents_fits(self) -> Phase:
        if self.min_successful_agents is not None and self.min_successful_agents > len(self.agents):
            raise ValueError(
                f"min_successful_agents ({self.min_successful_agents}) exceeds the "
                f"number of agents ({len(self.agents)})"
            )
        return self


class Framework(Strict):
    name: str = Field(pattern=NAME)
    title: str | None = None
    description: str | None = None
    phase_label: str = Field("phase", description="what the UI calls a phase (C-A-R-E: step)")
    phases: list[Phase] = Field(min_length=1)

    # -- graph queries used by the engine and the renderers --------------
    def phase(self, name: str) -> Phase:
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise KeyError(name)

    def agent(self, name: str) -> tuple[Phase, Agent]:
        for phase in self.phases:
            for agent in phase.agents:
                if agent.name == name:
                    return phase, agent
        raise KeyError(name)

    def default_next(self, phase: Phase) -> str:
        if phase.next is not None:
            return phase.next
        index = self.phases.index(phase)
        return self.phases[index + 1].name if index + 1 < len(self.phases) else END

    def edges(self) -> list[tuple[str, str, Route | None]]:
        """(from, to, route) for every transition; route None is the default edge."""
        out: list[tuple[str, str, Route | None]] = []
        for phase in self.phases:
            out.extend((phase.name, r.goto, r) for r in phase.routes)
            out.append((phase.name, self.default_next(phase), None))
        return out


# -- loading ---------------------------------------------------------------


def builtin_names() -> list[str]:
    return sorted(p.stem for p in resources.frameworks_dir().glob("*.yaml"))


def is_path(name_or_path: str) -> bool:
    return "/" in name_or_path or name_or_path.endswith((".yaml", ".yml"))


def resolve(name_or_path: str) -> Path:
    """A built-in name (``rise``) or a path to a YAML file."""
    builtin = resources.frameworks_dir() / f"{name_or_path}.yaml"
    if not is_path(name_or_path):
        if builtin.is_file():
            return builtin
        known = ", ".join(builtin_names())
        raise UsageError(f"unknown framework {name_or_path!r} (built-in: {known}; or a .yaml path)")
    path = Path(name_or_path)
    if not path.is_file():
        raise UsageError(f"{name_or_path}: framework file not found")
    return path


def load(name_or_path: str) -> Framework:
    source = load_file(resolve(name_or_path))
    framework = validate(Framework, source)
    check(framework, source)
    return framework


def check(fw: Framework, source: Sourced) -> None:
    """Whole-graph rules pydantic cannot see; errors point at the YAML."""
    phase_names = [p.name for p in fw.phases]
    seen: dict[str, tuple[Any, ...]] = {}
    for i, phase in enumerate(fw.phases):
        _unique(phase.name, ("phases", i, "name"), seen, source)
        for j, agent in enumerate(phase.agents):
            _unique(agent.name, ("phases", i, "agents", j, "name"), seen, source)
    agents = {a.name: a for p in fw.phases for a in p.agents}
    for i, phase in enumerate(fw.phases):
        if phase.next is not None and phase.next not in (*phase_names, END):
            _fail(source, ("phases", i, "next"), f"unknown phase {phase.next!r}")
        for k, route in enumerate(phase.routes):
            loc = ("phases", i, "routes", k)
            if route.goto not in (*phase_names, END):
                _fail(source, (*loc, "goto"), f"unknown phase {route.goto!r}")
            _check_field(agents, route.when.agent, route.when.field, source, (*loc, "when"))
        for j, agent in enumerate(phase.agents):
            at = ("phases", i, "agents", j, "prompt")
            leftover = PLACEHOLDER.sub("", agent.prompt)
            if "{{" in leftover:
                bad = leftover[leftover.index("{{") :].split("}}")[0][:40]
                _fail(source, at, f"malformed placeholder {bad}}}}} (use {{{{name}}}})")
            for ref in agent.references():
                base, _, field = ref.partition(".")
                if base not in (*RESERVED, *agents, *phase_names):
                    _fail(source, at, f"unknown placeholder {{{{{ref}}}}}")
                if field and base in agents:
                    _check_field(agents, base, field, source, at)
    _check_bounded(fw, source)


def _check_field(
    agents: dict[str, Agent], name: str, field: str, source: Sourced, loc: tuple[Any, ...]
) -> None:
    """``agent.field`` must name a property of that agent's output_schema."""
    if name not in agents:
        _fail(source, (*loc, "agent"), f"unknown agent {name!r}")
    schema = agents[name].output_schema
    if schema is None:
        _fail(source, loc, f"agent {name!r} has no output_schema, so it has no field {field!r}")
    elif field not in schema.get("properties", {}):
        known = ", ".join(schema.get("properties", {})) or "none"
        _fail(source, loc, f"agent {name!r} has no field {field!r} (fields: {known})")


def _unique(
    name: str, loc: tuple[Any, ...], seen: dict[str, tuple[Any, ...]], src: Sourced
) -> None:
    if name in RESERVED:
        _fail(src, loc, f"{name!r} is a reserved name")
    if name in seen:
        _fail(src, loc, f"duplicate name {name!r} (also at {src.mark_for(seen[name])})")
    seen[name] = loc


def _check_bounded(fw: Framework, source: Sourced) -> None:
    """Unbounded edges (no max_cycles) must form an acyclic graph."""
    unbounded: dict[str, list[str]] = {p.name: [] for p in fw.phases}
    for src, dst, route in fw.edges():
        if dst != END and (route is None or route.max_cycles is None):
            unbounded[src].append(dst)
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in unbounded[node]:
            if state.get(nxt) == 1:
                cycle = " -> ".join([*path[path.index(nxt) :], nxt])
                i = [p.name for p in fw.phases].index(node)
                _fail(source, ("phases", i), f"unbounded cycle {cycle}: set max_cycles on a route")
            if state.get(nxt) is None:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for phase in fw.phases:
        if phase.name not in state:
            visit(phase.name, [phase.name])


def _fail(source: Sourced, loc: tuple[Any, ...], message: str) -> None:
    path = ".".join(str(p) for p in loc)
    raise ConfigError(f"{source.mark_for(loc)}: {path}: {message}")
