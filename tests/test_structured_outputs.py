"""Structured outputs: the agent's schema goes out as ``response_format: json_schema``.

Against a server that follows ``response_format`` to the letter (FakeServer
``structured="exact"``: the minimal valid instance for json_schema, ``{}`` for
json_object) and one that rejects json_schema with a 400 like older servers
(``structured="no_json_schema"``), driven by the real engine and openai client.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
import yaml

from pliny.config.settings import Settings
from pliny.events import EventBus
from pliny.framework.model import load
from pliny.llm.endpoint import EndpointChoice
from pliny.llm.gateway import CallContext, LLMGateway
from pliny.llm.journal import Journal
from pliny.llm.structured import is_strict, json_schema_format, schema_name
from tests.fakeserver import FakeServer
from tests.minimal_instance import Unsupported, minimal_instance
from tests.test_engine import EVALUATOR, audit, of, run, typed

REPO = Path(__file__).resolve().parent.parent
SCHEMA = load("care").agent("evaluator")[1].output_schema
assert SCHEMA is not None


def fmt(request: Any) -> dict[str, Any]:
    return request.body.get("response_format") or {}


# -- the minimal-instance generator -------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (SCHEMA, {"verdict": "accept", "score": 0, "feedback": ""}),
        ({"type": "object", "properties": {"a": {"type": "string"}}}, {}),
        (
            {
                "type": "object",
                "required": ["n"],
                "properties": {"n": {"type": "number", "exclusiveMinimum": 2}},
            },
            {"n": 2 + 1e-9},
        ),
        (
            {
                "type": "object",
                "required": ["n"],
                "properties": {"n": {"type": "integer", "maximum": -3}},
            },
            {"n": -3},
        ),
        (
            {
                "type": "object",
                "required": ["xs"],
                "properties": {
                    "xs": {
                        "type": "array",
                        "minItems": 2,
                        "items": {"type": "string", "minLength": 1},
                    }
                },
            },
            {"xs": ["a", "a"]},
        ),
        (
            {
                "type": "object",
                "required": ["o"],
                "$defs": {"d": {"type": ["string", "null"]}},
                "properties": {"o": {"$ref": "#/$defs/d"}},
            },
            {"o": None},
        ),
        (
            {
                "type": "object",
                "required": ["c"],
                "properties": {"c": {"anyOf": [{"const": 3}, {"type": "string"}]}},
            },
            {"c": 3},
        ),
    ],
)
def test_minimal_instance_is_minimal_and_valid(schema: dict[str, Any], expected: Any) -> None:
    value = minimal_instance(schema)
    assert value == expected
    jsonschema.validate(value, schema)


def test_minimal_instance_refuses_what_it_cannot_satisfy() -> None:
    with pytest.raises(Unsupported, match="does not validate"):
        minimal_instance({"type": "string", "pattern": "^x$"})


# -- the fake server's response_format modes ------------------------------------------


def _ask(server: FakeServer, response_format: dict[str, Any], system: str = "s") -> Any:
    client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    return client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": "hi"}],
        response_format=response_format,  # type: ignore[arg-type]
    )


def test_exact_server_answers_minimal_instance_and_empty_object(fake_server: FakeServer) -> None:
    fake_server.structured = "exact"
    schema_fmt = {"type": "json_schema", "json_schema": {"name": "v", "schema": SCHEMA}}
    answer = _ask(fake_server, schema_fmt).choices[0].message.content
    assert json.loads(answer) == {"verdict": "accept", "score": 0, "feedback": ""}
    assert _ask(fake_server, {"type": "json_object"}).choices[0].message.content == "{}"


def test_rejecting_server_400s_json_schema_and_reads_the_prompt(fake_server: FakeServer) -> None:
    fake_server.structured = "no_json_schema"
    schema_fmt = {"type": "json_schema", "json_schema": {"name": "v", "schema": SCHEMA}}
    with pytest.raises(openai.BadRequestError, match="'json_schema' is not supported"):
        _ask(fake_server, schema_fmt)
    system = f"Answer JSON. It must validate against this JSON Schema:\n{json.dumps(SCHEMA)}"
    answer = _ask(fake_server, {"type": "json_object"}, system).choices[0].message.content
    assert json.loads(answer)["verdict"] == "accept"


# -- what Pliny sends -----------------------------------------------------------------


def test_strict_only_when_openai_strict_mode_accepts_the_schema() -> None:
    assert is_strict(SCHEMA)
    loose = {**SCHEMA, "additionalProperties": True}
    optional = {**SCHEMA, "required": ["verdict"]}
    nested = {
        "type": "object",
        "additionalProperties": False,
        "required": ["o"],
        "properties": {"o": {"type": "object", "properties": {}}},
    }
    limited = {
        **SCHEMA,
        "properties": {**SCHEMA["properties"], "feedback": {"type": "string", "maxLength": 10}},
    }
    for schema in (loose, optional, nested, limited, {"type": "object"}):
        assert not is_strict(schema), schema
        assert json_schema_format(schema, "x")["json_schema"]["strict"] is False


@pytest.mark.parametrize(
    ("agent", "name"),
    [
        ("evaluator", "evaluator"),
        ("context reader.v2", "context_reader_v2"),
        ("", "output"),
        ("a" * 80, "a" * 64),
        ("é", "_"),
    ],
)
def test_schema_name_fits_openai_pattern(agent: str, name: str) -> None:
    assert schema_name(agent) == name


# -- C-A-R-E end to end -----------------------------------------------------------------


def test_care_completes_against_a_server_that_honours_the_schema_exactly(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    fake_server.structured = "exact"
    outcome, events = run(tmp_path, fake_server, "care", task="Explain the retry policy")
    assert outcome.status == "completed", outcome.error
    (request,) = of(fake_server, EVALUATOR)  # accepted first time: no re-ask
    assert fmt(request) == {
        "type": "json_schema",
        "json_schema": {"name": "evaluator", "schema": SCHEMA, "strict": True},
    }
    assert not typed(events, "retry")
    data = tmp_path / "pliny-runs" / outcome.session.id / "evaluate" / "evaluator.json"
    assert json.loads(data.read_text()) == {"verdict": "accept", "score": 0, "feedback": ""}
    # agents without a schema get no response_format
    assert all("response_format" not in r.body for r in fake_server.requests if r is not request)


def test_care_falls_back_to_json_mode_once_when_json_schema_is_rejected(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    fake_server.structured = "no_json_schema"
    fake_server.script(system=EVALUATOR, reply="Looks good to me!", times=1)  # forces a re-ask
    outcome, events = run(tmp_path, fake_server, "care", task="Explain the retry policy")
    assert outcome.status == "completed", outcome.error
    rejected, first, reasked = of(fake_server, EVALUATOR)
    assert (rejected.outcome, fmt(rejected)["type"]) == ("status:400", "json_schema")
    # the fallback is remembered: the re-ask goes straight to json_object
    assert fmt(first) == fmt(reasked) == {"type": "json_object"}
    assert "It must validate against this JSON Schema" in first.system
    assert "does not match the required JSON Schema" in reasked.last_user
    # the 400 is neither a paid call nor a retry of any category; it is audited once
    calls = [e for e in typed(events, "llm_call") if e.agent == "evaluator"]
    assert [(c.attempt, c.rejected) for c in calls] == [(1, None), (1, None)]
    assert [r.category for r in typed(events, "retry")] == ["validation"]
    assert not typed(events, "error")
    warnings = [e for e in audit(tmp_path, outcome.session.id) if e.type == "warning"]
    assert len(warnings) == 1 and "json_schema" in warnings[0].message
    assert "json_object" in warnings[0].message


def test_care_route_on_the_first_enum_value_is_still_bounded(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """With verdict's enum as [revise, accept] the minimal instance always says revise."""
    spec = yaml.safe_load((REPO / "frameworks" / "care.yaml").read_text())
    evaluator = spec["phases"][-1]["agents"][0]
    evaluator["output_schema"]["properties"]["verdict"]["enum"] = ["revise", "accept"]
    path = tmp_path / "care-revise-first.yaml"
    path.write_text(yaml.safe_dump(spec))
    fake_server.structured = "exact"
    outcome, events = run(tmp_path, fake_server, str(path), task="Explain the retry policy")
    assert outcome.status == "completed", outcome.error
    assert len(of(fake_server, EVALUATOR)) == 3  # 1 + max_cycles (2)
    assert typed(events, "phase_completed")[-1].next == "end"


# -- the journal key does not depend on the fallback ------------------------------------


def _gateway(server: FakeServer, journal: Journal) -> LLMGateway:
    endpoint = EndpointChoice("remote", server.base_url, "sk-test", "fake-model", "test")
    return LLMGateway(Settings(), endpoint, EventBus(), journal=journal)


def test_a_fallen_back_answer_is_replayed_on_resume(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    fake_server.structured = "no_json_schema"
    messages = [{"role": "system", "content": "judge"}, {"role": "user", "content": "go"}]

    async def ask() -> str:
        gateway = _gateway(fake_server, Journal(tmp_path / "journal.sqlite"))
        try:
            ctx = CallContext(phase="evaluate", agent="evaluator")
            return (await gateway.chat(ctx, list(messages), json_schema=SCHEMA)).content
        finally:
            await gateway.close()

    first = asyncio.run(ask())
    assert fake_server.count() == 2  # 400, then json_object
    assert asyncio.run(ask()) == first  # a new run (no fallback known yet) replays it
    assert fake_server.count() == 2
