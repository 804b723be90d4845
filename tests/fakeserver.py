"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests and benchmarks.

Starlette + uvicorn in a background thread (or a standalone process):

    with FakeServer(latency_ms=50) as server:
        server.script(user="hello", reply="hi there", times=1)
        server.fail(429, retry_after=1.5, times=2)
        client = OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)

Rules are tried in order; the first that matches and has uses left decides the answer,
otherwise the deterministic `default_reply` is sent. Faults look like a real server's:
OpenAI error bodies, a hang, an aborted TCP connection, a non-JSON body, a cut stream.
`structured="exact"` answers response_format to the letter (json_schema: the minimal
valid instance, json_object: `{}`); `structured="no_json_schema"` 400s json_schema like
servers without structured outputs.

Standalone: `python -m tests.fakeserver --port 0 [--latency-ms X] [--no-usage]
[--structured MODE]` prints the URL (without /v1) on stdout line 1 and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

try:  # `python -m tests.fakeserver` and `import tests.fakeserver` both work
    from tests import fakeserver_payloads as P
    from tests.fakeserver_rules import FAULTS, RecordedRequest, Rule
except ImportError:  # pragma: no cover - run from inside tests/
    import fakeserver_payloads as P  # type: ignore[no-redef]
    from fakeserver_rules import FAULTS, RecordedRequest, Rule  # type: ignore[no-redef]

__all__ = ["FAULTS", "FakeServer", "RecordedRequest", "Rule", "P", "main"]

CHAT_PATH = "/v1/chat/completions"
NOT_JSON_BODY = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


class _Raw:
    """ASGI response that sends frames and may then abort the TCP connection.

    uvicorn writes the status line as soon as it is sent, so "no response at all" needs
    the transport itself; the outer app puts it in scope["fakeserver.transport"].
    """

    def __init__(
        self,
        frames: list[bytes],
        *,
        status: int = 200,
        headers: dict[str, str],
        start: bool = True,
        abort: bool = False,
        delay_s: float = 0.0,
    ) -> None:
        self.frames, self.status, self.headers = frames, status, headers
        self.start, self.abort, self.delay_s = start, abort, delay_s

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.start:
            hdrs = [(k.encode(), v.encode()) for k, v in self.headers.items()]
            await send({"type": "http.response.start", "status": self.status, "headers": hdrs})
            for frame in self.frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
        if not self.abort:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        await asyncio.sleep(0.02)  # let the frames reach the socket before the cut
        scope["fakeserver.transport"].abort()
        await asyncio.wait_for(_disconnected(receive), 5)


async def _health(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _disconnected(receive: Any) -> None:
    """Return once the client has gone (uvicorn sends http.disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class FakeServer:
    """OpenAI-compatible chat server with scripted replies, latency, faults and a log."""

    def __init__(
        self,
        *,
        latency_ms: float = 0.0,
        usage: bool = True,
        cached_tokens: int = 0,
        models: tuple[str, ...] = ("fake-model",),
        api_key: str | None = None,
        structured: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if structured is not None and structured not in P.STRUCTURED_MODES:
            raise ValueError(f"structured must be one of {P.STRUCTURED_MODES}, got {structured!r}")
        self._defaults = {
            "latency_ms": latency_ms,
            "usage": usage,
            "cached_tokens": cached_tokens,
            "models": models,
            "api_key": api_key,  # api_key set: others get 401
            "structured": structured,
        }
        self.latency_ms, self.usage, self.cached_tokens = latency_ms, usage, cached_tokens
        self.models, self.api_key = models, api_key
        # How unscripted answers honour response_format (see P.structured_reply):
        # None: ignored; "exact": minimal instance / {}; "no_json_schema": 400 on json_schema.
        self.structured = structured
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only when the protocol
        # is TCP, and without it each repeat request on a connection waits ~40 ms.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.url = f"http://{host}:{self._sock.getsockname()[1]}"
        self.base_url = self.url + "/v1"
        self._lock = threading.Condition()
        self._rules: list[Rule] = []
        self._log: list[RecordedRequest] = []
        self._seq = 0
        self._storm: tuple[float, float] | None = None  # (until, retry_after): see storm()
        self.in_flight = self.max_in_flight = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()  # set: every sleeping handler returns now
        self._uvicorn: uvicorn.Server | None = None
        self._app = Starlette(
            routes=[
                Route(CHAT_PATH, self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/health", _health, methods=["GET"]),
            ]
        )

    # ---- lifecycle -------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> FakeServer:
        config = uvicorn.Config(
            self._asgi,
            log_level="warning",
            access_log=False,
            lifespan="off",
            interface="asgi3",
            http="h11",
            timeout_graceful_shutdown=2,
        )
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=asyncio.run,
            args=(self._serve(),),
            name=f"fakeserver{self.url[-6:]}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._uvicorn.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"fake server at {self.url} did not start")
            time.sleep(0.005)
        with socket.create_connection(self._sock.getsockname(), timeout=timeout):
            pass  # accepting connections
        return self

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        assert self._uvicorn is not None
        await self._uvicorn.serve(sockets=[self._sock])

    def stop(self) -> None:
        """Wake sleeping/hung handlers, shut uvicorn down, join the thread."""
        if self._thread is not None and self._uvicorn is not None:
            self._wake_sleepers()
            self._uvicorn.should_exit = True
            self._thread.join(timeout=10)
            self._thread = None
        self._sock.close()  # also frees the port of a server that never started

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- scripting -------------------------------------------------------------------
    def script(self, **spec: Any) -> Rule:
        """Append a Rule (fields as keywords); returns it so tests can read `.hits`."""
        rule = Rule(**spec)
        with self._lock:
            self._rules.append(rule)
        return rule

    def fail(self, what: int | str | None = None, **spec: Any) -> Rule:
        """fail(429, retry_after=1.5, times=2), fail("drop"), fail(status=503, user="x")."""
        if isinstance(what, int):
            spec["status"] = what
        elif what is not None:
            spec["fault"] = what
        if spec.get("status") is None and spec.get("fault") is None:
            raise ValueError("fail() needs a status code or a fault name")
        return self.script(**spec)

    def storm(self, seconds: float, retry_after: float = 0.2) -> None:
        """A 429 storm: for the next ``seconds`` every chat request gets a 429 with
        ``Retry-After: retry_after`` (an overloaded provider's hint, shorter than the storm)."""
        with self._lock:
            self._storm = (time.monotonic() + seconds, retry_after)

    def reset(self) -> None:
        """Back to a fresh server: constructor settings, no rules, empty log, peak reset.

        Handlers still sleeping (hang, latency) are woken so they cannot leak into the
        next test.
        """
        self._wake_sleepers()
        with self._lock:
            for name, value in self._defaults.items():
                setattr(self, name, value)
            self._rules.clear()
            self._log.clear()
            self._storm = None
            self.max_in_flight = self.in_flight

    def _wake_sleepers(self) -> None:
        old, self._wake = self._wake, asyncio.Event()
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(old.set)

    # ---- request log -----------------------------------------------------------------
    @property
    def all_requests(self) -> list[RecordedRequest]:
        """Every /v1 request received (chat completions and model listings)."""
        with self._lock:
            return list(self._log)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Chat-completion requests received, oldest first."""
        return [r for r in self.all_requests if r.path == CHAT_PATH]

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    def count(self, pred: Callable[[RecordedRequest], bool] | None = None) -> int:
        """Number of chat-completion requests (matching pred, if given)."""
        return sum(1 for r in self.requests if pred is None or pred(r))

    def wait_for(self, n: int, timeout: float = 10.0) -> bool:
        """Block until at least n chat-completion requests have arrived (crash tests)."""
        with self._lock:
            return self._lock.wait_for(lambda: self.count() >= n, timeout)

    # ---- ASGI ------------------------------------------------------------------------
    async def _asgi(self, scope: Any, receive: Any, send: Any) -> None:
        """Track concurrency and expose the TCP transport for faults that cut it."""
        if scope["type"] != "http" or scope["path"] != CHAT_PATH:
            return await self._app(scope, receive, send)
        scope["fakeserver.transport"] = receive.__self__.transport  # uvicorn's cycle
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self._app(scope, receive, send)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _record(self, request: Request) -> RecordedRequest:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            self._seq += 1
            rec = RecordedRequest(
                id=f"{self._seq:06d}",
                time=time.time(),
                path=request.url.path,
                headers=dict(request.headers),
                body=body,
                raw=raw,
            )
            self._log.append(rec)
            self._lock.notify_all()
        return rec

    async def _models(self, request: Request) -> Response:
        await self._record(request)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
        return JSONResponse({"object": "list", "data": data})

    def _pick(self, body: dict[str, Any]) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(body):
                    rule.hits += 1
                    return rule
        return None

    async def _pause(self, seconds: float, request: Request, wake: asyncio.Event) -> bool:
        """Async sleep that ends early on client disconnect or stop; False if client left."""
        if seconds <= 0:
            return True
        tasks = {asyncio.ensure_future(asyncio.sleep(seconds)), asyncio.ensure_future(wake.wait())}
        gone = asyncio.ensure_future(_disconnected(request.receive))
        done, pending = await asyncio.wait(tasks | {gone}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return gone not in done

    async def _chat(self, request: Request) -> Any:
        wake = self._wake  # taken before the request is logged, so a later reset() wakes it
        rec = await self._record(request)
        body = rec.body
        if self.api_key is not None and rec.api_key != self.api_key:
            return self._error(rec, 401, {})
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self._error(rec, 400, {}, message="'messages' is a required property")
        if self.structured == "no_json_schema" and P.format_type(body) == "json_schema":
            rec.outcome = "status:400"
            return JSONResponse(
                P.json_schema_rejected(),
                status_code=400,
                headers=self._headers(rec, "application/json"),
            )
        if (storm := self._storm) is not None and time.monotonic() < storm[0]:
            return self._error(rec, 429, body, Rule(status=429, retry_after=storm[1]))
        rule = rec.rule = self._pick(body)
        latency = rule.latency_ms if rule and rule.latency_ms is not None else self.latency_ms
        if rule and rule.fault == "hang":
            rec.outcome = "hang"
            latency += rule.hang_s * 1000
        if not await self._pause(latency / 1000, request, wake):
            return Response(status_code=499)  # nobody is listening any more
        if rule and rule.status is not None:
            return self._error(rec, rule.status, body, rule)
        return self._answer(rec, body, rule)

    def _headers(self, rec: RecordedRequest, ctype: str) -> dict[str, str]:
        return {"content-type": ctype, "x-request-id": f"req_fake{rec.id}"}

    def _error(
        self,
        rec: RecordedRequest,
        status: int,
        body: dict[str, Any],
        rule: Rule | None = None,
        message: str | None = None,
    ) -> Response:
        rec.outcome = f"status:{status}"
        headers = self._headers(rec, "application/json")
        if rule is not None and rule.retry_after is not None:
            headers["retry-after"] = f"{rule.retry_after:g}"
        if rule is not None and rule.echo_key:
            message = f"Incorrect API key provided: {rec.api_key}. Check it and try again."
        payload = P.error_body(
            status, body, rule.code if rule else None, (rule.message if rule else None) or message
        )
        return Response(json.dumps(payload), status_code=status, headers=headers)

    def _message(
        self, rec: RecordedRequest, body: dict[str, Any], rule: Rule | None
    ) -> tuple[dict[str, Any], str]:
        """The assistant message and its finish_reason."""
        if rule is None:
            text = P.structured_reply(body, self.structured) if self.structured else None
            text = P.default_reply(body) if text is None else text
            return {"role": "assistant", "content": text, "refusal": None}, "stop"
        rid = f"chatcmpl-fake{rec.id}"
        calls = P.tool_call_objects(rule.tool_calls, rid) if rule.tool_calls else None
        text = rule.reply(body) if callable(rule.reply) else rule.reply
        if rule.json is not None:
            text = json.dumps(rule.json)
        elif rule.fault == "empty":
            text = ""
        elif text is None and calls is None and rule.refusal is None:
            text = P.default_reply(body)
        msg: dict[str, Any] = {"role": "assistant", "content": text, "refusal": rule.refusal}
        if calls:
            msg["tool_calls"] = calls
        return msg, rule.finish_reason or ("tool_calls" if calls else "stop")

    def _answer(self, rec: RecordedRequest, body: dict[str, Any], rule: Rule | None) -> Any:
        msg, finish = self._message(rec, body, rule)
        rid = (rule.response_id if rule else None) or f"chatcmpl-fake{rec.id}"
        fault = rule.fault if rule else None
        rec.outcome = fault or rec.outcome or "reply"
        usage = self._usage(body, msg, rule)
        if fault == "not_json":
            assert rule is not None
            return _Raw([NOT_JSON_BODY], headers=self._headers(rec, rule.content_type))
        if fault == "drop":
            return _Raw([], headers={}, start=False, abort=True)
        cut = fault in ("truncated_stream", "incomplete_stream")
        if body.get("stream"):
            frames = P.sse(P.stream_chunks(body, rid, msg, finish, usage), done=not cut)
            frames = frames[: max(2, len(frames) // 2)] if cut else frames
            rec.usage = None if cut else usage
            return _Raw(
                frames,
                headers=self._headers(rec, "text/event-stream"),
                abort=fault == "truncated_stream",
                delay_s=(rule.chunk_delay_ms if rule else 0) / 1000,
            )
        data = json.dumps(P.chat_completion(body, rid, msg, finish, usage)).encode()
        headers = self._headers(rec, "application/json")
        if not cut:
            rec.usage = usage  # served: the tokens a real provider would bill
            return Response(data, headers=headers)
        if fault == "truncated_stream":  # promise the full length, cut the socket halfway
            headers["content-length"] = str(len(data))
        return _Raw([data[: len(data) // 2]], headers=headers, abort=fault == "truncated_stream")

    def _usage(
        self, body: dict[str, Any], msg: dict[str, Any], rule: Rule | None
    ) -> dict[str, Any] | None:
        wanted = rule.usage if rule and rule.usage is not None else self.usage
        if wanted is False:
            return None
        text = P.completion_text(msg.get("content"), msg.get("tool_calls"), msg.get("refusal"))
        override = wanted if isinstance(wanted, dict) else None
        return P.usage_block(body, text, self.cached_tokens, override)


def main(argv: list[str] | None = None) -> None:
    """Standalone server for benchmarks and crash tests; prints its URL, serves until killed."""
    ap = argparse.ArgumentParser(prog="python -m tests.fakeserver")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--cached-tokens", type=int, default=0)
    ap.add_argument("--no-usage", action="store_true")
    ap.add_argument("--structured", choices=P.STRUCTURED_MODES, default=None)
    args = ap.parse_args(argv)
    server = FakeServer(
        latency_ms=args.latency_ms,
        usage=not args.no_usage,
        cached_tokens=args.cached_tokens,
        structured=args.structured,
        host=args.host,
        port=args.port,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with server:
        print(server.url, flush=True)
        try:
            while not done.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
