"""The Starlette app behind ``pliny serve``: a static page and a small JSON API.

GET routes only read (``pliny.web.data``); the three POST routes are the
CLI's cancel, resume and rollback (``pliny.web.actions``), behind the
``Guard`` (token, Host, CSRF). A ``UsageError`` becomes its one-line message
as JSON: 404 for an unknown session, 409 for a refusal (running, edited
files), 400 for other bad input.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

import pliny.web.actions as actions
from pliny.errors import UsageError
from pliny.web.data import Reader
from pliny.web.security import Guard
from pliny.web.stream import audit_stream

STATIC = Path(__file__).resolve().parent / "static"
NO_CACHE = {"Cache-Control": "no-store"}


def create_app(workspace: Path, token: str | None = None, loopback_only: bool = True) -> Starlette:
    reader = Reader(workspace)
    closing = threading.Event()  # set by `pliny serve` on Ctrl-C: open streams end

    def sid(request: Request) -> str:
        return request.path_params["sid"]

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=NO_CACHE)

    async def sessions(request: Request) -> Response:
        rows = await run_in_threadpool(reader.sessions)
        return JSONResponse({"workspace": str(workspace), "sessions": rows}, headers=NO_CACHE)

    async def session(request: Request) -> Response:
        return await _json(reader.session, sid(request))

    async def graph_svg(request: Request) -> Response:
        svg = await run_in_threadpool(reader.svg, sid(request))
        if svg is None:
            return JSONResponse({"error": "SVG needs Graphviz's `dot`"}, status_code=404)
        return Response(svg, media_type="image/svg+xml", headers=NO_CACHE)

    async def events(request: Request) -> Response:
        after = _int(request.query_params.get("after"), "after")
        return await _json(reader.events, sid(request), after)

    async def verify(request: Request) -> Response:
        return await _json(reader.verify, sid(request))

    async def checkpoints(request: Request) -> Response:
        return await _json(reader.checkpoints, sid(request))

    async def diff(request: Request) -> Response:
        q = request.query_params
        if not q.get("from") or not q.get("to"):
            raise UsageError("diff needs ?from=CHECKPOINT&to=CHECKPOINT")
        return await _json(reader.diff, sid(request), q["from"], q["to"])

    async def stream(request: Request) -> Response:
        state = reader.state(sid(request))
        last = request.headers.get("last-event-id") or request.query_params.get("after")

        async def gone() -> bool:  # the browser left, or the server is shutting down
            return closing.is_set() or await request.is_disconnected()

        body = audit_stream(reader.log(state.id), _int(last, "after"), gone)
        headers = NO_CACHE | {"X-Accel-Buffering": "no"}
        return StreamingResponse(body, media_type="text/event-stream", headers=headers)

    async def cancel(request: Request) -> Response:
        return await _json(actions.cancel, workspace, sid(request), key="message")

    async def resume(request: Request) -> Response:
        return await _json(actions.resume, workspace, sid(request), key="message")

    async def rollback(request: Request) -> Response:
        body = await _body(request)
        name = body.get("checkpoint")
        if not isinstance(name, str) or not name:
            raise UsageError('rollback needs a JSON body {"checkpoint": NAME}')
        message = await actions.rollback(workspace, sid(request), name, bool(body.get("force")))
        return JSONResponse({"message": message})

    routes = [
        Route("/", index),
        Route("/session/{sid}", index),
        Route("/api/sessions", sessions),
        Route("/api/sessions/{sid}", session),
        Route("/api/sessions/{sid}/graph.svg", graph_svg),
        Route("/api/sessions/{sid}/events", events),
        Route("/api/sessions/{sid}/stream", stream),
        Route("/api/sessions/{sid}/verify", verify),
        Route("/api/sessions/{sid}/checkpoints", checkpoints),
        Route("/api/sessions/{sid}/diff", diff),
        Route("/api/sessions/{sid}/cancel", cancel, methods=["POST"]),
        Route("/api/sessions/{sid}/resume", resume, methods=["POST"]),
        Route("/api/sessions/{sid}/rollback", rollback, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard, token=token, loopback_only=loopback_only)],
        exception_handlers={UsageError: _usage_error},
    )
    app.state.closing = closing
    return app


async def _json(fn: Any, *args: Any, key: str | None = None) -> Response:
    result = await run_in_threadpool(fn, *args)
    return JSONResponse({key: result} if key else result, headers=NO_CACHE)


async def _body(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise UsageError("the request body must be JSON") from None
    if not isinstance(data, dict):
        raise UsageError("the request body must be a JSON object")
    return data


def _int(value: str | None, name: str) -> int:
    if value in (None, ""):
        return 0
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{name} must be an integer, not {value!r}") from None


async def _usage_error(request: Request, exc: Exception) -> Response:
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if message.startswith("unknown session"):
        status = 404
    elif "running" in message or "--force" in message or "nothing to resume" in message:
        status = 409
    else:
        status = 400
    return JSONResponse({"error": message}, status_code=status)
