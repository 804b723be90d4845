"""Map any exception onto Pliny's taxonomy with a stable error code.

``classify(exc)`` returns a :class:`~pliny.errors.PlinyError` (an existing
one passes through unchanged; a new one has ``__cause__`` set to ``exc``).
The codes below are a public contract: scripts, docs and the audit log rely
on them, so never rename one; add new ones instead.

============================  ==========  ===========  ===========================================
code                          category    recoverable  raised for
============================  ==========  ===========  ===========================================
PLINY-CONFIG-AUTH             config      no           HTTP 401, openai AuthenticationError
PLINY-CONFIG-PERMISSION       config      no           HTTP 403, PermissionDeniedError
PLINY-CONFIG-MODEL-NOT-FOUND  config      no           HTTP 404, NotFoundError (model or base_url)
PLINY-CONFIG-BAD-REQUEST      config      no           other 4xx (400, 422, ...) the server rejected
PLINY-CONFIG-QUOTA            config      no           HTTP 429 with code ``insufficient_quota``
PLINY-CONFIG-CLIENT           config      no           other openai SDK errors (bad client setup)
PLINY-NET-CONNECT             network     yes          connection refused, DNS failure, proxy error
PLINY-NET-TIMEOUT             network     yes          APITimeoutError, TimeoutError, HTTP 408
PLINY-NET-DROPPED             network     yes          connection closed mid-response (truncated)
PLINY-NET-RATE-LIMIT          network     yes          HTTP 429 (``retry_after`` from the headers)
PLINY-NET-SERVER              network     yes          HTTP 5xx, error event inside a stream
PLINY-NET-TRANSIENT           network     yes          HTTP 409, 425
PLINY-NET-BAD-RESPONSE        network     yes          body not JSON, not the expected schema
PLINY-NET-CIRCUIT-OPEN        network     yes          endpoint's circuit breaker is open
PLINY-AI-CONTEXT-LENGTH       ai          yes          prompt exceeds the context window, HTTP 413
PLINY-AI-OUTPUT-LENGTH        ai          yes          answer cut off by max_tokens
PLINY-AI-EMPTY                ai          yes          empty answer (raised by the LLM gateway)
PLINY-AI-REFUSAL              ai          yes          content filter or refusal
PLINY-VALIDATION-SCHEMA       validation  yes          pydantic / jsonschema ValidationError
PLINY-VALIDATION-JSON         validation  yes          model output not JSON (raised by agents)
PLINY-TOOL-FAILED             tool        yes          a tool ran and failed (raised by tools)
PLINY-TOOL-DENIED             tool        yes          path outside the workspace or into .git
PLINY-TOOL-UNKNOWN            tool        yes          the model called a tool that does not exist
PLINY-TOOL-BAD-ARGS           tool        yes          tool arguments invalid
PLINY-TOOL-TIMEOUT            tool        yes          a tool ran past its time limit
PLINY-TOOL-REPEATED           tool        yes          the model kept calling tools that failed
PLINY-SYS-OS                  system      no           other OSError
PLINY-SYS-DISK-FULL           system      no           ENOSPC, EDQUOT
PLINY-SYS-PERMISSION          system      no           EACCES, EPERM, EROFS
PLINY-SYS-NOT-FOUND           system      no           ENOENT
PLINY-SYS-TRANSIENT           system      yes          EAGAIN, EINTR, EBUSY, EMFILE, ENFILE
PLINY-SYS-MEMORY              system      no           MemoryError
PLINY-SYS-GIT                 system      no           git command failed, not a repository
PLINY-SYS-GIT-LOCKED          system      yes          another git process holds index.lock
PLINY-SYS-GIT-MISSING         system      no           git executable not found
PLINY-SYS-UNEXPECTED          system      no           anything else (a bug: please report it)
PLINY-CANCELLED               cancelled   yes          CancelledError, KeyboardInterrupt, SystemExit
============================  ==========  ===========  ===========================================

``json.JSONDecodeError`` is classified as PLINY-NET-BAD-RESPONSE because the
SDK raises it for a body that is not JSON; code that parses the *model's*
output must raise ``ValidationFailure(code=Code.VALIDATION_JSON)`` itself.
Foreign modules (openai, httpx, httpx2, git, jsonschema) are looked up in
``sys.modules`` only: if one is not imported, none of its exceptions can
exist, and the CLI stays fast to start.
"""

from __future__ import annotations

import email.utils
import errno
import json
import math
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from enum import StrEnum
from typing import Any

from pliny.errors import (
    AIError,
    Cancelled,
    ConfigError,
    NetworkError,
    PlinyError,
    SystemFailure,
    ValidationFailure,
)
from pliny.redact import redact


class Code(StrEnum):
    CONFIG_AUTH = "PLINY-CONFIG-AUTH"
    CONFIG_PERMISSION = "PLINY-CONFIG-PERMISSION"
    CONFIG_MODEL_NOT_FOUND = "PLINY-CONFIG-MODEL-NOT-FOUND"
    CONFIG_BAD_REQUEST = "PLINY-CONFIG-BAD-REQUEST"
    CONFIG_QUOTA = "PLINY-CONFIG-QUOTA"
    CONFIG_CLIENT = "PLINY-CONFIG-CLIENT"
    NET_CONNECT = "PLINY-NET-CONNECT"
    NET_TIMEOUT = "PLINY-NET-TIMEOUT"
    NET_DROPPED = "PLINY-NET-DROPPED"
    NET_RATE_LIMIT = "PLINY-NET-RATE-LIMIT"
    NET_SERVER = "PLINY-NET-SERVER"
    NET_TRANSIENT = "PLINY-NET-TRANSIENT"
    NET_BAD_RESPONSE = "PLINY-NET-BAD-RESPONSE"
    NET_CIRCUIT_OPEN = "PLINY-NET-CIRCUIT-OPEN"
    AI_CONTEXT_LENGTH = "PLINY-AI-CONTEXT-LENGTH"
    AI_OUTPUT_LENGTH = "PLINY-AI-OUTPUT-LENGTH"
    AI_EMPTY = "PLINY-AI-EMPTY"
    AI_REFUSAL = "PLINY-AI-REFUSAL"
    VALIDATION_SCHEMA = "PLINY-VALIDATION-SCHEMA"
    VALIDATION_JSON = "PLINY-VALIDATION-JSON"
    TOOL_FAILED = "PLINY-TOOL-FAILED"
    TOOL_DENIED = "PLINY-TOOL-DENIED"
    TOOL_UNKNOWN = "PLINY-TOOL-UNKNOWN"
    TOOL_BAD_ARGS = "PLINY-TOOL-BAD-ARGS"
    TOOL_TIMEOUT = "PLINY-TOOL-TIMEOUT"
    TOOL_REPEATED = "PLINY-TOOL-REPEATED"
    SYS_OS = "PLINY-SYS-OS"
    SYS_DISK_FULL = "PLINY-SYS-DISK-FULL"
    SYS_PERMISSION = "PLINY-SYS-PERMISSION"
    SYS_NOT_FOUND = "PLINY-SYS-NOT-FOUND"
    SYS_TRANSIENT = "PLINY-SYS-TRANSIENT"
    SYS_MEMORY = "PLINY-SYS-MEMORY"
    SYS_GIT = "PLINY-SYS-GIT"
    SYS_GIT_LOCKED = "PLINY-SYS-GIT-LOCKED"
    SYS_GIT_MISSING = "PLINY-SYS-GIT-MISSING"
    SYS_UNEXPECTED = "PLINY-SYS-UNEXPECTED"
    CANCELLED = "PLINY-CANCELLED"


_MAX_MESSAGE = 300
_CONTEXT = re.compile(
    r"context[ _](length|size|window)|maximum context|too many tokens|prompt is too long", re.I
)
_CONTEXT_CODES = {"context_length_exceeded", "exceed_context_size_error", "string_above_max_length"}
_REFUSAL_CODES = {"content_filter", "content_policy_violation"}


def _short(text: object) -> str:
    # Server messages sometimes echo the key ("Incorrect API key provided: ...").
    flat = " ".join(redact(str(text)).split())
    return flat if len(flat) <= _MAX_MESSAGE else flat[: _MAX_MESSAGE - 1] + "…"


def parse_retry_after(
    headers: Mapping[str, str] | None, *, now: float | None = None
) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``retry-after`` (seconds or HTTP date)."""
    if not headers:
        return None
    raw_ms = _header(headers, "retry-after-ms")
    if raw_ms is not None and (ms := _number(raw_ms)) is not None:
        return ms / 1000
    raw = _header(headers, "retry-after")
    if raw is None:
        return None
    if (seconds := _number(raw)) is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)  # httpx headers are case-insensitive; plain dicts may not be
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isnan(value) else max(0.0, value)


def classify(exc: BaseException) -> PlinyError:
    """The Pliny error for ``exc``; see the module table for every code."""
    if isinstance(exc, PlinyError):
        return exc
    for handler in _HANDLERS:
        err = handler(exc)
        if err is not None:
            err.__cause__ = exc
            return err
    err = SystemFailure(
        f"unexpected {type(exc).__name__}: {_short(exc)}",
        code=Code.SYS_UNEXPECTED,
        hint="this is a bug in Pliny; please report it with the audit log",
    )
    err.__cause__ = exc
    return err


def _cancelled(exc: BaseException) -> PlinyError | None:
    import asyncio

    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
        return Cancelled(f"cancelled ({type(exc).__name__})", code=Code.CANCELLED)
    return None


def _endpoint(exc: BaseException) -> str:
    """host[:port] of the failed request: never the full URL (it may hold credentials)."""
    try:
        url = exc.request.url  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError when unset
        return "the endpoint"
    return f"{url.host}:{url.port}" if url.port else str(url.host)


def _openai(exc: BaseException) -> PlinyError | None:
    openai = sys.modules.get("openai")
    if openai is None or not isinstance(exc, openai.OpenAIError):
        return None
    host = _endpoint(exc)
    if isinstance(exc, openai.APITimeoutError):
        return NetworkError(f"request to {host} timed out", code=Code.NET_TIMEOUT)
    if isinstance(exc, openai.APIConnectionError):
        return _connection_failure(exc, host)
    if isinstance(exc, openai.APIResponseValidationError):
        return bad_response(host, exc.message)
    if isinstance(exc, openai.APIStatusError):
        return from_status(
            exc.status_code,
            _body_message(exc.body, exc.message),
            host,
            code=exc.code,
            type_=exc.type,
            headers=exc.response.headers,
        )
    if isinstance(exc, openai.LengthFinishReasonError):
        return AIError(
            "the answer was cut off by max_tokens",
            code=Code.AI_OUTPUT_LENGTH,
            hint="raise llm.max_tokens",
        )
    if isinstance(exc, openai.ContentFilterFinishReasonError):
        return AIError("the model's content filter refused the request", code=Code.AI_REFUSAL)
    if isinstance(exc, openai.APIError):  # an error event inside a stream
        if _is_context_length(exc.code, exc.type, exc.message):
            return _context_length(host, exc.message)
        return NetworkError(
            f"{host} reported an error: {_short(exc.message)}", code=Code.NET_SERVER
        )
    return ConfigError(f"openai client: {_short(exc)}", code=Code.CONFIG_CLIENT)


_NET_PHRASES: dict[str, str] = {
    Code.NET_TIMEOUT: "request to {} timed out",
    Code.NET_DROPPED: "connection to {} dropped before the response was complete",
    Code.NET_CONNECT: "cannot connect to {}",
}


def _os_reason(exc: BaseException) -> str | None:
    """'connection refused' from the OSError deep in httpx's chain ('All connection
    attempts failed' says nothing about why)."""
    depth = 0
    cause: BaseException | None = exc
    while cause is not None and depth < 8:
        code = getattr(cause, "errno", None)
        if isinstance(cause, OSError) and isinstance(code, int) and code in _NET_ERRNOS:
            return os.strerror(code).lower()
        cause, depth = cause.__cause__ or cause.__context__, depth + 1
    return None


def _connection_failure(exc: BaseException, host: str) -> NetworkError:
    """APIConnectionError wraps the transport error: its cause tells refused from dropped."""
    cause, depth = exc.__cause__ or exc.__context__, 0
    while cause is not None and depth < 5:
        inner = _transport(cause) or _os_network(cause)
        if isinstance(inner, NetworkError) and inner.code in _NET_PHRASES:
            reason = _os_reason(cause) or (_short(cause) if str(cause) else "")
            detail = f": {reason}" if reason else ""
            return NetworkError(_NET_PHRASES[inner.code].format(host) + detail, code=inner.code)
        cause, depth = cause.__cause__ or cause.__context__, depth + 1
    return NetworkError(
        f"cannot connect to {host}",
        code=Code.NET_CONNECT,
        hint="is the endpoint running? check llm.base_url",
    )


def _body_message(body: object, fallback: str) -> str:
    if isinstance(body, Mapping) and body.get("message"):
        return str(body["message"])
    if isinstance(body, str) and body.strip():
        return body
    return fallback


def _is_context_length(code: object, type_: object, message: object) -> bool:
    return code in _CONTEXT_CODES or type_ in _CONTEXT_CODES or bool(_CONTEXT.search(str(message)))


def _context_length(where: str, message: str) -> AIError:
    return AIError(
        f"the prompt is longer than the model's context window ({where}): {_short(message)}",
        code=Code.AI_CONTEXT_LENGTH,
        hint="shorten the input or set llm.fallback_models to a larger-context model",
    )


def bad_response(host: str, detail: object) -> NetworkError:
    """For callers that detect a malformed answer themselves (e.g. a non-JSON 200 body)."""
    return NetworkError(
        f"malformed response from {host}: {_short(detail)}", code=Code.NET_BAD_RESPONSE
    )


def from_status(
    status: int,
    message: str,
    host: str = "the endpoint",
    *,
    code: object = None,
    type_: object = None,
    headers: Mapping[str, str] | None = None,
) -> PlinyError:
    """The error for an HTTP error status (also usable by non-openai HTTP callers)."""
    text = f"HTTP {status} from {host}: {_short(message)}"
    if 400 <= status < 500 and (status == 413 or _is_context_length(code, type_, message)):
        return _context_length(f"HTTP {status} from {host}", message)
    if code in _REFUSAL_CODES:
        return AIError(f"the model refused: {text}", code=Code.AI_REFUSAL)
    if status == 429 and code == "insufficient_quota":
        return ConfigError(text, code=Code.CONFIG_QUOTA, hint="the account is out of quota")
    retry_after = parse_retry_after(headers)
    if status == 429:
        return NetworkError(
            f"rate limited: {text}", code=Code.NET_RATE_LIMIT, retry_after=retry_after
        )
    if status >= 500:
        return NetworkError(f"server error: {text}", code=Code.NET_SERVER, retry_after=retry_after)
    if status == 408:
        return NetworkError(text, code=Code.NET_TIMEOUT, retry_after=retry_after)
    if status in (409, 425):
        return NetworkError(text, code=Code.NET_TRANSIENT, retry_after=retry_after)
    return _client_error(status, text)


_CLIENT_ERRORS = {
    401: (Code.CONFIG_AUTH, "check the API key (the env var named by llm.api_key_env)"),
    403: (Code.CONFIG_PERMISSION, "the API key has no access to this model or endpoint"),
    404: (Code.CONFIG_MODEL_NOT_FOUND, "check llm.model and llm.base_url"),
}


def _client_error(status: int, text: str) -> ConfigError:
    code, hint = _CLIENT_ERRORS.get(
        status, (Code.CONFIG_BAD_REQUEST, "the endpoint rejected the request; check llm settings")
    )
    return ConfigError(text, code=code, hint=hint)


def _transport(exc: BaseException) -> PlinyError | None:
    """httpx and httpx2 (which openai v3 uses) share one exception layout."""
    for name in ("httpx2", "httpx"):
        mod = sys.modules.get(name)
        if mod is not None and isinstance(exc, mod.HTTPError):
            return _from_httpx(mod, exc)
    return None


def _from_httpx(mod: Any, exc: BaseException) -> PlinyError:
    host = _endpoint(exc)
    if isinstance(exc, mod.HTTPStatusError):
        response = exc.response
        return from_status(response.status_code, response.text, host, headers=response.headers)
    if isinstance(exc, mod.TimeoutException):
        return NetworkError(f"request to {host} timed out", code=Code.NET_TIMEOUT)
    if isinstance(exc, mod.RemoteProtocolError | mod.ReadError | mod.WriteError | mod.CloseError):
        return NetworkError(
            f"connection to {host} dropped before the response was complete: {_short(exc)}",
            code=Code.NET_DROPPED,
        )
    if isinstance(exc, mod.DecodingError):
        return bad_response(host, exc)
    return NetworkError(f"cannot connect to {host}: {_short(exc)}", code=Code.NET_CONNECT)


def _git(exc: BaseException) -> PlinyError | None:
    if "git" not in sys.modules:
        return None
    import git.exc

    if not isinstance(exc, git.exc.GitError):
        return None
    if isinstance(exc, git.exc.GitCommandNotFound):
        return SystemFailure(
            f"git not found: {_short(exc)}", code=Code.SYS_GIT_MISSING, hint="install git"
        )
    detail = getattr(exc, "stderr", "") or str(exc)
    if "index.lock" in detail or ".lock': File exists" in detail:
        return SystemFailure(
            f"git repository is locked: {_short(detail)}",
            code=Code.SYS_GIT_LOCKED,
            recoverable=True,
        )
    return SystemFailure(f"git failed ({type(exc).__name__}): {_short(detail)}", code=Code.SYS_GIT)


def _validation(exc: BaseException) -> PlinyError | None:
    import pydantic

    if isinstance(exc, pydantic.ValidationError):
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors()[:10]
        )
        return ValidationFailure(
            f"output does not match the schema ({exc.error_count()} problems): {problems}",
            code=Code.VALIDATION_SCHEMA,
        )
    jsonschema = sys.modules.get("jsonschema")
    if jsonschema is not None and isinstance(exc, jsonschema.ValidationError):
        where = ".".join(map(str, exc.absolute_path)) or "(root)"
        return ValidationFailure(
            f"output does not match the schema: {where}: {exc.message}", code=Code.VALIDATION_SCHEMA
        )
    return None


def _json(exc: BaseException) -> PlinyError | None:
    if isinstance(exc, json.JSONDecodeError):
        return bad_response("the endpoint", f"body is not JSON ({exc.msg} at char {exc.pos})")
    return None


def _os_network(exc: BaseException) -> PlinyError | None:
    if isinstance(exc, TimeoutError) or getattr(exc, "errno", None) == errno.ETIMEDOUT:
        return NetworkError("the operation timed out", code=Code.NET_TIMEOUT)  # asyncio too
    if isinstance(exc, socket.gaierror):
        return NetworkError(f"cannot resolve the endpoint's host: {exc}", code=Code.NET_CONNECT)
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return NetworkError(f"connection dropped: {exc}", code=Code.NET_DROPPED)
    if isinstance(exc, ConnectionError) or getattr(exc, "errno", None) in _NET_ERRNOS:
        return NetworkError(f"cannot connect to the endpoint: {exc}", code=Code.NET_CONNECT)
    return None


_NET_ERRNOS = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN}
_OS_CODES: dict[int, tuple[Code, bool, str | None]] = {
    errno.ENOSPC: (Code.SYS_DISK_FULL, False, "free disk space, then `pliny session resume`"),
    errno.EDQUOT: (Code.SYS_DISK_FULL, False, "free disk space, then `pliny session resume`"),
    errno.EACCES: (Code.SYS_PERMISSION, False, "check file and directory permissions"),
    errno.EPERM: (Code.SYS_PERMISSION, False, "check file and directory permissions"),
    errno.EROFS: (Code.SYS_PERMISSION, False, "the file system is read-only"),
    errno.ENOENT: (Code.SYS_NOT_FOUND, False, None),
    errno.EAGAIN: (Code.SYS_TRANSIENT, True, None),  # == EWOULDBLOCK on Linux
    errno.EINTR: (Code.SYS_TRANSIENT, True, None),
    errno.EBUSY: (Code.SYS_TRANSIENT, True, None),
    errno.EMFILE: (Code.SYS_TRANSIENT, True, "lower execution.max_concurrency"),
    errno.ENFILE: (Code.SYS_TRANSIENT, True, None),
}


def _os(exc: BaseException) -> PlinyError | None:
    if not isinstance(exc, OSError):
        return None
    network = _os_network(exc)
    if network is not None:
        return network
    code, recoverable, hint = _OS_CODES.get(exc.errno or 0, (Code.SYS_OS, False, None))
    return SystemFailure(_short(exc), code=code, recoverable=recoverable, hint=hint)


def _memory(exc: BaseException) -> PlinyError | None:
    if isinstance(exc, MemoryError):
        return SystemFailure("out of memory", code=Code.SYS_MEMORY)
    return None


# Order matters: git's NoSuchPathError is an OSError; TimeoutError is an OSError.
_HANDLERS: tuple[Callable[[BaseException], PlinyError | None], ...] = (
    _cancelled,
    _openai,
    _transport,
    _git,
    _validation,
    _json,
    _os,
    _memory,
)
