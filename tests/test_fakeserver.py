"""The fake OpenAI server, driven through the real openai SDK (sync and async)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from pydantic import BaseModel

from tests import fakeserver_payloads as P
from tests.fakeserver import FakeServer

REPO = Path(__file__).resolve().parent.parent
USER = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi there"}]


def client(server: FakeServer, **kw: Any) -> OpenAI:
    kw.setdefault("timeout", 5.0)
    return OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, **kw)


def ask(server: FakeServer, messages: list[dict[str, Any]] | None = None, **kw: Any) -> Any:
    return client(server).chat.completions.create(model="m", messages=messages or USER, **kw)


# ---- replies ---------------------------------------------------------------------------
def test_default_reply_is_deterministic_and_tracks_history(fake_server: FakeServer) -> None:
    first, again = ask(fake_server), ask(fake_server)
    longer = ask(
        fake_server,
        USER + [{"role": "assistant", "content": "x"}, {"role": "user", "content": "Hi there"}],
    )
    text = first.choices[0].message.content
    assert text == again.choices[0].message.content
    assert text == P.default_reply({"model": "m", "messages": USER})
    assert text.startswith("[fake:m] answer to: Hi there #")
    assert longer.choices[0].message.content != text  # same last message, other history
    assert first.choices[0].finish_reason == "stop"


def test_usage_numbers_request_ids_and_cached_tokens(fake_server: FakeServer) -> None:
    fake_server.cached_tokens = 3
    raw = client(fake_server).chat.completions.with_raw_response.create(model="m", messages=USER)
    resp = raw.parse()
    chars = sum(len(m["content"]) for m in USER)
    text = resp.choices[0].message.content
    assert resp.usage.prompt_tokens == chars // 4 + 1
    assert resp.usage.completion_tokens == len(text) // 4 + 1
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert resp.usage.prompt_tokens_details.cached_tokens == 3
    rid = fake_server.last.id
    assert resp.id == f"chatcmpl-fake{rid}"
    assert raw.headers["x-request-id"] == f"req_fake{rid}" == raw.request_id


def test_usage_can_be_omitted_or_overridden(fake_server: FakeServer) -> None:
    fake_server.usage = False
    assert ask(fake_server).usage is None
    chunks = list(ask(fake_server, stream=True, stream_options={"include_usage": True}))
    assert all(c.usage is None for c in chunks) and chunks[-1].choices
    fake_server.script(usage={"prompt_tokens": 1000, "cached_tokens": 800})
    usage = ask(fake_server).usage
    assert (usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens) == (1000, 800)


def test_rules_match_in_order_and_run_out(fake_server: FakeServer) -> None:
    fake_server.script(system="terse", user="Hi", reply="first", times=1)
    fake_server.script(model="other", reply="by model")
    fake_server.script(when=lambda body: body.get("temperature") == 0.5, reply="by predicate")
    fake_server.script(user="Hi", reply=lambda body: body["messages"][-1]["content"].upper())
    assert ask(fake_server).choices[0].message.content == "first"
    assert ask(fake_server).choices[0].message.content == "HI THERE"  # first rule used up
    other = client(fake_server).chat.completions.create(model="other", messages=USER)
    assert other.choices[0].message.content == "by model"
    hot = ask(fake_server, temperature=0.5)
    assert hot.choices[0].message.content == "by predicate"
    plain = ask(fake_server, [{"role": "user", "content": "unmatched"}])
    assert plain.choices[0].message.content.startswith("[fake:m] answer to: unmatched")


def test_tool_calls_parse_into_sdk_objects(fake_server: FakeServer) -> None:
    calls = [
        {"name": "write_file", "arguments": {"path": "out.md", "content": "# Done"}},
        {"name": "list_files", "arguments": {}},
    ]
    fake_server.script(tool_calls=calls, times=2)
    msg = ask(fake_server).choices[0]
    assert msg.finish_reason == "tool_calls" and msg.message.content is None
    got = [(c.function.name, json.loads(c.function.arguments)) for c in msg.message.tool_calls]
    assert got == [(c["name"], c["arguments"]) for c in calls]
    assert len({c.id for c in msg.message.tool_calls}) == 2
    args: dict[int, str] = {}
    for chunk in ask(fake_server, stream=True):
        for d in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            args[d.index] = args.get(d.index, "") + (d.function.arguments or "")
    assert [json.loads(a) for a in args.values()] == [c["arguments"] for c in calls]


class Verdict(BaseModel):
    verdict: str
    score: int


def test_json_content_parses_with_sdk_structured_output(fake_server: FakeServer) -> None:
    fake_server.script(json={"verdict": "accept", "score": 7})
    parsed = client(fake_server).chat.completions.parse(
        model="m", messages=USER, response_format=Verdict
    )
    assert parsed.choices[0].message.parsed == Verdict(verdict="accept", score=7)
    assert fake_server.last.body["response_format"]["type"] == "json_schema"


def test_empty_refusal_and_finish_reason(fake_server: FakeServer) -> None:
    fake_server.fail("empty", times=1)
    fake_server.script(refusal="I can't help with that.", times=1)
    fake_server.script(reply="cut", finish_reason="length", times=1)
    empty = ask(fake_server)
    assert empty.choices[0].message.content == "" and empty.usage.completion_tokens == 0
    assert ask(fake_server).choices[0].message.refusal == "I can't help with that."
    assert ask(fake_server).choices[0].finish_reason == "length"


def test_async_stream_with_usage_chunk(fake_server: FakeServer) -> None:
    async def run() -> list[Any]:
        async with AsyncOpenAI(base_url=fake_server.base_url, api_key="k", max_retries=0) as c:
            stream = await c.chat.completions.create(
                model="m", messages=USER, stream=True, stream_options={"include_usage": True}
            )
            return [chunk async for chunk in stream]

    chunks = asyncio.run(run())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == P.default_reply({"model": "m", "messages": USER})
    assert len(chunks) > 3  # really arrives in parts
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(text) // 4 + 1


# ---- faults ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "code", "exc"),
    [
        (400, "context_length_exceeded", openai.BadRequestError),
        (401, "invalid_api_key", openai.AuthenticationError),
        (403, "permission_denied", openai.PermissionDeniedError),
        (404, "model_not_found", openai.NotFoundError),
        (429, "rate_limit_exceeded", openai.RateLimitError),
        (500, None, openai.InternalServerError),
        (502, "bad_gateway", openai.InternalServerError),
        (503, "service_unavailable", openai.InternalServerError),
    ],
)
def test_status_faults_map_to_sdk_errors(
    fake_server: FakeServer, status: int, code: str | None, exc: type[openai.APIStatusError]
) -> None:
    fake_server.fail(status, code=code, retry_after=1.5)
    with pytest.raises(exc) as info:
        ask(fake_server)
    err = info.value
    assert (err.status_code, err.code) == (status, code)
    assert set(err.body) == {"message", "type", "code", "param"}
    assert err.response.headers["retry-after"] == "1.5"
    assert err.request_id == f"req_fake{fake_server.last.id}"


def test_context_length_fault_reads_like_openai(fake_server: FakeServer) -> None:
    fake_server.fail("context_length")
    with pytest.raises(openai.BadRequestError) as info:
        ask(fake_server)
    assert info.value.code == "context_length_exceeded" and info.value.param == "messages"
    assert "maximum context length" in info.value.message


def test_fail_times_then_success_counts_attempts(fake_server: FakeServer) -> None:
    rule = fake_server.fail(status=503, times=2)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            ask(fake_server)
    assert ask(fake_server).choices[0].message.content
    assert rule.hits == 2 and fake_server.count() == 3
    outcomes = [r.outcome for r in fake_server.requests]
    assert outcomes == ["status:503", "status:503", "reply"]


def test_hang_times_out_without_blocking_others(fake_server: FakeServer) -> None:
    fake_server.fail("hang", user="slow")
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        ask(fake_server, [{"role": "user", "content": "slow"}], timeout=0.3)
    assert time.monotonic() - started < 5
    assert ask(fake_server).choices[0].message.content  # server still answers
    assert _eventually(lambda: fake_server.in_flight == 0)  # hung handler saw the disconnect


def test_reset_wakes_hung_handlers(fake_server: FakeServer) -> None:
    fake_server.fail("hang", reply="late")
    result: list[str] = []
    t = threading.Thread(
        target=lambda: result.append(ask(fake_server, timeout=30).choices[0].message.content)
    )
    t.start()
    assert fake_server.wait_for(1, timeout=5)
    fake_server.reset()
    t.join(10)
    assert result == ["late"]


def test_drop_closes_connection_without_response(fake_server: FakeServer) -> None:
    fake_server.fail("drop")
    with pytest.raises(openai.APIConnectionError) as info:
        ask(fake_server)
    assert not isinstance(info.value, openai.APITimeoutError)
    body = json.dumps({"model": "m", "messages": USER}).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
        f"\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    host, port = fake_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(head + body)
        try:
            received = sock.recv(4096)
        except ConnectionResetError:
            received = b""
    assert received == b""  # not even a status line


def test_not_json_body(fake_server: FakeServer) -> None:
    # The SDK does not wrap this: a plain json.JSONDecodeError escapes from create().
    fake_server.fail("not_json", times=1)
    with pytest.raises(json.JSONDecodeError):
        ask(fake_server)
    # Served as text/html (a proxy error page) the SDK returns the body as a str.
    fake_server.fail("not_json", content_type="text/html", times=1)
    assert "502 Bad Gateway" in ask(fake_server)
    # Streaming: the SSE decoder finds no events, so the stream is silently empty.
    fake_server.fail("not_json", times=1)
    assert list(ask(fake_server, stream=True)) == []


def test_truncated_stream_raises_connection_error_mid_iteration(fake_server: FakeServer) -> None:
    fake_server.fail("truncated_stream")
    got: list[Any] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in ask(fake_server, stream=True):
            got.append(chunk)
    assert got  # some chunks arrived before the cut
    with pytest.raises(openai.APIConnectionError):  # non-streaming: body cut short
        ask(fake_server)


def test_incomplete_stream_ends_silently(fake_server: FakeServer) -> None:
    fake_server.fail("incomplete_stream")
    chunks = list(ask(fake_server, stream=True))  # no [DONE], no finish_reason, no error
    assert chunks and all(c.choices[0].finish_reason is None for c in chunks)
    with pytest.raises(json.JSONDecodeError):  # non-streaming: half a JSON document
        ask(fake_server)


def test_rule_validation(fake_server: FakeServer) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        fake_server.fail("explode")
    with pytest.raises(ValueError, match="needs a status"):
        fake_server.fail()
    with pytest.raises(ValueError, match="status must be"):
        fake_server.fail(200)
    with pytest.raises(TypeError):
        fake_server.script(usr="typo")  # typos in a rule must not pass silently


# ---- concurrency, log, auth, endpoints ------------------------------------------------
def test_concurrent_requests_overlap(fake_server: FakeServer) -> None:
    fake_server.latency_ms = 300

    async def run() -> float:
        async with AsyncOpenAI(base_url=fake_server.base_url, api_key="k", max_retries=0) as c:
            started = time.monotonic()
            await asyncio.gather(
                *(
                    c.chat.completions.create(
                        model="m", messages=[{"role": "user", "content": f"agent {i}"}]
                    )
                    for i in range(4)
                )
            )
            return time.monotonic() - started

    elapsed = asyncio.run(run())
    assert 0.3 <= elapsed < 0.6 * 4 * 0.3
    assert fake_server.max_in_flight == 4
    started = time.monotonic()
    ask(fake_server)
    assert time.monotonic() - started >= 0.3  # latency really applies per request


def test_rule_latency_overrides_server_latency(fake_server: FakeServer) -> None:
    fake_server.latency_ms = 2000
    fake_server.script(latency_ms=0, reply="fast")
    started = time.monotonic()
    assert ask(fake_server).choices[0].message.content == "fast"
    assert time.monotonic() - started < 1.5


def test_request_log_keeps_headers_and_is_thread_safe(fake_server: FakeServer) -> None:
    canary = "sk-canary-8f3a"
    c = OpenAI(base_url=fake_server.base_url, api_key=canary, max_retries=0)

    def call(i: int) -> None:
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": f"n{i}"}])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    reqs = fake_server.requests
    assert len(reqs) == 12 and len({r.id for r in reqs}) == 12
    assert all(r.api_key == canary and canary in r.headers["authorization"] for r in reqs)
    assert sorted(r.last_user for r in reqs) == sorted(f"n{i}" for i in range(12))
    assert fake_server.count(lambda r: r.last_user == "n3") == 1
    assert all(a.time <= b.time for a, b in zip(reqs, reqs[1:], strict=False))


def test_api_key_enforced(fake_server: FakeServer) -> None:
    fake_server.api_key = "sk-right"
    with pytest.raises(openai.AuthenticationError):
        ask(fake_server)
    ok = OpenAI(base_url=fake_server.base_url, api_key="sk-right", max_retries=0)
    assert ok.chat.completions.create(model="m", messages=USER).choices


def test_models_health_and_bad_request(fake_server: FakeServer) -> None:
    assert [m.id for m in client(fake_server).models.list()] == ["fake-model"]
    assert httpx.get(fake_server.url + "/health").json() == {"status": "ok"}
    assert fake_server.count() == 0 and len(fake_server.all_requests) == 1
    with pytest.raises(openai.BadRequestError, match="messages"):
        client(fake_server).post("/chat/completions", cast_to=object, body={"model": "m"})


def test_standalone_process() -> None:
    cmd = [
        sys.executable,
        "-m",
        "tests.fakeserver",
        "--port",
        "0",
        "--latency-ms",
        "10",
        "--no-usage",
    ]
    with subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            c = OpenAI(base_url=url + "/v1", api_key="k", max_retries=0, timeout=5)
            resp = c.chat.completions.create(model="m", messages=USER)
            assert resp.choices[0].message.content.startswith("[fake:m]")
            assert resp.usage is None
            proc.terminate()
            assert proc.wait(10) == 0  # SIGTERM: clean shutdown
        finally:
            proc.kill()


def test_stop_with_a_hung_request_returns_promptly() -> None:
    server = FakeServer().start()
    server.fail("hang")
    t = threading.Thread(target=lambda: _swallow(lambda: ask(server, timeout=30)))
    t.start()
    assert server.wait_for(1)
    started = time.monotonic()
    server.stop()
    t.join(10)
    assert time.monotonic() - started < 5 and not t.is_alive()


def _swallow(fn: Any) -> None:
    with contextlib.suppress(openai.OpenAIError):
        fn()


def _eventually(cond: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False
