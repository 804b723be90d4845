"""`pliny serve`: the local web view of this workspace's sessions.

127.0.0.1 by default. Any other address needs ``--allow-remote`` and a token
(``--token``, or one is generated and printed): the page can cancel, resume
and roll back sessions, so it is never open to the network by accident.
"""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

import typer

from pliny.cli.common import WorkspaceOpt, fail, workspace_path


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    workspace: Path | None = WorkspaceOpt,
    port: int = typer.Option(8765, "--port", help="TCP port (0: any free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    allow_remote: bool = typer.Option(
        False, "--allow-remote", help="Allow a non-loopback --host (needs a token)."
    ),
    token: str | None = typer.Option(
        None, "--token", envvar="PLINY_SERVE_TOKEN", help="Token requests must carry."
    ),
) -> None:
    """Serve a web view of the sessions: list, graph, agents, checkpoints, live audit."""
    from pliny.web.security import is_loopback

    ws = workspace_path(workspace)
    if not ws.is_dir():
        raise fail(f"workspace {ws} is not a directory")
    if not 0 <= port <= 65535:
        raise fail(f"--port {port}: not a TCP port (0-65535)")
    remote = not is_loopback(host)
    if remote and not allow_remote:
        raise fail(f"--host {host} is not loopback: add --allow-remote (a token is then required)")
    if token is not None and len(token) < 16:
        raise fail("--token must be at least 16 characters")
    if remote and token is None:
        token = secrets.token_urlsafe(24)
        typer.echo(f"token: {token}", err=True)
    _run(ws, host, port, token, remote)


def _run(ws: Path, host: str, port: int, token: str | None, remote: bool) -> None:
    try:
        import uvicorn

        from pliny.web import create_app
    except ImportError:
        extra = "pip install 'pliny-orchestrator[web]'"
        raise fail(f"pliny serve needs the web extra: {extra}") from None
    sock = _bind(host, port)  # bound here, so the printed URL has the real port (--port 0)
    app = create_app(ws, token=token, loopback_only=not remote)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1)
    shown = f"[{host}]" if ":" in host else host
    query = f"?token={token}" if token else ""
    typer.echo(f"pliny: serving {ws} at http://{shown}:{sock.getsockname()[1]}/{query}")
    server = uvicorn.Server(config)
    exit_handler = server.handle_exit

    def handle_exit(sig: int, frame: object) -> None:
        app.state.closing.set()  # end the open event streams, so shutdown need not wait
        exit_handler(sig, frame)  # type: ignore[arg-type]

    server.handle_exit = handle_exit  # type: ignore[method-assign]
    server.run(sockets=[sock])


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only then (no 40 ms delayed-ACK stalls)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
