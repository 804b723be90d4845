"""pliny.llm.classify: every foreign failure gets the right category, code and recoverability.

openai exceptions are built with the SDK's own constructors and real httpx2
requests/responses; the end-to-end cases drive the real AsyncOpenAI client
against a raw socket server on 127.0.0.1 that misbehaves on purpose.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import json
import re
import socket
import subprocess
import sys

import git
import httpx
import httpx2
import jsonschema
import openai
import pydantic
import pytest
from openai.types.chat import ChatCompletion

from pliny.errors import EXIT_INTERRUPTED, Category, ConfigError, NetworkError, PlinyError
from pliny.llm import classify as classify_module
from pliny.llm.classify import Code, classify, from_status, parse_retry_after
from pliny.redact import redact

URL = "http://127.0.0.1:8765/v1/chat/completions"


def response(status: int, body: object = None, headers: dict[str, str] | None = None):
    request = httpx2.Request("POST", URL)
    return httpx2.Response(status, json=body or {}, headers=headers, request=request)


def status_error(cls: type, status: int, body: dict | None = None, headers=None):
    """What the SDK raises: ``body`` is the inner ``error`` object."""
    body = body or {"message": f"status {status}"}
    return cls(
        f"Error code: {status}", response=response(status, {"error": body}, headers), body=body
    )


def check(err: PlinyError, category: Category, code: Code, recoverable: bool) -> None:
    assert (err.category, err.code, err.recoverable) == (category, code, recoverable), err.message


STATUS_CASES = [
    (
        openai.BadRequestError,
        400,
        {"message": "bad temperature"},
        Category.CONFIG,
        Code.CONFIG_BAD_REQUEST,
        False,
    ),
    (
        openai.BadRequestError,
        400,
        {
            "message": "This model's maximum context length is 4096 tokens",
            "code": "context_length_exceeded",
        },
        Category.AI,
        Code.AI_CONTEXT_LENGTH,
        True,
    ),
    (
        openai.BadRequestError,
        400,
        {
            "message": "request exceeds the available context size",
            "type": "exceed_context_size_error",
        },
        Category.AI,
        Code.AI_CONTEXT_LENGTH,
        True,
    ),
    (
        openai.BadRequestError,
        400,
        {"message": "flagged", "code": "content_filter"},
        Category.AI,
        Code.AI_REFUSAL,
        True,
    ),
    (openai.AuthenticationError, 401, None, Category.CONFIG, Code.CONFIG_AUTH, False),
    (openai.PermissionDeniedError, 403, None, Category.CONFIG, Code.CONFIG_PERMISSION, False),
    (openai.NotFoundError, 404, None, Category.CONFIG, Code.CONFIG_MODEL_NOT_FOUND, False),
    (openai.ConflictError, 409, None, Category.NETWORK, Code.NET_TRANSIENT, True),
    (openai.UnprocessableEntityError, 422, None, Category.CONFIG, Code.CONFIG_BAD_REQUEST, False),
    (openai.RateLimitError, 429, None, Category.NETWORK, Code.NET_RATE_LIMIT, True),
    (
        openai.RateLimitError,
        429,
        {"message": "quota", "code": "insufficient_quota"},
        Category.CONFIG,
        Code.CONFIG_QUOTA,
        False,
    ),
    (openai.InternalServerError, 500, None, Category.NETWORK, Code.NET_SERVER, True),
    (openai.InternalServerError, 502, None, Category.NETWORK, Code.NET_SERVER, True),
    (openai.InternalServerError, 503, None, Category.NETWORK, Code.NET_SERVER, True),
    (openai.APIStatusError, 408, None, Category.NETWORK, Code.NET_TIMEOUT, True),
    (openai.APIStatusError, 413, None, Category.AI, Code.AI_CONTEXT_LENGTH, True),
    (openai.APIStatusError, 418, None, Category.CONFIG, Code.CONFIG_BAD_REQUEST, False),
    (openai.APIStatusError, 425, None, Category.NETWORK, Code.NET_TRANSIENT, True),
]


@pytest.mark.parametrize(("cls", "status", "body", "category", "code", "recoverable"), STATUS_CASES)
def test_openai_status_errors(cls, status, body, category, code, recoverable):
    exc = status_error(cls, status, body)
    err = classify(exc)
    check(err, category, code, recoverable)
    assert err.__cause__ is exc
    assert "127.0.0.1:8765" in err.message and f"HTTP {status}" in err.message


def connection_error(cause: BaseException | None) -> openai.APIConnectionError:
    exc = openai.APIConnectionError(request=httpx2.Request("POST", URL))
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (openai.APITimeoutError(request=httpx2.Request("POST", URL)), Code.NET_TIMEOUT),
        (connection_error(None), Code.NET_CONNECT),
        (connection_error(httpx2.ConnectError("refused")), Code.NET_CONNECT),
        (connection_error(httpx2.RemoteProtocolError("peer closed")), Code.NET_DROPPED),
        (connection_error(httpx2.ReadError("reset")), Code.NET_DROPPED),
        (connection_error(httpx2.ReadTimeout("slow")), Code.NET_TIMEOUT),
        (connection_error(ConnectionResetError(errno.ECONNRESET, "reset")), Code.NET_DROPPED),
        (openai.APIResponseValidationError(response(200), body="<html>"), Code.NET_BAD_RESPONSE),
        (
            openai.APIError("server_error in stream", httpx2.Request("POST", URL), body=None),
            Code.NET_SERVER,
        ),
    ],
)
def test_openai_network_errors(exc, code):
    err = classify(exc)
    check(err, Category.NETWORK, code, True)
    assert "127.0.0.1:8765" in err.message


def test_openai_answer_errors_are_ai():
    completion = ChatCompletion(id="c", choices=[], created=0, model="m", object="chat.completion")
    check(
        classify(openai.LengthFinishReasonError(completion=completion)),
        Category.AI,
        Code.AI_OUTPUT_LENGTH,
        True,
    )
    check(classify(openai.ContentFilterFinishReasonError()), Category.AI, Code.AI_REFUSAL, True)
    stream_error = openai.APIError(
        "maximum context length exceeded",
        httpx2.Request("POST", URL),
        body={"message": "maximum context length exceeded"},
    )
    check(classify(stream_error), Category.AI, Code.AI_CONTEXT_LENGTH, True)


def test_openai_client_misconfiguration_is_config():
    with pytest.raises(openai.OpenAIError) as info:
        openai.OpenAI(api_key=None, base_url="http://127.0.0.1:1/v1").api_key  # noqa: B018
    err = classify(info.value)
    check(err, Category.CONFIG, Code.CONFIG_CLIENT, False)
    assert isinstance(err, ConfigError) and err.exit_code == 2


@pytest.mark.parametrize("mod", [httpx, httpx2])
def test_httpx_transport_errors(mod):
    request = mod.Request("GET", URL)
    cases = [
        (mod.ConnectError("refused", request=request), Code.NET_CONNECT),
        (mod.ConnectTimeout("slow", request=request), Code.NET_TIMEOUT),
        (mod.ReadTimeout("slow", request=request), Code.NET_TIMEOUT),
        (mod.RemoteProtocolError("incomplete chunked read", request=request), Code.NET_DROPPED),
        (mod.ReadError("reset", request=request), Code.NET_DROPPED),
        (mod.DecodingError("bad gzip", request=request), Code.NET_BAD_RESPONSE),
    ]
    for exc, code in cases:
        err = classify(exc)
        check(err, Category.NETWORK, code, True)
        assert "127.0.0.1:8765" in err.message
    status = mod.Response(503, headers={"retry-after": "4"}, text="down", request=request)
    err = classify(mod.HTTPStatusError("503", request=request, response=status))
    check(err, Category.NETWORK, Code.NET_SERVER, True)
    assert err.retry_after == 4


def test_timeouts_are_network_timeouts():
    async def too_slow() -> None:
        await asyncio.wait_for(asyncio.sleep(5), 0.001)

    with pytest.raises(TimeoutError) as info:
        asyncio.run(too_slow())
    check(classify(info.value), Category.NETWORK, Code.NET_TIMEOUT, True)
    check(classify(TimeoutError()), Category.NETWORK, Code.NET_TIMEOUT, True)


@pytest.mark.parametrize("exc", [asyncio.CancelledError(), KeyboardInterrupt(), SystemExit(1)])
def test_cancellation(exc):
    err = classify(exc)
    check(err, Category.CANCELLED, Code.CANCELLED, True)
    assert err.exit_code == EXIT_INTERRUPTED


@pytest.mark.parametrize(
    ("exc", "category", "code", "recoverable"),
    [
        (OSError(errno.ENOSPC, "No space left"), Category.SYSTEM, Code.SYS_DISK_FULL, False),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), Category.SYSTEM, Code.SYS_DISK_FULL, False),
        (
            PermissionError(errno.EACCES, "Permission denied"),
            Category.SYSTEM,
            Code.SYS_PERMISSION,
            False,
        ),
        (OSError(errno.EROFS, "Read-only"), Category.SYSTEM, Code.SYS_PERMISSION, False),
        (BlockingIOError(errno.EAGAIN, "try again"), Category.SYSTEM, Code.SYS_TRANSIENT, True),
        (InterruptedError(errno.EINTR, "interrupted"), Category.SYSTEM, Code.SYS_TRANSIENT, True),
        (OSError(errno.EMFILE, "Too many open files"), Category.SYSTEM, Code.SYS_TRANSIENT, True),
        (OSError(errno.EIO, "I/O error"), Category.SYSTEM, Code.SYS_OS, False),
        (ConnectionResetError(errno.ECONNRESET, "reset"), Category.NETWORK, Code.NET_DROPPED, True),
        (BrokenPipeError(errno.EPIPE, "broken pipe"), Category.NETWORK, Code.NET_DROPPED, True),
        (OSError(errno.ENETUNREACH, "unreachable"), Category.NETWORK, Code.NET_CONNECT, True),
        (OSError(errno.ETIMEDOUT, "timed out"), Category.NETWORK, Code.NET_TIMEOUT, True),
        (
            socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
            Category.NETWORK,
            Code.NET_CONNECT,
            True,
        ),
        (MemoryError(), Category.SYSTEM, Code.SYS_MEMORY, False),
        (ValueError("a bug"), Category.SYSTEM, Code.SYS_UNEXPECTED, False),
    ],
)
def test_os_errors_by_errno(exc, category, code, recoverable):
    check(classify(exc), category, code, recoverable)


def test_real_os_errors(tmp_path):
    with pytest.raises(OSError) as missing:
        (tmp_path / "nope.txt").read_text()
    check(classify(missing.value), Category.SYSTEM, Code.SYS_NOT_FOUND, False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with socket.socket() as sock, pytest.raises(OSError) as refused:
        sock.connect(("127.0.0.1", port))
    check(classify(refused.value), Category.NETWORK, Code.NET_CONNECT, True)


def test_disk_full_hint_says_what_to_do():
    err = classify(OSError(errno.ENOSPC, "No space left on device", "/work/audit.jsonl"))
    assert "free disk space" in str(err) and "resume" in str(err)


def test_validation_errors():
    class Output(pydantic.BaseModel):
        summary: str
        score: int

    with pytest.raises(pydantic.ValidationError) as info:
        Output.model_validate({"score": "high"})
    err = classify(info.value)
    check(err, Category.VALIDATION, Code.VALIDATION_SCHEMA, True)
    assert "summary: Field required" in err.message and "score:" in err.message
    with pytest.raises(jsonschema.ValidationError) as schema_info:
        jsonschema.validate({"score": "high"}, {"properties": {"score": {"type": "integer"}}})
    err = classify(schema_info.value)
    check(err, Category.VALIDATION, Code.VALIDATION_SCHEMA, True)
    assert "score" in err.message


def test_json_decode_error_is_a_bad_response():
    with pytest.raises(json.JSONDecodeError) as info:
        json.loads("<html>502 Bad Gateway</html>")
    check(classify(info.value), Category.NETWORK, Code.NET_BAD_RESPONSE, True)


def test_git_errors(tmp_path):
    repo = git.Repo.init(tmp_path / "repo")
    with pytest.raises(git.exc.GitCommandError) as failed:
        repo.git.checkout("no-such-branch")
    check(classify(failed.value), Category.SYSTEM, Code.SYS_GIT, False)
    (tmp_path / "repo" / "a.txt").write_text("a")
    (tmp_path / "repo" / ".git" / "index.lock").write_text("")
    with pytest.raises(git.exc.GitCommandError) as locked:
        repo.git.add("a.txt")
    check(classify(locked.value), Category.SYSTEM, Code.SYS_GIT_LOCKED, True)
    (tmp_path / "plain").mkdir()
    with pytest.raises(git.exc.InvalidGitRepositoryError) as invalid:
        git.Repo(tmp_path / "plain")
    check(classify(invalid.value), Category.SYSTEM, Code.SYS_GIT, False)
    with pytest.raises(git.exc.NoSuchPathError) as no_path:  # also an OSError: git wins
        git.Repo(tmp_path / "missing")
    check(classify(no_path.value), Category.SYSTEM, Code.SYS_GIT, False)
    missing = git.exc.GitCommandNotFound("git", "No such file or directory")
    check(classify(missing), Category.SYSTEM, Code.SYS_GIT_MISSING, False)


def test_pliny_errors_pass_through_unchanged():
    err = NetworkError("already classified", code="PLINY-NET-SERVER", retry_after=1)
    assert classify(err) is err


def test_secrets_are_redacted_from_messages():
    body = {"message": "Incorrect API key provided: sk-proj-AbCdEf123456789. Bearer abc.def"}
    err = classify(status_error(openai.AuthenticationError, 401, body))
    assert "AbCdEf123456789" not in str(err) and "abc.def" not in str(err)
    assert redact("url?api_key=hunter2&x=1") == "url?api_key=[REDACTED]&x=1"


def test_long_bodies_are_shortened():
    err = from_status(502, "<html>" + "x" * 5000 + "</html>", "proxy:80")
    assert len(err.message) < 400 and err.code == Code.NET_SERVER


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "junk", "retry-after": "9"}, 9.0),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_parse_retry_after(headers, expected):
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_http_date():
    now = 1_700_000_000.0
    later = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"retry-after": later}, now=now) == 30.0
    earlier = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after({"retry-after": earlier}, now=now) == 0.0


def test_retry_after_reaches_the_error():
    seconds = status_error(openai.RateLimitError, 429, headers={"retry-after": "3"})
    assert classify(seconds).retry_after == 3.0
    millis = status_error(openai.InternalServerError, 503, headers={"retry-after-ms": "1500"})
    assert classify(millis).retry_after == 1.5
    import time

    date = email.utils.formatdate(time.time() + 60, usegmt=True)
    dated = classify(status_error(openai.RateLimitError, 429, headers={"retry-after": date}))
    assert dated.retry_after is not None and 55 <= dated.retry_after <= 60


def test_every_code_is_documented_and_unique():
    doc = classify_module.__doc__ or ""
    documented = re.findall(r"^(PLINY-[A-Z-]+)\s", doc, re.M)
    assert sorted(documented) == sorted(c.value for c in Code)
    assert len(set(documented)) == len(documented)


def test_importing_classify_stays_light():
    code = (
        "import sys, pliny.llm.classify; "
        "print(sorted({'openai','git','httpx2'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- end to end: the real openai client against a misbehaving socket server -------------------


def raw(status: str, body: bytes, headers: str = "Content-Type: application/json\r\n") -> bytes:
    head = f"HTTP/1.1 {status}\r\n{headers}Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


TRUNCATED = raw("200 OK", b'{"id":' + b" " * 100)[:-100]  # promises 106 bytes, sends 6
FAULTS = {
    "dropped": (b"", Code.NET_DROPPED),
    "truncated": (TRUNCATED, Code.NET_DROPPED),
    "not json": (raw("200 OK", b"<html>oops</html>"), Code.NET_BAD_RESPONSE),
    "429": (
        raw(
            "429 Too Many Requests",
            b'{"error":{"message":"slow down"}}',
            "Content-Type: application/json\r\nRetry-After: 2\r\n",
        ),
        Code.NET_RATE_LIMIT,
    ),
    "503": (raw("503 Service Unavailable", b'{"error":{"message":"busy"}}'), Code.NET_SERVER),
    "401": (raw("401 Unauthorized", b'{"error":{"message":"bad key"}}'), Code.CONFIG_AUTH),
    "context": (
        raw(
            "400 Bad Request", b'{"error":{"message":"too long","code":"context_length_exceeded"}}'
        ),
        Code.AI_CONTEXT_LENGTH,
    ),
    "hang": (None, Code.NET_TIMEOUT),
}


async def _fault_codes() -> dict[str, tuple[str, float | None]]:
    current: dict[str, bytes | None] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        if current["reply"] is None:
            await asyncio.sleep(2)  # longer than the client's timeout
        else:
            writer.write(current["reply"])
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test", max_retries=0, timeout=0.3
    )
    seen = {}
    async with server:
        for name, (reply, _) in FAULTS.items():
            current["reply"] = reply
            try:
                await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "hi"}]
                )
            except Exception as exc:  # noqa: BLE001 - the point is to classify anything
                err = classify(exc)
                seen[name] = (err.code, err.retry_after)
        await client.close()
    return seen


def test_real_client_faults_classify():
    seen = asyncio.run(_fault_codes())
    assert {name: code for name, (code, _) in seen.items()} == {
        name: code for name, (_, code) in FAULTS.items()
    }
    assert seen["429"][1] == 2.0
