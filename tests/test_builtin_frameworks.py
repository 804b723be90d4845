"""The built-in frameworks (R-I-S-E, C-A-R-E), the example, and loader errors.

The built-ins are checked for what the engine and a small local model rely
on: phase order, real sources for the researchers, information flowing from
phase to phase, a bounded C-A-R-E loop, and prompts that fit an 8k context.
The negative tests pin the exact ``file:line:col`` of each loader error.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pliny.errors import EXIT_BAD_INPUT, ConfigError, UsageError
from pliny.framework.model import PLACEHOLDER, RESERVED, Agent, Framework, builtin_names, load

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "review.yaml"
READ_TOOLS = {"list_files", "read_file", "search_files"}
SMALL_MODEL_CONTEXT = 8192  # SmolLM2-135M as run by the embedded llama.cpp server
CHARS_PER_TOKEN = 3  # conservative: English prose averages ~4 in common tokenizers


def all_frameworks() -> list[Framework]:
    return [load("rise"), load("care"), load(str(EXAMPLE))]


def refs(agent: Agent) -> list[str]:
    return [ref.strip() for ref in agent.references()]


# -- R-I-S-E ---------------------------------------------------------------


def test_builtins_are_listed() -> None:
    assert {"rise", "care"} <= set(builtin_names())


def test_rise_has_four_phases_in_order() -> None:
    fw = load("rise")
    assert [p.name for p in fw.phases] == ["research", "identify", "synthesize", "execute"]
    assert [dst for _, dst, _ in fw.edges()] == ["identify", "synthesize", "execute", "end"]


def test_rise_research_runs_three_agents_in_parallel_each_with_its_own_source() -> None:
    research = load("rise").phase("research")
    assert research.parallel is not False  # None: follows --parallel, which defaults to on
    assert [a.name for a in research.agents] == ["research-code", "research-docs", "research-task"]
    by_name = {a.name: a for a in research.agents}
    # Named for the workspace: they get the tools to read it, and only those.
    for name in ("research-code", "research-docs"):
        assert set(by_name[name].tools) == READ_TOOLS, name
    # Named for the task statement: its source is {{task}} and nothing else.
    assert refs(by_name["research-task"]) == ["task"]
    assert by_name["research-task"].tools == []
    # Three different briefs, not one prompt copied three times.
    assert len({a.prompt for a in research.agents}) == 3


def test_rise_only_execute_writes_and_it_names_a_deliverable() -> None:
    fw = load("rise")
    writers = [a.name for p in fw.phases for a in p.agents if "write_file" in a.tools]
    assert writers == ["executor"]
    _, executor = fw.agent("executor")
    assert executor.deliverable == "DELIVERABLE.md"
    assert {"planner", "findings"} <= set(refs(executor))


# -- C-A-R-E ---------------------------------------------------------------


def test_care_steps_in_order() -> None:
    fw = load("care")
    assert fw.phase_label == "step"
    assert [p.name for p in fw.phases] == ["context", "analyze", "respond", "evaluate"]


def test_care_evaluator_returns_a_structured_verdict() -> None:
    fw = load("care")
    (evaluator,) = fw.phase("evaluate").agents
    schema = evaluator.output_schema
    assert schema is not None
    assert set(schema["required"]) == {"verdict", "score", "feedback"}
    props = schema["properties"]
    assert props["verdict"]["enum"] == ["accept", "revise"]
    assert (props["score"]["minimum"], props["score"]["maximum"]) == (0, 10)
    assert props["feedback"]["type"] == "string"


def test_care_evaluate_loops_back_to_analyze_bounded() -> None:
    fw = load("care")
    evaluate = fw.phase("evaluate")
    (route,) = evaluate.routes
    assert route.goto == "analyze"
    assert route.max_cycles == 2
    assert (route.when.agent, route.when.field, route.when.equals) == (
        "evaluator",
        "verdict",
        "revise",
    )
    # The route can fire: its value is one the schema allows.
    _, evaluator = fw.agent("evaluator")
    assert evaluator.output_schema is not None
    assert route.when.equals in evaluator.output_schema["properties"]["verdict"]["enum"]
    assert fw.default_next(evaluate) == "end"  # accept ends the run


def test_care_revision_sees_feedback_and_respond_writes_the_deliverable() -> None:
    fw = load("care")
    _, analyst = fw.agent("analyst")
    assert "feedback" in refs(analyst)
    _, responder = fw.agent("responder")
    assert responder.deliverable == "RESPONSE.md"
    assert "analyst" in refs(responder)


# -- properties every shipped framework keeps --------------------------------


@pytest.mark.parametrize("fw", all_frameworks(), ids=lambda f: f.name)
def test_information_flows_into_every_later_phase(fw: Framework) -> None:
    for i, phase in enumerate(fw.phases[1:], start=1):
        earlier = {p.name for p in fw.phases[:i]} | {
            a.name for p in fw.phases[:i] for a in p.agents
        }
        used = {ref.split(".", 1)[0] for a in phase.agents for ref in refs(a)}
        assert used & earlier, f"{phase.name} uses no output of an earlier phase"


@pytest.mark.parametrize("fw", all_frameworks(), ids=lambda f: f.name)
def test_every_agent_uses_the_task(fw: Framework) -> None:
    for phase in fw.phases:
        for agent in phase.agents:
            assert "task" in refs(agent), agent.name


@pytest.mark.parametrize("fw", all_frameworks(), ids=lambda f: f.name)
def test_field_placeholders_name_a_field_of_the_agents_schema(fw: Framework) -> None:
    for phase in fw.phases:
        for agent in phase.agents:
            for ref in refs(agent):
                if "." not in ref:
                    continue
                source, field = ref.split(".", 1)
                _, producer = fw.agent(source)
                assert producer.output_schema is not None, ref
                assert field in producer.output_schema["properties"], ref


@pytest.mark.parametrize("fw", all_frameworks(), ids=lambda f: f.name)
def test_titles_descriptions_and_relative_deliverables(fw: Framework) -> None:
    assert fw.title and fw.description
    for phase in fw.phases:
        assert phase.title and phase.description, phase.name
        for agent in phase.agents:
            if agent.deliverable:
                path = Path(agent.deliverable)
                assert not path.is_absolute() and ".." not in path.parts
                assert path.parts[0] not in {".git", "pliny-runs"}


def _estimate(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + 1


def _worst_case_input(fw: Framework, agent: Agent) -> int:
    """Tokens of system + prompt with every placeholder at its longest."""
    looped = [r.when.agent for p in fw.phases for r in p.routes]
    longest = {a.name: a.max_tokens or 0 for p in fw.phases for a in p.agents}
    longest.update({p.name: sum(a.max_tokens or 0 for a in p.agents) for p in fw.phases})
    longest["feedback"] = max((longest[a] for a in looped), default=0)
    total = _estimate(agent.role) + _estimate(PLACEHOLDER.sub("", agent.prompt))
    for ref in refs(agent):
        base = ref.split(".", 1)[0]
        total += 0 if base in RESERVED else longest[base]
    return total


@pytest.mark.parametrize("fw", all_frameworks(), ids=lambda f: f.name)
def test_prompts_fit_a_small_local_model(fw: Framework) -> None:
    task_allowance = 300  # tokens for a generous --task text
    for phase in fw.phases:
        for agent in phase.agents:
            assert agent.max_tokens, f"{agent.name} has no max_tokens"
            assert len(agent.role) < 400, f"{agent.name}: keep the role to a few sentences"
            need = _worst_case_input(fw, agent) + task_allowance + agent.max_tokens
            assert need < SMALL_MODEL_CONTEXT // 2, (agent.name, need)


# -- loader errors, pinned to file:line:col ----------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fw.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert info.value.exit_code == EXIT_BAD_INPUT
    message = str(info.value)
    assert "\n" not in message, message  # one problem, one line
    return message


def test_unknown_key_points_at_the_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: t
        phases:
          - name: one
            agents:
              - name: a
                role: r
                prompt: "{{task}}"
                max_token: 10
        """,
    )
    assert load_error(path) == (f"{path}:8:9: phases.0.agents.0.max_token: unknown key (typo?)")


def test_unknown_placeholder(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: t
        phases:
          - name: one
            agents:
              - name: a
                role: r
                prompt: "Summarise {{reserch}} for {{task}}"
        """,
    )
    assert load_error(path) == (
        f"{path}:7:17: phases.0.agents.0.prompt: unknown placeholder {{{{reserch}}}}"
    )


CYCLE = """
    name: t
    phases:
      - name: draft
        agents:
          - name: writer
            role: r
            prompt: "{{task}} {{feedback}}"
      - name: check
        agents:
          - name: checker
            role: r
            prompt: "{{writer}}"
            output_schema: {type: object, properties: {ok: {type: boolean}}}
        routes:
          - when: {agent: checker, field: ok, equals: false}
            goto: draft
"""


def test_unbounded_cycle_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, CYCLE)
    assert load_error(path) == (
        f"{path}:8:5: phases.1: unbounded cycle draft -> check -> draft: set max_cycles on a route"
    )


def test_the_same_cycle_with_max_cycles_loads(tmp_path: Path) -> None:
    path = write(tmp_path, CYCLE + "            max_cycles: 3\n")
    fw = load(str(path))
    assert fw.phase("check").routes[0].max_cycles == 3


def test_unbounded_cycle_through_next_is_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: t
        phases:
          - name: one
            agents:
              - {name: a, role: r, prompt: x}
            next: one
        """,
    )
    assert load_error(path) == (
        f"{path}:3:5: phases.0: unbounded cycle one -> one: set max_cycles on a route"
    )


def test_goto_unknown_phase(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: t
        phases:
          - name: one
            agents:
              - {name: a, role: r, prompt: x}
            routes:
              - when: {agent: a, field: f, equals: 1}
                goto: nowhere
                max_cycles: 1
        """,
    )
    assert load_error(path) == f"{path}:8:15: phases.0.routes.0.goto: unknown phase 'nowhere'"


def test_duplicate_agent_names_cite_both_places(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: t
        phases:
          - name: one
            agents:
              - {name: a, role: r, prompt: x}
          - name: two
            agents:
              - {name: a, role: r, prompt: y}
        """,
    )
    assert load_error(path) == (
        f"{path}:8:16: phases.1.agents.0.name: duplicate name 'a' (also at {path}:5:16)"
    )


def test_agent_may_not_share_a_name_with_a_phase(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: t
        phases:
          - name: review
            agents:
              - {name: review, role: r, prompt: x}
        """,
    )
    assert load_error(path).startswith(f"{path}:5:16: phases.0.agents.0.name: duplicate name")


def test_reserved_name_is_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: t
        phases:
          - name: one
            agents:
              - {name: task, role: r, prompt: x}
        """,
    )
    assert load_error(path) == f"{path}:5:16: phases.0.agents.0.name: 'task' is a reserved name"


def test_bad_phase_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: t
        phases:
          - name: Research Phase
            agents:
              - {name: a, role: r, prompt: x}
        """,
    )
    message = load_error(path)
    assert message.startswith(f"{path}:3:11: phases.0.name: String should match pattern")
    assert "'Research Phase'" in message


def test_unknown_framework_name_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"unknown framework 'rsie' \(built-in: .*rise"):
        load("rsie")


def test_unknown_yaml_tag_is_one_config_error_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: t
        phases:
          - name: one
            agents:
              - {name: a, role: !secret r, prompt: x}
        """,
    )
    assert load_error(path).startswith(f"{path}:5:25: invalid YAML")


def test_invalid_output_schema_is_rejected_at_load(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: t
        phases:
          - name: one
            agents:
              - name: a
                role: r
                prompt: "{{task}}"
                output_schema:
                  type: object
                  properties:
                    verdict: {type: strin}
        """,
    )
    assert load_error(path).startswith(
        f"{path}:9:11: phases.0.agents.0.output_schema: not a valid JSON Schema at "
        "properties/verdict/type:"
    )
